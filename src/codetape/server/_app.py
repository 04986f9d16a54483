"""The ASGI application of ``codetape serve`` (Starlette): OTLP/HTTP traces and blobs
into one store, through the same spool and ingestion as local recording.

Every request needs the bearer token (compared in constant time) unless the server
was started without auth on loopback. A body is read as it streams in and refused
(413) once it passes the limit, before the rest is read; a gzip body is decompressed
in steps, so a small body that inflates without end (a "gzip bomb") is refused too.
A span is stored durably (its spool line fsynced) before the 200.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..store.internal import SMALL_BLOB, BackgroundIngester, BlobStore, SpoolWriter, blob_record
from . import _otlp
from ._reads import read_routes

__all__ = ["Limits", "ServerSettings", "create_app"]

log = logging.getLogger("codetape.server")

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_FRAME = re.compile(rb"(sha256:[0-9a-f]{64}) ([0-9]{1,12})")
_FRAME_HEAD = 90  # "sha256:<64 hex> <length>" fits in this many bytes
MOST_ASKED = 10_000  # digests in one POST /v1/blobs/missing
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"


@dataclass(frozen=True)
class Limits:
    """What one request may hold."""

    body_bytes: int = 64 * 1024 * 1024
    decompressed_bytes: int = 128 * 1024 * 1024
    attributes_per_span: int = 1000
    value_depth: int = 8
    span_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    home: Path
    token: str | None  # None: no auth (loopback only, checked by the command)
    limits: Limits = Limits()


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A 4xx answer: google.rpc.Status's JSON shape (what OTLP clients read)."""
    return JSONResponse({"code": status, "message": message}, status, headers=headers)


