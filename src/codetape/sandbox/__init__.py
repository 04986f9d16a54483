"""The sandbox: runs code actions in a hardened Docker container (or, without isolation,
a local subprocess) with the agent's tools bridged to the host.

``Sandbox`` here executes code and returns an ``Outcome``; it records nothing.
``codetape.Sandbox`` is the same sandbox with each code action recorded as a step:
that is the one to give an agent. A value the code sends out (a final answer, a tool's
arguments) that has no safe encoding arrives as an ``OpaqueValue``: its repr, marked.
"""

from __future__ import annotations

from ..schemas import Limits, StepResult
from ._backends import NoIsolationWarning
from ._outcome import Outcome
from ._sandbox import DEFAULT_IMAGE, Sandbox, default_image
from ._values import OpaqueValue

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
