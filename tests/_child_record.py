"""A child process for the store tests: records one agent run into ``$CODETAPE_HOME``.

    python tests/_child_record.py NAME STEPS [options]

The run is an ``@codetape.agent`` function that executes STEPS snippets through an
``@codetape.code_action`` executor, with a namespace that carries over between steps.
Step ``i``'s code is ``step_code(tag, i)`` (below), so the parent knows it exactly.
The run id is printed as ``RUN_ID=...`` (flushed) before the first step.

Options:
  --tag T            goes into every snippet (default: NAME)
  --fail-step K      step K raises ValueError; the agent catches it and carries on
  --raise            the agent raises RuntimeError after its steps (status error)
  --kill             SIGKILL this process after the steps, inside the run
  --go PATH          wait until PATH exists before starting the run
  --ready PATH       after the steps, create PATH ...
  --release PATH     ... and wait until PATH exists before ending the run
  --step-sleep S     sleep S seconds after each step (to overlap with a reader)
  --pause-spool-open MARKER GO
                     when this process opens its spool file, create MARKER between
                     creating the file and locking it, and wait for GO: makes the
                     window between the two deterministic for a race test
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

WAIT_S = 180.0  # only a guard against hanging forever if the parent died


def step_code(tag: str, i: int) -> str:
    return f"v{i} = {i} * {i}\nprint({tag!r}, 'step', {i}, v{i})"


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            sys.exit(f"gave up waiting for {path}")
        time.sleep(0.01)


def pause_spool_open(marker: Path, go: Path) -> None:
    import fcntl
    import types

    from codetape.store import _spool

    real_flock = fcntl.flock
    paused = False

    def flock(fd: int, op: int) -> None:
        nonlocal paused
        if op == fcntl.LOCK_EX and not paused:  # SpoolWriter._open: file created, not locked
            paused = True
            marker.touch()
            wait_for(go)
        real_flock(fd, op)

    shim = types.SimpleNamespace(**{k: getattr(fcntl, k) for k in dir(fcntl) if k.isupper()})
    shim.flock = flock
    _spool.fcntl = shim  # type: ignore[attr-defined,assignment]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("steps", type=int)
    parser.add_argument("--tag")
    parser.add_argument("--fail-step", type=int)
    parser.add_argument("--raise", dest="raise_", action="store_true")
    parser.add_argument("--kill", action="store_true")
    parser.add_argument("--go", type=Path)
    parser.add_argument("--ready", type=Path)
    parser.add_argument("--release", type=Path)
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--pause-spool-open", nargs=2, type=Path)
    args = parser.parse_args()
    tag = args.tag or args.name

    import codetape
    from codetape.tracer.internal import current_run

    if args.pause_spool_open:
        pause_spool_open(*args.pause_spool_open)

    @codetape.code_action
    def execute(code: str, namespace: dict[str, Any]) -> None:
        exec(code, namespace)

    @codetape.agent(name=args.name)
    def solve(task: str) -> str:
        run = current_run()
        assert run is not None
        print(f"RUN_ID={run.id}", flush=True)
        namespace: dict[str, Any] = {}
        for i in range(args.steps):
            if i == args.fail_step:
                with contextlib.suppress(ValueError):
                    execute(f"raise ValueError('boom at step {i}')", namespace)
            else:
                execute(step_code(tag, i), namespace)
            if args.step_sleep:
                time.sleep(args.step_sleep)
        if args.kill:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        if args.ready:
            args.ready.touch()
            wait_for(args.release)
        if args.raise_:
            raise RuntimeError("the agent gave up")
        return f"{tag} done"

    if args.go:
        wait_for(args.go)
    solve(f"task of {tag}")


if __name__ == "__main__":
    main()
