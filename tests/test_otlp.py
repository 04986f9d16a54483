"""With OTLP on, the spans codetape stores also reach an OTLP/HTTP collector: with the
same ids, names, parents and attributes, plus the convention attributes that show a code
action's code as its input and its outcome as its output (GenAI by default,
OpenInference on request; test_otlp_conventions.py checks each value).

The collector is a real HTTP server on 127.0.0.1 that decodes the protobuf export
requests, the way any OTLP backend would.
"""

from __future__ import annotations

import gzip
import json
import secrets
import string
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

import codetape
from codetape.errors import ConfigError
from codetape.schemas import attributes as A
from codetape.tracer import _config

from . import otlp_fixtures as scripted


class Collector:
    """What the fake OTLP collector received."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.paths: list[str] = []
        self.bodies: list[bytes] = []  # decompressed protobuf bodies, as received
        self.spans: list[PbSpan] = []
        self.resources: list[dict[str, Any]] = []
        self.url = ""

    def received(self) -> list[PbSpan]:
        with self.lock:
            return list(self.spans)

    def raw(self) -> bytes:
        with self.lock:
            return b"".join(self.bodies)


@pytest.fixture
def collector() -> Iterator[Collector]:
    collected = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            with collected.lock:
                collected.paths.append(self.path)
                collected.bodies.append(body)
                for resource_spans in request.resource_spans:
                    collected.resources.append(attributes(resource_spans.resource.attributes))
                    for scope_spans in resource_spans.scope_spans:
                        collected.spans.extend(scope_spans.spans)
            payload = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.02,), name="otlp-collector", daemon=True
    )
    thread.start()
    collected.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield collected
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# Tests ask for ``collector`` before ``home``, so the runtime (and its exporter) is shut
# down by ``home`` while the collector still listens.


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in kvs}


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> Any:
    exec(code, namespace)
    return namespace.get("result")


@codetape.tool
def add(a: int, b: int = 2) -> int:
    return a + b


def record_agent() -> str:
    """An agent run with two code actions, the first of which calls a tool."""

    @codetape.agent(name="orders-bot")
    def solve(task: str) -> str:
        ns: dict[str, Any] = {"add": add}
        execute("a = add(1, b=5)", ns)
        execute("result = a * 2", ns)
        return str(ns["result"])

    assert solve("double it") == "12"
    return codetape.Store().runs()[0].id


def flush() -> None:
    assert codetape.tracer.internal.runtime().provider.force_flush(10_000)


def test_spans_reach_the_collector(collector: Collector, home: Path) -> None:
    rt = codetape.configure(home=home, otlp=collector.url)
    assert rt.otlp is not None
    assert rt.otlp.endpoint == collector.url + "/v1/traces"
    run_id = record_agent()
    flush()

    spans = collector.received()
    assert set(collector.paths) == {"/v1/traces"}
    assert sorted(s.name for s in spans) == [
        "execute_code",
        "execute_code",
        "execute_tool add",
        "invoke_agent orders-bot",
    ]
    assert {s.trace_id.hex() for s in spans} == {run_id}  # run id = trace id
    assert collector.resources[0]["service.name"] == "codetape"

    [root] = [s for s in spans if s.name.startswith("invoke_agent")]
    steps = sorted(
        (s for s in spans if s.name == "execute_code"),
        key=lambda s: attributes(s.attributes)[A.STEP_INDEX],
    )
    [tool] = [s for s in spans if s.name.startswith("execute_tool")]

    assert root.parent_span_id == b""
    assert [s.parent_span_id for s in steps] == [root.span_id, root.span_id]
    assert tool.parent_span_id == steps[0].span_id
    assert all(s.kind == PbSpan.SpanKind.SPAN_KIND_INTERNAL for s in spans)

    root_attrs = attributes(root.attributes)
    assert root_attrs[A.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert root_attrs[A.GEN_AI_AGENT_NAME] == "orders-bot"
    assert root_attrs[A.RUN_TASK] == "double it"
    assert root_attrs[A.RUN_STATUS] == "ok"
    assert root_attrs[A.RUN_FINAL_ANSWER] == "12"
    for index, step in enumerate(steps):
        attrs = attributes(step.attributes)
        # GenAI's predefined operation for a tool call (the store keeps execute_code).
        assert attrs[A.GEN_AI_OPERATION_NAME] == "execute_tool"
        assert attrs[A.GEN_AI_TOOL_NAME] == "code_interpreter"
        assert attrs[A.STEP_INDEX] == index
        assert attrs[A.SANDBOX_BACKEND] == "observed"
    assert attributes(steps[0].attributes)[A.CODE_PREVIEW] == "a = add(1, b=5)"
    tool_attrs = attributes(tool.attributes)
    assert tool_attrs[A.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert tool_attrs[A.GEN_AI_TOOL_NAME] == "add"
    assert tool_attrs[A.GEN_AI_TOOL_CALL_ARGUMENTS] == '{"a": 1, "b": 5}'
    assert tool_attrs[A.GEN_AI_TOOL_CALL_RESULT] == "6"

    # The very spans the store holds: same ids, same parents, same names.
    codetape.Store(home).refresh()
    con = duckdb.connect(str(home / "codetape.duckdb"), read_only=True)
    try:
        stored = set(con.execute("SELECT trace_id, span_id, parent_id, name FROM spans").fetchall())
    finally:
        con.close()
    exported = {
        (s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex() or None, s.name) for s in spans
    }
    assert exported == stored


def test_errors_reach_the_collector_as_exception_events(collector: Collector, home: Path) -> None:
    codetape.configure(home=home, otlp=collector.url)
    with pytest.raises(LookupError), codetape.run("bot"):
        execute("raise LookupError('order 9 not found')", {})
    flush()
    by_name = {s.name: s for s in collector.received()}
    for name in ("invoke_agent bot", "execute_code"):
        span = by_name[name]
        assert span.status.code == span.status.STATUS_CODE_ERROR
        assert attributes(span.attributes)[A.ERROR_TYPE] == "LookupError"
        [event] = [e for e in span.events if e.name == "exception"]
        event_attrs = attributes(event.attributes)
        assert event_attrs["exception.type"] == "LookupError"
        assert event_attrs["exception.message"] == "order 9 not found"
        assert "LookupError: order 9 not found" in event_attrs["exception.stacktrace"]


def test_otel_exporter_otlp_endpoint_turns_it_on(
    collector: Collector, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)  # base URL, no path
    rt = codetape.configure(home=home)  # otlp=None: follow the environment
    assert rt.otlp is not None
    assert rt.otlp.endpoint == collector.url + "/v1/traces"
    assert rt.otlp.protocol == "http/protobuf"
    run_id = record_agent()
    flush()
    spans = collector.received()
    assert set(collector.paths) == {"/v1/traces"}
    assert len(spans) == 4
    assert {s.trace_id.hex() for s in spans} == {run_id}


def test_otlp_false_wins_over_the_environment(
    collector: Collector, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "bogus")
    rt = codetape.configure(home=home, otlp=False)
    assert rt.otlp is None
    record_agent()
    flush()
    assert collector.received() == []


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_unknown_protocol_is_a_config_error(
    collector: Collector, home: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "bogus")
    otlp: str | None = collector.url
    if how == "environment":
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
        otlp = None
    with pytest.raises(ConfigError, match="bogus") as info:
        codetape.configure(home=home, otlp=otlp)
    assert info.value.hint
    assert "http/protobuf" in info.value.hint


def test_bad_otlp_environment_never_breaks_an_unconfigured_agent(
    collector: Collector, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An agent that never calls configure() is configured on first use, from the
    # environment. A bad OTLP variable there must not make a code action raise.
    assert _config._current is not None
    _config._current.shutdown()
    _config._current = None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "bogus")

    @codetape.agent
    def solve(task: str) -> Any:
        return execute("result = 40 + 2", {})

    assert solve("answer") == 42


def _canary() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))


@pytest.mark.parametrize("redact", [True, False], ids=["redacted", "redact-off"])
def test_secrets_never_reach_the_collector(
    collector: Collector, home: Path, monkeypatch: pytest.MonkeyPatch, redact: bool
) -> None:
    canary = _canary()
    openai = "sk-" + _canary()
    monkeypatch.setenv("CANARY_API_KEY", canary)  # before configure(): the Redactor reads env
    codetape.configure(home=home, otlp=collector.url, redact=redact, otlp_conventions="both")
    ns: dict[str, Any] = {"add": add}
    with codetape.run("bot", task=f"use {canary}"):
        execute(f"key = {canary!r}\nprint('key is', key, {openai!r})\nresult = add(1)", ns)
        with pytest.raises(PermissionError):
            execute(f"raise PermissionError('rejected ' + {canary!r})", ns)
    flush()
    raw = collector.raw()
    assert raw, "nothing was exported"
    if not redact:  # the check below can see a leak
        assert canary.encode() in raw
        assert openai.encode() in raw
        return
    assert canary.encode() not in raw
    assert openai.encode() not in raw
    code_previews = [
        attributes(s.attributes)[A.CODE_PREVIEW]
        for s in collector.received()
        if s.name == "execute_code"
    ]
    assert any("[REDACTED:env:CANARY_API_KEY]" in p for p in code_previews)
    stdout = [
        attributes(s.attributes).get(A.STDOUT_PREVIEW)
        for s in collector.received()
        if s.name == "execute_code"
    ]
    assert "key is [REDACTED:env:CANARY_API_KEY] [REDACTED:openai_key]\n" in stdout


# -- the convention attributes in the protobuf payload ---------------------------------


def stored_attributes(home: Path) -> dict[str, dict[str, Any]]:
    """Each stored span's attributes, by span id."""
    codetape.Store(home).refresh()
    con = duckdb.connect(str(home / "codetape.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT span_id, attributes FROM spans").fetchall()
    finally:
        con.close()
    return {span_id: json.loads(attrs) for span_id, attrs in rows}


@pytest.mark.parametrize("setting", ["genai", "openinference", "both", "none"])
def test_the_payload_carries_the_conventions(
    collector: Collector, home: Path, setting: str
) -> None:
    conventions = {"both": ("genai", "openinference"), "none": ()}.get(setting, (setting,))
    codetape.configure(home=home, otlp=collector.url, otlp_conventions=setting)
    scripted.record_run()
    flush()
    stored = stored_attributes(home)
    spans = collector.received()
    assert len(spans) == len(stored) == 6
    for span in spans:
        exported = attributes(span.attributes)
        key = scripted.span_key(span.name, exported)
        # Exactly the stored attributes and what the conventions add, nothing dropped.
        expected = {**stored[span.span_id.hex()], **scripted.added(key, conventions)}
        assert exported == expected, key


@pytest.mark.parametrize("setting", ["genai", "openinference", "none"])
def test_the_payload_carries_the_whole_code_not_its_preview(
    collector: Collector, home: Path, setting: str
) -> None:
    code = "total = 0\n" + "".join(f"total += {i}  # step {i}\n" for i in range(100))
    codetape.configure(home=home, otlp=collector.url, otlp_conventions=setting)
    with codetape.run("bot"):
        execute(code + "print(total)", {})
    flush()
    [step] = [attributes(s.attributes) for s in collector.received() if s.name == "execute_code"]
    assert len(step[A.CODE_PREVIEW]) == 200
    if setting == "genai":
        assert json.loads(step[A.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"code": code + "print(total)"}
        assert json.loads(step[A.GEN_AI_TOOL_CALL_RESULT]) == {"status": "ok", "stdout": "4950\n"}
    elif setting == "openinference":
        assert step["input.value"] == code + "print(total)"
        assert json.loads(step["output.value"]) == {"status": "ok", "stdout": "4950\n"}
    else:
        assert not {A.GEN_AI_TOOL_CALL_ARGUMENTS, "input.value"} & set(step)


def test_a_lone_surrogate_does_not_lose_the_batch(collector: Collector, home: Path) -> None:
    # Protobuf cannot encode a lone surrogate (os.fsdecode of bytes that are not UTF-8):
    # each one is sent as the text \udcff, as the store shows it.
    codetape.configure(home=home, otlp=collector.url, otlp_conventions="none")
    with codetape.run("bot"):
        execute("import os\nprint(os.fsdecode(b'report\\xff.csv'))", {})
    flush()
    [step] = [s for s in collector.received() if s.name == "execute_code"]
    assert attributes(step.attributes)[A.STDOUT_PREVIEW] == "report\\udcff.csv\n"
    assert len(collector.received()) == 2
