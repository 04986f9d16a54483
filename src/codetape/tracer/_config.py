"""``codetape.configure``: the store directory, redaction and OTLP export.

Calling nothing at all works: the first recording configures the defaults.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer

from ..errors import ConfigError
from ..store.internal import (
    BackgroundIngester,
    BlobStore,
    SpoolWriter,
    refuse_archive,
    resolve_home,
    set_default_home,
)
from ._errors import internal_errors
from ._ids import SecureIdGenerator
from ._otlp import ConventionsProcessor, KeptTexts, TextKeepingBlobStore, conventions_of
from ._processor import CodetapeTracerProvider, SpoolSpanProcessor
from ._redact import Redactor

if TYPE_CHECKING:
    from ..store.internal import Shipper

__all__ = ["Runtime", "all_runtimes", "configure", "recording_to", "runtime"]

_PROTOCOLS = ("http/protobuf", "grpc")


@dataclass(frozen=True)
class OtlpTarget:
    endpoint: str
    protocol: str


@dataclass
class Runtime:
    """Everything the recording path needs, built once per configuration."""

    home: Path
    redactor: Redactor
    provider: TracerProvider
    tracer: Tracer
    spool: SpoolWriter
    blobs: BlobStore
    otlp: OtlpTarget | None
    ingester: BackgroundIngester
    # Model prices: per million input and output tokens, by model name or * pattern.
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # What the spans sent to OTLP carry besides codetape's own attributes ("genai",
    # "openinference"), and the texts kept for them (None when nothing exports them).
    otlp_conventions: tuple[str, ...] = ()
    kept_texts: KeptTexts | None = None
    # Ships the store to ``configure(remote=...)``'s server (None: no remote).
    shipper: Shipper | None = None

    @property
    def exporting(self) -> bool:
        """Whether a span processor besides the spool's wants SDK spans."""
        return isinstance(self.provider, CodetapeTracerProvider) and self.provider.exporting

    def shutdown(self) -> None:
        self.provider.shutdown()
        self.ingester.flush()
        if self.shipper is not None:
            self.shipper.close()


_lock = threading.RLock()
_current: Runtime | None = None
# Set by recording_to(): recording in this context goes to another store.
_override: ContextVar[Runtime | None] = ContextVar("codetape_runtime", default=None)
_others: dict[Path, Runtime] = {}


def _otlp_target(otlp: bool | str | None) -> OtlpTarget | None:
    env_endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if otlp is False or (otlp is None and not env_endpoint):
        return None
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol not in _PROTOCOLS:
        raise ConfigError(
            f"OTLP protocol {protocol!r} is not supported",
            hint="set OTEL_EXPORTER_OTLP_PROTOCOL to http/protobuf or grpc",
        )
    if isinstance(otlp, str):
        endpoint = otlp
    elif env_endpoint:
        endpoint = env_endpoint
    else:
        endpoint = "http://localhost:4317" if protocol == "grpc" else "http://localhost:4318"
    parts = urlsplit(endpoint if "://" in endpoint else "http://" + endpoint)
    if not parts.hostname:
        raise ConfigError(f"OTLP endpoint {endpoint!r} has no host")
    if protocol == "http/protobuf" and not parts.path.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return OtlpTarget(endpoint, protocol)


def _otlp_processor(target: OtlpTarget) -> SpanProcessor:
    if target.protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError as exc:
            raise ConfigError(
                "OTLP over grpc needs the grpc exporter",
                hint="pip install 'codetape[grpc]', "
                "or use OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
            ) from exc
        return BatchSpanProcessor(GrpcExporter(endpoint=target.endpoint))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return BatchSpanProcessor(OTLPSpanExporter(endpoint=target.endpoint))


Price = tuple[float, float] | Mapping[str, float]


def _prices(prices: Mapping[str, Price] | None) -> dict[str, tuple[float, float]]:
    """``{model: (input, output)}`` or ``{model: {"input": ..., "output": ...}}``, per
    million tokens, checked."""
    checked: dict[str, tuple[float, float]] = {}
    for model, price in (prices or {}).items():
        pair = (price.get("input"), price.get("output")) if isinstance(price, Mapping) else price
        try:
            input_price, output_price = (float(p) for p in pair)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigError(
                f"prices[{model!r}] = {price!r} is not a price",
                hint='give (input, output) per million tokens: prices={"gpt-4o": (2.5, 10.0)}',
            ) from None
        if input_price < 0 or output_price < 0:
            raise ConfigError(f"prices[{model!r}] = {price!r} is negative")
        checked[str(model)] = (input_price, output_price)
    return checked


