"""What a synthetic run is made of: its steps, their tool calls, variables and errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["RunSpec", "RunStatus", "StepSpec", "ToolCallSpec"]

RunStatus = Literal["ok", "error", "incomplete"]


@dataclass(frozen=True)
class ToolCallSpec:
    """One tool call a step makes: the tool, its arguments and its answer, recorded as
    the tracer records a call (JSON, key order kept)."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    result: Any = None


@dataclass(frozen=True)
class StepSpec:
    """One code action.

    ``code`` and ``stdout`` are the step's own text. The step calls ``tool_calls`` in
    order, leaves ``variables`` in its namespace (it starts from an empty one) and, with
    ``error``, raises it: the step is then failed, with that exception's type and message.
    """

    code: str = "pass"
    stdout: str = ""
    tool_calls: tuple[ToolCallSpec, ...] = ()
    variables: Mapping[str, Any] = field(default_factory=dict)
    error: BaseException | None = None


@dataclass(frozen=True)
class RunSpec:
    """One agent run.

    ``status`` is how it ended: ``"ok"``, ``"error"`` (it raised ``error``, a
    ``RuntimeError`` if none is given) or ``"incomplete"`` (its process died before the
    run ended: it has a start but no end).
    """

    agent: str = "agent"
    task: str | None = None
    steps: tuple[StepSpec, ...] = ()
    status: RunStatus = "ok"
    final_answer: str | None = None
    error: BaseException | None = None

    @property
    def span_count(self) -> int:
        """The spans this run leaves in the store: one per step and per tool call, and
        the run's own unless it never ended."""
        own = 0 if self.status == "incomplete" else 1
        return own + sum(1 + len(step.tool_calls) for step in self.steps)
