"""OTLP/HTTP export requests in, spool records out.

A request is decoded (protobuf or OTLP's JSON encoding) into the protobuf message, then
each span becomes the record the store's ingestion reads (the one a recording process
spools). A span over the limits (too many attributes, values nested too deep) is
refused alone: the others are stored and the answer is a partial success.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["BadRequest", "Decoded", "decode", "response"]

_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


class BadRequest(ValueError):
    """A request body that is not an export request codetape can read."""


@dataclass
class Decoded:
    """The records of a request's accepted spans, and what was refused and why."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)


def _hex_ids_to_base64(value: Any) -> None:
    """OTLP's JSON writes ids as hex; protobuf's JSON mapping wants bytes as base64."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _ID_FIELDS and isinstance(item, str) and item:
                try:
                    value[key] = base64.b64encode(bytes.fromhex(item)).decode("ascii")
                except ValueError:
                    raise BadRequest(f"{key} {item[:40]!r} is not a hex id") from None
            else:
                _hex_ids_to_base64(item)
    elif isinstance(value, list):
        for item in value:
            _hex_ids_to_base64(item)


def parse(body: bytes, json_encoded: bool) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    if json_encoded:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadRequest("the body is not an OTLP JSON export request (an object)")
        try:
            _hex_ids_to_base64(data)
            json_format.ParseDict(data, request, ignore_unknown_fields=True)
        except (json_format.ParseError, RecursionError) as exc:
            raise BadRequest(f"the body is not an OTLP JSON export request: {exc}") from None
        return request
    try:
        request.ParseFromString(body)
    except (DecodeError, RecursionError) as exc:
        raise BadRequest(f"the body is not an OTLP protobuf export request: {exc}") from None
    return request


class _TooDeep(ValueError):
    pass


def _value(v: AnyValue, depth: int, max_depth: int) -> Any:
    kind = v.WhichOneof("value")
    if kind in ("array_value", "kvlist_value"):
        if depth >= max_depth:
            raise _TooDeep
        if kind == "array_value":
            return [_value(x, depth + 1, max_depth) for x in v.array_value.values]
        return {kv.key: _value(kv.value, depth + 1, max_depth) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    return getattr(v, kind) if kind else None


def _attributes(kvs: Any, max_depth: int) -> dict[str, Any]:
    pairs: list[KeyValue] = list(kvs)
    return {kv.key: _value(kv.value, 1, max_depth) for kv in pairs}


def _record(span: Span, max_depth: int) -> dict[str, Any]:
    if len(span.trace_id) != 16 or len(span.span_id) != 8:
        raise BadRequest("a span's trace id must be 16 bytes and its span id 8")
    return {
        "t": "span",
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_id": span.parent_span_id.hex() if span.parent_span_id else None,
        "name": span.name,
        "start_ns": span.start_time_unix_nano,
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


def decode(
    request: ExportTraceServiceRequest, max_attributes: int, max_depth: int, max_bytes: int
) -> Decoded:
    """The spool records of ``request``'s spans, each span over a limit refused."""
    found = Decoded()

    def refuse(reason: str) -> None:
        found.rejected += 1
        if reason not in found.reasons:
            found.reasons.append(reason)

    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                counts = [len(span.attributes), *(len(e.attributes) for e in span.events)]
                if max(counts) > max_attributes:
                    refuse(
                        f"a span had {max(counts)} attributes (on itself or an event); "
                        f"at most {max_attributes} are accepted"
                    )
                    continue
                if span.ByteSize() > max_bytes:
                    # The store keeps a span as one spool line: a line this large would
                    # be set aside by ingestion, so it is refused here, where it is seen.
                    refuse(f"a span was {span.ByteSize()} bytes; at most {max_bytes} are accepted")
                    continue
                try:
                    found.records.append(_record(span, max_depth))
                except _TooDeep:
                    refuse(f"a span had an attribute value nested deeper than {max_depth}")
                except BadRequest as exc:
                    refuse(str(exc))
    return found


def response(decoded: Decoded, json_encoded: bool) -> bytes:
    """The ExportTraceServiceResponse: empty, or a partial success naming the refused."""
    answer = ExportTraceServiceResponse()
    if decoded.rejected:
        answer.partial_success.rejected_spans = decoded.rejected
        answer.partial_success.error_message = "; ".join(decoded.reasons)
    if json_encoded:
        return json.dumps(json_format.MessageToDict(answer)).encode("utf-8")
    encoded: bytes = answer.SerializeToString()
    return encoded
