"""The tracer as codetape's other packages use it: the recorders of runs, steps and
tool calls, state snapshots, the runtime and the error guard of the recording path.
Not for users: these names may change in any release."""

from __future__ import annotations

from ._arguments import bind_arguments, tool_parameters, tool_signature
from ._config import Runtime, recording_to, runtime
from ._decorators import observed_sandbox, random_state_blob
from ._errors import internal_errors
from ._llm import LlmCallRecorder, Usage, llm_output, messages_of, usage_of
from ._recording import (
    RunRecorder,
    StepRecorder,
    ToolCallRecorder,
    current_run,
    current_step,
    current_tool_call,
    format_exception,
    record_tool_call,
    step_seed,
)
from ._state import Snapshotter, State, Variable, type_name

__all__ = [
    "LlmCallRecorder",
    "RunRecorder",
    "Runtime",
    "Snapshotter",
    "State",
    "StepRecorder",
    "ToolCallRecorder",
    "Usage",
    "Variable",
    "bind_arguments",
    "current_run",
    "current_step",
    "current_tool_call",
    "format_exception",
    "internal_errors",
    "llm_output",
    "messages_of",
    "observed_sandbox",
    "random_state_blob",
    "record_tool_call",
    "recording_to",
    "runtime",
    "step_seed",
    "tool_parameters",
    "tool_signature",
    "type_name",
    "usage_of",
]
