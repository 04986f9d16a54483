"""OTLP export in the shape GenAI-aware backends show (docs/otlp.md).

``configure(otlp=...)`` sends every span to an OTLP backend as well as to the store. The
store keeps each span as recorded. The backend gets a copy with, per
``configure(otlp_conventions=...)``, the GenAI and/or OpenInference attributes that make
a code action's code its input and its outcome its output (see ``_conventions``):
``ConventionsProcessor`` makes that copy as the span ends and hands it to the OTLP
batch processor.

The full texts this needs (code, output, messages, tool values; redacted, as stored)
come from ``KeptTexts``: a runtime that exports stores its texts through a
``TextKeepingBlobStore``, which keeps the latest ones within a size budget, so the
export never reads the store back. With no convention the copy only makes each text
one OTLP can encode (a lone surrogate in a preview would lose the whole batch).
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Status

from ..errors import ConfigError
from ..store.internal import BlobStore, SpoolWriter
from ._conventions import GENAI, OPENINFERENCE, convention_attributes
from ._errors import internal_errors
from ._fit import Kept

__all__ = [
    "CONVENTIONS",
    "ConventionsProcessor",
    "KeptTexts",
    "TextKeepingBlobStore",
    "conventions_of",
    "value_limit",
]

CONVENTIONS = (GENAI, OPENINFERENCE)
CONVENTIONS_ENV = "CODETAPE_OTLP_CONVENTIONS"
# The longest value an exported convention attribute gets, unless the OpenTelemetry
# attribute length limit says otherwise.
DEFAULT_VALUE_CHARS = 16_000
_LIMIT_ENVS = ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT")
# What the kept texts may hold, in characters; a text longer than WHOLE_CHARS is kept
# as its beginning (enough for any exported value) and its length.
KEPT_CHARS = 8_000_000
WHOLE_CHARS = 1_000_000

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def conventions_of(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"genai"``, ``"openinference"``, ``"both"`` (or the two, as a list or joined by
    commas) or ``"none"``; ``None`` reads ``CODETAPE_OTLP_CONVENTIONS``, else GenAI.

    >>> conventions_of("both"), conventions_of(["openinference"]), conventions_of("none")
    (('genai', 'openinference'), ('openinference',), ())
    """
    if value is None:
        value = os.environ.get(CONVENTIONS_ENV) or GENAI
    names = value.split(",") if isinstance(value, str) else list(value)
    wanted: set[str] = set()
    for name in (str(n).strip().lower() for n in names):
        if name == "both":
            wanted.update(CONVENTIONS)
        elif name in CONVENTIONS:
            wanted.add(name)
        elif name not in ("none", ""):
            raise ConfigError(
                f"otlp_conventions: {name!r} is not a convention codetape exports",
                hint=f'use "genai", "openinference", "both" or "none" ({CONVENTIONS_ENV} too)',
            )
    return tuple(c for c in CONVENTIONS if c in wanted)


def value_limit() -> int:
    """The longest exported convention value: the OpenTelemetry attribute length limit
    when the environment sets one, else ``DEFAULT_VALUE_CHARS``."""
    for name in _LIMIT_ENVS:
        raw = os.environ.get(name, "").strip()
        if raw.isdigit() and int(raw) > 0:
            return int(raw)
    return DEFAULT_VALUE_CHARS


class KeptTexts:
    """The latest texts a runtime stored, by digest, for the export (least recently
    used ones go first once they hold more than ``budget`` characters)."""

    def __init__(self, budget: int = KEPT_CHARS, whole: int = WHOLE_CHARS) -> None:
        self.budget = budget
        self.whole = whole
        self._texts: OrderedDict[str, Kept] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def add(self, digest: str, text: str) -> None:
        kept = Kept(text if len(text) <= self.whole else text[: self.whole], len(text))
        with self._lock:
            if digest in self._texts:
                self._texts.move_to_end(digest)
                return
            self._texts[digest] = kept
            self._chars += len(kept.text)
            while self._chars > self.budget and len(self._texts) > 1:
                _, old = self._texts.popitem(last=False)
                self._chars -= len(old.text)

    def get(self, digest: str) -> Kept | None:
        with self._lock:
            kept = self._texts.get(digest)
            if kept is not None:
                self._texts.move_to_end(digest)
            return kept

    def __len__(self) -> int:
        return len(self._texts)


class TextKeepingBlobStore(BlobStore):
    """A blob store that also keeps each text it stores in ``kept``: every full text a
    span names (code, output, messages, tool values) is stored through ``put_text``."""

    def __init__(self, root: Path, spool: SpoolWriter | None, kept: KeptTexts) -> None:
        super().__init__(root, spool=spool)
        self.kept = kept

    def put_text(self, text: str) -> str:
        digest = super().put_text(text)
        self.kept.add(digest, text)
        return digest


def _visible(value: Any) -> Any:
    """A string (or strings) without lone surrogates, which OTLP's protobuf cannot
    encode: each one is written as the text ``\\udcff``, as the store shows it."""
    if isinstance(value, str):
        if value.isascii() or not _SURROGATE.search(value):
            return value
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return tuple(_visible(v) for v in value)
    return value


def _visible_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _visible(value) for key, value in attrs.items()}


def _encodable(span: ReadableSpan, attrs: Mapping[str, Any]) -> bool:
    """Whether OTLP can encode every text of ``span`` as it is."""
    texts = [span.name, span.status.description or ""]
    for mapping in (attrs, *(e.attributes or {} for e in span.events)):
        for value in mapping.values():
            if isinstance(value, str):
                texts.append(value)
            elif isinstance(value, Sequence):
                texts.extend(v for v in value if isinstance(v, str))
    return all(_visible(text) is text for text in texts)


class ConventionsProcessor(SpanProcessor):
    """Hands ``delegate`` (the OTLP batch processor) a copy of each ending span with the
    attributes of ``conventions`` added, every value within ``limit`` characters, and
    every text one that OTLP can encode. A failure here exports the span as recorded:
    tracing never breaks the agent."""

    def __init__(
        self,
        delegate: SpanProcessor,
        conventions: Sequence[str],
        kept: KeptTexts | None,
        limit: int | None = None,
    ) -> None:
        self.delegate = delegate
        self.conventions = tuple(conventions)
        self.kept = kept
        self.limit = limit if limit is not None else value_limit()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.delegate.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        exported = span
        with internal_errors("adding the OTLP conventions to a span"):
            exported = self.exported(span)
        self.delegate.on_end(exported)

    def _kept(self, digest: str) -> Kept | None:
        return self.kept.get(digest) if self.kept is not None else None

    def exported(self, span: ReadableSpan) -> ReadableSpan:
        """The copy of ``span`` an OTLP backend gets (the span itself when that would
        be equal)."""
        attrs = dict(span.attributes or {})
        added = convention_attributes(attrs, self._kept, self.conventions, self.limit)
        if not added and _encodable(span, attrs):
            return span
        status = span.status
        if status.description:
            status = Status(status.status_code, _visible(status.description))
        # The SDK has no public way to copy a finished span with other attributes;
        # exporters that add attributes (logfire's among them) build a ReadableSpan.
        return ReadableSpan(
            name=_visible(span.name),
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=_visible_attributes({**attrs, **added}),
            events=[
                Event(e.name, _visible_attributes(e.attributes or {}), e.timestamp)
                for e in span.events
            ],
            links=span.links,
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def shutdown(self) -> None:
        self.delegate.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.delegate.force_flush(timeout_millis)
