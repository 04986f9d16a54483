"""codetape's data models and span attribute names."""

from __future__ import annotations

from . import attributes
from ._models import (
    ErrorInfo,
    Run,
    RunDetail,
    RunStatus,
    SandboxSpec,
    Step,
    StepStatus,
    ToolCall,
    VariableSnapshot,
)

__all__ = [
    "ErrorInfo",
    "Run",
    "RunDetail",
    "RunStatus",
    "SandboxSpec",
    "Step",
    "StepStatus",
    "ToolCall",
    "VariableSnapshot",
    "attributes",
]
