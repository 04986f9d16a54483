"""What a replay costs: one step against its floor, a whole run's throughput, and where
the time of a single-step replay goes.

Run: ``CODETAPE_IMAGE=codetape/python:bookworm .venv/bin/python bench/replay.py
[--rounds N] [--steps N] [--json]`` (the image defaults to ``$CODETAPE_IMAGE`` or
``codetape/python:bookworm``; the store is a temporary directory, removed at the end).

(a) Single-step latency: ``codetape.replay(run, 0)`` of a trivial recorded step
    (``x = 1``), against the floor ``docker run --rm --network none IMAGE python3 -c pass``. The two
    run interleaved, round by round, in one process, so the machine's noise hits both
    alike; the report gives medians and the ratio (target <= 1.3x).
(b) Breakdown: the same replays, timed by phase (store open and ingestion, store
    queries, Docker client and image inspection, container start to runner ready,
    restoring variables, running and recording the step, container removal, ending the
    replay run, comparing), each phase exclusive of the phases it calls.
(a') Replay, warm: the same replay inside ``warm_pool()``, where each replay takes a
    container started ahead for the recorded image (while the one before worked);
    timed between replays so the pool is as a viewer or ``replay_run`` keeps it
    (target <= 50 ms).
(c) Throughput: ``codetape.replay_run`` of a recorded 50-step run with jobs=1 and
    jobs=2, in steps per second.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import codetape
from codetape.replayer import _readback, _replay
from codetape.sandbox import _backends, _sandbox
from codetape.sandbox.internal import warm_pool
from codetape.store import _db, _read
from codetape.tracer import _recording, _sandboxed

DEFAULT_IMAGE = "codetape/python:bookworm"
LATENCY_TARGET = 1.3
WARM_TARGET_MS = 50.0


# -- phase timing -----------------------------------------------------------------------


class Phases:
    """Exclusive time per phase: a wrapped call's time minus that of wrapped calls made
    inside it. Only the thread that is being measured is counted."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._local = threading.local()
        self.active = False
        self.thread: int | None = None

    def wrap(self, owner: Any, attr: str, label: str) -> Callable[[], None]:
        original = getattr(owner, attr)
        phases = self

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not phases.active or threading.get_ident() != phases.thread:
                return original(*args, **kwargs)
            stack = phases._stack()
            frame = [0.0]  # time spent in nested timed calls
            stack.append(frame)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                stack.pop()
                phases.totals[label] += elapsed - frame[0]
                phases.calls[label] += 1
                if stack:
                    stack[-1][0] += elapsed

        setattr(owner, attr, timed)
        return lambda: setattr(owner, attr, original)

    def _stack(self) -> list[list[float]]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    @contextmanager
    def measuring(self) -> Iterator[dict[str, float]]:
        self.totals.clear()
        self.calls.clear()
        self.active, self.thread = True, threading.get_ident()
        result: dict[str, float] = {}
        try:
            yield result
        finally:
            self.active = False
            result.update(self.totals)


# (owner, attribute, phase). Order is the order of a replay.
PHASES: list[tuple[Any, str, str]] = [
    (_read.Store, "refresh", "store: ingest (refresh)"),
    (_read.Store, "_catch_up", "store: catch up (wait for / run ingestion)"),
    (_read.Store, "_query", "store: read queries (excl. connect)"),
    (_db, "_open", "store: DuckDB connect (each query/ingest)"),
    (_backends, "docker_client", "docker: client + ping"),
    (_backends.DockerBackend, "__init__", "docker: image inspect"),
    (_backends.DockerBackend, "start", "docker: create, attach, start"),
    (_sandbox.Sandbox, "_ensure_started", "container start -> runner ready"),
    (_sandbox.Sandbox, "send_pickled", "restore variables"),
    (_sandboxed.Sandbox, "run", "run + record the step"),
    (_backends.DockerBackend, "cleanup", "container removal"),
    (_recording.RunRecorder, "__enter__", "replay run: begin"),
    (_recording.RunRecorder, "__exit__", "replay run: end (flush + ingest)"),
    (_readback.SpoolWindow, "steps", "replay run: read back from the spool"),
    (_replay, "compare_steps", "compare"),
]


# -- measurements ---------------------------------------------------------------------


def _ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


