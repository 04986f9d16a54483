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

from ..store.internal import TooDeep, is_ended, record_of

__all__ = ["BadRequest", "Decoded", "decode", "response"]

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


class BadRequest(ValueError):
    """A request body that is not an export request codetape can read."""


@dataclass
class Decoded:
    """The records of a request's accepted spans, and what was refused and why."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    # Records of an ended spool file (a shipper's, see store._otlp): to be spooled in a
    # file of their own, closed at once.
    ended: list[dict[str, Any]] = field(default_factory=list)


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
        ended = is_ended(resource_spans.resource)
        records = found.ended if ended else found.records
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
                    start = ended and not span.end_time_unix_nano
                    records.append(record_of(span, max_depth, start=start))
                except TooDeep:
                    refuse(f"a span had an attribute value nested deeper than {max_depth}")
                except ValueError as exc:
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
