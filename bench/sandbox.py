"""What the sandbox costs: a warm step and a cold start, each beside its floor.

Run: ``make bench``, or with the image of your choice
``CODETAPE_IMAGE=codetape/python:bookworm .venv/bin/python bench/sandbox.py [--json]``.

(a) Warm step: ``sb.run("x = 1")`` inside ``codetape.run`` (framing, state snapshot and a
    recorded step each time) against the floor, a bare line-echo loop in the same image
    over ``docker run -i`` timed from the host; beside them the local backend and
    smolagents' LocalPythonExecutor running the same snippet in-process.
(b) Cold start: ``with Sandbox() as sb: sb.run("1")`` against ``docker run --rm
    --network none IMAGE python3 -c pass``, with where the sandbox's time goes.
(c) A warm step while 20 MB of variables sit untouched in the namespace.
Each comparison runs in one process, interleaved in rounds, so the machine's noise hits
both sides alike; the report gives medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import codetape
from codetape.sandbox import NoIsolationWarning

SNIPPET = "x = 1"
BIG_VALUES = "big = bytes(10_000_000)\nints = list(range(1_250_000))"  # ~10 MB each pickled
WARM_TARGET = 2.5
COLD_TARGET = 1.3
# Reads a line, writes it back: the least any stdin/stdout protocol into the container
# can cost per round trip.
ECHO_LOOP = (
    "import sys\n"
    "read, write = sys.stdin.buffer.readline, sys.stdout.buffer.write\n"
    "while True:\n"
    "    line = read()\n"
    "    if not line:\n"
    "        break\n"
    "    write(line)\n"
)


def _ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 3)


class Echo:
    """The floor: one warm container echoing lines, as locked down as the sandbox's."""

    def __init__(self, image: str) -> None:
        self.process = subprocess.Popen(
            [
                "docker",
                "run",
                "-i",
                "--rm",
                "--network",
                "none",
                "--user",
                "65534:65534",
                "--log-driver",
                "none",
                image,
                "python3",
                "-u",
                "-c",
                ECHO_LOOP,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self._in, self._out = self.process.stdin, self.process.stdout.fileno()

    def round_trip(self) -> None:
        self._in.write(b"x = 1\n")
        self._in.flush()
        data = b""
        while not data.endswith(b"\n"):
            chunk = os.read(self._out, 4096)
            if not chunk:
                raise RuntimeError("the echo container exited")
            data += chunk

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def warm(image: str, steps: int, rounds: int) -> dict[str, Any]:
    from smolagents.local_python_executor import LocalPythonExecutor

    executor = LocalPythonExecutor(additional_authorized_imports=[])
    executor.send_tools({})
    times: dict[str, list[float]] = {"docker": [], "echo": [], "local": [], "smolagents": []}
    echo = Echo(image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoIsolationWarning)
        local = codetape.Sandbox(backend="local")
    with (
        codetape.run("bench-sandbox", task="warm steps"),
        codetape.Sandbox(image=image) as sb,
        local,
    ):
        for _ in range(5):  # first steps pay one-off costs on every side
            sb.run(SNIPPET), local.run(SNIPPET), echo.round_trip(), executor(SNIPPET)
        per_round = max(1, steps // rounds)
        for _ in range(rounds):
            times["docker"] += _timed(lambda: sb.run(SNIPPET), per_round)
            times["echo"] += _timed(echo.round_trip, per_round)
            times["local"] += _timed(lambda: local.run(SNIPPET), per_round)
            times["smolagents"] += _timed(lambda: executor(SNIPPET), per_round)
    echo.close()
    medians = {name: _ms(t) for name, t in times.items()}
    return {
        "steps": len(times["docker"]),
        "median_ms": medians,
        "p90_ms": {
            name: round(statistics.quantiles(t, n=10)[-1] * 1000, 3) for name, t in times.items()
        },
        "docker_vs_echo": round(medians["docker"] / medians["echo"], 2),
        "docker_vs_smolagents": round(medians["docker"] / medians["smolagents"], 1),
        "target_vs_echo": WARM_TARGET,
    }


def _sandbox_cold(image: str) -> dict[str, float]:
    """One cold start, split where the time goes. ``sb.run`` outside a run records a
    run of its own; the explicit ``codetape.run`` here is the same, timed apart."""
    t0 = time.perf_counter()
    sb = codetape.Sandbox(image=image)  # Docker client, ping, image inspect
    t1 = time.perf_counter()
    with sb:  # docker run -i, then the init handshake (cloudpickle's source goes in)
        t2 = time.perf_counter()
        with codetape.run("sandbox"):
            sb.run("1")
            t3 = time.perf_counter()
        t4 = time.perf_counter()  # the run has ended: spool synced, store ingested
    t5 = time.perf_counter()  # the container is killed and removed
    return {
        "first_result": t3 - t0,
        "total": t5 - t0,
        "client": t1 - t0,
        "start": t2 - t1,
        "first_step": t3 - t2,
        "run_end": t4 - t3,
        "close": t5 - t4,
    }


def _bare_cold(image: str) -> float:
    t0 = time.perf_counter()
    # --network none like the sandbox: setting up a bridge network costs time the
    # sandbox never pays, and some engines (--bridge=none) have no bridge at all.
    subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, "python3", "-c", "pass"],
        check=True,
    )
    return time.perf_counter() - t0


def cold(image: str, runs: int) -> dict[str, Any]:
    _sandbox_cold(image), _bare_cold(image)  # warm the page cache and the docker daemon
    phases: dict[str, list[float]] = {}
    bare: list[float] = []
    for _ in range(runs):
        for name, seconds in _sandbox_cold(image).items():
            phases.setdefault(name, []).append(seconds)
        bare.append(_bare_cold(image))
    breakdown = {name: _ms(t) for name, t in phases.items()}
    first, total, floor = breakdown.pop("first_result"), breakdown.pop("total"), _ms(bare)
    return {
        "runs": runs,
        "bare_docker_run_median_ms": floor,
        "sandbox_first_result_median_ms": first,
        "sandbox_with_block_median_ms": total,
        "sandbox_breakdown_median_ms": breakdown,
        "first_result_vs_bare": round(first / floor, 2),
        "with_block_vs_bare": round(total / floor, 2),
        "target_vs_bare": COLD_TARGET,
    }


def _preflight(image: str) -> None:
    """Fail in one line, before any timing, when Docker or the image is missing."""
    try:
        codetape.Sandbox(image=image)
    except codetape.CodetapeError as exc:
        sys.exit(f"bench/sandbox.py needs Docker and the image {image}: {exc}")


def big_namespace(image: str, steps: int) -> dict[str, Any]:
    """A warm step while 20 MB of variables sit in the namespace, untouched by the step:
    what each step pays for snapshotting state it did not change."""
    with codetape.run("bench-sandbox", task="big namespace"), codetape.Sandbox(image=image) as sb:
        sb.run(SNIPPET)
        small = _timed(lambda: sb.run(SNIPPET), steps)
        sb.run(BIG_VALUES)
        big = _timed(lambda: sb.run(SNIPPET), steps)
    return {
        "steps": steps,
        "small_namespace_median_ms": _ms(small),
        "with_20mb_untouched_median_ms": _ms(big),
    }


def _print_cold(c: dict[str, Any]) -> None:
    print(f"\ncold start ({c['runs']} runs a side, interleaved)")
    for label, value in (
        ("docker run --rm --network none IMAGE python3 -c pass", c["bare_docker_run_median_ms"]),
        ('Sandbox(): to the result of sb.run("1")', c["sandbox_first_result_median_ms"]),
        ('with Sandbox() as sb: sb.run("1")  (whole block)', c["sandbox_with_block_median_ms"]),
    ):
        print(f"{label:54} {value:>8.1f}ms")
    for key, what in (
        ("first_result_vs_bare", "to the first result"),
        ("with_block_vs_bare", "whole with block"),
    ):
        ok = "ok" if c[key] <= COLD_TARGET else "OVER TARGET"
        print(f"sandbox {what} / bare docker run: {c[key]:.2f}x (target <= {COLD_TARGET:g}x: {ok})")
    parts = ", ".join(f"{k} {v:.1f}ms" for k, v in c["sandbox_breakdown_median_ms"].items())
    print(f"sandbox breakdown (medians): {parts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="warm steps per side")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds of steps")
    parser.add_argument("--cold", type=int, default=7, help="cold starts per side")
    parser.add_argument(
        "--big", type=int, default=5, help="steps with 20 MB of untouched variables (0: skip)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    image = os.environ.get("CODETAPE_IMAGE") or "codetape/python:bookworm"
    home = Path(tempfile.mkdtemp(prefix="codetape-bench-sandbox-"))
    codetape.configure(home=home, otlp=False)
    _preflight(image)
    python = Path(sys.executable)
    if python.is_relative_to(Path.cwd()):
        python = python.relative_to(Path.cwd())
    command = (
        f"CODETAPE_IMAGE={shlex.quote(image)} {python} "
        f"bench/sandbox.py --steps {args.steps} --rounds {args.rounds} --cold {args.cold} "
        f"--big {args.big}"
    )
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "image": image,
        "command": command,
        "warm_step": warm(image, args.steps, args.rounds),
        "cold_start": cold(image, args.cold) if args.cold else None,
        "big_namespace": big_namespace(image, args.big) if args.big else None,
    }
    shutil.rmtree(home, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    w, c = results["warm_step"], results["cold_start"]
    print(f"machine: {results['machine']}; image {image}")
    print(f"\nwarm step `{SNIPPET}` ({w['steps']} steps a side, interleaved)")
    print(f"{'':44} {'median':>10} {'p90':>10}")
    rows = [
        ("docker", "codetape Sandbox, docker (recorded step)"),
        ("echo", "floor: line echo over docker run -i"),
        ("local", "codetape Sandbox, local (recorded step)"),
        ("smolagents", "smolagents LocalPythonExecutor in-process"),
    ]
    for key, label in rows:
        print(f"{label:44} {w['median_ms'][key]:>8.3f}ms {w['p90_ms'][key]:>8.3f}ms")
    ok = "ok" if w["docker_vs_echo"] <= WARM_TARGET else "OVER TARGET"
    print(
        f"docker step / echo floor: {w['docker_vs_echo']:.2f}x (target <= {WARM_TARGET:g}x: "
        f"{ok}); docker step / smolagents: {w['docker_vs_smolagents']:.1f}x"
    )
    if c:
        _print_cold(c)
    b = results["big_namespace"]
    if b:
        print(
            f"\nwarm step with 20 MB of variables the step does not touch ({b['steps']} steps): "
            f"{b['with_20mb_untouched_median_ms']:.1f}ms (small namespace: "
            f"{b['small_namespace_median_ms']:.1f}ms)"
        )
    print(f"\nreproduce: {command}")


if __name__ == "__main__":
    sys.exit(main())
