"""State snapshots: each variable's fingerprint and preview, and a checkpoint of the
whole namespace that keeps its object graph, stored as blobs.

The sandbox takes its snapshots in the runner; an observed step's namespace is taken
here, in the agent's process, with the same state codec, so a value has one
fingerprint either way. This module turns a snapshot into a recorded state: previews
redacted and shortened, values holding a secret kept out of the store, the checkpoint
and its large values written as blobs, and the manifest (``codetape.state.*``) that
names them. Nothing here ever stops the agent.
"""

from __future__ import annotations

import builtins
import json
import reprlib
import sys
import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import cloudpickle

from .._format import PREVIEW_CHARS, cut
from ..sandbox.internal import (
    PICKLE_PROTOCOL,
    Checkpoint,
    RawState,
    RawVariable,
    StateSnapshotter,
    mask_addresses,
    qualified_name,
    state_codec,
)
from ..store.internal import BlobStore, digest_of
from ._changes import flat, probe
from ._reach import reach_of, user_code
from ._redact import Redactor

__all__ = [
    "MANIFEST_FORMAT",
    "PICKLE_PROTOCOL",
    "SECRET_REASON",
    "Snapshotter",
    "State",
    "StateRecorder",
    "Variable",
    "preview",
    "release_snapshotter",
    "snapshotter_for",
    "type_name",
]

MANIFEST_FORMAT = 2
SECRET_REASON = "holds a secret, so its value was not stored (configure(redact=False) stores it)"
# A value at least this large (its pickle) is its own blob in checkpoints, so a step
# that changes another variable does not pickle it again.
LARGE_VALUE = 64 * 1024
_CHECKPOINT_SECRET = (
    "a variable holds a secret, so the checkpoint was not stored; replay rebuilds this "
    "state by re-running the steps before it"
)
_NUMBERS = frozenset({"int", "float", "complex", "bool", "NoneType"})
_SMALL_PICKLE = 24
# Scalars' reprs are their values: no reprlib needed.
_SCALARS = frozenset({int, float, complex, bool, type(None)})


class _RedactingRepr(reprlib.Repr):
    """reprlib, but strings are redacted before they are shortened: shortening cuts
    out the middle, and a secret cut in two would match no pattern."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor
        # The same limits as the state codec's repr, so a preview taken here reads as
        # one taken in a sandbox (both are redacted and shortened afterwards).
        for name, value in vars(state_codec.make_repr()).items():
            setattr(self, name, value)

    def repr_str(self, x: str, level: int) -> str:
        return super().repr_str(self.redactor.text(x), level)

    def repr_instance(self, x: object, level: int) -> str:
        # reprlib shortens an object's full repr; redact it before that cut.
        try:
            text = self.redactor.text(builtins.repr(x))
        except Exception:
            return f"<{type(x).__name__} instance at {id(x):#x}>"
        if len(text) > self.maxother:
            half = max(0, (self.maxother - 3) // 2)
            text = text[:half] + "..." + text[len(text) - (self.maxother - 3 - half) :]
        return text


_reprs: dict[int, tuple[Redactor, _RedactingRepr]] = {}


def type_name(value: object) -> str:
    """The qualified name of ``value``'s type, as recorded and as replayed."""
    return str(qualified_name(type(value)))


def preview(value: object, redactor: Redactor, limit: int = PREVIEW_CHARS) -> str:
    entry = _reprs.get(id(redactor))
    if entry is None or entry[0] is not redactor:
        entry = _reprs[id(redactor)] = (redactor, _RedactingRepr(redactor))
    try:
        text = repr(value) if type(value) in _SCALARS else entry[1].repr(value)
    except Exception as exc:  # a broken __repr__ is the user's, not ours to raise
        text = f"<{type_name(value)}: repr failed: {type(exc).__name__}>"
    return cut(redactor.text(mask_addresses(text)), limit)


class Variable(NamedTuple):
    """One variable as the manifest records it (``VariableSnapshot`` when read back).

    A plain tuple on the recording path: it is built for every variable of every step.
    """

    type: str
    digest: str | None
    size: int
    preview: str
    restorable: bool
    reason: str | None = None


@dataclass(slots=True)
class State:
    """A recorded state: its variables (name → variable) and the digest of its manifest
    blob, which also names its checkpoint."""

    variables: dict[str, Variable]
    digest: str


