"""codetape's data models and span attribute names."""

from __future__ import annotations

from . import attributes
from ._models import (
    ErrorInfo,
    Limits,
    Run,
    RunDetail,
    RunStatus,
    SandboxSpec,
    Step,
    StepResult,
    StepStatus,
    ToolCall,
    VariableSnapshot,
)

__all__ = [
    "ErrorInfo",
    "Limits",
    "Run",
    "RunDetail",
    "RunStatus",
    "SandboxSpec",
    "Step",
    "StepResult",
    "StepStatus",
    "ToolCall",
    "VariableSnapshot",
    "attributes",
]
