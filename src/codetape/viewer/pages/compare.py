"""Compare: two runs (or a run and its replay) step by step, from the first divergence.
Query parameters: ``a`` and ``b`` (ids, unique prefixes or ``last``)."""

from __future__ import annotations

import streamlit as st

from codetape.errors import CodetapeError
from codetape.viewer import _comparison, _data
from codetape.viewer import _widgets as w

st.title("Compare runs")
with _data.together():  # the pickers' runs, both runs and their diff: one connection
    recent = _data.recent_runs()
    left, right = st.columns(2)
    with left:
        a = w.run_picker("Run A", "a", recent)
    with right:
        b = w.run_picker("Run B", "b", recent)
    if a and not b:
        for replay in _data.replays_of(a):
            st.page_link(
                w.COMPARE_PAGE,
                label=f"Compare with its replay {replay.id[:12]}",
                query_params={"a": a, "b": replay.id},
            )
    if not (a and b):
        st.info("Pick two runs, or a run and one of its replays.")
        st.stop()
    try:
        diff = _data.diff(a, b)
    except CodetapeError as exc:
        w.problem("The runs cannot be compared.", exc)
        st.stop()

w.table(w.run_rows([diff.a, diff.b]), empty="")
_comparison.divergence(diff)
if not diff.pairs:
    st.stop()
shown = st.selectbox(
    "Pair",
    range(len(diff.pairs)),
    index=diff.first_divergence or 0,
    format_func=lambda k: _comparison.pair_label(diff, k),
)
_comparison.pair_details(diff, shown, _data.diff_pair(diff, shown))
