"""The sandbox: runs code actions in a hardened Docker container (or, without isolation,
a local subprocess) with the agent's tools bridged to the host."""

from __future__ import annotations

from ..schemas import Limits, StepResult
from ._backends import LABEL, NoIsolationWarning
from ._sandbox import DEFAULT_IMAGE, Sandbox, default_image

__all__ = [
    "DEFAULT_IMAGE",
    "LABEL",
    "Limits",
    "NoIsolationWarning",
    "Sandbox",
    "StepResult",
    "default_image",
]
