"""What recording costs: @code_action versus a bare exec, @codetape.llm versus the bare
model-calling function, and ingestion throughput.

Run: ``make bench`` or ``.venv/bin/python bench/overhead.py [--steps N] [--spans N]``;
``--peers`` (OpenInference beside codetape, ``pip install -e '.[bench]'``) and
``--scaling`` (namespace sizes, untouched large values) run ``bench/recording.py``.
Both sides of each comparison run in the same process, interleaved in rounds, so the
machine's noise hits them alike; the report gives medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import codetape

SNIPPET = "x = x + 1\ntotal = sum(values) + x"


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _time_steps(step: Callable[[], object], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        step()
        times.append((time.perf_counter_ns() - t0) / 1000)
    return times


def step_overhead(
    steps: int,
    rounds: int,
    extra: dict[str, Any],
    label: str,
    make: Callable[[], dict[str, Any]] | None = None,
    distinct: bool = False,
) -> dict[str, Any]:
    """Added µs per step. ``make`` builds the recorded namespace instead (its values then
    belong to it alone); ``distinct``: each step's code is new (a comment numbers it),
    as an agent's are, so nothing derived from the code text is reused."""
    home = Path(tempfile.mkdtemp(prefix="codetape-bench-"))
    codetape.configure(home=home, otlp=False)

    def bare(code: str, namespace: dict[str, Any]) -> None:
        exec(code, namespace)

    recorded = codetape.code_action(bare)
    bare_ns: dict[str, Any] = {"x": 0, "values": list(range(10)), **extra}
    rec_ns: dict[str, Any] = make() if make else {"x": 0, "values": list(range(10)), **extra}
    codes = iter(f"{SNIPPET}  # step {i}" for i in range(10**9)) if distinct else None

    def code() -> str:
        return next(codes) if codes is not None else SNIPPET

    bare_times: list[float] = []
    rec_times: list[float] = []
    with codetape.run("bench", task=label):
        recorded(code(), rec_ns)  # first step pays one-off costs (fingerprint, big value)
        size_after_first = _dir_size(home)
        per_round = steps // rounds
        for _ in range(rounds):
            bare_times += _time_steps(lambda: bare(code(), bare_ns), per_round)
            rec_times += _time_steps(lambda: recorded(code(), rec_ns), per_round)
    store_growth = _dir_size(home) - size_after_first
    bare_med, rec_med = statistics.median(bare_times), statistics.median(rec_times)
    return {
        "case": label,
        "steps": len(rec_times),
        "bare_exec_median_us": round(bare_med, 1),
        "recorded_median_us": round(rec_med, 1),
        "added_median_us": round(rec_med - bare_med, 1),
        "recorded_p90_us": round(statistics.quantiles(rec_times, n=10)[-1], 1),
        "store_growth_after_first_step_bytes": store_growth,
        "store_growth_per_step_bytes": store_growth // max(1, len(rec_times)),
    }


# A chat conversation as an agent sends it by its fourth step: the system prompt, the task
# and three rounds of model output and observations (about 6 KB of text). Each call
# resends the conversation with its newest two messages new, as an agent's do.
SYSTEM = {"role": "system", "content": "You are an agent that writes Python. " * 40}
TASK = {"role": "user", "content": "Refund every order over $100."}


def conversation(n: int) -> list[dict[str, str]]:
    rounds = [
        {"role": role, "content": f"{role} message {i}: " + "orders = get_orders()\n" * 12}
        for i in range(n, n + 3)
        for role in ("assistant", "user")
    ]
    return [SYSTEM, TASK, *rounds]


OUTPUT = "Thought: refund the big ones.\n<code>\nfor o in big:\n    refund(o['id'])\n</code>"


class _Reply:
    def __init__(self) -> None:
        self.content = OUTPUT
        self.usage = {"prompt_tokens": 1800, "completion_tokens": 40}
        self.model = "bench-model-2026"


