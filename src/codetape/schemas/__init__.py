"""codetape's data models and span attribute names."""

from __future__ import annotations

from . import attributes
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
    RunStatus,
    SandboxSpec,
    Step,
    StepPair,
    StepResult,
    StepStatus,
    ToolCall,
    VariableChange,
    VariableSnapshot,
    Verdict,
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
