"""Runs: every recorded run, newest first, filtered and paged; a row opens its Run page.
While any run is being recorded, the list refreshes itself."""

from __future__ import annotations

import streamlit as st

from codetape._format import visible
from codetape.viewer import _data, _live
from codetape.viewer import _widgets as w

st.title("Runs")
if _data.missing():
    st.info("No runs yet: nothing has recorded into this store.")
    st.code(str(_data.home()), language=None)
    st.stop()
left, middle, right = st.columns([1, 1, 2])
status = left.selectbox(
    "Status",
    [None, *_data.STATUSES, "failed"],
    format_func=lambda s: "any" if s is None else s,
    key="filter-status",
)
agent = middle.selectbox(
    "Agent",
    [None, *_data.agents()],
    format_func=lambda a: "any" if a is None else visible(a),
    key="filter-agent",
)
search = right.text_input("Search code, output, task and final answer", key="filter-search")
search = search.strip()
failed = status == "failed"
filters = (None if failed else status, agent, search, failed)
live = _data.any_running()


@st.fragment(run_every=_live.REFRESH_S if live else None)
def listing() -> None:
    total = _data.count_runs(*filters)
    pages = _data.page_count(total, _data.RUNS_PER_PAGE)
    above = st.container()
    page = st.pagination(pages, key=f"runs-page:{filters}") if pages > 1 else 1
    runs = _data.runs(*filters, page)
    with above:
        st.caption(f"{total} runs · page {page} of {pages} · tick a row's box to open the run")
        if not runs:
            st.info("No runs match.")
            return
        picked = st.dataframe(
            w.cells(w.run_rows(runs)),
            hide_index=True,
            width="stretch",
            on_select="rerun",
            selection_mode="single-row",
            key="runs-table",
        )
    if picked.selection.rows:
        st.switch_page(w.RUN_PAGE, query_params={"run": runs[picked.selection.rows[0]].id})
    if live and not _data.any_running():
        st.rerun()  # the last run being recorded ended: stop refreshing


listing()
