"""Replay reports on the Run page: one step's verdict (``show_report``), and the
per-step verdicts of a replay from a step onward (``show_from``).

Reasons, notes and differing values are recorded or replayed text: they reach the page
only through ``st.text``, ``st.code`` and dataframe cells, with control and bidi
characters as escapes. Headlines and captions hold fixed wording and step numbers.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from typing import Any

import streamlit as st

from .._format import VERDICT_COLORS, Color, cut, steps_text, visible
from ..schemas import Difference, ReplayReport, Verdict
from . import _widgets as w

__all__ = ["show_from", "show_report"]

_HEADLINES: dict[Verdict, str] = {
    "reproduced": "Reproduced: the replay matches the recording.",
    "diverged": "Diverged: the replay differs from the recording.",
    "not_restorable": "Not restorable: the step's input could not be restored.",
    "environment_missing": "Environment missing: the recorded sandbox is not here.",
}
# How the viewer shows a verdict's colour: as an alert.
_ALERTS: dict[Color, Callable[[str], Any]] = {
    "green": st.success,
    "red": st.error,
    "yellow": st.warning,
}
_TEXT_FIELDS = ("stdout", "stderr", "result")
_LOCAL = "Replayed with the local backend: no isolation."
# A differing value in the per-step table of a replay from a step onward.
_CELL_CHARS = 80


def show_report(report: ReplayReport, key: str) -> None:
    """A replay's verdict, reason, notes and differences, and links to its run."""
    _ALERTS.get(VERDICT_COLORS[report.verdict], st.info)(_HEADLINES[report.verdict])
    if report.backend == "local":
        st.caption(_LOCAL)
    if report.reason:
        st.text(visible(report.reason))
    if report.notes:
        st.text(visible("\n".join(f"note: {n}" for n in report.notes)))
    _differences(report, key)
    if report.replay_run_id:
        st.page_link(
            w.COMPARE_PAGE,
            label="Compare the run with its replay",
            query_params={"a": report.run_id, "b": report.replay_run_id},
        )
        st.page_link(
            w.RUN_PAGE, label="Open the replay run", query_params={"run": report.replay_run_id}
        )


def _differences(report: ReplayReport, key: str) -> None:
    """Each differing field's recorded and replayed value, and text fields as diffs."""
    if not report.differences:
        return
    w.table(
        [
            {"field": d.field, "recorded": _shown(d.recorded), "replayed": _shown(d.replayed)}
            for d in report.differences
        ],
        empty="",
    )
    for d in report.differences:
        if (
            d.field in _TEXT_FIELDS
            and isinstance(d.recorded, str | None)
            and isinstance(d.replayed, str | None)
        ):
            lines = difflib.unified_diff(
                (d.recorded or "").splitlines(),
                (d.replayed or "").splitlines(),
                "recorded",
                "replayed",
                lineterm="",
            )
            w.text_block("\n".join(lines), key=f"all-diff:{key}:{d.field}", language="diff")


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return cut(value)
    return cut(json.dumps(value, ensure_ascii=False, default=repr))


# -- replay from a step onward -----------------------------------------------------


def show_from(reports: list[ReplayReport], not_run: list[int], key: str) -> None:
    """A replay from a step onward: a headline, one row per step (and per step a stop
    left unrun), the notes once, the first divergence in full, and links to the
    comparison of the run with its replay and to the replay run."""
    if not reports:
        return
    _from_headline(reports)
    if not_run:
        st.warning(
            f"The replay stopped at step {reports[-1].step}: {steps_text(not_run)} did not run."
        )
    if any(r.backend == "local" for r in reports):
        st.caption(_LOCAL)
    w.table(_from_rows(reports, not_run), empty="")
    notes = dict.fromkeys(n for r in reports for n in r.notes)
    if notes:
        st.text(visible("\n".join(f"note: {n}" for n in notes)))
    first = next((r for r in reports if r.differences), None)
    if first is not None:
        st.caption(f"First divergence: step {first.step}")
        _differences(first, key)
    replay_run = reports[0].replay_run_id
    if replay_run:
        st.page_link(
            w.COMPARE_PAGE,
            label="Compare the run with its replay",
            query_params={"a": reports[0].run_id, "b": replay_run},
        )
        st.page_link(w.RUN_PAGE, label="Open the replay run", query_params={"run": replay_run})


def _from_headline(reports: list[ReplayReport]) -> None:
    stopped = [r.verdict for r in reports if r.verdict in ("not_restorable", "environment_missing")]
    if stopped:
        _ALERTS[VERDICT_COLORS[stopped[0]]](_HEADLINES[stopped[0]])
        return
    start, count = reports[0].step, len(reports)
    differ = [r.step for r in reports if r.verdict != "reproduced"]
    if count == 1:
        _ALERTS[VERDICT_COLORS[reports[0].verdict]](
            f"{_HEADLINES[reports[0].verdict].partition(':')[0]}: step {start} "
            + ("matches the recording." if not differ else "differs from the recording.")
        )
    elif not differ:
        st.success(f"Reproduced: all {count} steps from step {start} match the recording.")
    else:
        st.error(
            f"Diverged: {len(differ)} of {count} steps from step {start} differ from the "
            f"recording; the first is step {differ[0]}."
        )


def _from_rows(reports: list[ReplayReport], not_run: list[int]) -> list[dict[str, str]]:
    rows = [
        {
            "step": str(r.step),
            "verdict": r.verdict,
            "reason or first difference": r.reason or _first_difference(r.differences),
            "differences": ", ".join(d.field for d in r.differences),
        }
        for r in reports
    ]
    rows += [
        {"step": str(i), "verdict": "not run", "reason or first difference": "", "differences": ""}
        for i in not_run
    ]
    return rows


def _first_difference(differences: list[Difference]) -> str:
    if not differences:
        return ""
    d = differences[0]
    return f"{d.field}: {_cell(d.recorded)} → {_cell(d.replayed)}"


def _cell(value: Any) -> str:
    """A differing value, short: a variable by its preview, a text quoted."""
    if isinstance(value, dict) and isinstance(value.get("preview"), str):
        return cut(value["preview"], _CELL_CHARS)
    return cut(json.dumps(value, ensure_ascii=False, default=repr), _CELL_CHARS)
