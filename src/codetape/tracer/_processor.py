"""The spool's place among the span processors, and the provider that knows whether
any other processor wants spans.

codetape's recorders write each span's record to the spool themselves (``_spans``):
the spool processor only syncs the spool when asked to flush and closes it on
shutdown. A processor added to the provider (the OTLP exporter, a test's in-memory
exporter) makes ``exporting`` true, and the recorders then drive SDK spans for it.
"""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from ..store.internal import SpoolWriter

__all__ = ["CodetapeTracerProvider", "SpoolSpanProcessor"]


class SpoolSpanProcessor(SpanProcessor):
    """Syncs the spool on ``force_flush`` and closes it on ``shutdown``; the spans
    themselves reach the spool without it."""

    def __init__(self, spool: SpoolWriter) -> None:
        self.spool = spool

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        self.spool.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.spool.sync()
        return True


class CodetapeTracerProvider(TracerProvider):
    """A ``TracerProvider`` that says whether a processor other than the spool's was
    added (``exporting``): only then are SDK spans made."""

    exporting = False

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        if not isinstance(span_processor, SpoolSpanProcessor):
            self.exporting = True
