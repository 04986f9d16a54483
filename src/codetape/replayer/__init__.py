"""The replayer: re-run recorded steps in an identical sandbox and compare."""

from __future__ import annotations

from ._compare import compare_steps
from ._replay import ReplayToolError, replay, replay_run

__all__ = ["ReplayToolError", "compare_steps", "replay", "replay_run"]
