"""What ``codetape ui`` serves (through ``_server``): the viewer's pages, ``app.py``, as a
Streamlit ``st.App`` whose every request passes :class:`~._server.LocalOnly` first."""

import streamlit as st
from starlette.middleware import Middleware

from codetape.viewer import APP
from codetape.viewer._server import LocalOnly

app = st.App(APP, middleware=[Middleware(LocalOnly)])