# The floor: a bare container running Python. "--network none" as the sandbox does (it
# also keeps the floor working on hosts whose default bridge network is broken).
FLOOR = ["docker", "run", "--rm", "--network", "none", "{image}", "python3", "-c", "pass"]


def docker_floor(image: str) -> float:
    started = time.perf_counter()
    subprocess.run([image if a == "{image}" else a for a in FLOOR], check=True, capture_output=True)
    return time.perf_counter() - started


def record_run(image: str, snippets: list[str], name: str) -> str:
    with codetape.run(name) as run, codetape.Sandbox(image=image) as sb:
        for snippet in snippets:
            result = sb.run(snippet)
            if result.status != "ok":
                raise SystemExit(f"recording failed: {result.error}")
    return run.id


def latency(image: str, rounds: int, phases: Phases) -> dict[str, Any]:
    run_id = record_run(image, ["x = 1"], "bench-replay-one")
    codetape.replay(run_id, 0)  # warm the Docker client, the image cache, imports
    docker_floor(image)
    replays: list[float] = []
    floors: list[float] = []
    by_phase: list[dict[str, float]] = []
    counts: list[dict[str, int]] = []
    for i in range(rounds):
        # Alternate which goes first, so neither always follows the other's cleanup.
        order = ("replay", "floor") if i % 2 == 0 else ("floor", "replay")
        for what in order:
            if what == "floor":
                floors.append(docker_floor(image))
                continue
            with phases.measuring() as spent:
                started = time.perf_counter()
                report = codetape.replay(run_id, 0)
                elapsed = time.perf_counter() - started
            if report.verdict != "reproduced":
                raise SystemExit(f"the trivial step did not reproduce: {report}")
            replays.append(elapsed)
            spent["(other: unwrapped code)"] = elapsed - sum(spent.values())
            by_phase.append(spent)
            counts.append(dict(phases.calls))
    warm = warm_latency(run_id, rounds)
    labels = [label for _, _, label in PHASES] + ["(other: unwrapped code)"]
    breakdown = {
        label: round(statistics.median([p.get(label, 0.0) for p in by_phase]) * 1000, 1)
        for label in labels
    }
    replay_ms, floor_ms = _ms(replays), _ms(floors)
    return {
        "rounds": rounds,
        "replay_ms": replay_ms,
        "replay_ms_all": [round(v * 1000, 1) for v in replays],
        "floor_ms": floor_ms,
        "floor_ms_all": [round(v * 1000, 1) for v in floors],
        "ratio": round(replay_ms / floor_ms, 2),
        "target_ratio": LATENCY_TARGET,
        "meets_target": replay_ms / floor_ms <= LATENCY_TARGET,
        "warm_ms": _ms(warm),
        "warm_ms_all": [round(v * 1000, 1) for v in warm],
        "breakdown_ms": breakdown,
        "breakdown_calls": {label: counts[-1].get(label, 0) for label in labels[:-1]},
    }


def warm_latency(run_id: str, rounds: int) -> list[float]:
    """``codetape.replay(run, 0)`` with a container started ahead for it: the pool
    starts the next while a replay works, and a pause between replays (as between a
    viewer's clicks) lets it come up."""
    times: list[float] = []
    with warm_pool(ahead=1):
        codetape.replay(run_id, 0)  # the first one starts the pool for this image
        for _ in range(rounds):
            time.sleep(1.0)
            started = time.perf_counter()
            report = codetape.replay(run_id, 0)
            times.append(time.perf_counter() - started)
            if report.verdict != "reproduced":
                raise SystemExit(f"the trivial step did not reproduce warm: {report}")
    return times


