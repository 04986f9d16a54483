"""codetape's data models and span attribute names.

The models are imported when first used: a process that only records needs the
attribute names alone, not pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names
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


_MODELS = {
    name: "._literals" if name in _LITERALS else "._models"
    for name in __all__
    if name != "attributes"
}
__getattr__, __dir__ = lazy_names(__name__, _MODELS, globals(), __all__)