class StateRecorder:
    """Turns snapshots of one namespace into recorded states, writing each blob once.

    A snapshot carries a value's bytes only the first time its fingerprint is seen, so
    the secret verdict of a fingerprint is kept for the snapshots after. Each
    variable's part of the manifest is kept too: a step that changes one variable of
    three hundred encodes one.
    """

    def __init__(self, blobs: BlobStore, redactor: Redactor) -> None:
        self._blobs = blobs
        self._redactor = redactor
        self._secret: dict[str, bool] = {}
        self._stored: set[str] = set()  # checkpoints written by this recorder
        # The variables recorded so far, by what the snapshot said of them.
        self._seen: dict[tuple[str, str, str | None, str | None], Variable] = {}
        # name -> (the snapshot's record it came from, the variable, its manifest JSON)
        self._parts: dict[str, tuple[dict[str, Any], Variable, str]] = {}
        self._order: tuple[tuple[str, ...], list[str]] = ((), [])
        self._bindings: tuple[tuple[object, object], tuple[str, str]] = ((None, None), ("", ""))

    def record(self, raw: RawState, previous: State | None = None) -> State:
        variables = {name: self._variable(var) for name, var in raw.variables.items()}
        parts = {name: _part(name, var) for name, var in variables.items()}
        return self._state(variables, parts, raw.modules, raw.tools, raw.checkpoint, previous)

    def record_taken(self, taken: Mapping[str, Any], previous: State | None = None) -> State:
        """A state from the state codec's snapshot taken in this process."""
        data: Mapping[str, bytes] = taken["data"]
        variables: dict[str, Variable] = {}
        parts: dict[str, str] = {}
        for name, var in taken["variables"].items():
            known = self._parts.get(name)
            if known is None or known[0] is not var or var["digest"] in data:
                variable = self._number(var, data) or self._variable(
                    RawVariable(
                        var["type"],
                        var["preview"],
                        var["size"],
                        var["digest"],
                        data.get(var["digest"]),
                        var["reason"],
                    )
                )
                known = self._parts[name] = (var, variable, _part(name, variable))
            variables[name] = known[1]
            parts[name] = known[2]
        if len(self._parts) > 2 * len(variables) + 64:
            self._parts = {n: self._parts[n] for n in variables}
        point = _checkpoint_of(taken["checkpoint"], data)
        return self._state(variables, parts, taken["modules"], taken["tools"], point, previous)

    def _state(
        self,
        variables: dict[str, Variable],
        parts: Mapping[str, str],
        modules: Mapping[str, str],
        tools: Mapping[str, str],
        point: Checkpoint,
        previous: State | None,
    ) -> State:
        checkpoint, complete = self._checkpoint(point, variables)
        modules_json, tools_json = self._bindings_json(modules, tools)
        # The manifest's JSON, as json.dumps(body, separators=(",", ":")) writes it.
        variables_json = ",".join([parts[name] for name in self._sorted(parts)])
        encoded = (
            f'{{"format":{MANIFEST_FORMAT},"variables":{{{variables_json}}},'
            f'"modules":{modules_json},"tools":{tools_json},'
            f'"checkpoint":{_checkpoint_json(checkpoint)},'
            f'"complete":{"true" if complete else "false"}}}'
        ).encode()
        digest = digest_of(encoded)
        if previous is not None and previous.digest == digest:
            return previous
        self._blobs.put(encoded, digest)
        return State(variables, digest)

    def _bindings_json(
        self, modules: Mapping[str, str], tools: Mapping[str, str]
    ) -> tuple[str, str]:
        if self._bindings[0] != (modules, tools):
            self._bindings = (
                (dict(modules), dict(tools)),
                (_json(dict(sorted(modules.items()))), _json(dict(sorted(tools.items())))),
            )
        return self._bindings[1]

    def _sorted(self, names: Mapping[str, object]) -> list[str]:
        order = tuple(names)
        if order != self._order[0]:
            self._order = (order, sorted(order))
        return self._order[1]

    def _variable(self, var: Any) -> Variable:
        key = (var.type, var.preview, var.digest, var.reason)
        known = self._seen.get(key)
        if known is not None and var.data is None:
            return known  # an unchanged value: its preview was redacted already
        variable = self._describe(var)
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[key] = variable
        return variable

    def _describe(self, var: Any) -> Variable:
        redact = self._redactor.text
        shown = cut(redact(var.preview), PREVIEW_CHARS)
        if var.digest is None or var.reason is not None:
            reason = cut(redact(var.reason or "its value was not recorded"), PREVIEW_CHARS)
            return Variable(var.type, var.digest, var.size, shown, False, reason)
        if var.data is not None and var.digest not in self._secret:
            if len(self._secret) > 100_000:
                self._secret.clear()
            self._secret[var.digest] = self._holds_secret(var.type, var.data)
        if self._secret.get(var.digest, True):  # a secret, or bytes never seen
            return Variable(var.type, None, var.size, shown, False, SECRET_REASON)
        return Variable(var.type, var.digest, var.size, shown, True)

    def _number(self, var: Mapping[str, Any], data: Mapping[str, bytes]) -> Variable | None:
        """A number just described (its pickle a few bytes, its preview its digits), as
        ``_describe`` records it: its preview and bytes checked against the
        environment's secret values only; None for anything else."""
        kind, digest, pickled = var["type"], var["digest"], data.get(var["digest"])
        if kind not in _NUMBERS or pickled is None or len(pickled) > _SMALL_PICKLE:
            return None
        if var["reason"] is not None or self._redactor.contains_env_value(pickled):
            return None
        shown = self._redactor.text(var["preview"])
        if len(shown) > PREVIEW_CHARS:
            return None
        self._secret[digest] = False
        return Variable(kind, digest, var["size"], shown, True)

    def _holds_secret(self, kind: str, data: bytes) -> bool:
        """Whether a value's pickle holds a secret. A number's (a few bytes, no text) can
        only hold the bytes of a secret environment value."""
        if kind in _NUMBERS and len(data) <= _SMALL_PICKLE:
            return self._redactor.contains_env_value(data)
        return self._redactor.contains_secret(data)

    def _checkpoint(
        self, point: Checkpoint, variables: Mapping[str, Variable]
    ) -> tuple[dict[str, Any], bool]:
        record: dict[str, Any] = {
            "digest": None,
            "large": dict(sorted(point.keys.items())),
            "files": None,
            "name": point.name,
            "reason": point.reason,
        }
        if point.digest is None:
            return record, False
        restorable = True
        for var in variables.values():
            if var.reason == SECRET_REASON:
                record["reason"] = _CHECKPOINT_SECRET
                return record, False
            restorable = restorable and var.restorable
        if point.digest not in self._stored:
            reason = self._store_checkpoint(point)
            if reason is not None:
                record["reason"] = reason
                return record, False
        record["digest"] = point.digest
        record["files"] = point.files
        return record, point.reason is None and restorable

    def _store_checkpoint(self, point: Checkpoint) -> str | None:
        """Write a checkpoint seen for the first time, and its large values; or say why
        it cannot be (a checkpoint seen before comes without its bytes)."""
        if point.data is None:
            return "the checkpoint's bytes were not received"
        contains_secret = self._redactor.contains_secret
        if contains_secret(point.data) or (
            point.files_data is not None and contains_secret(point.files_data)
        ):
            return _CHECKPOINT_SECRET
        for label, key in point.keys.items():
            if label not in point.large and key not in self._stored:
                return f"the large value {label} was not received"
        self._blobs.put(point.data, digest_of(point.data))
        for label, data in point.large.items():
            key = point.keys[label]
            if key not in self._stored:
                self._blobs.put(data, digest_of(data))
                self._stored.add(key)
        if point.files_data is not None:
            self._blobs.put(point.files_data, digest_of(point.files_data))
        self._stored.add(point.digest)  # type: ignore[arg-type]
        return None


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


