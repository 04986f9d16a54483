"""Rebuilding a recorded step's input: checkpoint + log.

As a database recovers, a step's input is rebuilt from the latest checkpoint that
restores every variable at or before it (or from an empty namespace at step 0), and the
recorded code of the steps in between is re-executed hermetically: their recorded
seeds and random states, and every tool call answered from the recording. The rebuilt
input is then checked against the recorded fingerprints, and a mismatch is reported.
"""

from __future__ import annotations

import builtins
import inspect
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import BlobNotFoundError, ReplayToolError
from ..sandbox.internal import Checkpoint, Pickled, RawState, RawVariable
from ..schemas import Run, Step, ToolCall, VariableSnapshot
from ..store import Store
from ..tracer import Sandbox
from ..tracer.internal import bind_arguments
from ._compare import normalize_json, variable_differs

__all__ = ["Plan", "Recording", "ToolOracle", "plan", "rebuild"]


class Recording:
    """A run as recorded, read once for however many of its steps are replayed."""

    def __init__(
        self, store: Store, run: Run, steps: list[Step], blobs: dict[str, bytes] | None = None
    ) -> None:
        self.store = store
        self.run = run
        self.steps = {s.index: s for s in steps}
        self.calls = [call for s in steps for call in s.tool_calls]
        self._manifests: dict[str, dict[str, Any]] = {}
        # The blobs read so far, by digest (shared by the copies ``on`` makes).
        self._blobs: dict[str, bytes] = {} if blobs is None else blobs

    def on(self, store: Store) -> Recording:
        """The same recording read through ``store`` (another thread's), sharing the
        blobs read so far."""
        return Recording(store, self.run, list(self.steps.values()), self._blobs)

    def manifest(self, digest: str | None) -> dict[str, Any] | None:
        if digest is None:
            return None
        if digest not in self._manifests:
            self._manifests[digest] = json.loads(self.need(digest))
        return self._manifests[digest]

    def blob(self, digest: str | None) -> bytes | None:
        return self.need(digest) if digest else None

    def need(self, digest: str) -> bytes:
        """A blob of the recording: held, a blob file (a large one), or from the store."""
        found = self._blobs.get(digest)
        if found is None:
            try:
                found = self.store.blobs.get(digest)
            except BlobNotFoundError:
                found = self.store.blob(digest)
            self._blobs[digest] = found
        return found

    def hold(self, digests: Iterable[str | None]) -> None:
        """Read these blobs now, the small ones in one query (in the caller's session)."""
        wanted = sorted({d for d in digests if d and d not in self._blobs})
        if wanted:
            self._blobs.update(self.store.blobs_of(wanted))

    def hold_inputs(self) -> None:
        """Read every blob a replay of any step needs (its states, random state, tool
        answers, then the checkpoints the states name) in two queries, rather than
        one query (and connection) per blob as each replay asks."""
        steps = list(self.steps.values())
        self.hold(d for s in steps for d in (s.state_before, s.state_after, s.random_state))
        self.hold(call.result_pickle for call in self.calls)
        points = [(m or {}).get("checkpoint") or {} for m in map(self.manifest, _states(steps))]
        self.hold(d for p in points for d in (p.get("digest"), p.get("files")))


def _states(steps: list[Step]) -> list[str]:
    return [d for s in steps for d in (s.state_before, s.state_after) if d is not None]


def _error_class(type_name: str, message: str) -> type[Exception]:
    """An exception that reads as the recorded one: the same qualified type name (a
    class defined in the agent's module keeps its module) and the same text."""
    base = getattr(builtins, type_name, None)
    if not (isinstance(base, type) and issubclass(base, Exception)):
        base = Exception
    module, _, qualname = type_name.rpartition(".")
    return type(
        qualname.rpartition(".")[2],
        (base,),
        {
            "__str__": lambda self: message,
            "__module__": module or "builtins",
            "__qualname__": qualname,
        },
    )


