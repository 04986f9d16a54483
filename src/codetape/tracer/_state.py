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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import cloudpickle

from .._format import PREVIEW_CHARS, cut
from ..sandbox.internal import (
    PICKLE_PROTOCOL,
    Checkpoint,
    RawState,
    StateSnapshotter,
    mask_addresses,
    qualified_name,
    state_codec,
)
from ..store.internal import BlobStore, digest_of
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
    "type_name",
]

MANIFEST_FORMAT = 2
SECRET_REASON = "holds a secret, so its value was not stored (configure(redact=False) stores it)"
_CHECKPOINT_SECRET = (
    "a variable holds a secret, so the checkpoint was not stored; replay rebuilds this "
    "state by re-running the steps before it"
)
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


@dataclass
class State:
    """A recorded state: its variables (name → variable) and the digest of its manifest
    blob, which also names its checkpoint."""

    variables: dict[str, Variable]
    digest: str


class StateRecorder:
    """Turns snapshots of one namespace into recorded states, writing each blob once.

    A snapshot carries a value's bytes only the first time its fingerprint is seen, so
    the secret verdict of a fingerprint is kept for the snapshots after.
    """

    def __init__(self, blobs: BlobStore, redactor: Redactor) -> None:
        self._blobs = blobs
        self._redactor = redactor
        self._secret: dict[str, bool] = {}
        self._stored: set[str] = set()  # checkpoints written by this recorder
        # The variables recorded so far, by what the snapshot said of them.
        self._seen: dict[tuple[str, str, str | None, str | None], Variable] = {}

    def record(self, raw: RawState, previous: State | None = None) -> State:
        variables = {name: self._variable(var) for name, var in raw.variables.items()}
        checkpoint, complete = self._checkpoint(raw, variables)
        body: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "variables": {name: var._asdict() for name, var in sorted(variables.items())},
            "modules": dict(sorted(raw.modules.items())),
            "tools": dict(sorted(raw.tools.items())),
            "checkpoint": checkpoint,
            "complete": complete,
        }
        encoded = json.dumps(body, separators=(",", ":")).encode()
        digest = digest_of(encoded)
        if previous is not None and previous.digest == digest:
            return previous
        self._blobs.put(encoded, digest)
        return State(variables, digest)

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
            self._secret[var.digest] = self._redactor.contains_secret(var.data)
        if self._secret.get(var.digest, True):  # a secret, or bytes never seen
            return Variable(var.type, None, var.size, shown, False, SECRET_REASON)
        return Variable(var.type, var.digest, var.size, shown, True)

    def _checkpoint(
        self, raw: RawState, variables: Mapping[str, Variable]
    ) -> tuple[dict[str, Any], bool]:
        point: Checkpoint = raw.checkpoint
        record: dict[str, Any] = {
            "digest": None,
            "large": dict(sorted(point.keys.items())),
            "files": None,
            "name": point.name,
            "reason": point.reason,
        }
        if point.digest is None:
            return record, False
        if any(var.reason == SECRET_REASON for var in variables.values()):
            record["reason"] = _CHECKPOINT_SECRET
            return record, False
        if point.digest not in self._stored:
            # A checkpoint seen before comes without its bytes: it is stored already.
            if point.data is None:
                record["reason"] = "the checkpoint's bytes were not received"
                return record, False
            if any(
                data is not None and self._redactor.contains_secret(data)
                for data in (point.data, point.files_data)
            ):
                record["reason"] = _CHECKPOINT_SECRET
                return record, False
            missing = [
                label
                for label, key in point.keys.items()
                if label not in point.large and key not in self._stored
            ]
            if missing:
                record["reason"] = f"the large value {missing[0]} was not received"
                return record, False
            self._blobs.put(point.data, digest_of(point.data))
            for label, data in point.large.items():
                key = point.keys[label]
                if key not in self._stored:
                    self._blobs.put(data, digest_of(data))
                    self._stored.add(key)
            if point.files_data is not None:
                self._blobs.put(point.files_data, digest_of(point.files_data))
            self._stored.add(point.digest)
        record["digest"] = point.digest
        record["files"] = point.files
        complete = point.reason is None and all(v.restorable for v in variables.values())
        return record, complete


class Snapshotter:
    """Snapshots an observed namespace (in this process) for one run."""

    def __init__(self, blobs: BlobStore, redactor: Redactor) -> None:
        self._recorder = StateRecorder(blobs, redactor)
        self._snapshots = StateSnapshotter(state_codec.Codec(cloudpickle), _RedactingRepr(redactor))

    def snapshot(
        self,
        namespace: Mapping[str, Any] | Iterable[tuple[str, Any]],
        previous: State | None = None,
    ) -> State:
        items = list(namespace.items()) if isinstance(namespace, Mapping) else list(namespace)
        name = dict(items).get("__name__")
        taken = self._snapshots.take(items, name if isinstance(name, str) else None)
        return self._recorder.record(RawState.from_snapshot(taken), previous)
