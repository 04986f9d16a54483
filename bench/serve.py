"""``codetape serve`` under load: spans per second accepted over OTLP/HTTP from 8
concurrent senders, and blob PUT throughput, each side by side with a baseline.

Run: ``.venv/bin/python bench/serve.py [--senders 8] [--batches 24] [--rounds 3] [--json]``

Spans: each sender is a process that posts gzip-compressed protobuf
``ExportTraceServiceRequest`` bodies of 512 spans each, on one keep-alive connection,
with the bearer token header: what an OpenTelemetry Collector's ``otlphttp`` exporter
sends after its ``batch`` processor. The spans are a recorded run's (an agent, a step, a
tool call, as ``bench/ingest.py`` stamps them) with fresh ids, so every one is new to
the store. The bodies are built before the clock starts; the time is from the first
request to the last 200 (every span durable in the server's spool by then). After the
server stops (its ingestion flushed), the spans in its DuckDB file are counted: every
accepted span must be stored.

Blobs: each sender PUTs distinct random blobs to ``/v1/blobs/sha256:...``, 1 MiB
ones (MB/s) and 4 KiB ones (blobs/s; the server also spools those, as a recording
process does, so the database holds them); each is a verified, fsynced file before the
201.

Baselines, measured in alternation with ``codetape serve`` (``--rounds`` of each):

- ``null``: the same HTTP stack (uvicorn and Starlette, one process, the same senders)
  answering 200/201 once it has read the body, storing nothing: what the HTTP exchange
  alone costs on this machine, so ``serve / null`` is the share codetape's decoding,
  checks and durable writes leave;
- ``ingest``: one local ``ingest()`` pass over the same number of the same spans
  already spooled (``bench/ingest.py``'s case (a)), what the store takes in without
  the network.

The load average (1 min) is printed before and after each measurement: the machine
is shared, so compare ratios measured side by side.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ingest as ingest_bench  # noqa: E402  (bench/ingest.py: the span templates)

TOKEN = "bench-token"
SPANS_PER_BATCH = 512
BIG_BLOB = 1024 * 1024
SMALL_BLOB = 4 * 1024


# -- the servers ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _null_server(port: int) -> None:
    """The baseline server: reads each body, stores nothing (``--null-server PORT``)."""
    import uvicorn
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    empty = ExportTraceServiceResponse().SerializeToString()

    async def traces(request: Request) -> Response:
        await request.body()
        return Response(empty, 200, media_type="application/x-protobuf")

    async def blob(request: Request) -> Response:
        body = await request.body()
        return JSONResponse({"digest": request.path_params["digest"], "size": len(body)}, 201)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/v1/traces", traces, methods=["POST"]),
            Route("/v1/blobs/{digest}", blob, methods=["PUT"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _start(kind: str, home: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    if kind == "serve":
        command = [
            sys.executable, "-m", "codetape", "serve", "--home", str(home), "--port", str(port),
        ]  # fmt: skip
    else:
        command = [sys.executable, __file__, "--null-server", str(port)]
    process = subprocess.Popen(
        command, env={**os.environ, "CODETAPE_TOKEN": TOKEN}, stderr=subprocess.PIPE
    )
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(process.stderr.read().decode() if process.stderr else kind)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
            if conn.getresponse().status == 200:
                conn.close()
                return process, port
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the {kind} server did not answer /healthz")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stderr is not None:
        process.stderr.close()


# -- what the senders send -------------------------------------------------------------


def _any_value(value: Any) -> Any:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue

    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_any_value(v) for v in value]))
    return AnyValue(string_value=str(value))


def _bodies(templates: list[dict[str, Any]], sender: int, batches: int) -> list[bytes]:
    """``batches`` gzip-compressed export requests of ``SPANS_PER_BATCH`` spans each:
    the template run's spans again and again, each copy a run of its own (fresh ids
    that no other sender uses)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Status

    index = {t["span_id"]: j for j, t in enumerate(templates)}
    per_run = len(templates)
    bodies = []
    for b in range(batches):
        request = ExportTraceServiceRequest()
        resource = request.resource_spans.add()
        resource.resource.attributes.append(
            KeyValue(key="service.name", value=_any_value(f"bench-sender-{sender}"))
        )
        scope = resource.scope_spans.add()
        scope.scope.name = "codetape"
        for k in range(b * SPANS_PER_BATCH, (b + 1) * SPANS_PER_BATCH):
            run, j = divmod(k, per_run)
            template = templates[j]
            span = scope.spans.add()
            span.trace_id = (sender << 64 | run).to_bytes(16, "big")
            span.span_id = (sender << 48 | k).to_bytes(8, "big")
            parent = template.get("parent_id")
            if parent in index:
                span.parent_span_id = (sender << 48 | run * per_run + index[parent]).to_bytes(
                    8, "big"
                )
            span.name = template["name"]
            span.start_time_unix_nano = template["start_ns"]
            span.end_time_unix_nano = template["end_ns"]
            span.status.code = Status.STATUS_CODE_ERROR if template.get("status") == "ERROR" else 1
            for key, value in (template.get("attributes") or {}).items():
                span.attributes.append(KeyValue(key=key, value=_any_value(value)))
        bodies.append(gzip.compress(request.SerializeToString(), compresslevel=6))
    return bodies


