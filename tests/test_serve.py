"""``codetape serve``, started for real on loopback in a process of its own: a recorded
run reaches it through the OpenTelemetry SDK's OTLP/HTTP exporter (gzip, with the token
header, as an OpenTelemetry Collector's otlphttp exporter sends) and its blobs by PUT,
and the server's store then shows the run and its steps with their code. Bad input is
refused with the right status, leaves the store as it was, and the server keeps serving.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

import codetape
from codetape import Store

from . import otlp_fixtures as scripted

TOKEN = "s3cret-token-for-tests"
_CLI = "from codetape.cli import main; main()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    port: int
    home: Path
    process: subprocess.Popen[bytes]

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = TOKEN,
    ) -> tuple[int, bytes]:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=body, headers=sent, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def start(
    home: Path, *args: str, env: dict[str, str] | None = None, token: str | None = TOKEN
) -> Server:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _CLI, "serve", "--home", str(home), "--port", str(port), *args],
        env={**os.environ, "CODETAPE_TOKEN": TOKEN, **(env or {})},
        stderr=subprocess.PIPE,
    )
    server = Server(f"http://127.0.0.1:{port}", port, home, process)
    for _ in range(600):
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode() if process.stderr else "")
        try:
            if server.request("GET", "/healthz", token=token)[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    stop(server)
    raise AssertionError("codetape serve did not answer /healthz")


def stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    if server.process.stderr is not None:
        server.process.stderr.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start(tmp_path / "server")
    try:
        yield running
    finally:
        stop(running)


def local_blobs(home: Path) -> dict[str, bytes]:
    """Every blob of a local store: small ones from its database, large ones its files."""
    store = Store(home)
    found = {d: bytes(data) for d, data in store._query("SELECT digest, data FROM blobs")}
    folder = home / "blobs"
    if folder.exists():
        for path in folder.glob("*/*"):
            if not path.name.startswith("."):
                found[f"sha256:{path.parent.name}{path.name}"] = path.read_bytes()
    return found


def counts(home: Path) -> tuple[int, int, int]:
    """Spans, runs and blob files of a server's store."""
    spans = 0
    runs = 0
    if (home / "codetape.duckdb").exists() or (home / "spool").exists():
        store = Store(home)
        spans = store._query("SELECT count(*) FROM spans")[0][0]
        runs = len(store.runs())
    files = len(list((home / "blobs").glob("*/*"))) if (home / "blobs").exists() else 0
    return spans, runs, files


def put_blob(server: Server, digest: str, data: bytes) -> int:
    return server.request("PUT", f"/v1/blobs/{digest}", data)[0]


