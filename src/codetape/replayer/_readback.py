"""A replay's own run, read back from what this process spooled while it ran.

A replay compares the steps it recorded with the recording. Reading them through the
store means ingesting the spool first (tens of milliseconds, most of a warm replay);
but every record of the replay run went through this process's spool file while it ran,
so ``SpoolWindow`` reads them back from there: the span records of the run, exactly as
ingestion stores them, and the blobs they name.

A blob this runtime had written before (the same code, output or state as the
recording, or as an earlier replay) is not spooled again; it is found among the
recording's own contents and the blobs of earlier replays, each checked against its
digest, or in the store's blob files. When anything cannot be had that way (a blob
spooled by another thread and not yet stored, records spooled with lone surrogates,
a spool file that changed, a step whose record is missing) the caller reads the run
through the store as before: the same steps, found the slow way.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import BlobNotFoundError
from ..schemas import Step
from ..schemas import attributes as A
from ..store import Store
from ..store.internal import SpoolWriter, digest_of, span_row, steps_from_rows

__all__ = ["SpoolWindow"]

# Attributes whose value is a blob's digest, besides those named ``*.digest``; and the
# ones a step keeps as a name only (a replay reads them later, if at all).
_DIGEST_ATTRIBUTES = frozenset([A.STATE_BEFORE, A.STATE_AFTER])
_NAMES_ONLY = frozenset([A.TOOL_RESULT_PICKLE, A.STEP_RANDOM_STATE])
# Blobs of earlier replays in this process, by digest, kept for the next replays (which
# do not spool them again): up to this many bytes in all.
_REMEMBER_BYTES = 32 << 20


class _Remembered:
    """Blobs of earlier replays, least recently used dropped first."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._blobs: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, digest: str) -> bytes | None:
        with self._lock:
            data = self._blobs.get(digest)
            if data is not None:
                self._blobs.move_to_end(digest)
            return data

    def add(self, blobs: dict[str, bytes]) -> None:
        with self._lock:
            for digest, data in blobs.items():
                if digest in self._blobs or len(data) > self.budget // 4:
                    continue
                self._blobs[digest] = data
                self._size += len(data)
            while self._size > self.budget and self._blobs:
                _, dropped = self._blobs.popitem(last=False)
                self._size -= len(dropped)


_REMEMBERED = _Remembered(_REMEMBER_BYTES)


def _referenced(attributes: dict[str, Any]) -> Iterable[str]:
    for key, value in attributes.items():
        named = (key.endswith(".digest") or key in _DIGEST_ATTRIBUTES) and key not in _NAMES_ONLY
        if named and isinstance(value, str) and value:
            yield value


class SpoolWindow:
    """The records this process spools from now on (``spool``: the runtime's writer)."""

    def __init__(self, spool: SpoolWriter) -> None:
        self.spool = spool
        self.path: Path | None = spool.path
        self.start = _size(self.path)

    def steps(self, run_id: str, count: int, known: dict[str, bytes], home: Path) -> list[Step]:
        """The ``count`` steps of run ``run_id`` (spooled since the window opened), as
        the store would read them; [] when they cannot all be had from the spool.
        ``known``: blobs the caller holds (the recording's), by digest."""
        found = self._records(run_id)
        if found is None:
            return []
        spans, blobs = found
        if sum(1 for span in spans if span[2] == A.SPAN_EXECUTE_CODE) != count:
            return []
        _REMEMBERED.add(blobs)
        resolved = _resolve(spans, blobs, known, Store(home))
        if resolved is None:
            return []
        return steps_from_rows(home, run_id, spans, resolved)

    def _records(self, run_id: str) -> tuple[list[tuple[Any, ...]], dict[str, bytes]] | None:
        path = self.spool.path
        if path is None or (self.path is not None and path != self.path):
            return None  # a new spool file (after a fork): read through the store
        start = self.start if self.path is not None else 0
        with open(path, "rb") as handle:
            if start:
                handle.seek(start - 1)
                if handle.read(1) != b"\n":
                    handle.readline()  # another thread's record, cut by our start
            data = handle.read()
        spans: list[tuple[Any, ...]] = []
        blobs: dict[str, bytes] = {}
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # another thread's record, still being written
            try:
                record = json.loads(line)
            except ValueError:
                return None
            kind = record.get("t")
            if "exact" in record:
                return None  # lone surrogates: the store shows them its own way
            if kind == "blob":
                blob = _blob(record)
                if blob is None:
                    return None
                blobs[record["digest"]] = blob
            elif record.get("trace_id") == run_id:
                if kind == "lost":
                    return None
                if kind == "span":
                    spans.append(span_row(record))
        spans.sort(key=lambda span: span[3] or 0)
        return spans, blobs


def _size(path: Path | None) -> int:
    if path is None:
        return 0
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _blob(record: dict[str, Any]) -> bytes | None:
    if isinstance(record.get("text"), str):
        return str(record["text"]).encode("utf-8")
    if isinstance(record.get("b64"), str):
        return base64.b64decode(record["b64"])
    return None


def _resolve(
    spans: list[tuple[Any, ...]], spooled: dict[str, bytes], known: dict[str, bytes], store: Store
) -> dict[str, bytes] | None:
    """Every blob the spans name, by digest: spooled in the window, held by the caller,
    kept from an earlier replay, or a blob file; None when one cannot be had so."""
    resolved: dict[str, bytes] = {}
    attributes = [json.loads(span[7]) for span in spans]
    # The full values of attributes recorded cut: a blob of JSON that can name blobs too.
    full = {a[A.ATTRIBUTES_FULL_DIGEST] for a in attributes if A.ATTRIBUTES_FULL_DIGEST in a}
    pending = [digest for attrs in attributes for digest in _referenced(attrs)]
    while pending:
        digest = pending.pop()
        if digest in resolved:
            continue
        data = _find(digest, spooled, known, store)
        if data is None:
            return None
        resolved[digest] = data
        if digest in full:
            pending.extend(_referenced(json.loads(data)))
    return resolved


def _find(
    digest: str, spooled: dict[str, bytes], known: dict[str, bytes], store: Store
) -> bytes | None:
    data = spooled.get(digest)
    if data is not None:
        return data
    for candidate in (known.get(digest), _REMEMBERED.get(digest)):
        if candidate is not None and digest_of(candidate) == digest:
            return candidate
    try:
        return store.blobs.get(digest)  # a large blob: a file of its own
    except BlobNotFoundError:
        return None
