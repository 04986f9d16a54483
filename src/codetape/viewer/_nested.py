"""Nested agents on the Run page and in the Runs list: a run started by a tool call of
another run's step (a smolagents managed agent) links back to that step, and the tool
call links to the run it started.

The ids come from recorded attributes, so they are checked: only a hex id reaches a
link's label or query parameters (labels render Markdown). Any other value is shown as
text, with its control and bidi characters as escapes, and links nowhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import streamlit as st

from .._format import cut, visible
from ..schemas import Run, Step
from . import _widgets as w

__all__ = ["Child", "children", "parent_link", "run_children", "step_children"]

# A run id as codetape records it: a trace id, in lower-case hex.
_ID = re.compile("[0-9a-f]{1,64}")
# How many child runs the top of the Run page links to; the steps link to all of them.
_LISTED = 20
_ID_CHARS = 80


@dataclass(frozen=True)
class Child:
    """A run that tool call ``call`` of step ``step`` started."""

    step: int
    call: int
    run: str


def _is_id(value: str | None) -> bool:
    return value is not None and _ID.fullmatch(value) is not None


def children(steps: list[Step]) -> list[Child]:
    """The runs the steps' tool calls started, in order."""
    return [
        Child(step.index, k, call.child_run)
        for step in steps
        for k, call in enumerate(step.tool_calls)
        if call.child_run
    ]


def parent_link(run: Run) -> None:
    """On a child run's page: a link back to its parent run, at the step that started it."""
    parent, step = run.parent_run, run.parent_step
    if not parent:
        return
    if not _is_id(parent):
        st.caption("A tool call of another run started this run, but its id is not a run id:")
        st.text(cut(visible(parent), _ID_CHARS))
        return
    where = "a step" if step is None else f"step {step}"
    params = {"run": parent} if step is None else {"run": parent, "step": str(step)}
    st.page_link(
        w.RUN_PAGE,
        label=f"Started by a tool call of {where} of run {parent[:12]}: open it",
        query_params=params,
    )


def _child_link(child: Child, label: str) -> None:
    if not _is_id(child.run):
        st.caption(f"{label}, whose id is not a run id:")
        st.text(cut(visible(child.run), _ID_CHARS))
        return
    st.page_link(
        w.RUN_PAGE,
        label=f"{label}: run {child.run[:12]}",
        query_params={"run": child.run},
    )


def run_children(found: list[Child]) -> None:
    """Near the top of a parent run's page: the runs its tool calls started."""
    if not found:
        return
    st.caption(f"This run's tool calls started {w.plural(len(found), 'run')} (nested agents).")
    for child in found[:_LISTED]:
        _child_link(child, f"Step {child.step}, tool call #{child.call} started")
    if len(found) > _LISTED:
        st.caption(f"{len(found) - _LISTED} more: each step links to the runs it started.")


def step_children(step: Step) -> None:
    """In a step: a link to the run each of its tool calls started."""
    for child in children([step]):
        _child_link(child, f"Tool call #{child.call} started a run")
