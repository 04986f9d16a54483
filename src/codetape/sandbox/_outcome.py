"""What the sandbox returns for a code action: a plain outcome, nothing recorded.

The tracer turns an outcome into a step (spans, blobs, redaction); the sandbox itself
knows nothing of runs, spans or the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..schemas import ErrorInfo, StepStatus

__all__ = ["Outcome", "RawVariable", "RelayedCall"]


class RawVariable(NamedTuple):
    """One variable of the runner's namespace as the runner described it.

    ``data`` is the value's pickle (never unpickled on the host), or ``None`` when the
    runner could not pickle it (``reason`` says why). ``key`` is the runner's label
    for those bytes: equal keys in two states mean the runner did not send the value
    again and the sandbox supplied the bytes it already held.
    """

    type: str
    preview: str
    size: int
    data: bytes | None
    key: str | None
    reason: str | None = None


@dataclass
class RelayedCall:
    """A tool call the code made, which the sandbox relayed to a host function."""

    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    result: Any = None
    error: ErrorInfo | None = None
    duration_ms: float = 0.0


@dataclass
class Outcome:
    """What one code action did in the sandbox.

    ``state`` is the namespace after the action, or ``None`` when the runner did not
    answer (a timeout, a kill, a broken protocol): the sandbox was then replaced and
    its variables restored from the last good state.
    """

    status: StepStatus
    seed: int | None
    stdout: str = ""
    stderr: str = ""
    has_result: bool = False
    result: str | None = None
    result_type: str | None = None
    error: ErrorInfo | None = None
    final_answer: dict[str, Any] | None = None
    state: dict[str, RawVariable] | None = None
    tool_calls: list[RelayedCall] = field(default_factory=list)
    duration_ms: float = 0.0