def llm_overhead(calls: int, rounds: int) -> dict[str, Any]:
    """What recording one model call adds, the model itself excluded: the bare function
    returns a canned reply, the recorded one is the same function under @codetape.llm."""
    home = Path(tempfile.mkdtemp(prefix="codetape-bench-llm-"))
    codetape.configure(home=home, otlp=False, prices={"bench-model*": (2.5, 10.0)})

    def bare(messages: list[dict[str, str]]) -> _Reply:
        return _Reply()

    recorded = codetape.llm(model="bench-model")(bare)
    bare_times: list[float] = []
    rec_times: list[float] = []
    sent = [conversation(n) for n in range(calls + 1)]  # built before timing
    with codetape.run("bench", task="model calls"):
        recorded(sent[0])
        per_round = calls // rounds
        for r in range(rounds):
            turns = iter(sent[1 + r * per_round :])
            bare_times += _time_steps(lambda t=turns: bare(next(t)), per_round)
            turns = iter(sent[1 + r * per_round :])
            rec_times += _time_steps(lambda t=turns: recorded(next(t)), per_round)
    bare_med, rec_med = statistics.median(bare_times), statistics.median(rec_times)
    return {
        "case": "model call (@codetape.llm, 8 messages, ~6 KB)",
        "calls": len(rec_times),
        "bare_median_us": round(bare_med, 1),
        "recorded_median_us": round(rec_med, 1),
        "added_median_us": round(rec_med - bare_med, 1),
        "recorded_p90_us": round(statistics.quantiles(rec_times, n=10)[-1], 1),
    }


def ingestion(spans: int) -> dict[str, Any]:
    """Spool lines shaped like real ones (taken from a recorded run), ingested at once:
    case (a) of ``bench/ingest.py``, which also measures spools of recording processes."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ingest import one_pass

    return one_pass(spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--peers",
        action="store_true",
        help="bare vs OpenInference vs codetape on a scripted smolagents CodeAgent "
        "(bench/recording.py; needs the bench extra), then stop",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="added cost per step by namespace size and untouched large values, then stop",
    )
    parser.add_argument("--runs", type=int, default=200, help="agent runs per --peers process")
    args = parser.parse_args()
    if args.peers or args.scaling:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import recording

        found: dict[str, Any] = {}
        if args.peers:
            found["peers"] = recording.peers(args.runs, max(args.rounds // 4, 1))
        if args.scaling:
            sizes = (1 << 20, 10 << 20, 100 << 20)
            found["scaling"] = recording.scaling(args.steps, args.rounds, sizes)
        print(json.dumps(found, indent=2))
        return

    ten_mb_list = list(range(1_250_000))  # ~10 MB as Python ints; mutable: re-pickled
    ten_mb_bytes = os.urandom(10_000_000)  # immutable: pickled once per run
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "step_overhead": [
            step_overhead(args.steps, args.rounds, {}, "small namespace"),
            step_overhead(
                args.steps, args.rounds, {}, "small namespace, new code each step", distinct=True
            ),
            step_overhead(
                args.steps // 10,
                args.rounds // 4 or 1,
                {"big": ten_mb_bytes},
                "+ 10 MB bytes no step touches",
            ),
            step_overhead(
                args.steps // 10,
                args.rounds // 4 or 1,
                {"big": ten_mb_list},
                "+ 10 MB list no step touches",
            ),
        ],
        "model_call": llm_overhead(args.steps, args.rounds),
        "ingestion": ingestion(args.spans),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"machine: {results['machine']}")
    print(
        f"{'case':34} {'bare exec':>10} {'recorded':>10} {'added':>10} {'ratio':>7} "
        f"{'store/step':>11}"
    )
    for r in results["step_overhead"]:
        ratio = r["recorded_median_us"] / r["bare_exec_median_us"]
        print(
            f"{r['case']:34} {r['bare_exec_median_us']:>8.1f}us {r['recorded_median_us']:>8.1f}us "
            f"{r['added_median_us']:>8.1f}us {ratio:>6.1f}x {r['store_growth_per_step_bytes']:>10}B"
        )
    llm = results["model_call"]
    print(
        f"{llm['case']}: bare {llm['bare_median_us']:.1f}us, recorded "
        f"{llm['recorded_median_us']:.1f}us, added {llm['added_median_us']:.1f}us per call "
        f"(p90 {llm['recorded_p90_us']:.1f}us)"
    )
    ing = results["ingestion"]
    print(
        f"ingestion: {ing['spans_written']} spans ({ing['spool_mb']} MB of spool) in "
        f"{ing['seconds']}s = {ing['spans_per_second']:,} spans/s, dropped {ing['dropped']}"
    )


if __name__ == "__main__":
    sys.exit(main())