def _send_spans(port: int, bodies: list[bytes], ready: Any, go: Any, done: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {
        "Content-Type": "application/x-protobuf",
        "Content-Encoding": "gzip",
        "Authorization": f"Bearer {TOKEN}",
    }
    ready.put(os.getpid())
    go.wait()
    for body in bodies:
        conn.request("POST", "/v1/traces", body, headers)
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise SystemExit(f"/v1/traces answered {answer.status}")
    conn.close()
    done.put(time.perf_counter())


def _send_blobs(
    port: int, size: int, count: int, seed: int, ready: Any, go: Any, done: Any
) -> None:
    blobs = []
    for n in range(count):
        data = hashlib.sha256(f"{seed}-{n}".encode()).digest() + os.urandom(size - 32)
        blobs.append((hashlib.sha256(data).hexdigest(), data))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Content-Type": "application/octet-stream", "Authorization": f"Bearer {TOKEN}"}
    ready.put(os.getpid())
    go.wait()
    for hexdigest, data in blobs:
        conn.request("PUT", f"/v1/blobs/sha256:{hexdigest}", data, headers)
        answer = conn.getresponse()
        answer.read()
        if answer.status != 201:
            raise SystemExit(f"/v1/blobs answered {answer.status}")
    conn.close()
    done.put(time.perf_counter())


def _timed(workers: list[Any], ready: Any, go: Any, done: Any) -> float:
    """Start the workers, wait until each has prepared what it sends, then let them go:
    the seconds from then to the last one done."""
    for w in workers:
        w.start()
    for _ in workers:
        ready.get(timeout=600)
    t0 = time.perf_counter()
    go.set()
    ends: list[float] = [float(done.get(timeout=600)) for _ in workers]
    for w in workers:
        w.join()
        if w.exitcode != 0:
            raise SystemExit(f"a sender exited {w.exitcode}")
    return max(ends) - t0


def _load() -> float:
    return round(os.getloadavg()[0], 2)


# -- the cases ---------------------------------------------------------------------


def spans_case(
    kind: str, senders: int, batches: int, templates: list[dict[str, Any]]
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"codetape-bench-serve-{kind}-"))
    home = root / "store"
    ctx = mp.get_context("fork")
    bodies = [_bodies(templates, s + 1, batches) for s in range(senders)]
    body_mb = sum(len(b) for per in bodies for b in per) / 1e6
    process, port = _start(kind, home)
    ready, go, done = ctx.Queue(), ctx.Event(), ctx.Queue()
    workers = [
        ctx.Process(target=_send_spans, args=(port, bodies[s], ready, go, done))
        for s in range(senders)
    ]
    load_before = _load()
    seconds = _timed(workers, ready, go, done)
    load_after = _load()
    _stop(process)
    spans = senders * batches * SPANS_PER_BATCH
    result: dict[str, Any] = {
        "server": kind,
        "spans": spans,
        "seconds": round(seconds, 3),
        "spans_per_second": round(spans / seconds),
        "gzip_mb_sent": round(body_mb, 1),
        "load": [load_before, load_after],
    }
    if kind == "serve":
        con = duckdb.connect(str(home / "codetape.duckdb"), read_only=True)
        try:
            (stored,) = con.execute("SELECT count(*) FROM spans").fetchone() or (0,)
        finally:
            con.close()
        result["stored"] = int(stored)
    shutil.rmtree(root, ignore_errors=True)
    return result


