"""Shared fixtures. Tests that need Docker or a browser skip with a reason outside CI
and fail under ``CI=true``, where they must run: every skip goes through ``require``.

``home`` is codetape's own ``captape`` fixture (``codetape.testing``); the Docker
fixtures are in ``sandbox_fixtures``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from codetape.testing import CapturedRuns

from .browser import CHROMIUM, HAVE_PLAYWRIGHT

pytest_plugins = ["codetape.testing", "pytester", "tests.sandbox_fixtures"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, what: str, how: str) -> None:
    """Skip (or, under CI, fail) a test whose dependency is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is missing: {how}")
    pytest.skip(f"{what} is missing; to run this test: {how}")


@pytest.fixture(autouse=True, scope="session")
def _default_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What a test records with no store of its own goes to a temporary one, never to
    ``./.codetape`` in the working tree."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CODETAPE_HOME", str(tmp_path_factory.mktemp("default-home")))
        yield


@pytest.fixture
def home(captape: CapturedRuns) -> Path:
    """A fresh store directory, codetape's default for the test (and ``CODETAPE_HOME``)."""
    return captape.home


@pytest.fixture
def strict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Errors on codetape's recording path raise instead of being logged."""
    monkeypatch.setenv("CODETAPE_STRICT", "1")


@pytest.fixture
def chromium() -> Path:
    """Debian's chromium and the playwright package, or a skip (a failure under CI)."""
    require(
        HAVE_PLAYWRIGHT,
        "the playwright Python package",
        "pip install -e '.[dev]' (never `playwright install`: Debian's chromium is used)",
    )
    require(CHROMIUM.exists(), "Debian's chromium at /usr/bin/chromium", "apt-get install chromium")
    return CHROMIUM
