"""Runs: every recorded run, newest first, filtered and paged, with the step of another
run that started it (nested agents); a row's link opens its Run page (or tick its box).
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
# The link column: the Run page's address (hex ids only), shown as a fixed word.
OPEN = {"open": st.column_config.LinkColumn("open", display_text="Open", pinned=True)}


@st.fragment(run_every=_live.REFRESH_S if live else None)
def listing() -> None:
    with _data.together():
        total = _data.count_runs(*filters)
        pages = _data.page_count(total, _data.RUNS_PER_PAGE)
        above = st.container()
        page = st.pagination(pages, key=f"runs-page:{filters}") if pages > 1 else 1
        runs = _data.runs(*filters, page)
    with above:
        many = total > _data.SEARCH_COUNT_AT_MOST
        counted = f"{_data.SEARCH_COUNT_AT_MOST:,}+" if many else str(total)
        st.caption(
            f"{counted} runs · page {page} of {pages}{'+' if many else ''} · open a run with "
            "its link, or select "
            "its row (its box, or Shift+Space on one of its cells)"
        )
        if not runs:
            st.info("No runs match.")
            return
        rows = w.run_rows(runs)
        rows = [{"open": w.run_href(r.id), **row} for r, row in zip(runs, rows, strict=True)]
        picked = st.dataframe(
            w.cells(rows),
            hide_index=True,
            width="stretch",
            column_config=OPEN,
            on_select="rerun",
            selection_mode="single-row",
            key="runs-table",
        )
    if picked.selection.rows:
        st.switch_page(w.RUN_PAGE, query_params={"run": runs[picked.selection.rows[0]].id})
    if live and not _data.any_running():
        st.rerun()  # the last run being recorded ended: stop refreshing


listing()
