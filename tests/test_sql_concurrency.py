"""``Store.sql`` while four processes record into the same store: no lock error ever
reaches the reader, and each query sees at least what was spooled when it began."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import codetape

from .test_store import child_env
from .test_store_concurrency import RECORD, TIMEOUT, wait_for

WRITERS = 4
STEPS = 30
PER_RUN = "SELECT run_id, count(*) AS steps FROM steps GROUP BY run_id ORDER BY run_id"


def test_queries_while_four_processes_record(home: Path, tmp_path: Path) -> None:
    go, release = tmp_path / "go", tmp_path / "release"
    ready = [str(tmp_path / f"ready-{k}") for k in range(WRITERS)]
    options = ["--go", str(go), "--step-sleep", "0.01", "--release", str(release)]
    writers = [
        subprocess.Popen(
            [sys.executable, str(RECORD), f"writer-{k}", str(STEPS), *options, "--ready", ready[k]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(home),
        )
        for k in range(WRITERS)
    ]
    store = codetape.Store(home)
    try:
        go.touch()
        # While they record: every query answers, and no run loses steps between two.
        seen: dict[str, int] = {}
        queries = 0
        while not all(Path(path).exists() for path in ready):
            for run_id, steps in store.sql(PER_RUN).fetchall():
                assert steps >= seen.get(run_id, 0)
                seen[run_id] = steps
            queries += 1
            if any(w.poll() is not None for w in writers):
                break
        for k, writer in enumerate(writers):
            wait_for(Path(ready[k]), writer)
        # Every step is spooled and every run still open: a query sees all of them.
        during = store.sql(
            "SELECT r.agent, r.status, count(s.step) FROM runs r JOIN steps s USING (run_id) "
            "GROUP BY r.agent, r.status ORDER BY r.agent"
        ).fetchall()
        assert during == [(f"writer-{k}", "running", STEPS) for k in range(WRITERS)]
        release.touch()
        outputs = [w.communicate(timeout=TIMEOUT) for w in writers]
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.communicate()
    run_ids = set()
    for writer, (out, err) in zip(writers, outputs, strict=True):
        assert (writer.returncode, err) == (0, "")
        run_ids.add(re.search(r"RUN_ID=(\w+)", out)[1])  # type: ignore[index]
    print(f"{queries} queries while the writers recorded")
    assert queries >= 1
    after = store.sql("SELECT run_id, status, steps, failed_steps FROM runs ORDER BY run_id")
    assert after.fetchall() == [(run_id, "ok", STEPS, 0) for run_id in sorted(run_ids)]
