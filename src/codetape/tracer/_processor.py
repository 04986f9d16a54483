"""The span processor that makes spans durable: each one goes to the spool as it ends."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ..schemas import attributes as A
from ..store.internal import SpoolWriter
from ._errors import internal_errors

__all__ = ["SpoolSpanProcessor", "span_record"]

log = logging.getLogger("codetape")


def _hex_span(span_id: int) -> str:
    return f"{span_id:016x}"


def span_record(span: ReadableSpan, kind: str = "span") -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None
    parent = span.parent
    return {
        "t": kind,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": _hex_span(ctx.span_id),
        "parent_id": _hex_span(parent.span_id) if parent is not None else None,
        "name": span.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "status_message": span.status.description,
        "attributes": dict(span.attributes or {}),
        "events": [
            {"name": e.name, "ts": e.timestamp, "attributes": dict(e.attributes or {})}
            for e in span.events
        ],
    }


class SpoolSpanProcessor(SpanProcessor):
    """Writes a "start" record when a run or a step begins and every span when it ends.

    The write happens on the thread that ends the span, before the code action returns
    to the agent, so what the agent saw finish is on disk even if the process is killed
    the next moment. The start records say what was running then: the run (shown as
    incomplete) and the step with its code (shown as interrupted).
    """

    def __init__(self, spool: SpoolWriter) -> None:
        self.spool = spool

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if span.name == A.SPAN_EXECUTE_CODE:
            with internal_errors("writing a step's start record"):
                self.spool.write(span_record(span, "start"))
        elif span.parent is None and span.name.startswith(A.SPAN_INVOKE_AGENT):
            with internal_errors("writing a run's start record"):
                self.spool.write(span_record(span, "start"))

    def on_end(self, span: ReadableSpan) -> None:
        with internal_errors("writing a span to the spool"):
            self.spool.write(span_record(span))
            if span.parent is None:
                self.spool.sync()

    def shutdown(self) -> None:
        self.spool.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.spool.sync()
        return True
