"""The public surface is deliberate: adding or removing a name is a visible change.

Each package's ``__init__`` exports what a user may touch; what other codetape packages
need goes through the package's ``internal`` module, which promises nothing to users.
"""

from __future__ import annotations

import importlib

import pytest

import codetape
import codetape.errors

SURFACES: dict[str, set[str]] = {
    "codetape": {
        "CodetapeError", "Limits", "Sandbox", "StepResult", "Store", "agent", "code_action",
        "configure", "diff_runs", "errors", "llm", "record_llm_call", "replay", "replay_from",
        "replay_run", "run", "schemas", "store", "tool",
    },
    "codetape.schemas": {
        "Difference", "ErrorInfo", "FailureGroup", "Limits", "LlmCall", "LlmMessage",
        "ReplayReport", "Run", "RunDetail", "RunDiff", "RunStatus", "SandboxSpec", "Step",
        "StepPair", "StepResult", "StepStatus", "ToolCall",
        "VariableChange", "VariableSnapshot", "Verdict", "attributes",
    },
    "codetape.errors": {
        "AmbiguousRunIdError", "BlobNotFoundError", "CodeActionError", "CodetapeError",
        "ConfigError", "CorruptStoreError", "DockerUnavailableError", "ImageNotFoundError",
        "NewerStoreError", "NotFoundError", "ReplayError", "ReplayToolError",
        "RunNotFoundError", "SandboxError", "ShipError", "SqlError", "StepNotFoundError",
        "StoreBusyError",
        "StoreError",
    },
    "codetape.store": {"EXAMPLE_QUERIES", "ExampleQuery", "IngestStats", "Store"},
    "codetape.sandbox": {
        "DEFAULT_IMAGE", "Limits", "NoIsolationWarning", "OpaqueValue", "Outcome", "Sandbox",
        "StepResult", "default_image",
    },
    "codetape.tracer": {
        "Sandbox", "agent", "code_action", "configure", "llm", "record_llm_call", "run", "tool",
    },
    "codetape.replayer": {
        "BundleInfo", "diff_runs", "export_run", "import_bundle", "replay", "replay_from",
        "replay_run", "write_pytest",
    },
    "codetape.viewer": {"APP", "DEFAULT_URL", "url"},
    "codetape.cli": {"cli", "main"},
    "codetape.testing": {
        "BuiltRun", "CapturedRuns", "RunSpec", "RunStatus", "StepKind", "StepSpec",
        "StoreBuilder", "ToolCallSpec", "build_store", "captape", "capture", "synthetic_runs",
        "synthetic_step",
    },
    "codetape.integrations.langchain": {"CodetapeCallbackHandler"},
    "codetape.integrations.smolagents": {"CodetapeExecutor", "instrument", "uninstrument"},
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(SURFACES))
def test_each_package_exports_what_users_touch(module: str) -> None:
    imported = importlib.import_module(module)
    exported = list(imported.__all__)
    assert exported == sorted(exported), f"{module}.__all__ is not sorted"
    assert set(exported) == SURFACES[module]
    for name in exported:
        assert getattr(imported, name) is not None


def test_codetape_sandbox_is_the_recording_sandbox() -> None:
    """``codetape.Sandbox`` records; ``codetape.sandbox.Sandbox`` only executes."""
    assert issubclass(codetape.Sandbox, codetape.sandbox.Sandbox)
    assert hasattr(codetape.Sandbox, "run")
    assert not hasattr(codetape.sandbox.Sandbox, "run")


def test_every_error_codetape_raises_is_a_codetape_error() -> None:
    for name in codetape.errors.__all__:
        error = getattr(codetape.errors, name)
        assert issubclass(error, codetape.errors.CodetapeError), name
