"""What the viewer's pages cost to load from a big store: 10,000 runs, 1,000,000 spans.

Run: ``.venv/bin/python bench/viewer.py [--store-dir DIR] [--json] [--explain]``.

The store is built once and cached in ``--store-dir`` (default: a directory under the
system temp dir named after the sizes); later runs reuse it and only measure. It is
built by ``codetape.testing.StoreBuilder``, which records each kind of step once through
codetape's tracer and writes every run from those records through the store's own spool
and blob writers, one spool file per 100 runs (as one recording process would leave),
then ingested with one ``ingest`` pass (``--ingest per-file``: one per file). Each step's
code and output are its own, as an agent's are (4 distinct previews in 600,000 steps
would make scans and searches unrealistically cheap: DuckDB filters a
dictionary-compressed column once per distinct value); ``--shared-code`` gives every
step of a kind the same code and output instead.

The mix (default sizes): runs of 1-111 steps, 60 on average and 4 in 5 between 20 and
100, each step with 0-2 tool calls; three in ten runs have failing steps, 5% raise, 1%
never finish (their process died); six agent names. One run has 500 steps: the Run
page is measured on it (and on a typical 60-step run).

Each page's loads are timed as the viewer makes them, through ``codetape.Store``, in
this one process: "cold" is the first call on a freshly opened Store, "warm" the median
of 9 more, "evicted" a first call after dropping the database file from the OS page
cache (``posix_fadvise``, that file only). "sql" is the part of the warm time spent
inside DuckDB (connecting, running the SQL, fetching the rows, closing: every
``duckdb.connect`` of the process is wrapped to time it); the rest is Python building
the models. A read first catches up with the spool, so a first read from a new Store
is timed on its own: with nothing pending, and with one finished run pending (on a
copy of the store). A page passes when its calls add up to at most 300 ms, cold and
warm. ``--explain`` profiles the SQL of every call over target (EXPLAIN ANALYZE, as an
indented operator tree).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

import codetape
from codetape.replayer.internal import DiffOutline, diff_outline, whole_pair
from codetape.schemas import Run, StepPair
from codetape.store import IngestStats, Store
from codetape.store.internal import DB_NAME, connect, done_dir, ingest, live_dir
from codetape.testing import RunSpec, RunStatus, StepKind, StoreBuilder, synthetic_step

TARGET_MS = 300.0
WARM_REPEATS = 9
RUNS_PER_FILE = 100  # runs per spool file, that is per recording process
BIG_RUN_STEPS = 500
FORMAT = 3  # bump when the synthesized store changes shape: cached stores get rebuilt
MARKER = "bench-viewer.json"
EXTRAS = "viewer also"  # calls the viewer makes beyond the list
WHOLE = "whole"  # a run's steps read whole: what the Run page read before, for comparison
PROBE = "pending-probe"  # a scratch copy of the store, inside it, while measuring
SEED = 20250101
RARE_CUSTOMER = 4242  # only a handful of tasks mention this customer
COMMON_TERM = "send_email("  # in the code of every step of the "notify" kind
# As the viewer's codetape.viewer._data (not imported: Streamlit's modules would make
# Python's garbage collector slower for everything measured here, unlike the old rows).
SEARCH_COUNT_AT_MOST = 1000  # the Runs page counts a search up to this many runs
RECENT_RUNS = 100  # the runs the pickers offer

AGENTS = (
    ("orders-agent", 30),
    ("support-triage", 25),
    ("research-assistant", 15),
    ("data-cleaner", 12),
    ("sql-analyst", 10),
    ("code-reviewer", 8),
)
TASKS = (
    "Refund the duplicate charges for customer {c}",
    "Summarize the open tickets of customer {c} and draft a reply",
    "Find every order of customer {c} shipped late last quarter",
    "Reconcile the invoices of customer {c} against payments",
    "Clean up the address records of customer {c}",
    "Explain why the monthly report for customer {c} changed",
)
# Share of each kind of step: runs without errors, and the three in ten with some.
WEIGHTS_CLEAN: dict[StepKind, int] = {"lookup": 45, "notify": 12, "compute": 43, "fails": 0}
WEIGHTS_FLAKY: dict[StepKind, int] = {"lookup": 40, "notify": 10, "compute": 38, "fails": 12}
SPANS = {kind: 1 + len(synthetic_step(kind, 0, 0).tool_calls) for kind in WEIGHTS_FLAKY}


# -- the plan: which runs, with which steps ------------------------------------------


@dataclass
class RunPlan:
    agent: str
    customer: int
    task: str
    status: RunStatus
    kinds: list[StepKind] = field(default_factory=list)

    def spec(self, shared_code: bool) -> RunSpec:
        """The run, each step with code and output of its own (or its kind's, shared)."""
        steps = tuple(
            synthetic_step(kind, 0, 1) if shared_code else synthetic_step(kind, i, self.customer)
            for i, kind in enumerate(self.kinds)
        )
        answer = f"Done: {self.task.lower()} ({len(steps)} steps)"
        return RunSpec(
            self.agent,
            self.task,
            steps,
            self.status,
            answer if self.status == "ok" else None,
            RuntimeError("the model gave up"),
        )


def _fill(rng: random.Random, budget: int, flaky: bool) -> list[StepKind]:
    """Step kinds whose spans add up to exactly ``budget``."""
    weights = WEIGHTS_FLAKY if flaky else WEIGHTS_CLEAN
    kinds: list[StepKind] = []
    while budget > 0:
        fits = [k for k, w in weights.items() if w and SPANS[k] <= budget]
        kind = rng.choices(fits, [weights[k] for k in fits])[0]
        kinds.append(kind)
        budget -= SPANS[kind]
    return kinds


def _budgets(rng: random.Random, count: int, total: int) -> list[int]:
    """Spans for ``count`` runs adding up to ``total``: a tenth short, the rest ~20-100
    steps."""
    raw = [rng.randint(3, 30) if rng.random() < 0.1 else rng.randint(35, 170) for _ in range(count)]
    scale = total / sum(raw)
    budgets = [max(1, int(r * scale)) for r in raw]
    short = total - sum(budgets)
    for i in sorted(range(count), key=lambda i: raw[i] * scale - budgets[i])[::-1]:
        if short == 0:
            break
        step = 1 if short > 0 else -1
        if budgets[i] + step >= 1:
            budgets[i] += step
            short -= step
    return budgets


def plan_runs(runs: int, spans: int, seed: int) -> list[RunPlan]:
    rng = random.Random(seed)
    agents, agent_weights = zip(*AGENTS, strict=True)
    plans = []
    for _ in range(runs):
        customer = rng.randint(1000, 9999)
        while customer == RARE_CUSTOMER:
            customer = rng.randint(1000, 9999)
        roll = rng.random()
        status: RunStatus = "incomplete" if roll < 0.01 else "error" if roll < 0.06 else "ok"
        agent = rng.choices(agents, agent_weights)[0]
        plans.append(RunPlan(agent, customer, rng.choice(TASKS).format(c=customer), status))
    for plan in rng.sample(plans, min(3, runs)):  # the rare search term
        plan.customer = RARE_CUSTOMER
        plan.task = rng.choice(TASKS).format(c=RARE_CUSTOMER)
    big = plans[runs // 2]
    big.status = "ok"
    big.kinds = rng.choices(list(WEIGHTS_FLAKY), list(WEIGHTS_FLAKY.values()), k=BIG_RUN_STEPS)
    others = [p for p in plans if p is not big]
    # Every run but an incomplete one has a span of its own besides its steps' spans.
    left = spans - (1 + sum(SPANS[k] for k in big.kinds))
    left -= sum(1 for p in others if p.status != "incomplete")
    if left < 2 * len(others):
        raise SystemExit(f"--spans {spans} is too few for --runs {runs}")
    for plan, budget in zip(others, _budgets(rng, len(others), left), strict=True):
        plan.kinds = _fill(rng, budget, flaky=rng.random() < 0.3)
    return plans


# -- the cached store ----------------------------------------------------------------


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "runs": args.runs,
        "spans": args.spans,
        "seed": args.seed,
        "shared_code": args.shared_code,
        "ingest": args.ingest,
    }


def _counts(home: Path) -> dict[str, int]:
    con = duckdb.connect(str(home / DB_NAME), read_only=True)
    try:
        row = con.execute(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM spans), "
            "(SELECT count(*) FROM steps), (SELECT count(*) FROM blobs)"
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    return dict(zip(("runs", "spans", "steps", "blobs"), map(int, row), strict=True))


def cached_store(home: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    marker = home / MARKER
    if not marker.exists():
        return None
    info: dict[str, Any] = json.loads(marker.read_text())
    if info.get("params") != _params(args) or not (home / DB_NAME).exists():
        return None
    counts = _counts(home)
    if counts["runs"] != args.runs or counts["spans"] != args.spans:
        return None
    return info


def _clear(home: Path) -> None:
    if home.exists() and any(home.iterdir()) and not (home / MARKER).exists():
        raise SystemExit(f"{home} is not empty and not a bench store; pick another --store-dir")
    for name in (DB_NAME, DB_NAME + ".wal", "spool", "tmp", "blobs", MARKER, PROBE):
        path = home / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    home.mkdir(parents=True, exist_ok=True)


def _ingest(home: Path, how: str) -> IngestStats:
    if how == "once":
        return ingest(home, wait_s=60)
    stats = IngestStats()  # as if each process's runs were ingested when it finished
    for path in sorted(live_dir(home).glob("*.jsonl")):
        part = ingest(home, wait_s=60, files=[path])
        stats.files += part.files
        stats.records += part.records
    return stats


def build_store(home: Path, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Plan every run (its step kinds only), then write and ingest them ``--chunk`` runs
    at a time: each run's spec is made as it is written, and each chunk's spool files
    are ingested and removed before the next is written (bounded memory and disk)."""
    _clear(home)
    plans = plan_runs(args.runs, args.spans, args.seed)
    log(
        f"writing and ingesting {args.runs:,} runs / {args.spans:,} spans, {args.chunk:,} at a time"
    )
    write_s = ingest_s = 0.0
    spool_bytes = 0
    stats = IngestStats()
    ids: list[str] = []
    with StoreBuilder(home, seed=args.seed, runs_per_spool=RUNS_PER_FILE, keep_runs=False) as b:
        for first in range(0, args.runs, args.chunk):
            chunk = plans[first : first + args.chunk]
            t0 = time.perf_counter()
            ids += b.add_runs(plan.spec(args.shared_code) for plan in chunk)
            b.close()
            write_s += time.perf_counter() - t0
            spool_bytes += sum(p.stat().st_size for p in live_dir(home).glob("*.jsonl"))
            t0 = time.perf_counter()
            part = _ingest(home, args.ingest)
            ingest_s += time.perf_counter() - t0
            stats.files += part.files
            stats.records += part.records
            if not args.keep_spool:  # ingested; the store does not need them to be read
                shutil.rmtree(done_dir(home), ignore_errors=True)
            log(
                f"  {first + len(chunk):,} runs: spool {spool_bytes / 1e6:,.0f} MB written in "
                f"{write_s:.0f}s, {stats.records:,} records ingested in {ingest_s:.0f}s"
            )
    big = args.runs // 2
    typical = min(
        (i for i in range(args.runs // 3) if plans[i].status == "ok"),
        key=lambda i: abs(len(plans[i].kinds) - 60),
    )
    info = {
        "params": _params(args),
        "counts": _counts(home),
        "spool_mb": round(spool_bytes / 1e6, 1),
        "spool_files": stats.files,
        "spool_records": stats.records,
        "write_spool_seconds": round(write_s, 2),
        "ingest_seconds": round(ingest_s, 2),
        "ingest_spans_per_second": round(args.spans / ingest_s),
        "db_mb": round((home / DB_NAME).stat().st_size / 1e6, 1),
        "big_run": {"id": ids[big], "steps": len(plans[big].kinds)},
        "typical_run": {"id": ids[typical], "steps": len(plans[typical].kinds)},
        "rare_search": f"customer {RARE_CUSTOMER}",
        "common_search": COMMON_TERM,
        "built_with": f"codetape {codetape.__version__}, duckdb {duckdb.__version__}",
    }
    if info["counts"]["spans"] != args.spans or info["counts"]["runs"] != args.runs:
        raise SystemExit(f"built store has {info['counts']}, expected {_params(args)}")
    (home / MARKER).write_text(json.dumps(info, indent=2))
    return info


# -- measuring -----------------------------------------------------------------------


class _TimedConnection:
    """A DuckDB connection that adds the time of each of its calls to ``clock``."""

    def __init__(self, con: duckdb.DuckDBPyConnection, clock: DuckDBClock) -> None:
        self._con = con
        self._clock = clock

    def execute(self, sql: str, params: Any = None) -> _TimedConnection:
        self._clock.statements.append((sql, list(params or [])))
        with self._clock.timing():
            if params is None:
                self._con.execute(sql)
            else:
                self._con.execute(sql, params)
        return self

    def __enter__(self) -> _TimedConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._clock.timing():
            self._con.close()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._con, name)
        if not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self._clock.timing():
                result = attr(*args, **kwargs)
            return self if result is self._con else result

        return timed


class DuckDBClock:
    """The time this process spends inside DuckDB, and the SQL it runs: every
    ``duckdb.connect`` (codetape's too) returns a connection that times its calls.
    ``threads`` caps the threads of every connection."""

    def __init__(self, threads: int = 0) -> None:
        self.ns = 0
        self.statements: list[tuple[str, list[Any]]] = []
        real = duckdb.connect

        def connect(
            database: str = ":memory:",
            read_only: bool = False,
            config: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> Any:
            config = {**({"threads": threads} if threads else {}), **(config or {})}
            with self.timing():
                con = real(database, read_only=read_only, config=config, **kwargs)
            return _TimedConnection(con, self)

        duckdb.connect = connect  # type: ignore[assignment]

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        t0 = time.perf_counter_ns()
        try:
            yield
        finally:
            self.ns += time.perf_counter_ns() - t0

    def reset(self) -> None:
        self.ns, self.statements = 0, []


CLOCK: DuckDBClock | None = None  # set by main() before anything opens DuckDB


def _evict(path: Path) -> None:
    """Drop one file from the OS page cache (a clean file's pages; no root needed)."""
    for name in (path, path.with_name(path.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(name, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


@dataclass
class Result:
    page: str
    name: str
    call: str
    cold_ms: float
    warm_ms: float
    min_ms: float
    evicted_ms: float | None
    sql_ms: float
    queries: int
    rows: int
    sql: list[tuple[str, list[Any]]] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return max(self.cold_ms, self.warm_ms) <= TARGET_MS

    def as_dict(self) -> dict[str, Any]:
        return {
            "page": self.page,
            "name": self.name,
            "call": self.call,
            "cold_ms": self.cold_ms,
            "warm_ms": self.warm_ms,
            "warm_min_ms": self.min_ms,
            "evicted_ms": self.evicted_ms,
            "warm_sql_ms": self.sql_ms,
            "queries": self.queries,
            "rows": self.rows,
            "pass": self.ok,
        }


def _size(value: object) -> int:
    return len(value) if isinstance(value, list) else 1


def _clock() -> DuckDBClock:
    assert CLOCK is not None, "main() sets up the DuckDB clock first"
    return CLOCK


def measure(home: Path, page: str, name: str, call: str, fn: Callable[[Store], object]) -> Result:
    clock = _clock()
    _evict(home / DB_NAME)
    store = Store(home)
    t0 = time.perf_counter_ns()
    fn(store)
    evicted = (time.perf_counter_ns() - t0) / 1e6
    store = Store(home)
    t0 = time.perf_counter_ns()
    value = fn(store)
    cold = (time.perf_counter_ns() - t0) / 1e6
    times, sql = [], []
    for _ in range(WARM_REPEATS):
        clock.reset()
        t0 = time.perf_counter_ns()
        fn(store)
        times.append((time.perf_counter_ns() - t0) / 1e6)
        sql.append(clock.ns / 1e6)
    return Result(
        page,
        name,
        call,
        round(cold, 1),
        round(statistics.median(times), 1),
        round(min(times), 1),
        round(evicted, 1),
        round(statistics.median(sql), 1),
        len(clock.statements),
        _size(value),
        list(clock.statements),
    )


Timing = tuple[float | None, float, list[float]]  # evicted, cold, warm (ms)


def _timed(once: Callable[[], object], path: Path | None) -> Timing:
    """``once`` after evicting ``path`` (if given), once more, then ``WARM_REPEATS``
    times: the evicted, cold and warm times in ms."""
    evicted = None
    if path is not None:
        _evict(path)
        t0 = time.perf_counter_ns()
        once()
        evicted = (time.perf_counter_ns() - t0) / 1e6
    t0 = time.perf_counter_ns()
    once()
    cold = (time.perf_counter_ns() - t0) / 1e6
    times = []
    for _ in range(WARM_REPEATS):
        t0 = time.perf_counter_ns()
        once()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return evicted, cold, times


def _opened(name: str, call: str, timed: Timing) -> Result:
    evicted, cold, times = timed
    warm = statistics.median(times)
    return Result(
        "open",
        name,
        call,
        round(cold, 1),
        round(warm, 1),
        round(min(times), 1),
        None if evicted is None else round(evicted, 1),
        round(warm, 1) if name == "connect" else 0.0,
        1 if name == "connect" else 0,
        1,
    )


def measure_open(home: Path) -> Result:
    """A first read (``count_runs()``) from a new ``Store`` with nothing pending: what
    a reader pays to catch up with the spool when there is nothing to catch up with."""
    timed = _timed(lambda: Store(home).count_runs(), home / DB_NAME)
    return _opened("Store(home)", "Store(home).count_runs()", timed)


def measure_connect(home: Path) -> Result:
    def once() -> None:
        with connect(home, read_only=True):
            pass

    return _opened(
        "connect", "connect(home, read_only=True), no query", _timed(once, home / DB_NAME)
    )


def measure_pending(home: Path, seed: int) -> Result:
    """The same first read while one finished run (~100 spans) waits in the spool, as
    when agents record while the viewer reads. On a copy of the database, so the cached
    store stays as it was built."""
    probe = home / PROBE
    shutil.rmtree(probe, ignore_errors=True)
    probe.mkdir()
    shutil.copyfile(home / DB_NAME, probe / DB_NAME)
    rng = random.Random(seed + 2)
    builder = StoreBuilder(probe, seed=seed + 2)

    def once() -> None:
        customer = rng.randint(1000, 9999)
        plan = RunPlan(AGENTS[0][0], customer, TASKS[0].format(c=customer), "ok")
        plan.kinds = _fill(rng, 99, flaky=True)
        builder.add_run(plan.spec(shared_code=False))
        builder.close()  # its process ended: the spool file waits, finished
        t0 = time.perf_counter_ns()
        Store(probe).count_runs()
        took.append((time.perf_counter_ns() - t0) / 1e6)

    took: list[float] = []
    try:
        _timed(once, None)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    call = "Store(home).count_runs(), 1 run pending"
    return _opened("Store(home), 1 run pending", call, (None, took[0], took[1:]))


def _listing(store: Store, **filters: Any) -> tuple[int, list[Run]]:
    """What the Runs page reads: the count of the runs that match (a search's up to
    the viewer's bound) and the first page of them, in one session."""
    at_most = SEARCH_COUNT_AT_MOST + 1 if filters.get("search") else None
    with store.session():
        return store.count_runs(**filters, at_most=at_most), store.runs(limit=50, **filters)


def _both(store: Store, a: str, b: str) -> tuple[Run, Run]:
    """What the Compare page reads to know whether its cached diff still holds."""
    with store.session():
        return store.run(a), store.run(b)


def _compare_page(store: Store, a: str, b: str) -> tuple[list[Run], DiffOutline]:
    """What the Compare page reads on its first load, on one connection."""
    with store.session():
        recent = store.runs(limit=RECENT_RUNS)
        return recent, diff_outline(store, *_both(store, a, b))


def _other_pair(store: Store, outline: DiffOutline) -> StepPair:
    """What picking a pair other than the first divergence reads: that pair, whole."""
    return whole_pair(store, outline, (len(outline.pairs) + 1) // 2)


def _compared_with(home: Path, run_id: str) -> str:
    """A finished run of about as many steps as ``run_id``, to compare it with."""
    base = Store(home).run(run_id)
    near = [r for r in Store(home).runs("ok", base.name, 200) if r.id != run_id]
    return min(near, key=lambda r: abs(r.step_count - base.step_count)).id


def run_benchmarks(home: Path, info: dict[str, Any]) -> list[Result]:
    big, typical = info["big_run"]["id"], info["typical_run"]["id"]
    rare, common = info["rare_search"], info["common_search"]
    n = info["big_run"]["steps"]
    other = _compared_with(home, typical)
    shown = _compare_page(Store(home), typical, other)[1]
    t = info["typical_run"]["steps"]
    cases: list[tuple[str, str, str, Callable[[Store], object]]] = [
        # The Runs page reads the count and its page of runs in one session.
        ("runs", "listing", "count_runs() + runs(limit=50)", lambda s: _listing(s)),
        ("runs", "agents", "agents()", lambda s: s.agents()),
        (
            "runs failed",
            "listing",
            "count_runs(failed=True) + runs(failed=True, limit=50)",
            lambda s: _listing(s, failed=True),
        ),
        ("runs failed", "agents", "agents()", lambda s: s.agents()),
        (
            "runs search",
            "listing",
            f"count_runs(search={rare!r}) + runs(...)",
            lambda s: _listing(s, search=rare),
        ),
        ("runs search", "agents", "agents()", lambda s: s.agents()),
        (
            "runs search code",
            "listing",
            f"count_runs(search={common!r}) + runs(...)",
            lambda s: _listing(s, search=common),
        ),
        ("runs search code", "agents", "agents()", lambda s: s.agents()),
        # The Run page: every step without its blobs, and the page of 20 it shows whole.
        (f"run ({n} steps)", "run", "run(id)", lambda s: s.run(big)),
        (
            f"run ({n} steps)",
            "outline",
            "steps(id, contents=False)",
            lambda s: s.steps(big, contents=False),
        ),
        (f"run ({n} steps)", "page", "steps(id, 240, 20)", lambda s: s.steps(big, 240, 20)),
        (f"run ({n} steps)", WHOLE, "steps(id), all whole", lambda s: s.steps(big)),
        (f"run ({n} steps)", "step", f"step(id, {n // 2})", lambda s: s.step(big, n // 2)),
        (f"run ({t} steps)", "run", "run(id)", lambda s: s.run(typical)),
        (
            f"run ({t} steps)",
            "outline",
            "steps(id, contents=False)",
            lambda s: s.steps(typical, contents=False),
        ),
        (f"run ({t} steps)", "page", "steps(id, 0, 20)", lambda s: s.steps(typical, 0, 20)),
        (f"run ({t} steps)", WHOLE, "steps(id), all whole", lambda s: s.steps(typical)),
        # The Compare page: its pickers' recent runs, both runs, and their diff as the
        # page shows it (every pair's status, the first divergence whole), in one session.
        (
            "compare",
            "page",
            f"runs(limit={RECENT_RUNS}) + run(a), run(b) + diff_outline in a session",
            lambda s: _compare_page(s, typical, other),
        ),
        # The Failures page: the agents for its filter, and every failing step grouped.
        ("failures", "agents", "agents()", lambda s: s.agents()),
        ("failures", "failures", "failures()", lambda s: s.failures()),
        # Not in the list, but the viewer (codetape.viewer._data) makes them too:
        # the Runs page asks whether any run is still recording, on every rerun; while a
        # run is recording, its Run page reads it again at every refresh.
        (EXTRAS, "running", "count_runs('running')", lambda s: s.count_runs("running")),
        (EXTRAS, "follow", "run(id) per refresh", lambda s: s.run(typical)),
        # Picking another pair on the Compare page reads it whole; what the page read
        # before, and the CLI's `codetape diff` still reads: the whole diff.
        (EXTRAS, "pair", "whole_pair(outline, another pair)", lambda s: _other_pair(s, shown)),
        (
            EXTRAS,
            "diff",
            "diff_runs(a, b)",
            lambda s: codetape.diff_runs(typical, other, home=s.home),
        ),
    ]
    results = [measure_open(home), measure_pending(home, info["params"]["seed"])]
    results.append(measure_connect(home))
    results += [measure(home, page, name, call, fn) for page, name, call, fn in cases]
    return results


def page_totals(results: list[Result]) -> list[dict[str, Any]]:
    pages: dict[str, list[Result]] = {}
    for r in results:
        if r.page not in ("open", EXTRAS) and r.name not in ("step", WHOLE):
            pages.setdefault(r.page, []).append(r)
    totals = []
    for page, rs in pages.items():
        cold, warm = sum(r.cold_ms for r in rs), sum(r.warm_ms for r in rs)
        totals.append(
            {
                "page": page,
                "loads": " + ".join(r.call for r in rs),
                "cold_ms": round(cold, 1),
                "warm_ms": round(warm, 1),
                "pass": max(cold, warm) <= TARGET_MS,
            }
        )
    return totals


_PLAN_KEYS = (
    "Table",
    "Type",
    "Filters",
    "Conditions",
    "Join Type",
    "Groups",
    "Aggregates",
    "Expression",
    "Top",
    "Order By",
)


def _plan_lines(node: dict[str, Any], depth: int, out: list[str]) -> None:
    info = node.get("extra_info") or {}
    bits = [f"{k}: {' '.join(str(info[k]).split())[:160]}" for k in _PLAN_KEYS if info.get(k)]
    if "rows_scanned" in node:
        bits.append(
            f"scanned {node['rows_scanned']:,} rows, {node.get('row_groups_scanned')}/"
            f"{node.get('total_row_groups_to_scan')} row groups"
        )
    out.append(
        f"{'  ' * depth}{node['type']} {node['timing'] * 1000:.1f} ms, "
        f"{node.get('intermediate_rows', 0):,} rows" + ("; " if bits else "") + "; ".join(bits)
    )
    for child in node.get("children", []):
        _plan_lines(child, depth + 1, out)


def profile(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> str:
    """EXPLAIN ANALYZE as a compact tree: operator, its time, its rows, what it does."""
    t0 = time.perf_counter()
    row = con.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params).fetchone()
    wall = (time.perf_counter() - t0) * 1000
    assert row is not None
    found = json.loads(row[1])
    out = [
        f"  query {wall:.1f} ms (cpu {found['query'].get('cpu_time', 0) * 1000:.1f} ms, "
        f"planning {found['planner']['total_time'] * 1000:.1f} ms)"
    ]
    for node in found["operator"]:
        _plan_lines(node, 2, out)
    return "\n".join(out)


def explain(home: Path, results: list[Result], threads: int) -> str:
    """The plan of every SQL statement a query over target ran, profiled in one fresh
    read-only connection per statement (as codetape runs them)."""
    out = []
    seen = set()
    for r in results:
        if r.ok:
            continue
        for sql, params in r.sql:
            key = (sql, json.dumps(params, default=str))
            if key in seen:
                continue
            seen.add(key)
            shown = [p if not isinstance(p, list) else f"[{len(p)} values]" for p in params]
            out.append(f"\n-- {r.page}: {r.call}\n   {' '.join(sql.split())}\n   params {shown}")
            con = duckdb.connect(
                str(home / DB_NAME), read_only=True, config={"threads": threads} if threads else {}
            )
            try:
                out.append(profile(con, sql, params))
            finally:
                con.close()
    return "\n".join(out)


# -- main ----------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return f"{value:>7.1f}" if value is not None else f"{'-':>7}"


def _default_dir(args: argparse.Namespace) -> Path:
    name = f"codetape-bench-viewer-{args.runs}r-{args.spans}s"
    name += "-shared" if args.shared_code else ""
    name += "-per-file" if args.ingest == "per-file" else ""
    return Path(tempfile.gettempdir()) / name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store-dir", type=Path, help="where the built store is cached")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--rebuild", action="store_true", help="rebuild a cached store")
    parser.add_argument(
        "--shared-code",
        action="store_true",
        help="every step of a kind has the same code and output (and "
        "blobs) instead of its own: fewer blobs, but unrealistically cheap "
        "to scan and search",
    )
    parser.add_argument(
        "--ingest",
        choices=("once", "per-file"),
        default="once",
        help="build with one ingest() of every spool file (default; as `codetape doctor "
        "--rebuild` does), or one per file, as processes finishing one after another would: "
        "slower, and it lays a run's rows out together",
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=5000,
        help="runs written and ingested at a time while building (default 5,000)",
    )
    parser.add_argument(
        "--keep-spool",
        action="store_true",
        help="keep the ingested spool files (spool/done) in the store",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="cap DuckDB's threads (default: its own, one per core)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="print EXPLAIN ANALYZE for the SQL of queries over target",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    global CLOCK
    CLOCK = DuckDBClock(args.threads)
    home = (args.store_dir or _default_dir(args)).absolute()

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    info = None if args.rebuild else cached_store(home, args)
    built = info is None
    if info is None:
        log(f"building the store in {home}")
        info = build_store(home, args, log)
    else:
        log(f"reusing the store in {home} (built in {info['ingest_seconds']}s of ingestion)")
        # Opened for writing once, as the next recording would: whatever the code under
        # test adds to the schema (an index, say) applies to the cached store too.
        with connect(home, read_only=False):
            pass

    results = run_benchmarks(home, info)
    totals = page_totals(results)
    command = " ".join(
        [".venv/bin/python", "bench/viewer.py", "--store-dir", shlex.quote(str(home))]
        + (["--runs", str(args.runs)] if args.runs != 10_000 else [])
        + (["--spans", str(args.spans)] if args.spans != 1_000_000 else [])
        + (["--seed", str(args.seed)] if args.seed != SEED else [])
        + (["--threads", str(args.threads)] if args.threads else [])
        + (["--shared-code"] if args.shared_code else [])
        + (["--ingest", args.ingest] if args.ingest != "once" else [])
    )
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, duckdb {duckdb.__version__}",
        "store": {**info, "path": str(home), "built_now": built},
        "target_ms": TARGET_MS,
        "results": [r.as_dict() for r in results],
        "pages": totals,
        "pass": all(r.ok for r in results) and all(t["pass"] for t in totals),
        "command": command,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        c = info["counts"]
        print(f"machine: {report['machine']}; load average {report['load_average']}")
        print(
            f"store: {home}: {c['runs']:,} runs, {c['spans']:,} spans, {c['steps']:,} steps, "
            f"{c['blobs']:,} blobs, {info['db_mb']} MB"
        )
        print(
            f"ingestion: {info['spool_records']:,} spool records ({info['spool_mb']:,} MB, "
            f"{info['spool_files']} files) in {info['ingest_seconds']}s = "
            f"{info['ingest_spans_per_second']:,} spans/s"
            + ("" if built else " (when the cache was built)")
        )
        print(
            f"\n{'page':18} {'call':40} {'cold':>7} {'warm':>7} {'min':>7} {'evicted':>7} "
            f"{'sql':>7} {'rows':>5}  target {TARGET_MS:.0f} ms"
        )
        for r in results:
            print(
                f"{r.page:18} {r.call:40} {r.cold_ms:>7.1f} {r.warm_ms:>7.1f} {r.min_ms:>7.1f} "
                f"{_ms(r.evicted_ms)} {r.sql_ms:>7.1f} {r.rows:>5}  "
                f"{'pass' if r.ok else 'FAIL'}"
            )
        print(f"\n{'page load = the sum of its calls':59} {'cold':>7} {'warm':>7}")
        for t in totals:
            print(
                f"{t['page']:59} {t['cold_ms']:>7.1f} {t['warm_ms']:>7.1f}  "
                f"{'pass' if t['pass'] else 'FAIL'}"
            )
        print(
            f"\nms. cold: first call on a fresh Store; warm: median of {WARM_REPEATS} more "
            "(min: their fastest);\nevicted: first call with the database file dropped from "
            "the OS page cache;\nsql: of the warm time, the part inside DuckDB (connecting, "
            "running the SQL, fetching, closing).\npass: cold and warm both within target."
        )
        print(f"\nreproduce: {command}")
    if args.explain:
        print(explain(home, results, args.threads), file=sys.stderr if args.json else sys.stdout)


if __name__ == "__main__":
    main()
