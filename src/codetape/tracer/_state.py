"""State snapshots: each variable of a step's namespace, cloudpickled into a blob.

Per-variable digests make an unchanged value cost its bytes once per store and make
state diffs a comparison of digests. A value that cannot be serialized is recorded by
type and repr with ``restorable=False``; it never stops the agent.
"""

from __future__ import annotations

import builtins
import json
import pickle
import reprlib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import cloudpickle

from .._format import PREVIEW_CHARS, cut
from ..sandbox.internal import PICKLE_PROTOCOL
from ..store.internal import BlobStore, digest_of
from ._redact import Redactor

__all__ = [
    "PICKLE_PROTOCOL",
    "SECRET_REASON",
    "Snapshotter",
    "State",
    "Variable",
    "preview",
    "type_name",
]

SECRET_REASON = "holds a secret, so its value was not stored (configure(redact=False) stores it)"
_IMMUTABLE = (bytes, str, int, float, complex, bool, frozenset, range, type(None))
# Scalars pickle the same with the C pickler, at a fraction of cloudpickle's set-up cost.
_SCALARS = frozenset({int, float, complex, bool, str, bytes, type(None)})


class _RedactingRepr(reprlib.Repr):
    """reprlib, but strings are redacted before they are shortened: shortening cuts
    out the middle, and a secret cut in two would match no pattern."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor
        self.maxstring = self.maxother = 200
        self.maxlist = self.maxtuple = self.maxset = self.maxdict = 12
        self.maxlevel = 3

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
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def preview(value: object, redactor: Redactor, limit: int = PREVIEW_CHARS) -> str:
    entry = _reprs.get(id(redactor))
    if entry is None or entry[0] is not redactor:
        entry = _reprs[id(redactor)] = (redactor, _RedactingRepr(redactor))
    try:
        if type(value) in _SCALARS and not isinstance(value, (str, bytes)):
            text = repr(value)
        else:
            text = entry[1].repr(value)
    except Exception as exc:  # a broken __repr__ is the user's, not ours to raise
        text = f"<{type_name(value)}: repr failed: {type(exc).__name__}>"
    return cut(redactor.text(text), limit)


def is_state(name: str, value: object) -> bool:
    """Modules, dunders and codetape tools are rebuilt on restore, so they are not state."""
    if name.startswith("__") or isinstance(value, types.ModuleType):
        return False
    return not getattr(value, "__codetape_tool__", False)


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
    """A snapshot of a namespace: the manifest (name → snapshot) and its blob digest."""

    variables: dict[str, Variable]
    digest: str
    # The objects seen, by name, so the next snapshot can tell what has not changed.
    ids: dict[str, int] = field(default_factory=dict, repr=False)
    _refs: dict[str, object] = field(default_factory=dict, repr=False)


class Snapshotter:
    """Snapshots namespaces for one run, writing each value to the blob store once."""

    def __init__(self, blobs: BlobStore, redactor: Redactor) -> None:
        self._blobs = blobs
        self._redactor = redactor
        # Immutable values cannot change under us: pickle them once per run. The
        # cache holds the object itself so its id cannot be reused by another one.
        self._immutable: dict[int, tuple[object, Variable]] = {}

    def manifest(self, variables: Mapping[str, Variable]) -> str:
        body = {name: var._asdict() for name, var in sorted(variables.items())}
        return self._blobs.put(json.dumps(body, separators=(",", ":")).encode())

    def snapshot(self, namespace: Mapping[str, Any], previous: State | None = None) -> State:
        """Snapshot ``namespace``, taking from ``previous`` what cannot have changed.

        A value that is still the same object as in ``previous`` is taken from it when
        it is immutable. Mutable values are pickled again: the host may have changed them
        in place between two steps, and a "before" state must be the real input, or a
        replay would start from the wrong one. Equal bytes still get one blob.
        """
        items = {k: v for k, v in list(namespace.items()) if is_state(k, v)}
        ids = {k: id(v) for k, v in items.items()}
        variables: dict[str, Variable] = {}
        for name, value in items.items():
            old = previous.variables.get(name) if previous is not None else None
            if (
                old is not None
                and previous is not None
                and previous.ids.get(name) == ids[name]
                and isinstance(value, _IMMUTABLE)
            ):
                variables[name] = old
            else:
                variables[name] = self._variable(value, old)
        if previous is not None and variables == previous.variables:
            return previous
        return State(variables, self.manifest(variables), ids, items)

    def _variable(self, value: object, old: Variable | None = None) -> Variable:
        cached = self._immutable.get(id(value))
        if cached is not None and cached[0] is value:
            return cached[1]
        snap = self._serialize(value, old)
        if isinstance(value, _IMMUTABLE):
            self._immutable[id(value)] = (value, snap)
        return snap

    def _serialize(self, value: object, old: Variable | None = None) -> Variable:
        kind = type_name(value)
        try:
            if type(value) in _SCALARS:
                data = pickle.dumps(value, protocol=PICKLE_PROTOCOL)
            else:
                data = cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL)
        except Exception as exc:
            reason = f"cannot be serialized: {type(exc).__name__}: {exc}"
            shown = preview(value, self._redactor)
            return Variable(kind, None, 0, shown, False, cut(self._redactor.text(reason)))
        digest = digest_of(data)
        if old is not None and old.digest == digest and old.type == kind:
            # The same bytes as last time: the same value, preview and verdict.
            return old
        shown = preview(value, self._redactor)
        if self._redactor.contains_secret(data):
            return Variable(kind, None, len(data), shown, False, SECRET_REASON)
        return Variable(kind, self._blobs.put(data, digest), len(data), shown, True)
