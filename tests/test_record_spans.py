"""Spans go to the store straight from codetape's recorders; span processors added to the
runtime's provider (an OTLP exporter, a test's in-memory exporter) get SDK spans with
the same ids, names, attributes, events and status."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import duckdb
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import codetape
from codetape.tracer.internal import runtime


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> Any:
    exec(code, namespace)
    return namespace.get("result")


@codetape.tool
def double(n: int) -> int:
    return 2 * n


@codetape.llm(model="scripted")
def ask(messages: list[dict[str, str]]) -> str:
    return "Thought: double it.\n```py\nresult = double(21)\n```"


def record() -> str:
    ns: dict[str, Any] = {"double": double}
    with codetape.run("bot", task="double 21") as r:
        ask([{"role": "user", "content": "double 21"}])
        execute("result = double(21)", ns)
        with contextlib.suppress(ZeroDivisionError):
            execute("1 / 0", ns)
    return r.id


def stored(home: Path, run_id: str) -> dict[str, dict[str, Any]]:
    codetape.Store(home).refresh()
    con = duckdb.connect(str(home / "codetape.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT span_id, parent_id, name, status, attributes, events FROM spans "
            "WHERE trace_id = ?",
            [run_id],
        ).fetchall()
    finally:
        con.close()
    return {
        row[0]: {
            "parent_id": row[1],
            "name": row[2],
            "status": row[3],
            "attributes": json.loads(row[4]) if row[4] else {},
            "events": [e["name"] for e in json.loads(row[5])] if row[5] else [],
        }
        for row in rows
    }


def test_no_sdk_span_is_made_when_nothing_but_the_store_wants_spans(home: Path) -> None:
    assert not runtime().exporting
    run_id = record()
    spans = stored(home, run_id)
    names = sorted(s["name"] for s in spans.values())
    assert names == [
        "chat scripted",
        "execute_code",
        "execute_code",
        "execute_tool double",
        "invoke_agent bot",
    ]
    steps = [s for s in spans.values() if s["name"] == "execute_code"]
    failed = next(s for s in steps if s["attributes"]["codetape.step.status"] == "error")
    assert failed["status"] == "ERROR"
    assert failed["events"] == ["exception"]


def test_processors_added_to_the_provider_get_the_spans_the_store_has(home: Path) -> None:
    exporter = InMemorySpanExporter()
    runtime().provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert runtime().exporting
    run_id = record()
    spans = stored(home, run_id)
    exported = {f"{s.context.span_id:016x}": s for s in exporter.get_finished_spans()}
    assert set(exported) == set(spans)
    for span_id, span in exported.items():
        mine = spans[span_id]
        assert f"{span.context.trace_id:032x}" == run_id
        assert span.name == mine["name"]
        parent = f"{span.parent.span_id:016x}" if span.parent is not None else None
        assert parent == mine["parent_id"]
        assert span.status.status_code.name == mine["status"]
        assert [e.name for e in span.events] == mine["events"]
        attributes = json.loads(json.dumps(dict(span.attributes or {})))
        assert attributes == mine["attributes"]
