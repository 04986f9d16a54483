"""What recording costs beside the lightest tracer, and as a namespace grows.

Run through ``bench/overhead.py --peers`` and ``bench/overhead.py --scaling`` (or this
file with the same flags).

``--peers``: the same scripted smolagents ``CodeAgent`` (a model that writes three code
actions, the last one ``final_answer``; two tools) run ``--runs`` times in one process,
three ways: bare, under OpenInference's smolagents instrumentation (its spans to an
in-memory exporter) and under ``codetape.integrations.smolagents.instrument`` (its store
in a temporary directory, ingestion included). Each process is timed whole (CPU from the
kernel's accounting of the child, wall from spawn to exit), the three interleaved round
by round; a process with no runs gives each side's start-up. codetape's bytecode is
written first (``compileall``), as installing it does: smolagents and OpenInference come
from site-packages with theirs, and where ``PYTHONDONTWRITEBYTECODE`` is set a source
checkout would otherwise be compiled again in every process (~0.1 s of start-up).

``--scaling``: what ``@codetape.code_action`` adds per step with 3, 30 and 300 variables,
and with a 1, 10 and 100 MB ``list``, ``dict`` and ``bytearray`` that no step touches.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIDES = ("bare", "openinference", "codetape")
TASK = "Refund every order over $100"
ORDERS = [
    {"id": "A-1001", "total": 250.0},
    {"id": "A-1002", "total": 40.0},
    {"id": "A-1003", "total": 120.5},
]
ACTIONS = [
    "orders = get_orders()\nprint(len(orders), 'orders')",
    "big = [o for o in orders if o['total'] > 100]\nrefunded = [refund(o['id']) for o in big]",
    "final_answer('refunded ' + ', '.join(r['order_id'] for r in refunded))",
]


# -- one process: the agent, run N times, one way ----------------------------------------


def _agent() -> Any:
    from smolagents import CodeAgent, Model, tool
    from smolagents.models import ChatMessage, MessageRole

    @tool  # type: ignore[untyped-decorator]
    def get_orders() -> list[dict[str, Any]]:
        """All open orders."""
        return [dict(o) for o in ORDERS]

    @tool  # type: ignore[untyped-decorator]
    def refund(order_id: str) -> dict[str, Any]:
        """Refund one order.

        Args:
            order_id: the order's id
        """
        return {"order_id": order_id, "status": "refunded"}

    class Scripted(Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(model_id="scripted")
            self.turn = 0

        def generate(self, messages: list[Any], stop_sequences: Any = None, **kw: Any) -> Any:
            code = ACTIONS[self.turn % len(ACTIONS)]
            self.turn += 1
            return ChatMessage(
                role=MessageRole.ASSISTANT, content=f"Thought: next.\n<code>\n{code}\n</code>"
            )

    return CodeAgent(tools=[get_orders, refund], model=Scripted(), verbosity_level=-1)


def worker(side: str, runs: int) -> None:
    """Run the agent ``runs`` times, recorded by ``side``."""
    agent = _agent()
    if side == "openinference":
        from openinference.instrumentation.smolagents import SmolagentsInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        SmolagentsInstrumentor().instrument(tracer_provider=provider)
    elif side == "codetape":
        import codetape
        from codetape.integrations.smolagents import instrument

        codetape.configure(home=tempfile.mkdtemp(prefix="codetape-bench-peers-"), otlp=False)
        instrument(agent)
    for _ in range(runs):
        agent.model.turn = 0
        answer = agent.run(TASK)
        assert str(answer).startswith("refunded"), answer


# -- the driver: processes interleaved, whole-process CPU and wall ----------------------


def _process(side: str, runs: int) -> tuple[float, float]:
    """Wall and CPU seconds of one worker process, from spawn to exit."""
    command = [sys.executable, __file__, "--worker", side, "--runs", str(runs)]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"the {side} worker failed ({child.returncode})")
    return wall, usage.ru_utime + usage.ru_stime


def _compile_codetape() -> str:
    """Write the bytecode of the codetape the workers import; its folder."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("codetape")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    folder: str = next(iter(spec.submodule_search_locations))
    compileall.compile_dir(folder, quiet=1)
    return folder


