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

from typing import TYPE_CHECKING

from .._lazy import lazy_names

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


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals(), __all__)