def blobs_case(kind: str, senders: int, size: int, per_sender: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"codetape-bench-serve-{kind}-"))
    process, port = _start(kind, root / "store")
    ctx = mp.get_context("fork")
    ready, go, done = ctx.Queue(), ctx.Event(), ctx.Queue()
    workers = [
        ctx.Process(target=_send_blobs, args=(port, size, per_sender, s, ready, go, done))
        for s in range(senders)
    ]
    load_before = _load()
    seconds = _timed(workers, ready, go, done)
    load_after = _load()
    _stop(process)
    stored = sum(1 for p in (root / "store" / "blobs").glob("??/*")) if kind == "serve" else None
    shutil.rmtree(root, ignore_errors=True)
    count = senders * per_sender
    return {
        "server": kind,
        "blob_bytes": size,
        "blobs": count,
        "seconds": round(seconds, 3),
        "mb_per_second": round(count * size / 1e6 / seconds, 1),
        "blobs_per_second": round(count / seconds),
        "load": [load_before, load_after],
        **({"stored": stored} if stored is not None else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--batches", type=int, default=24, help="per sender, 512 spans each")
    parser.add_argument("--big-blobs", type=int, default=24, help="1 MiB blobs per sender")
    parser.add_argument("--small-blobs", type=int, default=250, help="4 KiB blobs per sender")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--null-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.null_server:
        _null_server(args.null_server)
        return

    with open(os.devnull, "w") as quiet:
        saved = sys.stdout
        sys.stdout = quiet
        try:
            templates = ingest_bench._span_templates()
        finally:
            sys.stdout = saved
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        found: dict[str, Any] = {"round": r + 1}
        for kind in ("serve", "null"):
            found[f"spans_{kind}"] = spans_case(kind, args.senders, args.batches, templates)
            found[f"big_blobs_{kind}"] = blobs_case(kind, args.senders, BIG_BLOB, args.big_blobs)
            found[f"small_blobs_{kind}"] = blobs_case(
                kind, args.senders, SMALL_BLOB, args.small_blobs
            )
        found["ingest"] = ingest_bench.one_pass(args.senders * args.batches * SPANS_PER_BATCH)
        found["ingest"]["load"] = _load()
        rounds.append(found)
        if not args.json:
            _print_round(found)
    summary = _summary(rounds)
    if args.json:
        print(json.dumps({"rounds": rounds, "median": summary}, indent=2))
    else:
        print("median:", json.dumps(summary, indent=2))


def _print_round(found: dict[str, Any]) -> None:
    s, n = found["spans_serve"], found["spans_null"]
    print(
        f"round {found['round']}: spans serve {s['spans_per_second']:,}/s "
        f"(stored {s['stored']:,} of {s['spans']:,}, load {s['load']}) | null "
        f"{n['spans_per_second']:,}/s (load {n['load']}) | ingest "
        f"{found['ingest']['spans_per_second']:,}/s"
    )
    for size in ("big", "small"):
        s, n = found[f"{size}_blobs_serve"], found[f"{size}_blobs_null"]
        print(
            f"  {size} blobs ({s['blob_bytes']} B): serve {s['mb_per_second']} MB/s "
            f"{s['blobs_per_second']:,}/s (stored {s['stored']} of {s['blobs']}, load "
            f"{s['load']}) | null {n['mb_per_second']} MB/s {n['blobs_per_second']:,}/s "
            f"(load {n['load']})"
        )
    sys.stdout.flush()


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str, field: str) -> float:
        return float(statistics.median(r[key][field] for r in rounds))

    serve, null = (
        median("spans_serve", "spans_per_second"),
        median("spans_null", "spans_per_second"),
    )
    ingested = median("ingest", "spans_per_second")
    out: dict[str, Any] = {
        "spans_per_second": {"serve": serve, "null": null, "ingest": ingested},
        "serve_over_null": round(serve / null, 2),
        "serve_over_ingest": round(serve / ingested, 2),
    }
    for size in ("big", "small"):
        s = median(f"{size}_blobs_serve", "mb_per_second")
        n = median(f"{size}_blobs_null", "mb_per_second")
        out[f"{size}_blobs"] = {
            "serve_mb_per_second": s,
            "null_mb_per_second": n,
            "serve_blobs_per_second": median(f"{size}_blobs_serve", "blobs_per_second"),
            "null_blobs_per_second": median(f"{size}_blobs_null", "blobs_per_second"),
            "serve_over_null": round(s / n, 2),
        }
    return out


if __name__ == "__main__":
    main()
