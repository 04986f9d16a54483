"""Child processes for ``test_store_reliability``: an agent, recorded into
``$CODETAPE_HOME``, that a test kills, starves of disk space or forks.

    python tests/reliability/_store_child.py MODE [ARGS]

Each mode prints ``RUN_ID=...`` (flushed) once its run has started.

Modes:
  block READY               step 0 runs; step 1 creates READY and then waits for a
                            signal (a test sends SIGTERM, SIGINT or SIGKILL)
  own-handler READY         the agent installs its own SIGTERM handler before recording;
                            it records steps until that handler asks it to stop
  starved READY RELEASE     records 2 steps (the disk is full), creates READY, waits for
                            RELEASE (space freed), records 1 more step and ends
  fork                      step 0; then the agent forks and the child runs one code
                            action (printing CHILD_DONE) while the parent waits; step 1
  ingest-and-pause MARKER   ingests the store, pausing for ever (MARKER created) in the
                            middle of the pass, its scratch folder written
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import codetape
from codetape.tracer.internal import current_run

WAIT_S = 180.0  # only a guard against hanging forever if the parent died
FOREVER_S = 3600.0  # a wait only a signal ends

BLOCKING_CODE = "open(READY, 'w').close()\nimport time\ntime.sleep(FOREVER)"


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            sys.exit(f"gave up waiting for {path}")
        time.sleep(0.01)


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> None:
    exec(code, namespace)


def announce() -> None:
    run = current_run()
    assert run is not None
    print(f"RUN_ID={run.id}", flush=True)


def block(ready: Path) -> None:
    @codetape.agent(name="blocked")
    def solve(task: str) -> None:
        announce()
        namespace: dict[str, Any] = {"READY": str(ready), "FOREVER": FOREVER_S}
        execute("total = 21 * 2\nprint('total', total)", namespace)
        execute(BLOCKING_CODE, namespace)

    solve("wait for a signal")


def own_handler(ready: Path) -> None:
    stop = []

    def on_term(signum: int, frame: object) -> None:
        print("agent handler: stopping", flush=True)
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_term)

    @codetape.agent(name="graceful")
    def solve(task: str) -> str:
        announce()
        namespace: dict[str, Any] = {}
        i = 0
        while not stop:
            execute(f"n{i} = {i}", namespace)
            if i == 1:
                ready.touch()
            i += 1
            time.sleep(0.01)
        execute("print('cleaned up')", namespace)
        return f"stopped after {i} steps"

    solve("run until told to stop")


def starved(ready: Path, release: Path) -> None:
    @codetape.agent(name="starved")
    def solve(task: str) -> str:
        announce()
        namespace: dict[str, Any] = {}
        execute("a = 1", namespace)
        execute("b = a + 1", namespace)
        ready.touch()
        wait_for(release)
        execute("c = b + 1\nprint('c', c)", namespace)
        return "done"

    solve("record on a full disk")


def fork() -> None:
    @codetape.agent(name="forking")
    def solve(task: str) -> None:
        announce()
        namespace: dict[str, Any] = {}
        execute("parent_0 = 0", namespace)
        pid = os.fork()
        if pid == 0:
            try:
                execute("child_step = 'in the child'", namespace)
                print("CHILD_DONE", flush=True)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        execute("parent_1 = 1", namespace)

    solve("fork mid-run")


def ingest_and_pause(marker: Path) -> None:
    from codetape.store import _ingest

    def paused(*args: Any, **kwargs: Any) -> None:
        marker.touch()
        time.sleep(FOREVER_S)

    _ingest._ingest_batch = paused
    codetape.Store().refresh()


def main() -> None:
    mode, *args = sys.argv[1:]
    if mode == "block":
        block(Path(args[0]))
    elif mode == "own-handler":
        own_handler(Path(args[0]))
    elif mode == "starved":
        starved(Path(args[0]), Path(args[1]))
    elif mode == "fork":
        fork()
    elif mode == "ingest-and-pause":
        ingest_and_pause(Path(args[0]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
