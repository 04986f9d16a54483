"""Ingestion into DuckDB: one pass over spooled spans, and spools written by 1, 4 and 8
processes recording at once. Every case counts what reached DuckDB (0 dropped).

Run: ``.venv/bin/python bench/ingest.py [--spans N] [--processes 1,4,8] [--json]``
(``--processes ''``: case (a) alone).

(a) One pass: ``--spans`` spans shaped like real ones (``bench/overhead.py``'s
    ingestion case: the three span kinds of a recorded run, stamped with fresh ids, in
    files of 10,000) ingested by one ``ingest()``.
(b) Spooled by P processes, then one pass: P processes record real runs at once
    (``codetape.run``, ``@code_action`` steps that call a ``@codetape.tool``; their spool
    holds start records and blobs too) with their own ingestion turned off; then one
    reader's catch-up ingests all P spool files.
(c) While P processes record: the same runs, each process ingesting as codetape does
    when its runs end; then a reader catches up with what is left. Reported: the
    ingestion passes that stored something, their summed time (lock waits included),
    spans per second of it, and the whole time from the first run to all stored.
(d) Small passes: ``--small`` short runs (a step that calls a tool) recorded in this
    process, each followed by one ``ingest()`` of the same store, as a run's end does
    when runs come one at a time: the median pass (the first 10 left out).

To compare with another checkout, run this script with that checkout's ``src`` first
on ``PYTHONPATH``; it uses only what older versions also have.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import duckdb

import codetape
from codetape.store import Store
from codetape.store.internal import ingest, live_dir

HERE = Path(__file__).resolve().parent
STEPS = 4  # steps per run, each with one tool call: 1 + 2 * STEPS spans per run
SPANS_PER_RUN = 1 + 2 * STEPS


def _agent() -> tuple[Any, Any]:
    """What every bench run records with: a ``@codetape.tool`` and an ``exec`` step."""

    @codetape.tool
    def lookup(key: str) -> str:
        return key.upper()

    @codetape.code_action
    def execute(code: str, namespace: dict[str, Any]) -> None:
        exec(code, namespace)

    return lookup, execute


def _child(home: Path, name: str, runs: int, mode: str, go: Path, log: Path) -> None:
    """One recording process (run as ``bench/ingest.py --child ...``)."""
    from codetape.store import _ingest

    if mode == "spool-only":
        _ingest.BackgroundIngester.request = lambda self: None  # type: ignore[method-assign]
    else:  # log every pass this process makes: when, how long, how many records
        real = _ingest.ingest

        def logged(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            stats = real(*args, **kwargs)
            with log.open("a") as f:
                f.write(f"{json.dumps([time.perf_counter() - t0, stats.records])}\n")
            return stats

        _ingest.ingest = logged
    codetape.configure(home=home, otlp=False)

    lookup, execute = _agent()

    while not go.exists():
        time.sleep(0.005)
    for r in range(runs):
        with codetape.run(name, task=f"run {r} of {name}"):
            namespace: dict[str, Any] = {"lookup": lookup}
            for s in range(STEPS):
                # Every process's code and output its own, as different agents' are.
                execute(f"y{s} = lookup('{name} {r} {s}')\nprint(y{s})", namespace)


def small_passes(runs: int) -> dict[str, Any]:
    """Case (d): one short run, then one pass, ``runs`` times, in this process."""
    home = Path(tempfile.mkdtemp(prefix="codetape-bench-small-"))
    from codetape.store import _ingest

    _ingest.BackgroundIngester.request = lambda self: None  # type: ignore[method-assign]
    codetape.configure(home=home, otlp=False)
    lookup, execute = _agent()
    Store(home).runs()  # the database exists, as it does after a store's first run
    seconds = []
    for r in range(runs):
        with contextlib.redirect_stdout(io.StringIO()), codetape.run("small", task=f"run {r}"):
            execute(f"y = lookup('{r}')\nprint(y)", {"lookup": lookup})
        t0 = time.perf_counter()
        ingest(home)
        seconds.append(time.perf_counter() - t0)
    stored = _stored(home)
    codetape.configure(home=Path(tempfile.mkdtemp(prefix="codetape-bench-after-")), otlp=False)
    shutil.rmtree(home, ignore_errors=True)
    return {
        "runs": runs,
        "runs_stored": stored["runs"],
        "pass_median_ms": round(statistics.median(seconds[10:] or seconds) * 1000, 2),
    }


def _stored(home: Path) -> dict[str, int]:
    con = duckdb.connect(str(home / "codetape.duckdb"), read_only=True)
    try:
        spans, runs, ok, steps = con.execute(
            "SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM runs), "
            "(SELECT count(*) FROM runs WHERE status = 'ok'), (SELECT count(*) FROM steps)"
        ).fetchone()  # type: ignore[misc]
    finally:
        con.close()
    return {"spans": spans, "runs": runs, "ok_runs": ok, "steps": steps}


def _span_templates() -> list[dict[str, Any]]:
    """The spans of one recorded run (an agent, a step, a tool call), as spooled."""
    home = Path(tempfile.mkdtemp(prefix="codetape-bench-template-"))
    codetape.configure(home=home, otlp=False)

    lookup, execute = _agent()

    with contextlib.redirect_stdout(io.StringIO()), codetape.run("template", task="one of each"):
        execute("y = lookup('a')\nprint(y)", {"lookup": lookup})
    codetape.configure(home=home, otlp=False)  # flushes and closes the template spool
    Store(home).runs()  # ingests the template; its spool file moves to spool/done
    template_file = next((home / "spool" / "done").glob("*.jsonl"))
    records = [json.loads(line) for line in template_file.read_text().splitlines()]
    shutil.rmtree(home, ignore_errors=True)
    return [r for r in records if r["t"] == "span"]


def one_pass(spans: int) -> dict[str, Any]:
    """Case (a): ``spans`` spans stamped from a recorded run's, in spool files of
    10,000 whose writers are gone, ingested by one ``ingest()``."""
    templates = _span_templates()
    target = Path(tempfile.mkdtemp(prefix="codetape-bench-ingest-"))
    live = live_dir(target)
    live.mkdir(parents=True)
    per_file = 10_000
    for first in range(0, spans, per_file):
        lines = []
        for n in range(first, min(first + per_file, spans)):
            rec = dict(templates[n % len(templates)])
            rec["trace_id"] = f"{n // len(templates):032x}"
            rec["span_id"] = f"{n:016x}"
            lines.append(json.dumps(rec, separators=(",", ":")))
        name = f"bench-{first}-{uuid.uuid4().hex[:6]}.jsonl"
        (live / name).write_text("\n".join(lines) + "\n")
    spool_bytes = sum(f.stat().st_size for f in live.iterdir())
    t0, cpu0 = time.perf_counter(), time.process_time()
    stats = ingest(target)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stored = _stored(target)["spans"]
    shutil.rmtree(target, ignore_errors=True)
    return {
        "spans_written": spans,
        "spans_stored": stored,
        "dropped": spans - stored,
        "bad_lines": stats.bad_lines,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "spans_per_second": round(spans / seconds),
        "spool_mb": round(spool_bytes / 1e6, 1),
    }


def _record(home: Path, processes: int, runs: int, mode: str) -> tuple[float, list[Path]]:
    """``processes`` children record ``runs`` runs each, starting together."""
    go = home.parent / f"go-{mode}"
    logs = [home.parent / f"passes-{mode}-{k}.jsonl" for k in range(processes)]
    command = [sys.executable, __file__, "--child", str(home)]
    children = [
        subprocess.Popen(
            [*command, f"bench-{k}", str(runs), mode, str(go), str(logs[k])],
            env={**os.environ, "CODETAPE_HOME": str(home)},
            stdout=subprocess.DEVNULL,
        )
        for k in range(processes)
    ]
    time.sleep(1.0)  # let them import codetape
    t0 = time.perf_counter()
    go.touch()
    for child in children:
        if child.wait() != 0:
            raise SystemExit(f"a recording process exited {child.returncode}")
    return time.perf_counter() - t0, logs


def from_processes(processes: int, spans: int) -> dict[str, Any]:
    """Cases (b) and (c) for ``processes`` recording processes, ``spans`` spans in all."""
    runs = max(1, spans // (SPANS_PER_RUN * processes))
    expected = {
        "spans": processes * runs * SPANS_PER_RUN,
        "runs": processes * runs,
        "ok_runs": processes * runs,
        "steps": processes * runs * STEPS,
    }
    result: dict[str, Any] = {"processes": processes, "runs": processes * runs}
    for mode in ("spool-only", "background"):
        root = Path(tempfile.mkdtemp(prefix=f"codetape-bench-ingest-{processes}p-"))
        home = root / "store"
        home.mkdir()
        recording_s, logs = _record(home, processes, runs, mode)
        spool_mb = sum(f.stat().st_size for f in (home / "spool").rglob("*.jsonl")) / 1e6
        t0, cpu0 = time.perf_counter(), time.process_time()
        Store(home).refresh()  # a reader's catch-up: everything left in the spool
        catch_up_s, catch_up_cpu = time.perf_counter() - t0, time.process_time() - cpu0
        passes = [json.loads(line) for log in logs if log.exists() for line in log.open()]
        stored = _stored(home)
        dropped = {k: expected[k] - stored[k] for k in expected}
        total = stored["spans"]
        if mode == "spool-only":
            result["one_pass"] = {
                "spans": total,
                "spool_mb": round(spool_mb, 1),
                "seconds": round(catch_up_s, 3),
                "cpu_seconds": round(catch_up_cpu, 3),
                "spans_per_second": round(total / catch_up_s),
                "dropped": dropped,
            }
        else:
            ingest_s = sum(seconds for seconds, _ in passes) + catch_up_s
            result["while_recording"] = {
                "spans": total,
                "passes_storing_records": sum(1 for _, records in passes if records),
                "passes": len(passes),
                "ingest_seconds": round(ingest_s, 3),
                "spans_per_second": round(total / ingest_s),
                "recording_seconds": round(recording_s, 3),
                "first_run_to_all_stored_s": round(recording_s + catch_up_s, 3),
                "left_for_the_reader_s": round(catch_up_s, 3),
                "dropped": dropped,
            }
        shutil.rmtree(root, ignore_errors=True)
    return result


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        home, name, runs, mode, go, log = sys.argv[2:8]
        _child(Path(home), name, int(runs), mode, Path(go), Path(log))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000, help="case (a)")
    parser.add_argument("--recorded-spans", type=int, default=40_000, help="cases (b), (c)")
    parser.add_argument(
        "--processes", default="1,4,8", help="cases (b), (c); '' for case (a) alone"
    )
    parser.add_argument("--small", type=int, default=60, help="case (d); 0 skips it")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    rounds = []
    for _ in range(args.rounds):
        rounds.append(
            {
                "one_pass": one_pass(args.spans),
                "from_processes": [
                    from_processes(int(p), args.recorded_spans)
                    for p in args.processes.split(",")
                    if p.strip()
                ],
            }
        )
    if args.small:
        for r in rounds:
            r["small_passes"] = small_passes(args.small)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, DuckDB {duckdb.__version__}",
        "codetape": str(Path(codetape.__file__).parent),
        "rounds": rounds,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    _print(results)


def _print(results: dict[str, Any]) -> None:
    print(f"machine: {results['machine']}; codetape from {results['codetape']}")
    one = [r["one_pass"] for r in results["rounds"]]
    print(
        f"(a) one pass, {one[0]['spans_written']:,} spans: median "
        f"{statistics.median(r['spans_per_second'] for r in one):,.0f} spans/s, dropped "
        f"{sum(r['dropped'] for r in one)}"
    )
    small = [r["small_passes"] for r in results["rounds"] if "small_passes" in r]
    if small:
        print(
            f"(d) a pass after each of {small[0]['runs']} short runs: median "
            f"{statistics.median(r['pass_median_ms'] for r in small):.1f} ms, runs stored "
            f"{sum(r['runs_stored'] for r in small)} of {sum(r['runs'] for r in small)}"
        )
    for i in range(len(results["rounds"][0]["from_processes"])):
        cases = [r["from_processes"][i] for r in results["rounds"]]
        spooled = [c["one_pass"] for c in cases]
        live = [c["while_recording"] for c in cases]
        print(
            f"{cases[0]['processes']} processes, {cases[0]['runs']} runs: "
            f"(b) spooled then one pass {_med(spooled, 'spans_per_second'):,.0f} spans/s "
            f"({spooled[0]['spans']:,} spans, {spooled[0]['spool_mb']} MB), dropped "
            f"{_dropped(spooled)}; (c) while recording {_med(live, 'spans_per_second'):,.0f} "
            f"spans/s in {_med(live, 'passes_storing_records'):.0f} passes, all stored "
            f"{_med(live, 'first_run_to_all_stored_s'):.2f}s after the first run, dropped "
            f"{_dropped(live)}"
        )


def _med(cases: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(c[key] for c in cases))


def _dropped(cases: list[dict[str, Any]]) -> int:
    return sum(sum(c["dropped"].values()) for c in cases)


if __name__ == "__main__":
    main()
