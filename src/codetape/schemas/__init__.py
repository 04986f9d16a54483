"""codetape's data models and span attribute names.

The models are imported when first used: a process that only records needs the
attribute names alone, not pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import attributes

if TYPE_CHECKING:
    from ._literals import RunStatus, StepStatus, Verdict
    from ._models import (
        Difference,
        ErrorInfo,
        FailureGroup,
        Limits,
        LlmCall,
        LlmMessage,
        ReplayReport,
        Run,
        RunDetail,
        RunDiff,
        SandboxSpec,
        Step,
        StepPair,
        StepResult,
        ToolCall,
        VariableChange,
        VariableSnapshot,
    )

__all__ = [
    "Difference",
    "ErrorInfo",
    "FailureGroup",
    "Limits",
    "LlmCall",
    "LlmMessage",
    "ReplayReport",
    "Run",
    "RunDetail",
    "RunDiff",
    "RunStatus",
    "SandboxSpec",
    "Step",
    "StepPair",
    "StepResult",
    "StepStatus",
    "ToolCall",
    "VariableChange",
    "VariableSnapshot",
    "Verdict",
    "attributes",
]


_LITERALS = {"RunStatus", "StepStatus", "Verdict"}


def __getattr__(name: str) -> Any:
    if name in __all__:
        module = "._literals" if name in _LITERALS else "._models"
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