class Connections:
    """Counts DuckDB connections opened, by every thread."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        original = _db._open

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.count += 1
            return original(*args, **kwargs)

        _db._open = counted
        self.original = original

    def undo(self) -> None:
        _db._open = self.original


def throughput(image: str, steps: int, jobs_list: list[int]) -> dict[str, Any]:
    # Each step adds a variable, so step k starts from k recorded variables.
    snippets = [f"v{i} = {i} * 2" for i in range(steps)]
    run_id = record_run(image, snippets, f"bench-replay-{steps}")
    result: dict[str, Any] = {"steps": steps}
    for jobs in jobs_list:
        connections = Connections()
        started = time.perf_counter()
        try:
            reports = codetape.replay_run(run_id, jobs=jobs)
        finally:
            elapsed = time.perf_counter() - started
            connections.undo()
        verdicts = {r.verdict for r in reports}
        if verdicts != {"reproduced"} or len(reports) != steps:
            raise SystemExit(f"the {steps}-step run did not reproduce: {verdicts}")
        result[f"jobs={jobs}"] = {
            "seconds": round(elapsed, 2),
            "steps_per_s": round(steps / elapsed, 2),
            "median_step_ms": round(statistics.median(r.duration_ms for r in reports), 1),
            "first_step_ms": round(reports[0].duration_ms, 1),
            "last_step_ms": round(reports[-1].duration_ms, 1),
            "duckdb_connections_per_step": round(connections.count / steps, 1),
        }
    return result


# -- report ---------------------------------------------------------------------------


def command(args: argparse.Namespace, image: str) -> str:
    parts = [
        f"CODETAPE_IMAGE={shlex.quote(image)}",
        ".venv/bin/python",
        "bench/replay.py",
        "--rounds",
        str(args.rounds),
        "--steps",
        str(args.steps),
    ]
    if args.json:
        parts.append("--json")
    return " ".join(parts)


def print_table(results: dict[str, Any]) -> None:
    lat, w = results["latency"], 46
    floor = " ".join(FLOOR).replace("{image}", "IMAGE")
    print(f"codetape replay benchmark  (image {results['image']}, {results['machine']})")
    print()
    print(f"(a) single-step replay, median of {lat['rounds']} interleaved rounds")
    print(f"    {'codetape.replay(run, 0)':<{w}}{lat['replay_ms']:>9.1f} ms")
    print(f"    {'floor (bare docker run, below)':<{w}}{lat['floor_ms']:>9.1f} ms")
    verdict = "meets" if lat["meets_target"] else "MISSES"
    print(f"    {'ratio':<{w}}{lat['ratio']:>9.2f} x   ({verdict} the <= {LATENCY_TARGET}x target)")
    print(f"    floor: {floor}")
    ok = "meets" if lat["warm_ms"] <= WARM_TARGET_MS else "MISSES"
    print(
        f"    {'replay, warm (container started ahead)':<{w}}{lat['warm_ms']:>9.1f} ms"
        f"   ({ok} the <= {WARM_TARGET_MS:g} ms target)"
    )
    print()
    print("(b) where a single-step replay's time goes (median ms per phase, exclusive)")
    total = sum(lat["breakdown_ms"].values())
    for label, ms in sorted(lat["breakdown_ms"].items(), key=lambda kv: -kv[1]):
        share = 100 * ms / total if total else 0.0
        calls = lat["breakdown_calls"].get(label)
        times = f"  ({calls} calls)" if calls else ""
        print(f"    {label:<{w}}{ms:>9.1f} ms  {share:5.1f}%{times}")
    print()
    thr = results["throughput"]
    print(f"(c) replay_run of a {thr['steps']}-step run")
    for key, value in thr.items():
        if key.startswith("jobs="):
            print(f"    {key:<{w}}{value['steps_per_s']:>9.2f} steps/s  ({value['seconds']:.1f} s)")
            print(
                f"        step ms: median {value['median_step_ms']:.0f}, first "
                f"{value['first_step_ms']:.0f}, last {value['last_step_ms']:.0f}; "
                f"{value['duckdb_connections_per_step']:.0f} DuckDB connections per step"
            )
    print()
    print(f"reproduce: {results['command']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="single-step rounds (median)")
    parser.add_argument("--steps", type=int, default=50, help="steps of the throughput run")
    parser.add_argument("--jobs", default="1,2", help="comma-separated jobs for replay_run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    image = os.environ.get("CODETAPE_IMAGE") or DEFAULT_IMAGE
    if shutil.which("docker") is None:
        print("the docker command is not on PATH", file=sys.stderr)
        return 2
    home = tempfile.mkdtemp(prefix="codetape-bench-replay-")
    phases = Phases()
    undo = [phases.wrap(owner, attr, label) for owner, attr, label in PHASES]
    try:
        codetape.configure(home=home, otlp=False)
        results: dict[str, Any] = {
            "image": image,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}",
            "command": command(args, image),
        }
        results["latency"] = latency(image, args.rounds, phases)
        results["throughput"] = throughput(
            image, args.steps, [int(j) for j in args.jobs.split(",") if j.strip()]
        )
    finally:
        for restore in undo:
            restore()
        shutil.rmtree(home, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
