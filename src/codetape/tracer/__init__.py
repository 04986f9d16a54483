"""The tracer: decorators, run and step recording, state snapshots, spool and OTLP."""

from __future__ import annotations

from ._config import Runtime, configure, runtime
from ._decorators import agent, code_action, observed_sandbox, run, tool
from ._recording import (
    RunRecorder,
    StepRecorder,
    ToolCallRecorder,
    current_run,
    current_step,
    format_exception,
    record_tool_call,
)
from ._state import Snapshotter, State

__all__ = [
    "RunRecorder",
    "Runtime",
    "Snapshotter",
    "State",
    "StepRecorder",
    "ToolCallRecorder",
    "agent",
    "code_action",
    "configure",
    "current_run",
    "current_step",
    "format_exception",
    "observed_sandbox",
    "record_tool_call",
    "run",
    "runtime",
    "tool",
]
