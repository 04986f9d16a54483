"""The status and verdict values: plain ``Literal`` types, so that what only needs the
values (the tracer, the shared formatting) does not load pydantic with the models."""

from __future__ import annotations

from typing import Literal

__all__ = ["RunStatus", "StepStatus", "Verdict"]

RunStatus = Literal["running", "ok", "error", "incomplete"]
# "interrupted": the step's process was terminated (SIGTERM, SIGINT) or killed while
# it ran; its code is kept, its outcome is unknown.
StepStatus = Literal["ok", "error", "timeout", "oom", "killed", "interrupted"]
Verdict = Literal["reproduced", "diverged", "not_restorable", "environment_missing"]
