"""Run: one run's facts (with its tokens), timeline, model calls and steps, 20 to a
page, each with the model's thought and call, and under a failing step's error the
values its failing line reads. Nested agents: links to the step of another run that
started this one, and to the runs its tool calls started. A run still being recorded
is followed as its steps arrive. Query parameters: ``run`` (an id, a unique prefix or
``last``) and ``step`` (the step to open)."""

from __future__ import annotations

import streamlit as st

from codetape.errors import CodetapeError
from codetape.viewer import _data, _live, _llm, _nested, _step, _timeline
from codetape.viewer import _widgets as w

st.title("Run")
wanted = st.query_params.get("run") or w.run_picker("Open a run", "run", _data.recent_runs())
if not wanted:
    st.info("Pick a run, or open one from the Runs page.")
    st.stop()
try:
    run = _data.run(wanted)
except CodetapeError as exc:
    w.problem("The link names no run of this store.", exc)
    st.stop()
# Written back on every run: a prefix or "last" becomes the id (a stable link), and a
# link from this page to itself (another run, a step) reruns it but leaves the address
# bar as it was; the browser updates it only when it differs.
st.query_params["run"] = run.id
# Every step as its record says it (no blob read): the facts, the timeline, the links
# and the pages; the steps of the page shown are then read whole.
steps = _data.outline(run)
calls = _data.llm_calls(run) if run.llm_calls else []
w.run_facts(run, steps)
_nested.parent_link(run)
_nested.run_children(_nested.children(steps))
if run.replay_of:
    st.page_link(
        w.COMPARE_PAGE,
        label="Compare with the run it replays",
        query_params={"a": run.replay_of.rpartition(":")[0], "b": run.id},
    )
for replay in _data.replays_of(run.id):
    st.page_link(
        w.COMPARE_PAGE,
        label=f"Compare with its replay {replay.id[:12]}",
        query_params={"a": run.id, "b": replay.id},
    )
if run.status == "running":
    _live.follow(run)
if not steps and not calls:
    st.info("This run has no steps yet.")
    st.stop()

st.subheader("Timeline")
st.vega_lite_chart(spec=_timeline.timeline(run, steps, calls), width="stretch")
if calls:
    st.subheader("Model calls")
    w.table(_llm.call_rows(calls, steps), empty="", key="llm-calls")
if not steps:
    st.info("This run has no steps yet.")
    st.stop()

st.subheader("Steps")
asked = w.int_param("step")
indexes = [s.index for s in steps]
if asked is not None and asked not in indexes:
    st.warning("The run has no step with the number in the link.")
failing = next((s.index for s in steps if s.status != "ok"), None)
focus = asked if asked in indexes else failing
per = _data.STEPS_PER_PAGE
pages = _data.page_count(len(steps), per)
first = indexes.index(focus) // per + 1 if focus is not None else 1
page = st.pagination(pages, default=first, key=f"steps:{run.id}:{asked}") if pages > 1 else 1
st.caption(f"{len(steps)} steps · page {page} of {pages}")
by_span = {c.span_id: c for c in calls}
for step in _data.steps(run, (page - 1) * per, per):
    opened = step.index == focus or _step.replaying(run, step)
    with st.expander(w.step_label(step), expanded=opened):
        st.page_link(
            w.RUN_PAGE,
            label="Link to this step",
            query_params={"run": run.id, "step": str(step.index)},
        )
        _step.show(run, step, by_span.get(step.llm_call or ""))
