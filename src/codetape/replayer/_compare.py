"""Comparing a replayed step with its recording, field by field."""

from __future__ import annotations

import json
import re
from typing import Any

from .._format import DIFFERENCE_CHARS, cut
from ..schemas import Difference, ErrorInfo, Step, ToolCall, VariableSnapshot

__all__ = ["compare_steps", "normalize_json", "variable_differs"]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
# Values whose pickles embed where they were defined: equal by name, not by bytes.
_SET_TYPES = frozenset({"set", "frozenset"})
_CODE_TYPES = frozenset({"function", "type", "method", "builtin_function_or_method", "ABCMeta"})


def normalize_json(value: Any) -> Any:
    """Tuples and lists, int keys and str keys: what a JSON round trip makes equal."""
    return json.loads(json.dumps(value, default=repr, sort_keys=True))


def _error(error: ErrorInfo | None) -> dict[str, str] | None:
    return None if error is None else {"type": error.type, "message": error.message}


def variable_differs(a: VariableSnapshot, b: VariableSnapshot) -> bool:
    if a.digest is not None and a.digest == b.digest:
        return False
    if a.type != b.type:
        return True
    if a.type in _SET_TYPES and a.preview == b.preview and "..." not in a.preview:
        # A set pickles in its table order, which a restored copy need not share; its
        # preview lists every element, sorted, so equal previews mean equal sets.
        return False
    if a.type in _CODE_TYPES or (a.digest is None or b.digest is None):
        # Functions and classes pickle with where they were made; unstored values
        # have only a preview. Compare what can be compared: the shown value.
        return _ADDRESS.sub("", a.preview) != _ADDRESS.sub("", b.preview)
    return True


def shown(snap: VariableSnapshot | None) -> dict[str, Any] | None:
    if snap is None:
        return None
    return {"type": snap.type, "preview": snap.preview, "digest": snap.digest}


def _call(call: ToolCall | None) -> dict[str, Any] | None:
    if call is None:
        return None
    return {"name": call.name, "arguments": normalize_json(call.arguments)}


def compare_steps(recorded: Step, replayed: Step) -> list[Difference]:
    """Every field in which ``replayed`` differs from ``recorded``, in a stable order."""
    diffs: list[Difference] = []
    if recorded.status != replayed.status:
        diffs.append(Difference(field="status", recorded=recorded.status, replayed=replayed.status))
    for field in ("stdout", "stderr"):
        old, new = getattr(recorded, field), getattr(replayed, field)
        if old != new:
            diffs.append(
                Difference(
                    field=field,
                    recorded=cut(old, DIFFERENCE_CHARS),
                    replayed=cut(new, DIFFERENCE_CHARS),
                )
            )
    if recorded.result != replayed.result:
        diffs.append(Difference(field="result", recorded=recorded.result, replayed=replayed.result))
    if _error(recorded.error) != _error(replayed.error):
        diffs.append(
            Difference(
                field="error", recorded=_error(recorded.error), replayed=_error(replayed.error)
            )
        )
    before, after = recorded.variables_after, replayed.variables_after
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a is None or b is None or variable_differs(a, b):
            diffs.append(Difference(field=f"variable:{name}", recorded=shown(a), replayed=shown(b)))
    old_calls, new_calls = recorded.tool_calls, replayed.tool_calls
    for i in range(max(len(old_calls), len(new_calls))):
        a_call = old_calls[i] if i < len(old_calls) else None
        b_call = new_calls[i] if i < len(new_calls) else None
        if _call(a_call) != _call(b_call):
            diffs.append(
                Difference(field=f"tool_call:{i}", recorded=_call(a_call), replayed=_call(b_call))
            )
    return diffs
