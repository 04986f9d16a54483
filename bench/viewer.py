"""What the viewer's pages cost to load from a big store: 10,000 runs, 1,000,000 spans.

Run: ``.venv/bin/python bench/viewer.py [--store-dir DIR] [--json] [--explain]``.

The store is built once and cached in ``--store-dir`` (default: a directory under the
system temp dir named after the sizes); later runs reuse it and only measure. To build
it, real runs are recorded with ``codetape.run`` + ``@codetape.code_action`` +
``@codetape.tool`` (a step with one tool call, one with two, one with none, a failing
step, and a run that raises), and their spool records, blob records included, are
stamped out with fresh trace and span ids into one spool file per 100 runs, then
ingested with one ``codetape.store.ingest`` call (``--ingest per-file``: one per file).
Blob records are written as often as a real spool has them and keep the template's
digests, so they dedupe, except each step's code and output: those are made distinct
per step, as an agent's are (4 distinct previews in 600,000 steps would make scans and
searches unrealistically cheap: DuckDB filters a dictionary-compressed column once per
distinct value). ``--shared-code`` keeps the template's code and output as well.

The mix (default sizes): runs of 1-111 steps, 60 on average and 4 in 5 between 20 and
100, each step with 0-2 tool calls; three in ten runs have failing steps, 5% raise, 1%
never finish (their process died); six agent names. One run has 500 steps: the Run
page is measured on it (and on a typical 60-step run).

Each page's loads are timed as the viewer makes them, through ``codetape.Store``, in
this one process: "cold" is the first call on a freshly opened Store, "warm" the median
of 9 more, "evicted" a first call after dropping the database file from the OS page
cache (``posix_fadvise``, that file only). "sql" is the part of the warm time spent in
``Store._query`` (opening DuckDB and running the SQL); the rest is Python building the
models. Opening a Store ingests pending spool first, so it is timed on its own: with
nothing pending, and with one finished run pending (on a copy of the store). A page
passes when its calls add up to at most 300 ms, cold and warm. ``--explain`` profiles
the SQL of every call over target (EXPLAIN ANALYZE, as an indented operator tree).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import random
import shlex
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

import codetape
from codetape.schemas import attributes as A
from codetape.store import IngestStats, Store, ingest
from codetape.store._db import DB_NAME, connect
from codetape.store._spool import done_dir, live_dir

TARGET_MS = 300.0
WARM_REPEATS = 9
RUNS_PER_FILE = 100  # runs per spool file, that is per recording process
BIG_RUN_STEPS = 500
FORMAT = 2  # bump when the synthesized store changes shape: cached stores get rebuilt
MARKER = "bench-viewer.json"
EXTRAS = "viewer also"  # calls the viewer makes beyond the list
PROBE = "pending-probe"  # a scratch copy of the store, inside it, while measuring
SEED = 20250101
T0_NS = 1_735_689_600 * 10**9  # 2025-01-01T00:00:00Z
RARE_CUSTOMER = 4242  # only a handful of tasks mention this customer
COMMON_TERM = "send_email("  # in the code of every step of the two-tool kind

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

# -- the template: one real recorded run -----------------------------------------

STEP_CODE = {
    "tool1": "orders = lookup('orders', customer=customer)\nprint(len(orders), 'orders')",
    "tool2": (
        "late = [o for o in orders if o['late']]\n"
        "lookup('shipments', customer=customer)\n"
        "send_email(to=f'c{customer}@example.com', body=f'{len(late)} late orders')\n"
        "print('emailed', len(late))"
    ),
    "plain": "total = sum(o['amount'] for o in orders)\nprint(f'total: {total:.2f}')",
    "error": "average_refund = total / len(refunds)",
}
# Share of each kind of step: runs without errors, and the three in ten with some.
WEIGHTS_CLEAN = {"tool1": 45, "tool2": 12, "plain": 43, "error": 0}
WEIGHTS_FLAKY = {"tool1": 40, "tool2": 10, "plain": 38, "error": 12}


@dataclass
class SpanTemplate:
    """One span record of the template as a %-format string, with its times relative to
    the start of its step."""

    fmt: str
    start: int
    end: int
    events: list[int]
    is_step: bool
    code: str = ""  # a step's code and output, as the template recorded them
    stdout: str = ""
    digests: tuple[str, ...] = ()  # of those two blobs


@dataclass
class UnitTemplate:
    """One step as the spool holds it: the blob records written ahead of it, its tool
    spans and its execute_code span."""

    kind: str
    blob_lines: list[tuple[str, str]]  # (digest, spool line)
    spans: list[SpanTemplate]  # tool spans first, the step span last

    @property
    def span_count(self) -> int:
        return len(self.spans)


@dataclass
class Template:
    units: dict[str, UnitTemplate]
    start: dict[str, Any]  # a run's start record
    root_ok: dict[str, Any]  # a run's root span, ended well
    root_error: dict[str, Any]  # a run's root span, after an exception
    blob_lines: list[str]  # every blob record of the template, once


def record_template(home: Path) -> list[dict[str, Any]]:
    """Record the template runs for real and return their spool records."""
    codetape.configure(home=home, otlp=False)

    @codetape.tool
    def lookup(table: str, customer: int) -> list[dict[str, Any]]:
        return [
            {"id": i, "table": table, "customer": customer, "amount": 12.5 * i, "late": i % 2 == 0}
            for i in range(1, 6)
        ]

    @codetape.tool
    def send_email(to: str, body: str) -> str:
        return f"queued for {to}"

    @codetape.code_action
    def execute(code: str, namespace: dict[str, Any]) -> None:
        exec(code, namespace)

    namespace: dict[str, Any] = {
        "lookup": lookup,
        "send_email": send_email,
        "customer": 1,
        "refunds": [],
    }
    task = TASKS[0].format(c=1)
    with contextlib.redirect_stdout(io.StringIO()), codetape.run("template", task=task) as run:
        for kind in ("tool1", "tool2", "plain", "error"):
            with contextlib.suppress(ZeroDivisionError):  # an agent carries on after it
                execute(STEP_CODE[kind], namespace)
        run.final_answer = "Refunded 2 duplicate charges"
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.suppress(RuntimeError),
        codetape.run("template", task=task),
    ):
        execute(STEP_CODE["tool1"], namespace)
        raise RuntimeError("the model gave up after 1 step")
    codetape.configure(home=home, otlp=False)  # closes the template's spool file
    lines: list[dict[str, Any]] = []
    for path in sorted(live_dir(home).glob("*.jsonl")) + sorted(done_dir(home).glob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line]
    return lines


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _preview(text: str) -> str:
    """As the recorder cuts a preview, JSON-escaped for the inside of a string."""
    cut = text if len(text) <= 200 else text[:199] + "\u2026"
    return json.dumps(cut)[1:-1]


def _span_template(
    record: dict[str, Any], step_start: int, is_step: bool, texts: dict[str, str]
) -> SpanTemplate:
    rec = json.loads(json.dumps(record))
    rec["trace_id"], rec["span_id"], rec["parent_id"] = "@T@", "@S@", "@P@"
    rec["start_ns"], rec["end_ns"] = "@B@", "@E@"
    attrs = rec["attributes"]
    code = stdout = ""
    digests: list[str] = []
    if is_step:
        attrs[A.STEP_INDEX] = "@I@"
        digests.append(attrs[A.CODE_DIGEST])
        code = texts[attrs[A.CODE_DIGEST]]
        attrs[A.CODE_DIGEST], attrs[A.CODE_PREVIEW] = "@CD@", "@CP@"
        if A.STDOUT_DIGEST in attrs:
            digests.append(attrs[A.STDOUT_DIGEST])
            stdout = texts[attrs[A.STDOUT_DIGEST]]
            attrs[A.STDOUT_DIGEST], attrs[A.STDOUT_PREVIEW] = "@OD@", "@OP@"
    if A.GEN_AI_TOOL_CALL_ID in attrs:
        attrs[A.GEN_AI_TOOL_CALL_ID] = "@C@"
    events = []
    for n, event in enumerate(rec.get("events") or []):
        events.append(event["ts"] - step_start)
        event["ts"] = f"@V{n}@"
    fmt = _line(rec).replace("%", "%%")
    fmt = fmt.replace('"@T@"', '"%(trace)s"').replace('"@S@"', '"%(span)s"')
    fmt = fmt.replace('"@P@"', '"%(parent)s"').replace('"@C@"', '"%(call)s"')
    fmt = fmt.replace('"@B@"', "%(start)d").replace('"@E@"', "%(end)d")
    fmt = fmt.replace('"@I@"', "%(index)d")
    fmt = fmt.replace('"@CD@"', '"%(code_digest)s"').replace('"@CP@"', '"%(code_preview)s"')
    fmt = fmt.replace('"@OD@"', '"%(out_digest)s"').replace('"@OP@"', '"%(out_preview)s"')
    for n in range(len(events)):
        fmt = fmt.replace(f'"@V{n}@"', f"%(ev{n})d")
    start, end = record["start_ns"] - step_start, record["end_ns"] - step_start
    return SpanTemplate(fmt, start, end, events, is_step, code, stdout, tuple(digests))


def parse_template(records: list[dict[str, Any]]) -> Template:
    starts = [r for r in records if r["t"] == "start"]
    roots = [r for r in records if r["t"] == "span" and r["parent_id"] is None]
    ok_trace = next(r["trace_id"] for r in roots if r["attributes"].get(A.RUN_STATUS) == "ok")
    root_ok = next(r for r in roots if r["trace_id"] == ok_trace)
    root_error = next(r for r in roots if r["trace_id"] != ok_trace)
    texts = {r["digest"]: r["text"] for r in records if r["t"] == "blob" and "text" in r}
    units: dict[str, UnitTemplate] = {}
    kinds = iter(("tool1", "tool2", "plain", "error"))
    blobs: list[dict[str, Any]] = []
    spans: list[dict[str, Any]] = []
    for rec in records:
        if rec["t"] == "blob":
            blobs.append(rec)
        elif rec["t"] == "span" and rec["trace_id"] == ok_trace and rec["parent_id"] is not None:
            spans.append(rec)
            if rec["name"] == A.SPAN_EXECUTE_CODE:
                kind = next(kinds)
                step_start = rec["start_ns"]
                units[kind] = UnitTemplate(
                    kind,
                    [(b["digest"], _line(b)) for b in blobs],
                    [_span_template(s, step_start, s is rec, texts) for s in spans],
                )
                blobs, spans = [], []
        elif rec["t"] == "span" and rec["trace_id"] == ok_trace:
            blobs = []  # blobs written for the root span (its final answer)
    assert set(units) == set(STEP_CODE), f"template steps not found: {sorted(units)}"
    all_blobs = {r["digest"]: _line(r) for r in records if r["t"] == "blob"}
    return Template(
        units,
        next(r for r in starts if r["trace_id"] == ok_trace),
        root_ok,
        root_error,
        list(all_blobs.values()),
    )


# -- the plan: which runs, with which steps ------------------------------------------


@dataclass
class RunPlan:
    number: int  # position in time
    trace_id: str
    agent: str
    customer: int
    task: str
    status: str  # ok | error | incomplete
    kinds: list[str] = field(default_factory=list)


def _span_cost(template: Template, kind: str) -> int:
    return template.units[kind].span_count


def _fill(template: Template, rng: random.Random, budget: int, flaky: bool) -> list[str]:
    """Step kinds whose spans add up to exactly ``budget``."""
    weights = WEIGHTS_FLAKY if flaky else WEIGHTS_CLEAN
    kinds: list[str] = []
    while budget > 0:
        fits = [k for k, w in weights.items() if w and _span_cost(template, k) <= budget]
        kind = rng.choices(fits, [weights[k] for k in fits])[0]
        kinds.append(kind)
        budget -= _span_cost(template, kind)
    return kinds


def plan_runs(template: Template, runs: int, spans: int, seed: int) -> list[RunPlan]:
    rng = random.Random(seed)
    agents, agent_weights = zip(*AGENTS, strict=True)
    plans = []
    for number in range(runs):
        customer = rng.randint(1000, 9999)
        while customer == RARE_CUSTOMER:
            customer = rng.randint(1000, 9999)
        roll = rng.random()
        status = "incomplete" if roll < 0.01 else "error" if roll < 0.06 else "ok"
        plans.append(
            RunPlan(
                number,
                f"{rng.getrandbits(128):032x}",
                rng.choices(agents, agent_weights)[0],
                customer,
                rng.choice(TASKS).format(c=customer),
                status,
            )
        )
    for plan in rng.sample(plans, min(3, runs)):  # the rare search term
        plan.customer = RARE_CUSTOMER
        plan.task = rng.choice(TASKS).format(c=RARE_CUSTOMER)
    big = plans[runs // 2]
    big.status = "ok"
    big.kinds = rng.choices(list(WEIGHTS_FLAKY), list(WEIGHTS_FLAKY.values()), k=BIG_RUN_STEPS)
    big_spans = 1 + sum(_span_cost(template, k) for k in big.kinds)
    others = [p for p in plans if p is not big]
    # Spans per run: a tenth short, the rest ~20-100 steps; scaled to the exact total.
    raw = [rng.randint(3, 30) if rng.random() < 0.1 else rng.randint(35, 170) for _ in others]
    left = spans - big_spans - sum(1 for p in others if p.status != "incomplete")
    if left < 2 * len(others):
        raise SystemExit(f"--spans {spans} is too few for --runs {runs}")
    scale = left / sum(raw)
    budgets = [max(1, int(r * scale)) for r in raw]
    short = left - sum(budgets)
    for i in sorted(range(len(budgets)), key=lambda i: raw[i] * scale - budgets[i])[::-1]:
        if short == 0:
            break
        step = 1 if short > 0 else -1
        if budgets[i] + step >= 1:
            budgets[i] += step
            short -= step
    for plan, budget in zip(others, budgets, strict=True):
        plan.kinds = _fill(template, rng, budget, flaky=rng.random() < 0.3)
    return plans


# -- writing the spool ---------------------------------------------------------------


class SpoolBuilder:
    """Stamps out the template's records for a plan, as the recording process would."""

    def __init__(self, template: Template, seed: int, shared_code: bool) -> None:
        self.t = template
        self.rng = random.Random(seed + 1)
        self.shared_code = shared_code

    def _id(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"

    def _texts(self, step: SpanTemplate, plan: RunPlan, index: int) -> dict[str, tuple[str, str]]:
        """A step's code and output: the template's, or made distinct per step as an
        agent's are (which is what makes previews realistic to scan and search)."""
        if self.shared_code:
            code, out = step.code, step.stdout
        else:
            code = f"# step {index}: customer {plan.customer}\n{step.code}"
            out = f"[step {index}, customer {plan.customer}] {step.stdout}" if step.stdout else ""
        return {"code": (code, _digest(code)), "out": (out, _digest(out) if out else "")}

    def run_lines(self, plan: RunPlan, pid: int) -> Iterator[str]:
        t = self.t
        start_ns = T0_NS + plan.number * 120 * 10**9 + self.rng.randrange(10**9)
        root_id = self._id()
        attrs = {
            **t.start["attributes"],
            A.GEN_AI_AGENT_NAME: plan.agent,
            A.RUN_TASK: plan.task,
            A.RUN_PID: pid,
        }
        head = {
            "trace_id": plan.trace_id,
            "span_id": root_id,
            "parent_id": None,
            "name": f"{A.SPAN_INVOKE_AGENT} {plan.agent}",
            "start_ns": start_ns,
        }
        yield _line({**t.start, **head, "attributes": attrs})
        step_start = start_ns + 800_000_000
        end = step_start
        for index, kind in enumerate(plan.kinds):
            unit = t.units[kind]
            step = unit.spans[-1]
            texts = self._texts(step, plan, index)
            for digest, line in unit.blob_lines:
                if self.shared_code or digest not in step.digests:
                    yield line
            if not self.shared_code:
                for text, digest in texts.values():
                    if text:
                        yield _line({"t": "blob", "digest": digest, "text": text})
            step_id = self._id()
            for span in unit.spans:
                values: dict[str, Any] = {
                    "trace": plan.trace_id,
                    "span": step_id if span.is_step else self._id(),
                    "parent": root_id if span.is_step else step_id,
                    "call": self._id(),
                    "start": step_start + span.start,
                    "end": step_start + span.end,
                    "index": index,
                    "code_digest": texts["code"][1],
                    "code_preview": _preview(texts["code"][0]),
                    "out_digest": texts["out"][1],
                    "out_preview": _preview(texts["out"][0]),
                }
                for n, ev in enumerate(span.events):
                    values[f"ev{n}"] = step_start + ev
                yield span.fmt % values
                end = max(end, step_start + span.end)
            step_start = end + 1_500_000_000  # the model thinks between steps
        if plan.status == "incomplete":
            return  # the process died before the run ended
        template = t.root_ok if plan.status == "ok" else t.root_error
        attrs = {**template["attributes"], **attrs}
        if plan.status == "ok":
            answer = f"Done: {plan.task.lower()} ({len(plan.kinds)} steps)"
            digest = _digest(answer)
            yield _line({"t": "blob", "digest": digest, "text": answer})
            attrs[A.RUN_FINAL_ANSWER] = answer
            attrs[A.RUN_FINAL_ANSWER_DIGEST] = digest
        events = [{**e, "ts": end + 1000} for e in template.get("events") or []]
        yield _line(
            {**template, **head, "end_ns": end + 2000, "attributes": attrs, "events": events}
        )


def write_spool(
    home: Path, template: Template, plans: list[RunPlan], seed: int, shared_code: bool
) -> int:
    live = live_dir(home)
    live.mkdir(parents=True, exist_ok=True)
    builder = SpoolBuilder(template, seed, shared_code)
    host = socket.gethostname()
    written = 0
    for first in range(0, len(plans), RUNS_PER_FILE):
        pid = 100_000 + first // RUNS_PER_FILE
        lines = list(template.blob_lines)  # what earlier runs of the process had written
        for plan in plans[first : first + RUNS_PER_FILE]:
            lines.extend(builder.run_lines(plan, pid))
        data = ("\n".join(lines) + "\n").encode()
        (live / f"{host}-{pid}-bench{first // RUNS_PER_FILE:05d}.jsonl").write_bytes(data)
        written += len(data)
    return written


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


def build_store(home: Path, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    if home.exists() and any(home.iterdir()) and not (home / MARKER).exists():
        raise SystemExit(f"{home} is not empty and not a bench store; pick another --store-dir")
    for name in (DB_NAME, DB_NAME + ".wal", "spool", "tmp", "blobs", MARKER, PROBE):
        path = home / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="codetape-bench-template-") as tmp:
        records = record_template(Path(tmp))
    template = parse_template(records)
    plans = plan_runs(template, args.runs, args.spans, args.seed)
    log(f"writing spool for {args.runs:,} runs / {args.spans:,} spans ...")
    t0 = time.perf_counter()
    spool_bytes = write_spool(home, template, plans, args.seed, args.shared_code)
    write_s = time.perf_counter() - t0
    log(f"  {spool_bytes / 1e6:,.0f} MB in {write_s:.1f}s; ingesting ...")
    t0 = time.perf_counter()
    if args.ingest == "once":
        stats = ingest(home, wait_s=60)
    else:  # as if each process's runs were ingested when it finished
        stats = IngestStats()
        for path in sorted(live_dir(home).glob("*.jsonl")):
            part = ingest(home, wait_s=60, files=[path])
            stats.files += part.files
            stats.records += part.records
    ingest_s = time.perf_counter() - t0
    log(f"  ingested {stats.records:,} records from {stats.files} files in {ingest_s:.1f}s")
    if not args.keep_spool:  # ingested; the store does not need them to be read
        shutil.rmtree(done_dir(home), ignore_errors=True)
    big = plans[args.runs // 2]
    typical = min(
        (p for p in plans[: args.runs // 3] if p.status == "ok"),
        key=lambda p: abs(len(p.kinds) - 60),
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
        "big_run": {"id": big.trace_id, "steps": len(big.kinds)},
        "typical_run": {"id": typical.trace_id, "steps": len(typical.kinds)},
        "rare_search": f"customer {RARE_CUSTOMER}",
        "common_search": COMMON_TERM,
        "built_with": f"codetape {codetape.__version__}, duckdb {duckdb.__version__}",
    }
    if info["counts"]["spans"] != args.spans or info["counts"]["runs"] != args.runs:
        raise SystemExit(f"built store has {info['counts']}, expected {_params(args)}")
    (home / MARKER).write_text(json.dumps(info, indent=2))
    return info


# -- measuring -----------------------------------------------------------------------


class TimedStore(Store):
    """A Store that notes the time and SQL of each of its DuckDB round trips."""

    def __init__(self, home: Path) -> None:
        self.sql_ns = 0
        self.queries: list[tuple[str, list[Any]]] = []
        super().__init__(home)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        t0 = time.perf_counter_ns()
        try:
            return super()._query(sql, params)
        finally:
            self.sql_ns += time.perf_counter_ns() - t0
            self.queries.append((sql, list(params)))

    @contextlib.contextmanager
    def session(self) -> Iterator[Store]:
        # Queries in a session share one connection: its opening and closing count too.
        t0 = time.perf_counter_ns()
        with super().session() as store:
            self.sql_ns += time.perf_counter_ns() - t0
            try:
                yield store
            finally:
                t0 = time.perf_counter_ns()
        self.sql_ns += time.perf_counter_ns() - t0


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


def measure(home: Path, page: str, name: str, call: str, fn: Callable[[Store], object]) -> Result:
    _evict(home / DB_NAME)
    store = TimedStore(home)
    t0 = time.perf_counter_ns()
    fn(store)
    evicted = (time.perf_counter_ns() - t0) / 1e6
    store = TimedStore(home)
    t0 = time.perf_counter_ns()
    value = fn(store)
    cold = (time.perf_counter_ns() - t0) / 1e6
    times, sql = [], []
    for _ in range(WARM_REPEATS):
        store.sql_ns, store.queries = 0, []
        t0 = time.perf_counter_ns()
        fn(store)
        times.append((time.perf_counter_ns() - t0) / 1e6)
        sql.append(store.sql_ns / 1e6)
    return Result(
        page,
        name,
        call,
        round(cold, 1),
        round(statistics.median(times), 1),
        round(min(times), 1),
        round(evicted, 1),
        round(statistics.median(sql), 1),
        len(store.queries),
        _size(value),
        store.queries,
    )


def measure_open(home: Path) -> Result:
    _evict(home / DB_NAME)
    t0 = time.perf_counter_ns()
    Store(home)
    evicted = (time.perf_counter_ns() - t0) / 1e6
    t0 = time.perf_counter_ns()
    Store(home)
    cold = (time.perf_counter_ns() - t0) / 1e6
    times = []
    for _ in range(WARM_REPEATS):
        t0 = time.perf_counter_ns()
        Store(home)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    warm = statistics.median(times)
    return Result(
        "open",
        "Store(home)",
        "Store(home) (ingests pending spool)",
        round(cold, 1),
        round(warm, 1),
        round(min(times), 1),
        round(evicted, 1),
        0.0,
        0,
        1,
    )


def measure_connect(home: Path) -> Result:
    def once() -> None:
        with connect(home, read_only=True):
            pass

    _evict(home / DB_NAME)
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
    warm = statistics.median(times)
    return Result(
        "open",
        "connect",
        "connect(home, read_only=True), no query",
        round(cold, 1),
        round(warm, 1),
        round(min(times), 1),
        round(evicted, 1),
        round(warm, 1),
        1,
        1,
    )


def measure_pending(home: Path, seed: int) -> Result:
    """``Store(home)`` while one finished run (~100 spans) waits in the spool, as when
    agents record while the viewer reads. On a copy of the database, so the cached
    store stays as it was built."""
    with tempfile.TemporaryDirectory(prefix="codetape-bench-template-") as tmp:
        template = parse_template(record_template(Path(tmp)))
    probe = home / PROBE
    shutil.rmtree(probe, ignore_errors=True)
    probe.mkdir()
    shutil.copyfile(home / DB_NAME, probe / DB_NAME)
    rng = random.Random(seed + 2)
    builder = SpoolBuilder(template, seed + 2, shared_code=False)
    times = []
    try:
        for n in range(1 + WARM_REPEATS):
            customer = rng.randint(1000, 9999)
            plan = RunPlan(
                number=10**6 + n,
                trace_id=f"{rng.getrandbits(128):032x}",
                agent=AGENTS[0][0],
                customer=customer,
                task=TASKS[0].format(c=customer),
                status="ok",
                kinds=_fill(template, rng, 99, flaky=True),
            )
            live = live_dir(probe)
            live.mkdir(parents=True, exist_ok=True)
            lines = builder.run_lines(plan, pid=99)
            (live / f"pending-{n}.jsonl").write_text("\n".join(lines) + "\n")
            t0 = time.perf_counter_ns()
            Store(probe)
            times.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return Result(
        "open",
        "Store(home), 1 run pending",
        "Store(home) with 1 run (100 spans) pending",
        round(times[0], 1),
        round(statistics.median(times[1:]), 1),
        round(min(times[1:]), 1),
        None,
        0.0,
        0,
        1,
    )


def run_benchmarks(home: Path, info: dict[str, Any]) -> list[Result]:
    big, typical = info["big_run"]["id"], info["typical_run"]["id"]
    rare, common = info["rare_search"], info["common_search"]
    n = info["big_run"]["steps"]
    cases: list[tuple[str, str, str, Callable[[Store], object]]] = [
        ("runs", "runs", "runs(limit=50)", lambda s: s.runs(limit=50)),
        ("runs", "count", "count_runs()", lambda s: s.count_runs()),
        ("runs", "agents", "agents()", lambda s: s.agents()),
        (
            "runs failed",
            "runs",
            "runs(failed=True, limit=50)",
            lambda s: s.runs(failed=True, limit=50),
        ),
        ("runs failed", "count", "count_runs(failed=True)", lambda s: s.count_runs(failed=True)),
        ("runs failed", "agents", "agents()", lambda s: s.agents()),
        (
            "runs search",
            "runs",
            f"runs(search={rare!r}, limit=50)",
            lambda s: s.runs(search=rare, limit=50),
        ),
        (
            "runs search",
            "count",
            f"count_runs(search={rare!r})",
            lambda s: s.count_runs(search=rare),
        ),
        ("runs search", "agents", "agents()", lambda s: s.agents()),
        (
            "runs search code",
            "runs",
            f"runs(search={common!r}, limit=50)",
            lambda s: s.runs(search=common, limit=50),
        ),
        (
            "runs search code",
            "count",
            f"count_runs(search={common!r})",
            lambda s: s.count_runs(search=common),
        ),
        ("runs search code", "agents", "agents()", lambda s: s.agents()),
        (f"run ({n} steps)", "run", "run(id)", lambda s: s.run(big)),
        (f"run ({n} steps)", "steps", "steps(id)", lambda s: s.steps(big)),
        (f"run ({n} steps)", "step", f"step(id, {n // 2})", lambda s: s.step(big, n // 2)),
        (f"run ({info['typical_run']['steps']} steps)", "run", "run(id)", lambda s: s.run(typical)),
        (
            f"run ({info['typical_run']['steps']} steps)",
            "steps",
            "steps(id)",
            lambda s: s.steps(typical),
        ),
        # Not in the list, but the viewer (codetape.viewer._data) makes them too:
        # the Runs page asks whether any run is still recording, on every rerun; the
        # Run page lists recent runs to find replays of this one (and for its picker).
        (EXTRAS, "running", "count_runs('running')", lambda s: s.count_runs("running")),
        (EXTRAS, "recent", "runs(limit=500)", lambda s: s.runs(limit=500)),
    ]
    results = [measure_open(home), measure_pending(home, info["params"]["seed"])]
    results.append(measure_connect(home))
    results += [measure(home, page, name, call, fn) for page, name, call, fn in cases]
    return results


def page_totals(results: list[Result]) -> list[dict[str, Any]]:
    pages: dict[str, list[Result]] = {}
    for r in results:
        if r.page not in ("open", EXTRAS) and r.name != "step":
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
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "profile.json"
        con.execute("PRAGMA enable_profiling='json'")
        con.execute(f"PRAGMA profiling_output='{path}'")
        t0 = time.perf_counter()
        con.execute(sql, params).fetchall()
        wall = (time.perf_counter() - t0) * 1000
        con.execute("PRAGMA disable_profiling")
        found = json.loads(path.read_text())
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


def _cap_threads(threads: int) -> None:
    """Every DuckDB connection of this process, codetape's too, gets at most ``threads``."""
    real = duckdb.connect

    def capped(
        database: str = ":memory:",
        read_only: bool = False,
        config: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> duckdb.DuckDBPyConnection:
        return real(
            database, read_only=read_only, config={"threads": threads, **(config or {})}, **kwargs
        )

    duckdb.connect = capped  # type: ignore[assignment]


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
        help="every step of a kind has the template's code and output (and "
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
    if args.threads:
        _cap_threads(args.threads)
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
            "the OS page cache;\nsql: of the warm time, the part in Store._query (opening "
            "DuckDB and running the SQL).\npass: cold and warm both within target."
        )
        print(f"\nreproduce: {command}")
    if args.explain:
        print(explain(home, results, args.threads), file=sys.stderr if args.json else sys.stdout)


if __name__ == "__main__":
    main()