def test_a_run_shipped_over_otlp_and_its_blobs_show_in_the_servers_store(
    server: Server, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What an OpenTelemetry Collector's otlphttp exporter sends: gzip, the token header.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", f"authorization=Bearer%20{TOKEN}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    rt = codetape.configure(home=home, otlp=server.url)
    run_id = scripted.record_run()
    assert rt.provider.force_flush(30_000)
    blobs = local_blobs(home)
    assert blobs
    for digest, data in blobs.items():
        assert server.request("HEAD", f"/v1/blobs/{digest}")[0] == 404
        assert put_blob(server, digest, data) == 201
        assert server.request("HEAD", f"/v1/blobs/{digest}")[0] == 200

    local, remote = Store(home), Store(server.home)
    [run] = remote.runs()
    assert run.id == run_id
    assert run.status == local.runs()[0].status
    assert run.final_answer == scripted.ANSWER
    steps = remote.steps(run_id)
    assert [s.code for s in steps] == scripted.CODE
    assert [s.status for s in steps] == [s.status for s in local.steps(run_id)]
    assert [s.stdout for s in steps] == [s.stdout for s in local.steps(run_id)]
    for digest, data in blobs.items():
        assert remote.blob(digest) == data


def spans_request(n_spans: int = 1, attributes: int = 2, name: str = "work") -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i in range(n_spans):
        span = scope.spans.add()
        span.trace_id = os.urandom(16)
        span.span_id = os.urandom(8)
        span.name = f"{name} {i}"
        span.start_time_unix_nano = time.time_ns()
        span.end_time_unix_nano = span.start_time_unix_nano + 1000
        for a in range(attributes):
            span.attributes.append(KeyValue(key=f"k{a}", value=AnyValue(string_value=f"v{a}")))
    encoded: bytes = request.SerializeToString()
    return encoded


def post_traces(server: Server, body: bytes, **headers: str) -> tuple[int, bytes]:
    sent = {"Content-Type": "application/x-protobuf", **headers}
    return server.request("POST", "/v1/traces", body, sent)


def exported(server: Server, body: bytes) -> ExportTraceServiceResponse:
    """The server's answer to ``body`` posted to /v1/traces, which must be a 200."""
    status, answer_body = post_traces(server, body)
    assert status == 200
    answer = ExportTraceServiceResponse()
    answer.ParseFromString(answer_body)
    return answer


def stored_names(home: Path) -> set[str]:
    return {name for (name,) in Store(home)._query("SELECT name FROM spans")}


def test_a_good_request_is_stored_and_answered_as_otlp_says(server: Server) -> None:
    answer = exported(server, spans_request(3))
    assert not answer.HasField("partial_success")
    assert stored_names(server.home) == {"work 0", "work 1", "work 2"}


def test_json_encoding_is_accepted(server: Server) -> None:
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    payload = {
        "resourceSpans": [
            {
                "resource": {"attributes": []},
                "scopeSpans": [
                    {
                        "scope": {"name": "other-tool"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": "fetch page",
                                "kind": 3,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000001000000000",
                                "attributes": [
                                    {"key": "http.url", "value": {"stringValue": "https://x"}},
                                    {"key": "tries", "value": {"intValue": "3"}},
                                    {
                                        "key": "tags",
                                        "value": {"arrayValue": {"values": [{"stringValue": "a"}]}},
                                    },
                                ],
                                "status": {"code": 2, "message": "timed out"},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    status, body = server.request(
        "POST",
        "/v1/traces",
        json.dumps(payload).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200, body
    assert json.loads(body) == {}
    [row] = Store(server.home)._query(
        "SELECT trace_id, span_id, status, status_message, attributes FROM spans"
    )
    assert row[:4] == (trace_id, span_id, "ERROR", "timed out")
    assert json.loads(row[4]) == {"http.url": "https://x", "tries": 3, "tags": ["a"]}


def assert_refused(server: Server, before: tuple[int, int, int]) -> None:
    """The store is as it was, and a good request right after still succeeds."""
    assert counts(server.home) == before
    status, _ = post_traces(server, spans_request(1, name="after"))
    assert status == 200
    assert "after 0" in stored_names(server.home)


def seed(server: Server) -> tuple[int, int, int]:
    assert post_traces(server, spans_request(2, name="seed"))[0] == 200
    data = b"a blob already there"
    assert put_blob(server, "sha256:" + hashlib.sha256(data).hexdigest(), data) == 201
    return counts(server.home)


@pytest.mark.parametrize("token", [None, "wrong-token", TOKEN + "x", ""])
def test_a_missing_or_wrong_token_is_401(server: Server, token: str | None) -> None:
    before = seed(server)
    for method, path, body in [
        ("POST", "/v1/traces", spans_request(1)),
        ("PUT", "/v1/blobs/sha256:" + hashlib.sha256(b"x").hexdigest(), b"x"),
        ("HEAD", "/v1/blobs/sha256:" + hashlib.sha256(b"x").hexdigest(), None),
        ("GET", "/healthz", None),
    ]:
        headers = {"Content-Type": "application/x-protobuf"}
        status, answer = server.request(method, path, body, headers, token=token)
        assert status == 401
        if method != "HEAD":
            assert "token" in json.loads(answer)["message"]
    assert_refused(server, before)


def test_a_blob_whose_bytes_do_not_match_its_digest_is_refused(server: Server) -> None:
    before = seed(server)
    wrong = "sha256:" + hashlib.sha256(b"other bytes").hexdigest()
    status, answer = server.request("PUT", f"/v1/blobs/{wrong}", b"these bytes")
    assert status == 400
    assert "sha256" in json.loads(answer)["message"]
    assert server.request("HEAD", f"/v1/blobs/{wrong}")[0] == 404
    assert server.request("PUT", "/v1/blobs/sha256:nothex", b"x")[0] == 400
    assert_refused(server, before)


def test_a_200_mb_body_is_refused_before_it_is_read(server: Server) -> None:
    before = seed(server)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.putrequest("POST", "/v1/traces")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Type", "application/x-protobuf")
    conn.putheader("Content-Length", str(200 * 1024 * 1024))
    conn.endheaders()
    conn.send(b"\0" * 65536)  # the server answers without waiting for the rest
    answer = conn.getresponse()
    assert answer.status == 413
    assert "bytes" in json.loads(answer.read())["message"]
    conn.close()
    assert_refused(server, before)


def test_a_streamed_body_over_the_limit_is_refused(server: Server) -> None:
    before = seed(server)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.putrequest("POST", "/v1/traces")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Type", "application/x-protobuf")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b"\0" * (1024 * 1024)
    try:  # 200 MB in 1 MB chunks, no length given: the server stops reading at 64 MB
        for _ in range(200):
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except OSError:
        pass  # the server answered and closed: the rest was never read
    answer = conn.getresponse()
    assert answer.status == 413
    conn.close()
    assert_refused(server, before)


def test_a_gzip_bomb_is_refused(server: Server) -> None:
    before = seed(server)
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"\0" * (1024 * 1024)
    bomb = b"".join(deflater.compress(zeros) for _ in range(1024)) + deflater.flush()
    assert len(bomb) < 2 * 1024 * 1024  # 1 GB once decompressed
    status, answer = post_traces(server, bomb, **{"Content-Encoding": "gzip"})
    assert status == 413
    assert "decompresses" in json.loads(answer)["message"]
    assert_refused(server, before)


@pytest.mark.parametrize(
    "body",
    [b"\xff\xff\xff\xff not protobuf", b"\x0a\xff\xff\xff\xff\x0f", b"\x0a" + b"\x0a\x02" * 3],
)
def test_malformed_protobuf_is_400(server: Server, body: bytes) -> None:
    before = seed(server)
    status, answer = post_traces(server, body)
    assert status == 400
    assert "protobuf" in json.loads(answer)["message"]
    assert_refused(server, before)


def test_malformed_json_and_gzip_are_400(server: Server) -> None:
    before = seed(server)
    for body, headers in [
        (b"{not json", {"Content-Type": "application/json"}),
        (b"[" * 100_000, {"Content-Type": "application/json"}),
        (b'{"resourceSpans": 3}', {"Content-Type": "application/json"}),
        (
            b"not gzip",
            {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
        ),
    ]:
        status, answer = server.request("POST", "/v1/traces", body, headers)
        assert status == 400, (body[:20], answer)
        assert json.loads(answer)["message"]
    assert_refused(server, before)


def test_a_span_with_10k_attributes_is_refused_in_a_partial_success(server: Server) -> None:
    before = seed(server)
    answer = exported(server, spans_request(1, attributes=10_000, name="huge"))
    assert answer.partial_success.rejected_spans == 1
    assert "10000 attributes" in answer.partial_success.error_message
    assert_refused(server, before)


def test_only_the_span_over_the_limits_is_refused(server: Server) -> None:
    request = ExportTraceServiceRequest()
    request.ParseFromString(spans_request(2, name="fine"))
    spans = request.resource_spans[0].scope_spans[0].spans
    deep = AnyValue(string_value="bottom")
    for _ in range(20):
        outer = AnyValue()
        outer.array_value.values.append(deep)
        deep = outer
    spans[0].attributes.append(KeyValue(key="deep", value=deep))
    answer = exported(server, request.SerializeToString())
    assert answer.partial_success.rejected_spans == 1
    assert "nested" in answer.partial_success.error_message
    assert stored_names(server.home) == {"fine 1"}


def test_gzip_protobuf_from_a_plain_client(server: Server) -> None:
    status, _ = post_traces(
        server, gzip.compress(spans_request(1, name="zipped")), **{"Content-Encoding": "gzip"}
    )
    assert status == 200
    assert stored_names(server.home) == {"zipped 0"}


def test_a_span_too_large_for_one_record_is_refused_in_a_partial_success(
    server: Server,
) -> None:
    request = ExportTraceServiceRequest()
    request.ParseFromString(spans_request(2, name="sized"))
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].attributes.append(KeyValue(key="big", value=AnyValue(string_value="x" * 5_000_000)))
    answer = exported(server, request.SerializeToString())
    assert answer.partial_success.rejected_spans == 1
    assert "bytes; at most" in answer.partial_success.error_message
    assert stored_names(server.home) == {"sized 1"}


def test_what_was_answered_200_survives_kill_9_of_the_server(tmp_path: Path) -> None:
    running = start(tmp_path / "server")
    try:
        assert post_traces(running, spans_request(3, name="kept"))[0] == 200
        data = b"a blob sent before the crash"
        assert put_blob(running, "sha256:" + hashlib.sha256(data).hexdigest(), data) == 201
    finally:
        running.process.kill()
        running.process.wait()
        if running.process.stderr is not None:
            running.process.stderr.close()
    store = Store(running.home)
    assert stored_names(running.home) == {"kept 0", "kept 1", "kept 2"}
    assert store.blob("sha256:" + hashlib.sha256(data).hexdigest()) == data


def test_a_partial_success_answers_json_to_json(server: Server) -> None:
    span = {
        "traceId": os.urandom(16).hex(),
        "spanId": os.urandom(8).hex(),
        "name": "wide",
        "startTimeUnixNano": "1",
        "endTimeUnixNano": "2",
        "attributes": [{"key": f"k{i}", "value": {"intValue": str(i)}} for i in range(1001)],
    }
    payload = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    status, body = server.request(
        "POST", "/v1/traces", json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    assert status == 200
    answer = json.loads(body)["partialSuccess"]
    assert int(answer["rejectedSpans"]) == 1
    assert "1001 attributes" in answer["errorMessage"]
