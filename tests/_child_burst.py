"""A child process for the store's concurrency tests: records a burst of short runs.

    python tests/_child_burst.py NAME RUNS STEPS GO

Waits until GO exists, then records RUNS runs named NAME, one after the other, as an
agent loop does: each run makes one model call (``@codetape.llm``) and then STEPS steps
through an ``@codetape.code_action`` executor, each calling a ``@codetape.tool``. Step
``i`` of run ``r`` runs ``burst_code(NAME, r, i)``. Prints ``RUN_ID=...`` for each run.
Ingestion is codetape's own: each run's end schedules it, the process's exit runs it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

WAIT_S = 180.0  # only a guard against hanging forever if the parent died


def burst_code(name: str, run: int, step: int) -> str:
    return f"r{step} = lookup({f'{name}/{run}/{step}'!r})\nprint(r{step})"


def main() -> None:
    name, runs, steps, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])

    import codetape

    @codetape.tool
    def lookup(key: str) -> str:
        return key.upper()

    @codetape.llm(model="scripted")
    def model(prompt: str) -> str:
        return f"<code>{prompt}</code>"

    @codetape.code_action
    def execute(code: str, namespace: dict[str, Any]) -> None:
        exec(code, namespace)

    deadline = time.monotonic() + WAIT_S
    while not go.exists():
        if time.monotonic() > deadline:
            sys.exit(f"gave up waiting for {go}")
        time.sleep(0.005)
    for r in range(runs):
        with codetape.run(name, task=f"burst {r} of {name}") as run:
            print(f"RUN_ID={run.id}", flush=True)
            model(f"run {r}")
            namespace: dict[str, Any] = {"lookup": lookup}
            for i in range(steps):
                execute(burst_code(name, r, i), namespace)


if __name__ == "__main__":
    main()
