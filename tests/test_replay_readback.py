"""A replay reads the run it recorded back from this process's spool, not through an
ingestion pass: the steps it compares are the very ones the store holds afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

import codetape
from codetape.replayer import _readback
from codetape.schemas import Step
from codetape.testing import capture


def lookup(key: str) -> dict[str, object]:
    return {"key": key, "rows": [1, 2.5, "três"]}


def dumped(steps: list[Step]) -> list[dict[str, object]]:
    return [step.model_dump() for step in steps]


@pytest.mark.docker
def test_the_replay_run_read_back_from_the_spool_is_the_one_the_store_holds(
    tmp_path: Path, docker_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with capture(tmp_path):
        with (
            codetape.run("readback") as run,
            codetape.Sandbox(image=docker_image, tools=[lookup]) as sb,
        ):
            sb.run("x = lookup('a')\nprint(x, 'é')\nx['rows']")
            sb.run("import sys\nprint('warn', file=sys.stderr)\nraise ValueError(f'no {x}')")
        read_back: list[list[Step]] = []
        original = _readback.SpoolWindow.steps

        def spy(self: _readback.SpoolWindow, *args: object) -> list[Step]:
            steps = original(self, *args)  # type: ignore[arg-type]
            read_back.append(steps)
            return steps

        monkeypatch.setattr(_readback.SpoolWindow, "steps", spy)
        reports = [
            codetape.replay(run.id, 0),
            codetape.replay(run.id, 1),
            codetape.replay(run.id, 1),  # again: its blobs are not spooled a second time
            codetape.replay(run.id, 0, code="x = lookup('a')\nprint('edited')\nx"),
        ]
    assert [r.verdict for r in reports] == ["reproduced", "reproduced", "reproduced", "diverged"]
    assert [d.field for d in reports[3].differences] == ["stdout", "result"]
    store = codetape.Store(tmp_path)
    for report, steps in zip(reports, read_back, strict=True):
        assert steps, "read back from the spool, not through the store"
        assert report.replay_run_id is not None
        assert dumped(steps) == dumped(store.steps(report.replay_run_id))
