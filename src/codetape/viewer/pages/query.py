"""Query: one read-only SQL query over the store's views (runs, steps, tool_calls,
variables, llm_calls, spans), under the rules of ``codetape sql``: start from a worked
query, run it, see its first rows as a table and download every row as CSV."""

from __future__ import annotations

import streamlit as st

from codetape.viewer import _data, _query

st.title("Query")
if _data.missing():
    st.info("No runs yet: nothing has recorded into this store.")
    st.code(str(_data.home()), language=None)
    st.stop()
st.caption(
    "One read-only SQL query over the store's views: `runs`, `steps`, `tool_calls`, "
    "`variables`, `llm_calls` and `spans` (docs/sql.md has their columns). Statements "
    "that write, attach, copy, install or load, and queries that read files, are refused."
)
_query.examples()
query = _query.editor()
if st.button("Run", type="primary", key="query-run"):
    _query.run(query)
_query.show()