_string = json.encoder.encode_basestring_ascii  # what json.dumps(str) writes


def _optional(text: str | None) -> str:
    return "null" if text is None else _string(text)


def _part(name: str, variable: Variable) -> str:
    """A variable's entry in the manifest's JSON, as ``json.dumps`` writes it."""
    return (
        f'{_string(name)}:{{"type":{_string(variable.type)},"digest":{_optional(variable.digest)},'
        f'"size":{variable.size:d},"preview":{_string(variable.preview)},'
        f'"restorable":{"true" if variable.restorable else "false"},'
        f'"reason":{_optional(variable.reason)}}}'
    )


def _checkpoint_json(record: Mapping[str, Any]) -> str:
    """A manifest's checkpoint record, as ``json.dumps`` writes it."""
    large = record["large"]
    return (
        f'{{"digest":{_optional(record["digest"])},'
        f'"large":{_json(large) if large else "{}"},"files":{_optional(record["files"])},'
        f'"name":{_optional(record["name"])},"reason":{_optional(record["reason"])}}}'
    )


def _checkpoint_of(point: Mapping[str, Any], data: Mapping[str, bytes]) -> Checkpoint:
    """The codec's checkpoint record as a ``Checkpoint`` (``RawState.from_snapshot``'s)."""
    keys = point.get("large") or {}
    large: dict[str, bytes] = {}
    if keys:
        pool = {**data, **point.get("blobs", {})}
        large = {label: pool[key] for label, key in keys.items() if key in pool}
    return Checkpoint(
        point.get("digest"),
        data=point.get("data"),
        large=large,
        reason=point.get("reason"),
        name=point.get("name"),
        keys=dict(keys),
    )


_codecs: list[state_codec.Codec] = []


