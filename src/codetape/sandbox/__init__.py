"""The sandbox: runs code actions in a hardened Docker container (or, without isolation,
a local subprocess) with the agent's tools bridged to the host.

``Sandbox`` here executes code and returns an ``Outcome``; it records nothing.
``codetape.Sandbox`` is the same sandbox with each code action recorded as a step:
that is the one to give an agent. A value the code sends out (a final answer, a tool's
arguments) that has no safe encoding arrives as an ``OpaqueValue``: its repr, marked.

The names here are imported when first used: a process that records observed steps
(no sandbox) never loads the sandbox's protocol or the data models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..schemas import Limits, StepResult
    from ._backends import NoIsolationWarning
    from ._outcome import Outcome
    from ._sandbox import DEFAULT_IMAGE, Sandbox, default_image
    from ._values import OpaqueValue

_LAZY = {
    "DEFAULT_IMAGE": "._sandbox",
    "Limits": "..schemas",
    "NoIsolationWarning": "._backends",
    "OpaqueValue": "._values",
    "Outcome": "._outcome",
    "Sandbox": "._sandbox",
    "StepResult": "..schemas",
    "default_image": "._sandbox",
}

__all__ = [
    "DEFAULT_IMAGE",
    "Limits",
    "NoIsolationWarning",
    "OpaqueValue",
    "Outcome",
    "Sandbox",
    "StepResult",
    "default_image",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
