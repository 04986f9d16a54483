"""Spans written straight to the store's spool.

The store needs a span's record, not an OpenTelemetry SDK span: the SDK checks and
copies every attribute as it is set, which the store does not need (codetape's
recorders set plain, bounded values). A ``RecordSpan`` keeps its attributes in a dict
and writes its record itself, one JSON encoding per record: a "start" record when a
run or a step begins (what was running when a process died) and the span when it ends,
on the thread that ends it, before the code action returns to the agent.

When the runtime also hands spans to span processors (the OTLP exporter, or one a test
or a user added to its provider), the ``RecordSpan`` drives an SDK span alongside, with
the same ids, and that SDK span is what those processors get.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes

from ._errors import internal_errors

if TYPE_CHECKING:
    from ._config import Runtime

__all__ = ["RecordSpan", "start_span"]

_UNSET = Status(StatusCode.UNSET)
_STATUS_NAMES = {code: code.name for code in StatusCode}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def _new_id(bits: int) -> int:
    while not (found := secrets.randbits(bits)):
        pass
    return found


class RecordSpan(Span):
    """A span whose record goes to the spool when it ends (see the module's docstring)."""

    def __init__(
        self,
        rt: Runtime,
        name: str,
        parent: Span | None,
        attributes: Mapping[str, Any],
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        links: Sequence[Link] = (),
        start_time: int | None = None,
        start_record: bool = False,
    ) -> None:
        self.name = name
        self.start_time = start_time if start_time is not None else time.time_ns()
        self.end_time: int | None = None
        self.attributes = dict(attributes)
        if None in self.attributes.values():
            self.attributes = {k: v for k, v in attributes.items() if v is not None}
        self.events: list[dict[str, Any]] = []
        self.status = _UNSET
        self._spool = rt.spool
        self._sdk = self._start_sdk(rt, parent, kind, links) if rt.exporting else None
        if self._sdk is not None:
            context = self._sdk.get_span_context()
            self.trace_id, self.span_id = context.trace_id, context.span_id
            self.parent_id = parent.get_span_context().span_id if parent is not None else None
        elif isinstance(parent, RecordSpan):  # codetape's own parent: no SpanContext needed
            self.trace_id, self.parent_id = parent.trace_id, parent.span_id
            self.span_id = _new_id(64)
        else:
            parent_context = parent.get_span_context() if parent is not None else None
            self.trace_id = parent_context.trace_id if parent_context else _new_id(128)
            self.parent_id = parent_context.span_id if parent_context else None
            self.span_id = _new_id(64)
        self._context: SpanContext | None = None
        if start_record:
            with internal_errors("writing a start record"):
                self._spool.write(self.record("start"))

    def _start_sdk(
        self, rt: Runtime, parent: Span | None, kind: SpanKind, links: Sequence[Link]
    ) -> Span:
        if isinstance(parent, RecordSpan) and parent._sdk is not None:
            parent_span: Span = parent._sdk
        elif parent is not None:
            parent_span = trace.NonRecordingSpan(parent.get_span_context())
        else:
            parent_span = trace.INVALID_SPAN
        return rt.tracer.start_span(
            self.name,
            context=trace.set_span_in_context(parent_span),
            kind=kind,
            attributes=self.attributes,
            links=links,
            start_time=self.start_time,
        )

    @property
    def parent(self) -> SpanContext | None:
        if self.parent_id is None:
            return None
        return SpanContext(self.trace_id, self.parent_id, is_remote=False)

    def record(self, kind: str = "span") -> dict[str, Any]:
        """The spool record (``kind`` "start" while the span runs)."""
        return {
            "t": kind,
            "trace_id": f"{self.trace_id:032x}",
            "span_id": f"{self.span_id:016x}",
            "parent_id": f"{self.parent_id:016x}" if self.parent_id is not None else None,
            "name": self.name,
            "start_ns": self.start_time,
            "end_ns": self.end_time,
            "status": _STATUS_NAMES[self.status.status_code],
            "status_message": self.status.description,
            "attributes": self.attributes,
            "events": self.events,
        }

    # -- the Span API the recorders use ---------------------------------------------------

    def get_span_context(self) -> SpanContext:
        if self._context is None:
            self._context = SpanContext(
                self.trace_id, self.span_id, is_remote=False, trace_flags=_SAMPLED
            )
        return self._context

    def set_attribute(self, key: str, value: Any) -> None:
        if self.end_time is None and value is not None:
            self.attributes[key] = value
            if self._sdk is not None:
                self._sdk.set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self.end_time is None:
            self.attributes.update((k, v) for k, v in attributes.items() if v is not None)
            if self._sdk is not None:
                self._sdk.set_attributes(attributes)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self.end_time is not None:
            return
        ts = timestamp if timestamp is not None else time.time_ns()
        self.events.append({"name": name, "ts": ts, "attributes": dict(attributes or {})})
        if self._sdk is not None:
            self._sdk.add_event(name, attributes, ts)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_time is not None or self.status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is StatusCode.UNSET:
            return
        self.status = status
        if self._sdk is not None:
            self._sdk.set_status(status)

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name
            if self._sdk is not None:
                self._sdk.update_name(name)

    def is_recording(self) -> bool:
        return self.end_time is None

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        event = {"exception.type": type(exception).__name__, "exception.message": str(exception)}
        self.add_event("exception", {**event, **dict(attributes or {})}, timestamp)

    def end(self, end_time: int | None = None) -> None:
        """End the span: its record goes to the spool (a run's is synced to disk)."""
        if self.end_time is not None:
            return
        self.end_time = end_time if end_time is not None else time.time_ns()
        try:
            with internal_errors("writing a span to the spool"):
                self._spool.write(self.record())
                if self.parent_id is None:
                    self._spool.sync()
        finally:
            if self._sdk is not None:
                self._sdk.end(self.end_time)


# A span of ``rt`` under ``parent`` (None: the root of a new trace).
start_span = RecordSpan
