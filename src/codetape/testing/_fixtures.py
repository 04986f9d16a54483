"""The pytest fixture: ``captape``, codetape's ``capsys``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._capture import CapturedRuns, capture

__all__ = ["captape"]

_OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


@pytest.fixture
def captape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CapturedRuns]:
    """Record into a temporary store for the length of the test and read the runs back.

    The store is ``tmp_path / "store"``. ``CODETAPE_HOME`` points at it during the test,
    so processes the test starts record there too, and the OTLP endpoint variables are
    unset, so nothing leaves the machine. Afterwards codetape is configured as it was.

    .. code-block:: python

        def test_the_agent_refunds_the_duplicate(captape):
            solve("refund the duplicate charge")
            [run] = captape.runs()
            assert run.status == "ok"
            assert [c.name for s in captape.steps(run) for c in s.tool_calls] == ["refund"]
    """
    with capture(tmp_path / "store") as captured:
        monkeypatch.setenv("CODETAPE_HOME", str(captured.home))
        for name in _OTLP_ENDPOINTS:
            monkeypatch.delenv(name, raising=False)
        yield captured