def _shown_call(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def _same_call(recorded: ToolCall, name: str, arguments: dict[str, Any]) -> bool:
    """The call the recording has at this point: the same tool with the same arguments
    (arguments the recording redacted are taken on trust)."""
    if recorded.name != name:
        return False
    if "[REDACTED:" in json.dumps(recorded.arguments, default=repr):
        return True
    return bool(normalize_json(recorded.arguments) == normalize_json(arguments))


def _shown_recorded(call: ToolCall) -> str:
    arguments = call.arguments if isinstance(call.arguments, dict) else {}
    return f"{call.name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"


class ToolOracle:
    """Answers a step's tool calls from its recording, in order: the replay runs no
    host tool. A call the recording does not have is a miss, kept in ``missed``."""

    def __init__(
        self,
        all_calls: list[ToolCall],
        *,
        live: dict[str, Callable[..., Any]] | None = None,
        every_call_live: bool = False,
    ) -> None:
        self.all_calls = all_calls
        self.calls: list[ToolCall] = []
        self.next = 0
        self.missed: list[str] = []
        # Host tools: for every call (``every_call_live``), or only for the calls the
        # recording has no answer for.
        self.live = live
        self.every_call_live = every_call_live
        # Reads a pickled answer's blob (observed steps' answers are pickled).
        self.pickles: Callable[[str], bytes] | None = None

    def answer_for(self, calls: list[ToolCall]) -> None:
        """Answer the next step's calls from ``calls``."""
        self.calls, self.next, self.missed = list(calls), 0, []

    def stubs(self, names: Iterable[str]) -> list[Callable[..., Any]]:
        return [self._stub(name) for name in sorted(set(names))]

    def _stub(self, name: str) -> Callable[..., Any]:
        oracle = self

        def answer(*args: Any, **kwargs: Any) -> Any:
            return oracle._answer(name, answer, args, kwargs)

        answer.__name__ = answer.__qualname__ = name
        signature = self._signature(name)
        if signature is not None:
            answer.__signature__ = signature  # type: ignore[attr-defined]
        return answer

    def _signature(self, name: str) -> inspect.Signature | None:
        """The tool's signature as recorded (its parameters' names and kinds), so the
        replay's calls bind their arguments as the tool's did."""
        calls = [c for c in self.all_calls if c.name == name]
        recorded = next((c.parameters for c in calls if c.parameters is not None), None)
        if recorded is not None:
            params = []
            for param, kind in recorded:
                kind_ = getattr(inspect.Parameter, kind, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                variadic = kind in ("VAR_POSITIONAL", "VAR_KEYWORD")
                default = inspect.Parameter.empty if variadic else None
                params.append(inspect.Parameter(param, kind_, default=default))
            return inspect.Signature(params)
        names: dict[str, None] = {}
        for call in calls:  # a store from before parameters were recorded
            if isinstance(call.arguments, dict):
                names.update(dict.fromkeys(call.arguments))
        if "args" in names:
            return None
        keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
        return inspect.Signature([inspect.Parameter(p, keyword, default=None) for p in names])

    def _answer(
        self, name: str, stub: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        i = self.next
        self.next += 1
        host = (self.live or {}).get(name)
        if host is not None and self.every_call_live:
            return host(*args, **kwargs)
        recorded = self.calls[i] if i < len(self.calls) else None
        if recorded is None or not _same_call(recorded, name, bind_arguments(stub, args, kwargs)):
            if host is not None:
                return host(*args, **kwargs)
            shown = _shown_call(name, args, kwargs)
            self.missed.append(shown)
            where = (
                f"it recorded {len(self.calls)} calls"
                if recorded is None
                else f"call #{i} is {_shown_recorded(recorded)} in the recording"
            )
            raise ReplayToolError(f"no recorded answer for {shown}: {where}")
        if recorded.error is not None:
            raise _error_class(recorded.error.type, recorded.error.message)()
        if recorded.result_pickle is not None and self.pickles is not None:
            return Pickled(self.pickles(recorded.result_pickle), recorded.result)
        return recorded.result  # what the sandbox's code saw: JSON, in recorded order


@dataclass
class Plan:
    """Where a step's input comes from: the checkpoint of step ``start``'s input (None:
    an empty namespace) and the steps re-run after it (``start`` up to the target)."""

    start: int
    state: RawState | None
    legacy: dict[str, bytes] | None = None
    reasons: dict[str, str] = field(default_factory=dict)

    def rerun(self, target: int) -> range:
        return range(self.start, target)


def _checkpoint_state(recording: Recording, manifest: dict[str, Any]) -> RawState:
    point = manifest["checkpoint"]
    keys = dict(point.get("large", {}))
    large = {label: recording.need(key) for label, key in keys.items()}
    checkpoint = Checkpoint(
        point["digest"],
        data=recording.need(point["digest"]),
        large=large,
        files=point.get("files"),
        files_data=recording.blob(point.get("files")),
        name=point.get("name"),
        keys=keys,
    )
    variables = {
        name: RawVariable(v["type"], v["preview"], v["size"], v["digest"], None, v["reason"])
        for name, v in manifest["variables"].items()
    }
    return RawState(variables, manifest.get("modules", {}), manifest.get("tools", {}), checkpoint)


def _legacy_values(recording: Recording, before: dict[str, VariableSnapshot]) -> dict[str, bytes]:
    """A store written before checkpoints: each variable's own pickle."""
    digests = [snap.digest for snap in before.values() if snap.digest is not None]
    found = recording.store.blobs_of(digests)
    return {name: found[snap.digest] for name, snap in before.items() if snap.digest in found}


def _why_not(manifest: dict[str, Any] | None, step: Step) -> dict[str, str]:
    reasons = {
        name: snap.reason or "its value was not recorded"
        for name, snap in step.variables_before.items()
        if not snap.restorable
    }
    point = (manifest or {}).get("checkpoint") or {}
    if not reasons and point.get("reason"):
        reasons["(checkpoint)"] = point["reason"]
    return reasons


def plan(recording: Recording, target: int) -> Plan:
    """The latest usable checkpoint at or before ``target``."""
    step = recording.steps[target]
    reasons = _why_not(recording.manifest(step.state_before), step)
    for index in range(target, -1, -1):
        candidate = recording.steps.get(index)
        if candidate is None:
            break
        manifest = recording.manifest(candidate.state_before)
        if manifest is None:  # no state recorded: the code ran in a fresh namespace
            return Plan(index, None, reasons=reasons)
        if manifest.get("format") == 2:
            if manifest.get("complete"):
                return Plan(index, _checkpoint_state(recording, manifest), reasons=reasons)
        elif all(s.restorable for s in candidate.variables_before.values()):
            legacy = _legacy_values(recording, candidate.variables_before)
            if len(legacy) == len(candidate.variables_before):
                return Plan(index, None, legacy=legacy, reasons=reasons)
    return Plan(-1, None, reasons=reasons)


def restore(sandbox: Sandbox, chosen: Plan) -> dict[str, str]:
    """Load the plan's checkpoint; returns why variables could not be loaded."""
    if chosen.state is not None:
        sandbox.restore(chosen.state)
        return {}
    if chosen.legacy:
        return sandbox.send_pickled(chosen.legacy)
    return {}


def rebuild(
    sandbox: Sandbox, recording: Recording, chosen: Plan, target: int, oracle: ToolOracle
) -> list[str]:
    """Re-run the recorded steps between the checkpoint and ``target``; returns notes on
    anything that did not go as recorded."""
    notes: list[str] = []
    for index in chosen.rerun(target):
        step = recording.steps[index]
        oracle.answer_for(step.tool_calls)
        random_state = recording.blob(step.random_state)
        outcome = sandbox.execute(step.code, seed=step.random_seed, random_state=random_state)
        if outcome.status != step.status or oracle.missed:
            notes.append(
                f"re-running step {index} to rebuild the input went otherwise than recorded "
                f"({outcome.status}, recorded {step.status})"
            )
    return notes


def input_differences(
    sandbox: Sandbox, recorded: dict[str, VariableSnapshot]
) -> dict[str, tuple[VariableSnapshot | None, VariableSnapshot | None]]:
    """The variables whose rebuilt value differs from the step's recorded input."""
    rebuilt = sandbox.variables
    differing = {}
    for name in sorted(set(recorded) | set(rebuilt)):
        a, b = recorded.get(name), rebuilt.get(name)
        if a is None or b is None or variable_differs(a, b):
            differing[name] = (a, b)
    return differing
