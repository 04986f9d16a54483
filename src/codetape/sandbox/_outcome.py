"""What the sandbox returns for a code action: a plain outcome, nothing recorded.

The tracer turns an outcome into a step (spans, blobs, redaction); the sandbox itself
knows nothing of runs, spans or the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # annotations only: recording never loads the models
    from ..schemas import ErrorInfo, StepStatus

__all__ = ["Checkpoint", "Outcome", "Pickled", "RawState", "RawVariable", "RelayedCall"]


class RawVariable(NamedTuple):
    """One variable of a namespace as a snapshot described it.

    ``digest`` is the value's fingerprint (equal values, equal digests), or ``None``
    when it could not be taken; ``reason`` says why a value cannot be restored from a
    checkpoint (None when it can). ``data`` is the pickle the fingerprint was taken
    from, when it came with this snapshot (a value seen before comes without it).
    """

    type: str
    preview: str
    size: int
    digest: str | None
    data: bytes | None
    reason: str | None = None


@dataclass
class Checkpoint:
    """The whole namespace as one pickle that keeps its object graph, with its large
    values pickled on their own (``large``: label → pickle, ``keys``: label → the
    digest of that pickle, its blob) and, in a container, the
    files under ``/tmp``. ``digest`` is None when no checkpoint could be made
    (``reason`` says why). Bytes are never unpickled on the host: they go back into a
    sandbox to restore it."""

    digest: str | None
    data: bytes | None = None
    large: dict[str, bytes] = field(default_factory=dict)
    files: str | None = None
    files_data: bytes | None = None
    reason: str | None = None
    name: str | None = None
    keys: dict[str, str] = field(default_factory=dict)


@dataclass
class RawState:
    """A namespace as a snapshot saw it: variables, the names bound to modules
    (``st`` → ``statistics``) and to tools, and its checkpoint."""

    variables: dict[str, RawVariable]
    modules: dict[str, str] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    checkpoint: Checkpoint = field(default_factory=lambda: Checkpoint(None, reason="empty"))

    @classmethod
    def from_snapshot(cls, taken: dict[str, Any]) -> RawState:
        """A state from the state codec's snapshot taken in this process."""
        data = taken["data"]
        point = taken["checkpoint"]
        variables = {
            name: RawVariable(
                type=var["type"],
                preview=var["preview"],
                size=var["size"],
                digest=var["digest"],
                data=data.get(var["digest"]),
                reason=var["reason"],
            )
            for name, var in taken["variables"].items()
        }
        pool = {**data, **point.get("blobs", {})}
        keys = dict(point.get("large", {}))
        checkpoint = Checkpoint(
            point.get("digest"),
            data=point.get("data"),
            large={label: pool[key] for label, key in keys.items() if key in pool},
            reason=point.get("reason"),
            name=point.get("name"),
            keys=keys,
        )
        return cls(variables, dict(taken["modules"]), dict(taken["tools"]), checkpoint)


@dataclass(frozen=True)
class Pickled:
    """A tool answer pickled on the host, to be unpickled inside the sandbox: a replay
    gives the code exactly what the tool returned (a tuple stays a tuple, key order
    and types stay), and the host unpickles nothing. ``shown`` is the answer as the
    recording shows it (its JSON), recorded again with the pickle by a replay."""

    data: bytes
    shown: Any = None


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
    state: RawState | None = None
    tool_calls: list[RelayedCall] = field(default_factory=list)
    duration_ms: float = 0.0
