"""codetape's data models and span attribute names."""

from __future__ import annotations

from . import attributes
from ._models import (
    Difference,
    ErrorInfo,
    Limits,
    ReplayReport,
    Run,
    RunDetail,
    RunStatus,
    SandboxSpec,
    Step,
    StepResult,
    StepStatus,
    ToolCall,
    VariableSnapshot,
    Verdict,
)

__all__ = [
    "Difference",
    "ErrorInfo",
    "Limits",
    "ReplayReport",
    "Run",
    "RunDetail",
    "RunStatus",
    "SandboxSpec",
    "Step",
    "StepResult",
    "StepStatus",
    "ToolCall",
    "VariableSnapshot",
    "Verdict",
    "attributes",
]