def peers(runs: int, rounds: int) -> dict[str, Any]:
    """Each side's processes (with ``runs`` runs, and with none), interleaved; what each
    instrumentation adds per run, whole process and without start-up."""
    _compile_codetape()
    times: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for r in range(rounds):
        order = SIDES[r % 3 :] + SIDES[: r % 3]
        for n in (runs, 0):
            for side in order:
                times.setdefault((side, n), []).append(_process(side, n))

    def median(side: str, n: int, i: int) -> float:
        return statistics.median(t[i] for t in times[(side, n)])

    result: dict[str, Any] = {"runs_per_process": runs, "rounds": rounds, "sides": {}}
    for side in SIDES:
        result["sides"][side] = {
            "wall_s": round(median(side, runs, 0), 3),
            "cpu_s": round(median(side, runs, 1), 3),
            "startup_wall_s": round(median(side, 0, 0), 3),
            "startup_cpu_s": round(median(side, 0, 1), 3),
        }
    for side in SIDES[1:]:
        for i, what in ((0, "wall"), (1, "cpu")):
            whole = (median(side, runs, i) - median("bare", runs, i)) / runs
            runs_only = (
                median(side, runs, i)
                - median(side, 0, i)
                - (median("bare", runs, i) - median("bare", 0, i))
            ) / runs
            result["sides"][side][f"added_{what}_ms_per_run"] = round(whole * 1e3, 2)
            result["sides"][side][f"added_{what}_ms_per_run_without_startup"] = round(
                runs_only * 1e3, 2
            )
    oi, ct = result["sides"]["openinference"], result["sides"]["codetape"]
    for key in ("added_cpu_ms_per_run", "added_cpu_ms_per_run_without_startup"):
        result[f"codetape_vs_openinference_{key}"] = (
            round(ct[key] / oi[key], 2) if oi[key] > 0 else None
        )
    return result


# -- scaling: namespaces of more variables, and large values no step touches -------------

MB = 1 << 20


def _variables(count: int) -> dict[str, Any]:
    """``count`` variables as an agent's namespace has them: numbers, strings, small
    lists and dicts (``x`` and ``values`` among them, which the snippet uses)."""
    ns: dict[str, Any] = {"x": 0, "values": list(range(10))}
    for i in range(count - 2):
        kind = i % 4
        ns[f"v{i}"] = (i, f"text {i}", [i, i + 1, i + 2], {"id": i, "ok": True})[kind]
    return ns


def _large(kind: str, size: int) -> Any:
    """A value of ``kind`` taking about ``size`` bytes (the container itself)."""
    if kind == "list":
        return list(range(size // 8))  # one 8-byte reference per element
    if kind == "dict":
        return {i: i for i in range(size // 40)}  # ~40 bytes of table per entry
    return bytearray(os.urandom(min(size, 1 << 16)) * (size // (1 << 16) or 1))


def scaling(steps: int, rounds: int, sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    """Added µs per step (median) for each namespace; each large value lives only in
    the recorded namespace (nothing else refers to it, as when a step made it)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from overhead import step_overhead

    rows = []
    for count in (3, 30, 300):
        rows.append(
            step_overhead(steps, rounds, {}, f"{count} variables", lambda c=count: _variables(c))
        )
    for kind in ("list", "dict", "bytearray"):
        for size in sizes:
            few = max(steps // (10 if size >= 100 * MB else 4), 20)
            row = step_overhead(
                few,
                max(rounds // 4, 1),
                {},
                f"+ {size // MB} MB {kind} no step touches",
                lambda k=kind, s=size: {**_variables(3), "big": _large(k, s)},
            )
            row["large_value_bytes"] = size
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--peers", action="store_true")
    parser.add_argument("--scaling", action="store_true")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--sizes", default="1,10,100", help="MB of the untouched values")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.runs)
        return
    results: dict[str, Any] = {}
    if args.peers:
        results["peers"] = peers(args.runs, args.rounds)
    if args.scaling:
        sizes = tuple(int(s) * MB for s in args.sizes.split(","))
        results["scaling"] = scaling(args.steps, args.rounds * 4, sizes)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
