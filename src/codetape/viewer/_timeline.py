"""The Run page's timeline: a Vega-Lite spec with one bar per model call, per step
and per tool call, over time, in three lanes.

A bar's ``what`` names it by fixed words, numbers and a tool's name; the model's name
is shown with its control and bidi characters escaped (``_format.visible``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .._format import STATUS_COLORS, STEP_STATUSES, cut, visible
from ..schemas import LlmCall, Run, Step
from ._widgets import HEX

__all__ = ["LANES", "timeline"]

LANES = ["model calls", "code actions", "tool calls"]
# A model's name in a bar's tooltip.
_MODEL_CHARS = 80
# The bars: coloured by step status (a model or tool call is "ok" or "error").
_STATUS_SCALE = {
    "domain": list(STEP_STATUSES),
    "range": [HEX[STATUS_COLORS[s]] for s in STEP_STATUSES],
}


class _Bars:
    """The rows of the chart's data, placed relative to the run's start."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.rows: list[dict[str, Any]] = []

    def add(self, lane: str, what: str, status: str, start: datetime, ms: float) -> None:
        offset = (start - self.run.started_at).total_seconds() * 1000
        self.rows.append(
            {
                "lane": lane,
                "what": what,
                "status": status,
                "start": offset,
                "end": offset + ms,
                "ms": round(ms, 1),
            }
        )

    def widened(self) -> list[dict[str, Any]]:
        """Keep instant bars visible: at least 0.3% of the run's span wide."""
        span = max((r["end"] for r in self.rows), default=0.0)
        for r in self.rows:
            r["end"] = max(r["end"], r["start"] + span * 0.003)
        return self.rows


def _call_name(call: LlmCall, step_of: dict[str, int]) -> str:
    step = step_of.get(call.span_id)
    to = f" → step {step}" if step is not None else ""
    model = cut(visible(call.response_model or call.model or "model"), _MODEL_CHARS)
    return f"model call {call.index}{to}: {model}"


def timeline(run: Run, steps: list[Step], calls: Sequence[LlmCall] = ()) -> dict[str, Any]:
    """A Vega-Lite spec: one bar per model call, per step and per tool call, over time."""
    bars = _Bars(run)
    step_of = {s.llm_call: s.index for s in steps if s.llm_call}
    for call in calls:
        status = "error" if call.error else "ok"
        bars.add(LANES[0], _call_name(call, step_of), status, call.started_at, call.duration_ms)
    for step in steps:
        bars.add(LANES[1], f"step {step.index}", step.status, step.started_at, step.duration_ms)
        for tool in step.tool_calls:
            bars.add(
                LANES[2],
                f"step {step.index}: {tool.name}",
                "error" if tool.error else "ok",
                tool.started_at,
                tool.duration_ms,
            )
    return {
        "data": {"values": bars.widened()},
        "mark": {"type": "bar", "cornerRadius": 2},
        "height": {"step": 32},
        "encoding": {
            "y": {"field": "lane", "type": "nominal", "title": None, "sort": LANES},
            "x": {
                "field": "start",
                "type": "quantitative",
                "title": "milliseconds since the run started",
            },
            "x2": {"field": "end"},
            "color": {
                "field": "status",
                "type": "nominal",
                "legend": {"orient": "right"},
                "scale": _STATUS_SCALE,
            },
            "tooltip": [
                {"field": "what", "type": "nominal"},
                {"field": "status", "type": "nominal"},
                {"field": "ms", "type": "quantitative", "title": "duration (ms)"},
            ],
        },
    }
