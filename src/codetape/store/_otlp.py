"""Spool records ⇄ OTLP spans: the one mapping between what a recording process spools
and what travels over OTLP/HTTP to ``codetape serve``.

A shipper turns each record into a protobuf ``Span`` (``request_of``); the server turns
each span back into the record (``record_of``) and spools it, so the server's store
derives the run, its steps and tool calls from the same records the local store did.

Spans carry everything a ``span`` record holds: ids, name, parent, times, status and
message, attributes (their JSON types kept: text, integer, float, boolean, lists as
arrays, objects as key-value lists, null as an empty value) and events.

A request whose resource has ``codetape.spool.ended = true`` comes from a spool file
whose writer has ended: its spans without an end time are that file's "start" records
(a run or step that began and never ended, since its process died). The server spools
such a request in a file of its own and closes it, so its ingestion marks those runs
``incomplete`` and those steps ``interrupted``, as the local store's did.

Imports protobuf only: used on the recording path's shipper thread (lazily) and by the
server.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

__all__ = ["ENDED_SPOOL", "TooDeep", "is_ended", "record_of", "request_of", "span_of"]

ENDED_SPOOL = "codetape.spool.ended"
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}
_CODES = {name: code for code, name in _STATUS.items()}
_INT64 = (-(2**63), 2**63 - 1)


class TooDeep(ValueError):
    """An attribute value nested deeper than the limit."""


# -- OTLP span -> spool record (the server) ---------------------------------------------


def _value(v: AnyValue, depth: int, max_depth: int) -> Any:
    kind = v.WhichOneof("value")
    if kind in ("array_value", "kvlist_value"):
        if depth >= max_depth:
            raise TooDeep
        if kind == "array_value":
            return [_value(x, depth + 1, max_depth) for x in v.array_value.values]
        return {kv.key: _value(kv.value, depth + 1, max_depth) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    return getattr(v, kind) if kind else None


def _attributes(kvs: Iterable[KeyValue], max_depth: int) -> dict[str, Any]:
    return {kv.key: _value(kv.value, 1, max_depth) for kv in kvs}


def record_of(span: Span, max_depth: int, *, start: bool = False) -> dict[str, Any]:
    """The spool record of ``span``: a ``span`` record, or with ``start`` the "start"
    record of a span that began and never ended. Raises ``TooDeep`` or ``ValueError``
    (bad ids)."""
    if len(span.trace_id) != 16 or len(span.span_id) != 8:
        raise ValueError("a span's trace id must be 16 bytes and its span id 8")
    head = {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_id": span.parent_span_id.hex() if span.parent_span_id else None,
        "name": span.name,
        "start_ns": span.start_time_unix_nano,
    }
    if start:
        return {"t": "start", **head, "attributes": _attributes(span.attributes, max_depth)}
    return {
        "t": "span",
        **head,
        "end_ns": span.end_time_unix_nano or None,
        "status": _STATUS.get(span.status.code, "UNSET"),
        "status_message": span.status.message or None,
        "attributes": _attributes(span.attributes, max_depth),
        "events": [
            {
                "name": e.name,
                "ts": e.time_unix_nano,
                "attributes": _attributes(e.attributes, max_depth),
            }
            for e in span.events
        ],
    }


def is_ended(resource: Resource) -> bool:
    """Whether a request's resource says its spans come from an ended spool file."""
    return any(kv.key == ENDED_SPOOL and kv.value.bool_value for kv in resource.attributes)


# -- spool record -> OTLP span (the shipper) ---------------------------------------------


def _any(value: Any) -> AnyValue:
    v = AnyValue()
    if value is None:
        return v
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int) and _INT64[0] <= value <= _INT64[1]:
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    elif isinstance(value, str):
        v.string_value = value
    elif isinstance(value, list):
        v.array_value.values.extend(_any(item) for item in value)
    elif isinstance(value, dict):
        v.kvlist_value.values.extend(_pairs(value))
    else:  # an integer past int64: kept as its digits
        v.string_value = str(value)
    return v


def _pairs(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=str(key), value=_any(value)) for key, value in attributes.items()]


def _id(value: Any, size: int) -> bytes:
    data = bytes.fromhex(value) if isinstance(value, str) else b""
    if len(data) != size:
        raise ValueError(f"{value!r} is not a {size}-byte hex id")
    return data


def span_of(record: dict[str, Any]) -> Span:
    """The OTLP span of a ``span`` or ``start`` record (a start has no end time)."""
    parent = record.get("parent_id")
    span = Span(
        trace_id=_id(record.get("trace_id"), 16),
        span_id=_id(record.get("span_id"), 8),
        parent_span_id=_id(parent, 8) if parent else b"",
        name=str(record.get("name") or ""),
        start_time_unix_nano=int(record.get("start_ns") or 0),
        end_time_unix_nano=int(record.get("end_ns") or 0),
    )
    span.attributes.extend(_pairs(dict(record.get("attributes") or {})))
    if record.get("t") == "span":
        span.status.code = _CODES.get(str(record.get("status") or "UNSET"), 0)  # type: ignore[assignment]
        span.status.message = record.get("status_message") or ""
        for event in record.get("events") or []:
            added = span.events.add(
                name=str(event.get("name") or ""), time_unix_nano=int(event.get("ts") or 0)
            )
            added.attributes.extend(_pairs(dict(event.get("attributes") or {})))
    return span


def request_of(
    spans: Iterable[Span], *, ended: bool = False, version: str = ""
) -> ExportTraceServiceRequest:
    """One export request holding ``spans``; ``ended`` marks them as the rest of an ended
    spool file (its unended spans are start records)."""
    resource = Resource(attributes=_pairs({"service.name": "codetape"}))
    if ended:
        resource.attributes.append(KeyValue(key=ENDED_SPOOL, value=AnyValue(bool_value=True)))
    scope = ScopeSpans(scope=InstrumentationScope(name="codetape.ship", version=version))
    scope.spans.extend(spans)
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[scope])]
    )
