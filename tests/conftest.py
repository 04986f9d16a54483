"""Shared fixtures. Tests that need Docker or a browser skip with a reason outside CI
and fail under ``CI=true``, where they must run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import codetape
from codetape.tracer import _config

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, what: str, how: str) -> None:
    """Skip (or, under CI, fail) a test whose dependency is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is missing: {how}")
    pytest.skip(f"{what} is missing; to run this test: {how}")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh store directory, configured as codetape's default for the test."""
    store_home = tmp_path / "store"
    monkeypatch.setenv("CODETAPE_HOME", str(store_home))
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    codetape.configure(home=store_home, otlp=False)
    yield store_home
    if _config._current is not None:
        _config._current.shutdown()
    _config._current = None
    codetape.store.internal.set_default_home(None)


@pytest.fixture
def strict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Errors on codetape's recording path raise instead of being logged."""
    monkeypatch.setenv("CODETAPE_STRICT", "1")
