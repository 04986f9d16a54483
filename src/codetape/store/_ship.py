"""Shipping a store's spool to ``codetape serve``: spans over OTLP/HTTP, blobs
content-addressed, each blob before the first span that names it. A chunk's blobs: the
server is asked once which it lacks (``POST /v1/blobs/missing``), and those go in
batches of about 4 MB (``POST /v1/blobs``; a blob over 1 MB alone by ``PUT``); a server
without those endpoints (404/405) gets a ``HEAD`` and a ``PUT`` a blob.

What is shipped is read from the spool files, never from the database, so shipping
needs nothing but the files recording wrote (durable first: a dead network or server
loses nothing, the spool waits). Per remote, a cursor (``home/ship/<key>.json``,
written to a temporary file, fsynced and renamed) keeps how far into each spool file
the server has acknowledged; it is keyed by the file's name, which a file keeps when
ingestion moves it from ``spool/live`` to ``spool/done``. A chunk is acknowledged, then
its end saved: a crash between the two sends that chunk again, which the server ignores
(its ingestion keeps one row per trace and span id).

A run's and a step's "start" records are held back while their file's writer lives:
when that writer has ended (its process exited or was killed) the starts that never
got their span are sent in one request marked ``codetape.spool.ended`` (see
``_otlp``), and the server ends those runs ``incomplete`` and those steps
``interrupted`` as this store did.

One process at a time ships a store to a given remote (an ``flock`` on
``home/ship/<key>.lock``): every process's shipper ships every file of the store, so
whichever holds the lock ships the others' spans too.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import ConfigError, ShipError
from ._blobs import BlobStore
from ._ship_http import PARALLEL, Budget, Client, Fatal, GaveUp, message_of
from ._spool import done_dir, live_dir, writer_alive

if TYPE_CHECKING:
    import requests

__all__ = ["REMOTE_ENV", "ShipStats", "Shipper", "remote_url"]

log = logging.getLogger("codetape.ship")

REMOTE_ENV = "CODETAPE_REMOTE"
CHUNK_BYTES = 256 * 1024  # spool bytes per request: progress is saved chunk by chunk
POLL_S = 1.0
_DIGESTS = re.compile(rb"sha256:[0-9a-f]{64}")
_REFUSALS_KEPT = 100
_KNOWN_BLOBS = 100_000  # digests remembered as on the server, at most
MOST_ASKED = 10_000  # digests in one POST /v1/blobs/missing (the server's limit)
BATCH_BYTES = 4 * 1024 * 1024  # blob bytes in one POST /v1/blobs, about
BATCH_ALONE_BYTES = 1024 * 1024  # a blob larger goes alone, by PUT


def remote_url(url: str) -> str:
    """``url`` checked (http or https, with a host) and without a trailing ``/v1/traces``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"remote {url!r} is not an http(s) URL with a host",
            hint="give the server's address, e.g. https://codetape.internal:4318",
        )
    base = url.rstrip("/")
    return base.removesuffix("/v1/traces")


@dataclass
class ShipStats:
    """What one pass (or ``codetape push``) sent."""

    remote: str = ""
    files: int = 0
    spans: int = 0
    starts: int = 0  # unended runs' and steps' starts of ended files
    blobs_sent: int = 0
    blobs_present: int = 0  # the server had them already
    bytes_sent: int = 0
    refused_spans: int = 0
    refused_blobs: int = 0
    refusals: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Chunk:
    start: int
    end: int
    spans: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)


