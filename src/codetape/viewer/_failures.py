"""The Failures page's blocks: the table of failure groups, and each group with its
masked message, its failing line, the newest example's own message, and links to the
example (the Run page at the failing step) and to a Compare of the example with a run
of the same agent and task that passed.

Messages, failing lines, error types and agent names are recorded text: they reach the
page through ``st.code`` and dataframe cells, with control, bidi and invisible
characters shown as escapes. Captions and link labels hold fixed wording, numbers and
hex ids; links carry run ids and step numbers.
"""

from __future__ import annotations

import streamlit as st

from .._format import MESSAGE_CHARS, cut, visible
from ..schemas import FailureGroup
from . import _widgets as w

__all__ = ["GROUPS_PER_PAGE", "group", "group_rows"]

GROUPS_PER_PAGE = 20
# The agents of a group, in a table cell.
_AGENTS_CHARS = 120


def _text(value: str | None, limit: int = MESSAGE_CHARS) -> str:
    return cut(visible(value), limit)


def group_rows(groups: list[FailureGroup], first: int) -> list[dict[str, str]]:
    """One row per group, numbered from ``first`` as the blocks below it are; the long
    texts last, so the counts stay in view."""
    return [
        {
            "group": str(first + k),
            "runs": str(g.runs),
            "steps": str(g.steps),
            "error": _text(g.error_type, _AGENTS_CHARS),
            "agents": _text(", ".join(g.agents), _AGENTS_CHARS),
            "first seen": w.when(g.first_seen),
            "last seen": w.when(g.last_seen),
            "message": _text(g.message),
            "failing line": _text(g.line),
        }
        for k, g in enumerate(groups)
    ]


def group(g: FailureGroup, number: int) -> None:
    """One group: what failed, the newest example, and where to look next."""
    with st.container(border=True):
        st.markdown(
            f"**Group {number}** · {w.plural(g.runs, 'run')} · "
            f"{w.plural(g.steps, 'failing step')} · last seen {w.when(g.last_seen)}"
        )
        st.code(_text(g.message), language=None, wrap_lines=True)
        if g.line:
            st.caption("Failing line (masked)")
            st.code(_text(g.line), language="python")
        st.caption("The newest example's message")
        st.code(_text(g.example_message), language=None, wrap_lines=True)
        example, compare = st.columns(2)
        example.page_link(
            w.RUN_PAGE,
            label=f"Newest example: step {g.example_step} of run {g.example_run[:12]}",
            query_params={"run": g.example_run, "step": str(g.example_step)},
        )
        if g.passing_run is None:
            compare.caption("No run of the same agent and task passed: nothing to compare.")
        else:
            compare.page_link(
                w.COMPARE_PAGE,
                label=f"Compare with a passing run of the same task ({g.passing_run[:12]})",
                query_params={"a": g.example_run, "b": g.passing_run},
            )
