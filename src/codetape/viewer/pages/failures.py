"""Failures: the failing steps of every run grouped by failure signature (exception
type, message with ids, numbers and quoted values masked, failing line), the groups that
failed the most runs first, each with a link to its newest example and to a Compare of
that example with a passing run of the same agent and task. Filter by agent."""

from __future__ import annotations

import streamlit as st

from codetape._format import visible
from codetape.viewer import _data, _failures
from codetape.viewer import _widgets as w

st.title("Failures")
if _data.missing():
    st.info("No runs yet: nothing has recorded into this store.")
    st.code(str(_data.home()), language=None)
    st.stop()
agent = st.selectbox(
    "Agent",
    [None, *_data.agents()],
    format_func=lambda a: "any" if a is None else visible(a),
    key="failures-agent",
)
groups = _data.failures(agent)
if not groups:
    if _data.count_runs(None, agent, "", False) == 0:
        st.info("No runs yet: failures show here once agents have recorded runs.")
    else:
        st.success("No failing steps: every recorded step succeeded.")
    st.stop()

per = _failures.GROUPS_PER_PAGE
pages = _data.page_count(len(groups), per)
page = st.pagination(pages, key=f"failures-page:{agent}") if pages > 1 else 1
shown = groups[(page - 1) * per : page * per]
st.caption(f"{w.plural(len(groups), 'failure signature')} · page {page} of {pages}")
w.table(_failures.group_rows(shown, (page - 1) * per + 1), empty="", key="failure-groups")
for k, g in enumerate(shown):
    _failures.group(g, (page - 1) * per + 1 + k)