def configure(
    home: str | os.PathLike[str] | None = None,
    otlp: bool | str | None = None,
    redact: bool = True,
    prices: Mapping[str, Price] | None = None,
    otlp_conventions: str | Iterable[str] | None = None,
    remote: str | None = None,
    token: str | None = None,
) -> Runtime:
    """Set where and how codetape records. Every argument has a working default.

    - ``home``: the store directory (default ``CODETAPE_HOME``, else ``./.codetape``).
    - ``otlp``: ``True`` or an endpoint URL also sends spans to an OTLP backend; ``None``
      does so when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. ``OTEL_EXPORTER_OTLP_PROTOCOL``
      picks ``http/protobuf`` (default) or ``grpc``.
    - ``redact``: replace secrets (secret-named environment variables, API keys, tokens,
      private keys, URL passwords) with a marker before anything is written.
    - ``prices``: what models cost, per million input and output tokens, by model name
      (or a ``*`` pattern): ``{"gpt-4o": (2.5, 10.0)}``. Each model call and run then
      records its cost.
    - ``otlp_conventions``: what the spans sent to OTLP carry besides codetape's own
      attributes, so that GenAI-aware backends show each code action's code as its input
      and its outcome as its output, and model calls with their messages:
      ``"genai"`` (the OpenTelemetry GenAI conventions: Langfuse, MLflow, Phoenix...),
      ``"openinference"`` (Phoenix, Arize), ``"both"`` or ``"none"``. Default:
      ``CODETAPE_OTLP_CONVENTIONS``, else ``"genai"``. The store is unchanged by it.
      See docs/otlp.md.
    - ``remote``: a ``codetape serve`` to ship this store to (default
      ``CODETAPE_REMOTE``), e.g. ``"https://codetape.internal:4318"``. Recording is
      unchanged (the local store first, so a dead network or server loses nothing); a
      background thread sends the spans over OTLP/HTTP and the blobs they name, retrying
      with backoff, resuming after a restart where it stopped, with a last short attempt
      at exit. See docs/server.md.
    - ``token``: the server's bearer token (default ``CODETAPE_TOKEN``).

    >>> import codetape, tempfile
    >>> rt = codetape.configure(home=tempfile.mkdtemp(), otlp=False)
    >>> rt.home.is_dir()
    True
    """
    global _current
    target = _otlp_target(otlp)
    checked_prices = _prices(prices)
    conventions = conventions_of(otlp_conventions)
    remote = _remote(remote)
    if home is not None:  # refused before the current recording is stopped
        refuse_archive(resolve_home(home), "record into it")
    with _lock:
        if _current is not None:
            _current.shutdown()
            _current = None
        set_default_home(home)
        path = resolve_home(home)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the store directory {path}: {exc}") from exc
        _current = _build(path, target, redact, checked_prices, conventions)
        _current.shipper = _shipper(path, remote, token) if remote is not None else None
        return _current


def _remote(remote: str | None) -> str | None:
    """The server ``configure(remote=...)`` ships to, checked (default $CODETAPE_REMOTE)."""
    remote = remote or os.environ.get("CODETAPE_REMOTE") or None
    if remote is None:
        return None
    from ..store.internal import remote_url

    return remote_url(remote)


def _shipper(path: Path, remote: str, token: str | None) -> Shipper:
    from ..store.internal import Shipper

    shipper = Shipper(path, remote, token or os.environ.get("CODETAPE_TOKEN") or None)
    shipper.start()
    return shipper


def _build(
    path: Path,
    target: OtlpTarget | None,
    redact: bool,
    prices: Mapping[str, tuple[float, float]] | None = None,
    conventions: tuple[str, ...] = (),
) -> Runtime:
    refuse_archive(path, "record into it")
    spool = SpoolWriter(path)
    provider = CodetapeTracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "codetape")}),
        id_generator=SecureIdGenerator(),
    )
    provider.add_span_processor(SpoolSpanProcessor(spool))
    blobs = BlobStore(path / "blobs", spool=spool)
    kept = None
    if target is not None:
        if conventions:
            kept = KeptTexts()
            blobs = TextKeepingBlobStore(path / "blobs", spool, kept)
        # The store keeps spans as recorded; the OTLP copy gets the conventions.
        provider.add_span_processor(
            ConventionsProcessor(_otlp_processor(target), conventions, kept)
        )
    return Runtime(
        home=path,
        redactor=Redactor(enabled=redact),
        provider=provider,
        tracer=provider.get_tracer("codetape"),
        spool=spool,
        blobs=blobs,
        otlp=target,
        ingester=BackgroundIngester(path, internal_errors),
        prices=dict(prices or {}),
        otlp_conventions=conventions,
        kept_texts=kept,
    )


def runtime() -> Runtime:
    """The current runtime, configured with the defaults on first use."""
    override = _override.get()
    if override is not None:
        return override
    with _lock:
        return _current if _current is not None else configure()


def all_runtimes() -> list[Runtime]:
    """Every runtime built so far that records (the current one, and replays' stores)."""
    return [rt for rt in [_current, *_others.values()] if rt is not None]


@contextlib.contextmanager
def recording_to(home: Path) -> Iterator[Runtime]:
    """Record into the store at ``home`` within this block (and this context only),
    with the current redaction and OTLP settings; used to record a replay next to the
    run it replays."""
    current = runtime()
    path = resolve_home(home)
    if current.home == path:
        yield current
        return
    with _lock:
        other = _others.get(path)
        if other is None:
            path.mkdir(parents=True, exist_ok=True)
            other = _others[path] = _build(
                path,
                current.otlp,
                current.redactor.enabled,
                current.prices,
                current.otlp_conventions,
            )
    token = _override.set(other)
    try:
        yield other
    finally:
        _override.reset(token)


@atexit.register
def _shutdown_at_exit() -> None:
    for rt in all_runtimes():
        rt.shutdown()
