"""Replay fidelity: how many recorded steps replay ``reproduced``, per recording mode.

Run: ``make bench``, or
``CODETAPE_IMAGE=codetape/python:bookworm .venv/bin/python bench/fidelity.py
[--modes observed,docker,plain] [--rounds 3] [--json]``.

Every trajectory of the fidelity corpus (``tests/replay_corpus.py``: imports used
later, helpers, closures, classes and dataclasses that call tools, shared and cyclic
objects, a generator and an open file, ``random``, a step that raises, a 20 MB value, a
file in ``/tmp``, ...) is recorded in each mode into a temporary store: ``observed``
(smolagents' ``CodeAgent`` with ``instrument(agent)``), ``docker`` (the same agent with
``CodetapeExecutor`` in codetape's Docker sandbox) and ``plain`` (a hand-written loop
with ``@code_action``). Then every recorded step is replayed once with
``codetape.replay(run, i)`` and counted: ``reproduced`` out of replayed.

The replay time of the 20-step trajectory (``long_ledger``) is then measured two ways per
mode, interleaved over ``--rounds`` rounds, medians reported: ``replay`` of each step
(each rebuilds its input from the latest checkpoint and re-runs the recorded steps after
it), and one ``codetape.replay_from(run, 0)`` that runs all 20 steps in one sandbox.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import codetape
from codetape.sandbox import NoIsolationWarning
from codetape.schemas import ReplayReport

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the corpus lives with the tests: tests/replay_corpus.py
    sys.path.insert(0, str(ROOT))

from tests.replay_corpus import MODES, TRAJECTORIES, Trajectory, by_name, record  # noqa: E402

LONG = "long_ledger"
DEFAULT_IMAGE = "codetape/python:bookworm"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _replay(run_id: str, step: int) -> tuple[str, str | None, str]:
    """One step's replay: its verdict, why it did not reproduce (None when it did) and
    where it ran. A replay that raises counts as not reproduced, its exception as why."""
    try:
        report = codetape.replay(run_id, step)
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        why = f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})"
        return "raised", why, "none"
    return report.verdict, None if report.reproduced else _why(report), report.backend or "?"


def _why(report: ReplayReport) -> str:
    parts = [report.reason] if report.reason else []
    parts += [
        f"{d.field}: recorded {d.recorded!r:.120} | replayed {d.replayed!r:.120}"
        for d in report.differences
    ]
    return "; ".join(parts) or report.verdict


def _steps_of(run_id: str) -> int:
    store = codetape.Store()
    with store.session():
        return len(store.steps(run_id))


def fidelity(mode: str, image: str | None, runs: dict[str, str]) -> dict[str, Any]:
    """Record every trajectory in ``mode`` (run ids go into ``runs``) and replay each of
    its steps once."""
    replayed = reproduced = 0
    failures: list[dict[str, Any]] = []
    per_trajectory: dict[str, str] = {}
    backends: dict[str, int] = {}
    t0 = time.perf_counter()
    for trajectory in TRAJECTORIES:
        started = time.perf_counter()
        # What the agent's code prints is recorded, not shown: stdout is for the table.
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            run_id = runs[trajectory.name] = record(trajectory, mode, image)
        steps = _steps_of(run_id)
        if steps != len(trajectory.steps):
            failures.append(
                {
                    "trajectory": trajectory.name,
                    "step": None,
                    "verdict": "recording",
                    "why": f"recorded {steps} steps of {len(trajectory.steps)}",
                }
            )
        ok = 0
        for index in range(steps):
            verdict, why, backend = _replay(run_id, index)
            backends[backend] = backends.get(backend, 0) + 1
            if why is None:
                ok += 1
            else:
                failures.append(
                    {"trajectory": trajectory.name, "step": index, "verdict": verdict, "why": why}
                )
        replayed += steps
        reproduced += ok
        per_trajectory[trajectory.name] = f"{ok}/{steps}"
        _progress(
            f"  {mode:8} {trajectory.name:24} {ok:>2}/{steps:<2} reproduced "
            f"({time.perf_counter() - started:.1f}s)"
        )
    return {
        "trajectories": len(TRAJECTORIES),
        "steps_replayed": replayed,
        "steps_reproduced": reproduced,
        "replayed_in": backends,
        "per_trajectory": per_trajectory,
        "not_reproduced": failures,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def replay_times(run_id: str, trajectory: Trajectory, rounds: int) -> dict[str, Any]:
    """The trajectory's replay time, ``replay`` of each step against one ``replay_from``
    of step 0, interleaved over ``rounds`` rounds (medians of the rounds)."""
    steps = len(trajectory.steps)
    each_total: list[float] = []
    each_step: list[float] = []
    from_total: list[float] = []
    each_reproduced: list[int] = []
    from_reproduced: list[int] = []
    errors: list[str] = []
    for number in range(rounds):
        total, ok = 0.0, 0
        for index in range(steps):
            t0 = time.perf_counter()
            verdict, _, _ = _replay(run_id, index)
            seconds = time.perf_counter() - t0
            each_step.append(seconds)
            total += seconds
            ok += verdict == "reproduced"
        each_total.append(total)
        each_reproduced.append(ok)
        t0 = time.perf_counter()
        try:
            reports = codetape.replay_from(run_id, 0)
            done = f"{sum(r.reproduced for r in reports)}/{len(reports)} reproduced"
            from_reproduced.append(sum(r.reproduced for r in reports))
        except Exception as exc:  # counted as nothing reproduced, and said
            done = f"raised {type(exc).__name__}: {exc}"
            from_reproduced.append(0)
            errors.append(f"round {number + 1}: replay_from {done}")
        from_total.append(time.perf_counter() - t0)
        _progress(
            f"  round {number + 1}/{rounds}: replay x{steps} {total:.1f}s ({ok}/{steps} "
            f"reproduced), replay_from(run, 0) {from_total[-1]:.1f}s ({done})"
        )
    each, whole = statistics.median(each_total), statistics.median(from_total)
    return {
        "trajectory": trajectory.name,
        "steps": steps,
        "rounds": rounds,
        "replay_each_total_s": round(each, 2),
        "replay_each_per_step_median_s": round(statistics.median(each_step), 3),
        "replay_each_per_step_mean_s": round(each / steps, 3),
        "replay_from_total_s": round(whole, 2),
        "replay_from_per_step_s": round(whole / steps, 4),
        "speedup": round(each / whole, 1),
        "replay_each_totals_s": [round(t, 2) for t in each_total],
        "replay_from_totals_s": [round(t, 2) for t in from_total],
        "replay_each_reproduced": each_reproduced,
        "replay_from_reproduced": from_reproduced,
        "errors": errors,
    }


def _preflight(image: str) -> None:
    """Fail in one line, before any recording, when Docker or the image is missing."""
    try:
        codetape.Sandbox(image=image)
    except codetape.CodetapeError as exc:
        sys.exit(f"bench/fidelity.py needs Docker and the image {image} for --modes docker: {exc}")


def _command(args: argparse.Namespace, image: str | None) -> str:
    python = Path(sys.executable)
    if python.is_relative_to(Path.cwd()):
        python = python.relative_to(Path.cwd())
    env = f"CODETAPE_IMAGE={shlex.quote(image)} " if image else ""
    return f"{env}{python} bench/fidelity.py --modes {','.join(args.modes)} --rounds {args.rounds}"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_table(results: dict[str, Any]) -> None:
    modes: dict[str, Any] = results["modes"]
    print(
        f"machine: {results['machine']}; load average (1, 5, 15 min) before "
        f"{results['load_before']}, after {results['load_after']}\n"
    )
    print(
        "| mode | trajectories | steps reproduced / replayed | replayed in | "
        "`long_ledger`: `replay` x 20 "
        "(sum) | per step (median) | `replay_from(run, 0)` | per step | `replay` ÷ `replay_from` |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, r in modes.items():
        f, t = r["fidelity"], r.get("long_ledger")
        where = ", ".join(f"{name} ({n})" for name, n in sorted(f["replayed_in"].items()))
        times = (
            f"{t['replay_each_total_s']:.1f} s | {t['replay_each_per_step_median_s'] * 1000:.0f} ms"
            f" | {t['replay_from_total_s']:.2f} s | {t['replay_from_per_step_s'] * 1000:.1f} ms | "
            f"{t['speedup']:.1f}x"
            if t
            else "not timed | | | |"
        )
        print(
            f"| {mode} | {f['trajectories']} | **{f['steps_reproduced']} / "
            f"{f['steps_replayed']}** | {where} | {times} |"
        )
    print()
    for mode, r in modes.items():
        t = r.get("long_ledger")
        if t:
            print(
                f"{mode}: in the timing rounds `replay` reproduced "
                f"{'/'.join(map(str, t['replay_each_reproduced']))} of {t['steps']} steps, "
                f"`replay_from` {'/'.join(map(str, t['replay_from_reproduced']))}"
                + "".join(f"; {e}" for e in t["errors"])
            )
    for mode, r in modes.items():
        for miss in r["fidelity"]["not_reproduced"]:
            print(
                f"\nnot reproduced: {mode} {miss['trajectory']} step {miss['step']}: "
                f"{miss['verdict']}: {miss['why']}"
            )
    print(f"\nreproduce: {results['command']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        type=lambda text: [m.strip() for m in text.split(",") if m.strip()],
        help=f"recording modes, comma-separated (default {','.join(MODES)})",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the 20-step replay timing (0: skip)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    args = parser.parse_args()
    unknown = [m for m in args.modes if m not in MODES]
    if unknown or not args.modes:
        parser.error(f"--modes takes some of {', '.join(MODES)}, not {unknown or 'nothing'}")
    image = (os.environ.get("CODETAPE_IMAGE") or DEFAULT_IMAGE) if "docker" in args.modes else None

    home = Path(tempfile.mkdtemp(prefix="codetape-bench-fidelity-"))
    os.environ["CODETAPE_HOME"] = str(home)  # what a replay's Store() opens
    codetape.configure(home=home, otlp=False)
    if image:
        _preflight(image)
    # Observed steps replay in a local subprocess, which warns (rightly) that it is not
    # isolated; expected here.
    warnings.simplefilter("ignore", NoIsolationWarning)
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "image": image,
        "command": _command(args, image),
        "load_before": _load(),
        "modes": {},
    }
    try:
        for mode in args.modes:
            _progress(f"{mode}: recording and replaying {len(TRAJECTORIES)} trajectories")
            runs: dict[str, str] = {}
            entry: dict[str, Any] = {"fidelity": fidelity(mode, image, runs)}
            if args.rounds > 0:
                _progress(f"{mode}: timing the replay of {LONG}")
                entry["long_ledger"] = replay_times(runs[LONG], by_name(LONG), args.rounds)
            results["modes"][mode] = entry
    finally:
        codetape.configure(home=home, otlp=False)  # flushes before the store goes away
        if args.keep:
            _progress(f"store kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    results["load_after"] = _load()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