class BearerAuth:
    """Refuses (401) every request without ``Authorization: Bearer <token>``, before
    its body is read."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
                break
        if not hmac.compare_digest(given, self.expected):
            message = "a bearer token is required" if not given else "the token is not valid"
            response = error(
                401,
                f"{message}: send 'Authorization: Bearer <token>' with the server's token",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is larger than ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HttpError(400, f"Content-Length {declared[:40]!r} is not a number")
        if int(declared) > limit:
            raise HttpError(413, f"the body is {int(declared)} bytes; at most {limit} are accepted")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"the body is over {limit} bytes, the most accepted")
        parts.append(chunk)
    return b"".join(parts)


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise HttpError(415, f"Content-Encoding {encoding!r} is not accepted (gzip or none)")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HttpError(400, f"the gzip body cannot be decompressed: {exc}") from None
    if len(data) > limit:
        raise HttpError(413, f"the body decompresses to over {limit} bytes, the most accepted")
    if not inflater.eof:
        raise HttpError(400, "the gzip body is cut short")
    return data


class Sink:
    """Where accepted spans and blobs go: the store's spool and blob folder."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.spool = SpoolWriter(home)
        # Every blob the server receives is a file: its presence answers HEAD.
        self.blobs = BlobStore(home / "blobs")
        self.ingester = BackgroundIngester(home, _logged)
        self._lock = threading.Lock()
        # Files written, then fsynced in parallel: the disk commits them together.
        self._fsyncs = ThreadPoolExecutor(8, thread_name_prefix="codetape-fsync")

    def write_spans(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        with self._lock:
            for record in records[:-1]:
                self.spool.write(record, defer=True)
            self.spool.write(records[-1])
            self.spool.sync()
        self.ingester.request()

    def write_ended(self, records: list[dict[str, Any]]) -> None:
        """The rest of a shipper's ended spool file: a spool file of its own, closed at
        once, so ingestion ends its unfinished runs and steps as the shipper's store did."""
        if not records:
            return
        spool = SpoolWriter(self.home)
        try:
            for record in records[:-1]:
                spool.write(record, defer=True)
            spool.write(records[-1])
        finally:
            spool.close()
        self.ingester.request()

    def has_blob(self, digest: str) -> bool:
        return self.blobs.path(digest).exists()

    def put_blob(self, digest: str, data: bytes) -> None:
        if len(data) <= SMALL_BLOB:
            # Also a record of the database's, as a recording process stores a small
            # blob: the views read code and variable manifests from there.
            with self._lock:
                self.spool.write(blob_record(digest, data))
                self.spool.sync()
            self.ingester.request()
        self.blobs.put(data, digest)
        self._synced([digest])

    def missing(self, digests: list[str]) -> list[str]:
        return [digest for digest in digests if not self.has_blob(digest)]

    def put_blobs(self, blobs: dict[str, bytes]) -> tuple[int, int]:
        """A verified batch, stored as ``put_blob`` stores one, the small ones' spool
        records in one write and one fsync, the files' fsyncs a few at a time:
        (stored, present)."""
        new = {d: data for d, data in blobs.items() if not self.has_blob(d)}
        small = [(d, data) for d, data in new.items() if len(data) <= SMALL_BLOB]
        if small:
            with self._lock:
                for digest, data in small:
                    self.spool.write(blob_record(digest, data), defer=True)
                self.spool.sync()
        for digest, data in new.items():
            self.blobs.put(data, digest)
        self._synced(list(new))
        if small:
            self.ingester.request()
        return len(new), len(blobs) - len(new)

    def _synced(self, digests: list[str]) -> None:
        """The blob files, then the folders naming them (a new name survives a power
        loss only once its folder is synced too), then the blob root (a new folder)."""
        paths = [self.blobs.path(digest) for digest in digests]
        list(self._fsyncs.map(_fsync, paths))
        list(self._fsyncs.map(_fsync, sorted({p.parent for p in paths})))
        _fsync(self.blobs.root)

    def close(self) -> None:
        self._fsyncs.shutdown()
        self.spool.close()
        self.ingester.flush(30.0)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_frames(body: bytes) -> dict[str, bytes]:
    """The blobs of a batch body (frames ``sha256:<hex> <length>\\n<bytes>``), each
    verified; an ``HttpError`` (400) naming the first bad frame or blob otherwise."""
    blobs: dict[str, bytes] = {}
    pos = 0
    view = memoryview(body)
    while pos < len(body):
        newline = body.find(b"\n", pos, pos + _FRAME_HEAD + 1)
        head = _FRAME.fullmatch(body, pos, newline) if newline >= 0 else None
        if head is None:
            raise HttpError(
                400,
                f"frame {len(blobs) + 1} (at byte {pos}) does not start with "
                f"'sha256:<64 hex digits> <length>\\n': {body[pos : pos + 40]!r}",
            )
        digest, length = head.group(1).decode(), int(head.group(2))
        start = newline + 1
        if start + length > len(body):
            raise HttpError(
                400,
                f"blob {digest} (frame {len(blobs) + 1}) says {length} bytes, but the body "
                f"ends {len(body) - start} bytes after its header",
            )
        data = bytes(view[start : start + length])
        actual = hashlib.sha256(data).hexdigest()
        if "sha256:" + actual != digest:
            raise HttpError(
                400,
                f"blob {digest} (frame {len(blobs) + 1}): its bytes' sha256 is {actual}; "
                "nothing of this batch was stored: send each blob's exact bytes",
            )
        blobs[digest] = data
        pos = start + length
    if not blobs:
        raise HttpError(400, "the batch is empty: send frames 'sha256:<hex> <length>\\n<bytes>'")
    return blobs


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    try:
        yield
    except Exception:
        log.exception("codetape serve: %s failed", what)


class _Endpoints:
    """The request handlers, over one ``Sink``."""

    def __init__(
        self, sink: Sink, limits: Limits, read_blob: Callable[[Request, str], Any]
    ) -> None:
        self.sink = sink
        self.limits = limits
        self.read_blob = read_blob

    async def traces(self, request: Request) -> Response:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in (_PROTOBUF, _JSON):
            return error(415, f"Content-Type {kind!r} is not accepted: use {_PROTOBUF} or {_JSON}")
        limits = self.limits
        try:
            body = await read_body(request, limits.body_bytes)
            body = decompress(
                body, request.headers.get("content-encoding", ""), limits.decompressed_bytes
            )
            parsed = _otlp.parse(body, kind == _JSON)
            decoded = _otlp.decode(
                parsed, limits.attributes_per_span, limits.value_depth, limits.span_bytes
            )
        except HttpError as exc:
            return error(exc.status, exc.message)
        except _otlp.BadRequest as exc:
            return error(400, str(exc))
        try:
            await run_in_threadpool(self.sink.write_spans, decoded.records)
            await run_in_threadpool(self.sink.write_ended, decoded.ended)
        except OSError as exc:
            log.error("codetape serve: cannot store spans: %s", exc)
            return error(503, f"the server cannot store the spans now ({exc.strerror}); retry")
        return Response(_otlp.response(decoded, kind == _JSON), 200, media_type=kind)

    async def blob(self, request: Request) -> Response:
        given = request.path_params["digest"]
        match = _DIGEST.fullmatch(given)
        if match is None:
            return error(400, f"{given[:80]!r} is not a blob name: use sha256:<64 hex digits>")
        digest = match.group(0)
        if request.method == "HEAD":
            found = await run_in_threadpool(self.sink.has_blob, digest)
            return Response(status_code=200 if found else 404)
        if request.method == "GET":
            answer: Response = await self.read_blob(request, digest)
            return answer
        try:
            body = await read_body(request, self.limits.body_bytes)
        except HttpError as exc:
            return error(exc.status, exc.message)
        actual = hashlib.sha256(body).hexdigest()
        if actual != match.group(1):
            return error(
                400,
                f"the body's sha256 is {actual}, not the {match.group(1)} it was sent as: "
                "send the blob's exact bytes to /v1/blobs/sha256:<their sha256>",
            )
        try:
            await run_in_threadpool(self.sink.put_blob, digest, body)
        except OSError as exc:
            log.error("codetape serve: cannot store blob %s: %s", digest, exc)
            return error(503, f"the server cannot store the blob now ({exc.strerror}); retry")
        return JSONResponse({"digest": digest, "size": len(body)}, 201)

    async def missing(self, request: Request) -> Response:
        """Which of the digests asked (``{"digests": [...]}``) the server lacks."""
        try:
            body = await read_body(request, self.limits.body_bytes)
        except HttpError as exc:
            return error(exc.status, exc.message)
        try:
            asked = json.loads(body)
        except ValueError as exc:
            return error(400, f'the body is not JSON ({exc}): send {{"digests": [...]}}')
        digests = asked.get("digests") if isinstance(asked, dict) else None
        if not isinstance(digests, list):
            return error(400, 'send {"digests": ["sha256:<64 hex digits>", ...]}')
        if len(digests) > MOST_ASKED:
            return error(
                413, f"{len(digests)} digests asked; at most {MOST_ASKED} a request: split them"
            )
        for given in digests:
            if not isinstance(given, str) or _DIGEST.fullmatch(given) is None:
                return error(
                    400, f"{str(given)[:80]!r} is not a blob name: use sha256:<64 hex digits>"
                )
        lacking = await run_in_threadpool(self.sink.missing, digests)
        return JSONResponse({"missing": lacking})

    async def batch(self, request: Request) -> Response:
        """Blobs in one body, every one verified before any is stored."""
        try:
            body = await read_body(request, self.limits.body_bytes)
            blobs = await run_in_threadpool(parse_frames, body)
        except HttpError as exc:
            return error(exc.status, exc.message)
        try:
            stored, present = await run_in_threadpool(self.sink.put_blobs, blobs)
        except OSError as exc:
            log.error("codetape serve: cannot store a batch of blobs: %s", exc)
            return error(503, f"the server cannot store the blobs now ({exc.strerror}); retry")
        return JSONResponse({"stored": stored, "present": present}, 201)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})


def create_app(settings: ServerSettings) -> ASGIApp:
    """The server's ASGI application (with auth unless ``settings.token`` is None)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    sink = Sink(settings.home)
    reads, read_blob = read_routes(settings.home)
    endpoints = _Endpoints(sink, settings.limits, read_blob)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(sink.close)

    app: ASGIApp = Starlette(
        routes=[
            Route("/v1/traces", endpoints.traces, methods=["POST"]),
            Route("/v1/blobs/missing", endpoints.missing, methods=["POST"]),
            Route("/v1/blobs", endpoints.batch, methods=["POST"]),
            Route("/v1/blobs/{digest}", endpoints.blob, methods=["PUT", "HEAD", "GET"]),
            Route("/healthz", endpoints.healthz, methods=["GET"]),
            *reads,
        ],
        lifespan=lifespan,
    )
    if settings.token is not None:
        app = BearerAuth(app, settings.token)
    return app
