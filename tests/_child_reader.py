"""A child process for the concurrency test: reads a store in a loop while others write.

    python tests/_child_reader.py HOME READY STOP

Each round starts ``codetape runs --json`` (the real CLI, as a subprocess) and, while it
runs, reads the store through ``codetape.Store`` (runs, then every run's steps). It
creates READY after its first round and stops after the first round that began once
STOP existed. Any error is raised (a traceback and a non-zero exit code). It checks
what it can while the writers write: the CLI exits 0 with nothing on stderr and valid
JSON, a run never has two steps with the same index, and a run's step count never
goes down. At the end it prints a JSON summary: rounds, Store reads, how many runs it
saw while they were still running (the overlap, for information), and the last
``runs --json`` it saw as {run id: [status, step_count]}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import codetape


def main() -> None:
    home, ready, stop = (Path(a) for a in sys.argv[1:4])
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    most_steps: dict[str, int] = {}
    rounds = store_reads = partial_views = 0
    last_cli: dict[str, list[object]] = {}

    def saw(run_id: str, count: int, where: str) -> None:
        if count < most_steps.get(run_id, 0):
            raise AssertionError(
                f"{where}: run {run_id} went from {most_steps[run_id]} steps to {count}"
            )
        most_steps[run_id] = count

    while True:
        last_round = stop.exists()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "codetape",
                "--home",
                str(home),
                "runs",
                "--json",
                "--limit",
                "1000",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        while True:
            store = codetape.Store(home)
            for run in store.runs(limit=1000):
                steps = store.steps(run.id)
                indexes = [s.index for s in steps]
                if len(indexes) != len(set(indexes)):
                    raise AssertionError(f"run {run.id} has repeated step indexes: {indexes}")
                saw(run.id, len(steps), "Store.steps")
                partial_views += run.status == "running"
            store_reads += 1
            if proc.poll() is not None:
                break
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0 or err:
            raise AssertionError(f"`codetape runs --json` exited {proc.returncode}: {err}")
        last_cli = {r["id"]: [r["status"], r["step_count"]] for r in json.loads(out)}
        rounds += 1
        if rounds == 1:
            ready.touch()
        if last_round:
            break
    print(
        json.dumps(
            {
                "rounds": rounds,
                "store_reads": store_reads,
                "partial_views": partial_views,
                "last_cli": last_cli,
            }
        )
    )


if __name__ == "__main__":
    main()
