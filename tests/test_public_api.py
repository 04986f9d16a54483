"""The public surface is deliberate: adding or removing a name is a visible change."""

from __future__ import annotations

import codetape
import codetape.schemas


def test_top_level_names() -> None:
    assert codetape.__all__ == sorted(codetape.__all__)
    assert set(codetape.__all__) == {
        "CodetapeError", "Limits", "Sandbox", "StepResult", "Store", "agent", "code_action",
        "configure", "diff_runs", "errors", "replay", "replay_run", "run", "schemas", "store",
        "tool",
    }  # fmt: skip
    for name in codetape.__all__:
        assert getattr(codetape, name) is not None


def test_schema_names() -> None:
    assert codetape.schemas.__all__ == sorted(codetape.schemas.__all__)
    for name in ("Run", "Step", "ToolCall", "VariableSnapshot", "SandboxSpec", "RunDetail"):
        assert name in codetape.schemas.__all__