class _Cursor:
    """How far into each spool file the server has acknowledged, kept durably."""

    def __init__(self, path: Path, remote: str) -> None:
        self.path = path
        self.remote = remote
        data: dict[str, Any] = {}
        with contextlib.suppress(FileNotFoundError):
            data = json.loads(path.read_text())
        self.offsets: dict[str, int] = dict(data.get("offsets", {}))
        self.ended: set[str] = set(data.get("ended", []))
        self.refusals: list[dict[str, Any]] = list(data.get("refusals", []))

    def refused(self, **what: Any) -> None:
        self.refusals = [*self.refusals, what][-_REFUSALS_KEPT:]

    def save(self) -> None:
        data = {
            "remote": self.remote,
            "offsets": self.offsets,
            "ended": sorted(self.ended),
            "refusals": self.refusals,
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(data).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


def _lines(data: bytes, base: int) -> Iterator[tuple[int, int, bytes]]:
    """(start, end, line) of each whole line of ``data`` read at offset ``base``."""
    pos = 0
    while True:
        newline = data.find(b"\n", pos)
        if newline < 0:
            return
        yield base + pos, base + newline + 1, data[pos:newline]
        pos = newline + 1


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None  # a torn line of a dead writer: never a record
    return record if isinstance(record, dict) else None


def _blob_bytes(record: dict[str, Any]) -> bytes | None:
    import base64

    if isinstance(record.get("text"), str):
        return bytes(record["text"].encode("utf-8", "surrogatepass"))
    if isinstance(record.get("b64"), str):
        return base64.b64decode(record["b64"])
    return None


class Shipper:
    """Ships the store at ``home`` to the server at ``remote``: ``ship()`` once (what
    ``codetape push`` does), or ``start()`` a daemon thread that ships as recording goes
    and ``close()`` with a last bounded attempt."""

    MOST_PARALLEL = PARALLEL  # what ``codetape push`` uses

    def __init__(
        self, home: Path, remote: str, token: str | None = None, *, parallel: int = 1
    ) -> None:
        self.home = home
        self.remote = remote_url(remote)
        self.token = token
        key = hashlib.sha256(self.remote.encode()).hexdigest()[:16]
        self._dir = home / "ship"
        self._cursor_path = self._dir / f"{key}.json"
        self._lock_path = self._dir / f"{key}.lock"
        self._files = BlobStore(home / "blobs")
        self._on_server: set[str] = set()
        self._client: Client | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fatal: str | None = None
        self._mutex = threading.Lock()
        # Blob requests in flight at once. One beside a recording agent: more threads
        # would take the interpreter from it (bench/ship.py: a tight recording loop 5x
        # slower with 8); ``codetape push`` has the process to itself.
        self.parallel = parallel
        self._pool: ThreadPoolExecutor | None = None
        # Whether the server takes blobs in batches: None until asked.
        self._batches: bool | None = None

    # -- the background thread ---------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="codetape-ship", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self._fatal is None:
            try:
                self.ship(Budget(stop=self._stop), wait_for_lock=False)
            except GaveUp:
                pass  # stopping; the close() flush has a go
            except ShipError as exc:
                log.error("codetape: shipping to %s stopped: %s", self.remote, exc)
                return
            except Exception:  # a bug must not kill recording, nor spin
                log.exception("codetape: shipping to %s failed; retrying", self.remote)
            self._stop.wait(POLL_S)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread, then ship what is left for at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        self._stop.set()  # the thread's pass ends at its next request
        if self._thread is not None:
            self._thread.join(timeout)
        if self._fatal is not None:
            return
        # One blob at a time still: at the interpreter's exit no thread can be started.
        self.parallel = 1
        try:
            left = max(deadline - time.monotonic(), 0.1)
            self.ship(Budget(until=deadline), lock_wait_s=left)
        except Exception as exc:  # at exit: say so, and let the process end
            log.warning(
                "codetape: could not ship everything to %s before exit (%s); the rest is "
                "sent by the next process that ships this store, or `codetape push`",
                self.remote,
                exc,
            )
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            if self._client is not None:
                self._client.close()

    # -- one pass ------------------------------------------------------------------------

    def ship(
        self,
        budget: Budget | None = None,
        *,
        since_ns: int | None = None,
        progress: Callable[[ShipStats], None] | None = None,
        wait_for_lock: bool = True,
        lock_wait_s: float = 600.0,
    ) -> ShipStats:
        """Send what the server has not acknowledged, of every spool file; with
        ``since_ns``, every span that started since then, acknowledged or not, without
        reading or moving the cursor. Raises ``ShipError`` when the server refuses the
        token or cannot be reached in time."""
        budget = budget or Budget(until=time.monotonic() + 120)
        stats = ShipStats(remote=self.remote)
        self._dir.mkdir(parents=True, exist_ok=True)
        # Bounded: at exit, a request of the thread's may still be under way.
        if not self._mutex.acquire(timeout=lock_wait_s if wait_for_lock else 0.1):
            return stats
        try:
            return self._ship(budget, stats, since_ns, progress, wait_for_lock, lock_wait_s)
        finally:
            self._mutex.release()

    def _ship(
        self,
        budget: Budget,
        stats: ShipStats,
        since_ns: int | None,
        progress: Callable[[ShipStats], None] | None,
        wait_for_lock: bool,
        lock_wait_s: float,
    ) -> ShipStats:
        with self._locked(wait_for_lock, lock_wait_s) as locked:
            if not locked:
                return stats
            if self._client is None:
                self._client = Client(self.remote, self.token)
            cursor = _Cursor(self._cursor_path, self.remote)
            try:
                for name, path, ended in self._pending(cursor, since_ns is not None):
                    stats.files += 1
                    start = 0 if since_ns is not None else cursor.offsets.get(name, 0)
                    self._ship_file(path, start, ended, cursor, stats, budget, since_ns, progress)
            except Fatal as exc:
                self._fatal = str(exc)
                raise ShipError(
                    str(exc),
                    hint="give the server's token: configure(token=...), "
                    "$CODETAPE_TOKEN or push --token-file",
                ) from None
            except GaveUp as exc:
                if budget.stop is not None and budget.stop.is_set():
                    raise
                raise ShipError(
                    f"{exc}; nothing is lost: the rest is sent by the next push or shipper",
                    hint="check the server is up and its address (--remote, $CODETAPE_REMOTE)",
                ) from None
        return stats

    @contextlib.contextmanager
    def _locked(self, wait: bool, wait_s: float) -> Iterator[bool]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait or time.monotonic() > deadline:
                        yield False
                        return
                    time.sleep(0.1)
            yield True
        finally:
            os.close(fd)  # releases the lock

    def _pending(self, cursor: _Cursor, everything: bool) -> Iterator[tuple[str, Path, bool]]:
        """(name, path, ended) of each spool file with something to send, oldest first."""
        found: dict[str, tuple[float, Path]] = {}
        for folder in (done_dir(self.home), live_dir(self.home)):
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(folder):
                    if (
                        entry.name.endswith(".jsonl")
                        and not entry.name.startswith(".")
                        and (everything or entry.name not in cursor.ended)
                    ):
                        with contextlib.suppress(FileNotFoundError):
                            found[entry.name] = (entry.stat().st_mtime, Path(entry.path))
        for name, (_, path) in sorted(found.items(), key=lambda item: item[1][0]):
            # Asked before the file is read: an ended file's content is final.
            ended = path.parent.name == "done" or not writer_alive(path)
            if not path.exists():  # moved to done meanwhile
                path, ended = done_dir(self.home) / name, True
            size = _size(path)
            if ended or size > cursor.offsets.get(name, 0) or everything:
                yield name, path, ended

    def _ship_file(
        self,
        path: Path,
        start: int,
        ended: bool,
        cursor: _Cursor,
        stats: ShipStats,
        budget: Budget,
        since_ns: int | None,
        progress: Callable[[ShipStats], None] | None,
    ) -> None:
        name = path.name
        with open(path, "rb") as f:
            offset = start
            while True:
                f.seek(offset)
                data = f.read(CHUNK_BYTES)
                while b"\n" not in data and len(data) % CHUNK_BYTES == 0:
                    more = f.read(CHUNK_BYTES)  # one line longer than a chunk
                    if not more:
                        break
                    data += more
                chunk = self._chunk(data, offset, since_ns)
                if chunk is None:
                    break
                if budget.spent():
                    raise GaveUp("out of time")
                self._send_chunk(chunk, name, cursor, stats, budget)
                offset = chunk.end
                if since_ns is None:
                    cursor.offsets[name] = offset
                    cursor.save()
                if progress is not None:
                    progress(stats)
            if ended:
                self._end_file(f, name, cursor, stats, budget, since_ns)
                if since_ns is None:
                    cursor.ended.add(name)
                    cursor.save()

    def _chunk(self, data: bytes, base: int, since_ns: int | None) -> _Chunk | None:
        """The records of ``data`` up to the end of its last line that is not a blob (a
        blob is spooled just ahead of the span naming it: they go in one request)."""
        chunk = _Chunk(base, base)
        cut = last = base
        items: list[tuple[int, dict[str, Any], bytes]] = []
        for _, end, line in _lines(data, base):
            last = end
            record = _parse(line)
            kind = record.get("t") if record is not None else None
            items.append((end, record or {}, line))
            if kind != "blob":
                cut = end
        if last == base:
            return None
        if cut == base:  # only blobs (a run of many): cut at the last line
            cut = last
        for end, record, line in items:
            if end > cut:
                break
            kind = record.get("t")
            if kind == "blob" and isinstance(record.get("digest"), str):
                blob = _blob_bytes(record)
                if blob is not None:
                    chunk.blobs[record["digest"]] = blob
            elif kind == "span" and _since(record, since_ns):
                chunk.spans.append((record, line))
        chunk.end = cut
        return chunk

    def _send_chunk(
        self, chunk: _Chunk, name: str, cursor: _Cursor, stats: ShipStats, budget: Budget
    ) -> None:
        wanted = {d.decode() for _, line in chunk.spans for d in _DIGESTS.findall(line)}
        self._send_blobs(wanted, chunk.blobs, cursor, stats, budget, everything=True)
        records = [record for record, _ in chunk.spans]
        self._send_spans(records, name, chunk.start, cursor, stats, budget, ended=False)
        stats.spans += len(records)

    def _end_file(
        self,
        f: Any,
        name: str,
        cursor: _Cursor,
        stats: ShipStats,
        budget: Budget,
        since_ns: int | None,
    ) -> None:
        """The starts of an ended file that never got their span, in one request."""
        f.seek(0)
        ended_ids: set[tuple[str, str]] = set()
        starts: dict[tuple[str, str], tuple[dict[str, Any], bytes]] = {}
        for _, _, line in _lines(f.read(), 0):
            if b'"t":"span"' not in line and b'"t":"start"' not in line:
                continue
            record = _parse(line)
            if record is None:
                continue
            key = (str(record.get("trace_id")), str(record.get("span_id")))
            if record.get("t") == "span":
                ended_ids.add(key)
            elif record.get("t") == "start" and _since(record, since_ns):
                starts[key] = (record, line)
        open_starts = [item for key, item in starts.items() if key not in ended_ids]
        if not open_starts:
            return
        wanted = {d.decode() for _, line in open_starts for d in _DIGESTS.findall(line)}
        self._send_blobs(wanted, self._inline(f, wanted), cursor, stats, budget)
        records = [record for record, _ in open_starts]
        self._send_spans(records, name, 0, cursor, stats, budget, ended=True)
        stats.starts += len(records)

    def _inline(self, f: Any, digests: set[str]) -> dict[str, bytes]:
        f.seek(0)
        found: dict[str, bytes] = {}
        for _, _, line in _lines(f.read(), 0):
            if line.startswith(b'{"t":"blob"') and any(d.encode() in line for d in digests):
                record = _parse(line)
                blob = _blob_bytes(record) if record is not None else None
                if record is not None and blob is not None:
                    found[str(record.get("digest"))] = blob
        return found

    # -- requests --------------------------------------------------------------------------

    def _send_blobs(
        self,
        wanted: set[str],
        inline: dict[str, bytes],
        cursor: _Cursor,
        stats: ShipStats,
        budget: Budget,
        everything: bool = False,
    ) -> None:
        """The blobs named (and, with ``everything``, all ``inline`` ones), with the blobs
        that variable manifests name, each the server lacks; before the spans naming them."""
        todo = set(inline) if everything else set()
        todo |= wanted
        for data in inline.values():  # manifests name their checkpoint and large values
            if data[:1] == b"{":
                todo |= {d.decode() for d in _DIGESTS.findall(data)}
        seen: set[str] = set()
        sending: list[tuple[str, bytes]] = []
        while todo:
            digest = todo.pop()
            if digest in seen or digest in self._on_server:
                continue
            seen.add(digest)
            found = inline.get(digest)
            if found is None:
                path = self._files.path(digest)
                if not path.exists():
                    continue  # spooled earlier, and sent with its own chunk
                found = path.read_bytes()
                if found[:1] == b"{":  # a large manifest
                    todo |= {d.decode() for d in _DIGESTS.findall(found)} - seen
            sending.append((digest, found))
        answers = self._send(sending, budget)
        for (digest, data), status in zip(sending, answers, strict=True):
            self._sent_blob(digest, data, status, cursor, stats)

    def _send(self, sending: list[tuple[str, bytes]], budget: Budget) -> list[tuple[int, str]]:
        """Each blob's (status, refusal): the server asked once which it lacks, those
        sent in batches (a large one alone by ``PUT``); a server without the batch
        endpoints gets a ``HEAD`` and a ``PUT`` a blob."""
        if not sending:
            return []
        if self._batches is not False:
            answers = self._send_batched(sending, budget)
            if answers is not None:
                return answers
        return self._map(lambda item: self._put(item[0], item[1], budget), sending)

    def _map(self, call: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """``call`` over ``items``, ``parallel`` at a time."""
        if len(items) > 1 and self.parallel > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="codetape-ship")
            return list(self._pool.map(call, items))
        return [call(item) for item in items]

    def _send_batched(
        self, sending: list[tuple[str, bytes]], budget: Budget
    ) -> list[tuple[int, str]] | None:
        """None when the server has no batch endpoints (or cannot say what it lacks)."""
        assert self._client is not None
        lacking: set[str] = set()
        for first in range(0, len(sending), MOST_ASKED):
            if budget.spent():
                raise GaveUp("out of time")
            asked = [digest for digest, _ in sending[first : first + MOST_ASKED]]
            answer = self._client.call(
                "POST",
                "/v1/blobs/missing",
                budget,
                json.dumps({"digests": asked}).encode(),
                **{"Content-Type": "application/json"},
            )
            if answer.status_code in (404, 405):
                log.info("codetape: %s has no batch endpoints: a request a blob", self.remote)
                self._batches = False
                return None
            try:
                found = answer.json()["missing"] if answer.status_code == 200 else None
            except (ValueError, KeyError, TypeError):
                found = None
            if not isinstance(found, list):
                return None  # this time, the HEAD and PUT of each
            lacking |= {str(d) for d in found}
        self._batches = True
        answers: dict[str, tuple[int, str]] = {d: (200, "") for d, _ in sending}
        alone: list[tuple[str, bytes]] = []
        batches: list[list[tuple[str, bytes]]] = [[]]
        size = 0
        for digest, data in sending:
            if digest not in lacking:
                continue
            if len(data) > BATCH_ALONE_BYTES:
                alone.append((digest, data))
                continue
            if batches[-1] and size + len(data) > BATCH_BYTES:
                batches.append([])
                size = 0
            batches[-1].append((digest, data))
            size += len(data)
        work: list[Any] = [("batch", b) for b in batches if b] + [("put", a) for a in alone]
        for part in self._map(lambda item: self._send_part(item, budget), work):
            answers.update(part)
        return [answers[digest] for digest, _ in sending]

    def _send_part(self, item: tuple[str, Any], budget: Budget) -> dict[str, tuple[int, str]]:
        kind, what = item
        if kind == "put":
            digest, data = what
            return {digest: self._put(digest, data, budget, ask=False)}
        assert self._client is not None
        if budget.spent():
            raise GaveUp("out of time")
        body = b"".join(b"%s %d\n%s" % (d.encode(), len(data), data) for d, data in what)
        answer = self._client.call(
            "POST", "/v1/blobs", budget, body, **{"Content-Type": "application/octet-stream"}
        )
        if answer.status_code == 201:
            return {digest: (201, "") for digest, _ in what}
        # Refused (a blob that does not match its digest, a body over the server's
        # limit): each one alone, so only what is wrong is refused.
        log.warning(
            "codetape: %s refused a batch of %d blobs (%d %s); sending them one by one",
            self.remote,
            len(what),
            answer.status_code,
            message_of(answer),
        )
        return {digest: self._put(digest, data, budget, ask=False) for digest, data in what}

    def _put(
        self, digest: str, data: bytes, budget: Budget, *, ask: bool = True
    ) -> tuple[int, str]:
        """A blob to the server unless a HEAD finds it there (with ``ask``): (status,
        refusal)."""
        assert self._client is not None
        if budget.spent():
            raise GaveUp("out of time")
        path = f"/v1/blobs/{digest}"
        if ask and self._client.call("HEAD", path, budget).status_code == 200:
            return 200, ""
        answer = self._client.call(
            "PUT", path, budget, data, **{"Content-Type": "application/octet-stream"}
        )
        return answer.status_code, message_of(answer) if answer.status_code >= 400 else ""

    def _sent_blob(
        self, digest: str, data: bytes, answer: tuple[int, str], cursor: _Cursor, stats: ShipStats
    ) -> None:
        status, reason = answer
        if status >= 400:
            message = f"blob {digest} ({len(data)} bytes) refused: {status} {reason}"
            log.error("codetape: %s refused %s", self.remote, message)
            stats.refused_blobs += 1
            stats.refusals.append(message)
            cursor.refused(blob=digest, status=status, message=message)
            return
        if status == 200:
            stats.blobs_present += 1
        else:
            stats.blobs_sent += 1
            stats.bytes_sent += len(data)
        if len(self._on_server) >= _KNOWN_BLOBS:  # a long-lived process: forget, ask again
            self._on_server.clear()
        self._on_server.add(digest)

    def _send_spans(
        self,
        records: list[dict[str, Any]],
        name: str,
        offset: int,
        cursor: _Cursor,
        stats: ShipStats,
        budget: Budget,
        *,
        ended: bool,
    ) -> None:
        if not records and not ended:
            return
        from .._version import __version__
        from ._otlp import request_of, span_of

        assert self._client is not None
        spans = []
        for record in records:
            try:
                spans.append(span_of(record))
            except ValueError as exc:  # bad ids: nothing a server could store
                stats.refused_spans += 1
                cursor.refused(where=f"{name} at byte {offset}", message=str(exc))
        body = gzip.compress(
            request_of(spans, ended=ended, version=__version__).SerializeToString(), 1
        )
        answer = self._client.call(
            "POST",
            "/v1/traces",
            budget,
            body,
            **{"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
        )
        if answer.status_code == 413 and len(records) > 1:
            half = len(records) // 2
            for part in (records[:half], records[half:]):
                self._send_spans(part, name, offset, cursor, stats, budget, ended=ended)
            return
        stats.bytes_sent += len(body)
        self._refusals(answer, len(spans), f"{name} at byte {offset}", cursor, stats)

    def _refusals(
        self,
        answer: requests.Response,
        sent: int,
        where: str,
        cursor: _Cursor,
        stats: ShipStats,
    ) -> None:
        """Spans the server refused for good (a 4xx, or a partial success): logged and
        kept in the cursor's refusals, not sent again."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        if answer.status_code >= 400:
            refused, reason = sent, f"{answer.status_code} {message_of(answer)}"
        else:
            response = ExportTraceServiceResponse()
            with contextlib.suppress(Exception):
                response.ParseFromString(answer.content)
            refused = response.partial_success.rejected_spans
            reason = response.partial_success.error_message
        if refused:
            message = f"{refused} spans of {where} refused: {reason}"
            log.error("codetape: %s refused %s", self.remote, message)
            stats.refused_spans += refused
            stats.refusals.append(message)
            cursor.refused(where=where, status=answer.status_code, message=message)


def _since(record: dict[str, Any], since_ns: int | None) -> bool:
    return since_ns is None or int(record.get("start_ns") or 0) >= since_ns


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
