"""State snapshots: each variable of a step's namespace, cloudpickled into a blob.

Per-variable digests make an unchanged value cost its bytes once per store and make
state diffs a comparison of digests. A value that cannot be serialized is recorded by
type and repr with ``restorable=False``; it never stops the agent.
"""

from __future__ import annotations

import json
import reprlib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from ..schemas import VariableSnapshot
from ..store import BlobStore, digest_of
from ._redact import Redactor

__all__ = ["PREVIEW_CHARS", "Snapshotter", "State", "preview", "type_name"]

PREVIEW_CHARS = 300
_IMMUTABLE = (bytes, str, int, float, complex, bool, frozenset, range, type(None))

_repr = reprlib.Repr()
_repr.maxstring = 200
_repr.maxother = 200
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxdict = 12
_repr.maxlevel = 3


def type_name(value: object) -> str:
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def preview(value: object, redactor: Redactor, limit: int = PREVIEW_CHARS) -> str:
    try:
        text = _repr.repr(value)
    except Exception as exc:  # a broken __repr__ is the user's, not ours to raise
        text = f"<{type_name(value)}: repr failed: {type(exc).__name__}>"
    text = redactor.text(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_state(name: str, value: object) -> bool:
    """Modules, dunders and codetape tools are rebuilt on restore, so they are not state."""
    if name.startswith("__") or isinstance(value, types.ModuleType):
        return False
    return not getattr(value, "__codetape_tool__", False)


@dataclass
class State:
    """A snapshot of a namespace: the manifest (name → snapshot) and its blob digest."""

    variables: dict[str, VariableSnapshot]
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
        self._immutable: dict[int, tuple[object, VariableSnapshot]] = {}

    def manifest(self, variables: Mapping[str, VariableSnapshot]) -> str:
        body = {
            name: snap.model_dump(exclude={"name"}) for name, snap in sorted(variables.items())
        }
        return self._blobs.put(json.dumps(body, separators=(",", ":")).encode())

    def snapshot(self, namespace: Mapping[str, Any], previous: State | None = None) -> State:
        """Snapshot ``namespace``; reuse ``previous`` when it holds exactly the same
        objects (the namespace between two steps is then snapshotted once, not twice)."""
        items = {k: v for k, v in list(namespace.items()) if is_state(k, v)}
        ids = {k: id(v) for k, v in items.items()}
        if previous is not None and previous.ids == ids:
            return previous
        variables = {name: self._variable(name, value) for name, value in items.items()}
        return State(variables, self.manifest(variables), ids, items)

    def _variable(self, name: str, value: object) -> VariableSnapshot:
        cached = self._immutable.get(id(value))
        if cached is not None and cached[0] is value:
            return cached[1].model_copy(update={"name": name})
        snap = self._serialize(name, value)
        if isinstance(value, _IMMUTABLE):
            self._immutable[id(value)] = (value, snap)
        return snap

    def _serialize(self, name: str, value: object) -> VariableSnapshot:
        kind = type_name(value)
        shown = preview(value, self._redactor)
        try:
            data = cloudpickle.dumps(value, protocol=5)
        except Exception as exc:
            reason = f"cannot be serialized: {type(exc).__name__}: {exc}"
            return VariableSnapshot(
                name=name, type=kind, digest=None, size=0, preview=shown, restorable=False,
                reason=self._redactor.text(reason)[:300],
            )
        if self._redactor.contains_secret(data):
            return VariableSnapshot(
                name=name, type=kind, digest=None, size=len(data), preview=shown,
                restorable=False,
                reason="holds a secret, so its value was not stored (configure(redact=False) "
                "stores it)",
            )
        digest = self._blobs.put(data, digest_of(data))
        return VariableSnapshot(
            name=name, type=kind, digest=digest, size=len(data), preview=shown, restorable=True
        )