def _codec() -> state_codec.Codec:
    """The process's state codec (it keeps nothing between snapshots: runs share it)."""
    if not _codecs:
        _codecs.append(state_codec.Codec(cloudpickle))
    return _codecs[0]


def _refs(namespace: Mapping[str, Any], name: str) -> int:
    value = namespace.get(name)
    return sys.getrefcount(value)


def _calibrate() -> int:
    """What ``_refs`` counts for a value only its namespace and the snapshotter's
    memo refer to (the interpreter's own bookkeeping differs between versions)."""
    namespace: dict[str, Any] = {"probe": []}
    memo = (namespace["probe"],)
    refs = _refs(namespace, "probe")
    del memo
    return refs


_PRIVATE_REFS = _calibrate()
# How many objects a step's values are searched through for the functions a call the
# code analysis cannot name may run, before every variable is checked instead.
_SEARCH_BUDGET = 20_000


class Snapshotter:
    """Snapshots an observed namespace (in this process) for one run.

    A variable is described again only when it may have changed: before a step, when
    its change check fails or it has none (the agent's loop may have changed it in
    place); after the step, also not when the step could not have reached it: the
    step's code and the functions it can run never name it (``_reach``), and nothing
    but the namespace refers to its value.
    """

    def __init__(self, blobs: BlobStore, redactor: Redactor) -> None:
        self.blobs, self.redactor = blobs, redactor
        self._recorder = StateRecorder(blobs, redactor)
        self._snapshots = StateSnapshotter(_codec(), _RedactingRepr(redactor), probe, LARGE_VALUE)
        self._last: State | None = None

    def snapshot(
        self,
        namespace: Mapping[str, Any] | Iterable[tuple[str, Any]],
        previous: State | None = None,
        *,
        code: str | None = None,
        owner: object = None,
    ) -> State:
        """The state of ``namespace``. ``code``: the code of the step that just ran in
        it (its variables then need no second look where the step cannot have changed
        them); ``owner``: what stands for the namespace across runs (the namespace)."""
        unchanged: Collection[str] = ()
        if isinstance(namespace, Mapping):
            if code is not None:
                owner = namespace if owner is None else owner
                unchanged = self._untouched(namespace, code, owner)
            items, name = list(namespace.items()), namespace.get("__name__")
        else:
            items = list(namespace)
            name = dict(items).get("__name__")
        taken = self._snapshots.take(
            items, name if isinstance(name, str) else None, unchanged=unchanged
        )
        del items
        if not taken["changed"] and self._last is not None:
            return self._last
        self._last = self._recorder.record_taken(taken, previous)
        return self._last

    def _untouched(self, namespace: Mapping[str, Any], code: str, owner: object) -> list[str]:
        """The variables the step that ran ``code`` cannot have changed, among those
        whose values have a change check and were not described again since."""
        reach = reach_of(code)
        user = user_code(owner)
        user.add(reach)
        memo = self._snapshots.memo
        opaque = [entry[0] for entry in memo.values() if entry[3] is None]
        user.scan((v for value in opaque for v in (value, type(value))), namespace)
        if reach.hidden_calls and not user.search(opaque, namespace, _SEARCH_BUDGET):
            return []
        del opaque
        if reach.dynamic or user.dynamic:
            return []
        touched, used = reach.names, user.names
        found = []
        for key, entry in memo.items():
            check = entry[3]
            if not flat(check) or key in touched or key in used:
                continue
            if _refs(namespace, key) == _PRIVATE_REFS:
                found.append(key)
        return found


# The snapshotter of the run that ended last, for the next run that records into the
# same blobs with the same redaction. An agent's namespace outlives its runs (smolagents
# keeps its executor's variables from one run to the next), so a run's first snapshot
# would otherwise describe, preview, redact and store again every value the last run
# left, and write a checkpoint equal to the last one. With the last run's snapshotter,
# those values are checked as between two steps (every check that catches a change
# the host made between steps holds between runs too), and an unchanged namespace is
# the last run's final state. Runs at the same time each have their own.
_spare: Snapshotter | None = None
_spare_lock = threading.Lock()


def snapshotter_for(blobs: BlobStore, redactor: Redactor) -> Snapshotter:
    """A snapshotter for a run that starts: the last ended run's, when it recorded into
    ``blobs`` with ``redactor``, else a new one."""
    global _spare
    with _spare_lock:
        spare, _spare = _spare, None
    if spare is not None and spare.blobs is blobs and spare.redactor is redactor:
        return spare
    return Snapshotter(blobs, redactor)


def release_snapshotter(snapshotter: Snapshotter) -> None:
    """``snapshotter``'s run has ended: the next run may take it."""
    global _spare
    with _spare_lock:
        _spare = snapshotter
