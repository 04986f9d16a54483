"""The codetape viewer: ``codetape ui`` serves this file with Streamlit. It only declares
the pages; each page is a short script in ``pages/``. A page opened with the launch's
token (``?token=…``) unlocks the replay buttons for the session."""

from pathlib import Path

import streamlit as st

from codetape.viewer import _access

pages = Path(__file__).parent / "pages"
st.set_page_config(page_title="codetape", layout="wide")
_access.remember_token()
st.navigation(
    [
        st.Page(pages / "runs.py", title="Runs", url_path="runs", default=True),
        st.Page(pages / "run.py", title="Run", url_path="run"),
        st.Page(pages / "compare.py", title="Compare", url_path="compare"),
        st.Page(pages / "failures.py", title="Failures", url_path="failures"),
        st.Page(pages / "query.py", title="Query", url_path="query"),
    ]
).run()
