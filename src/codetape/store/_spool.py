"""The per-process spool: an append-only JSON-lines file of finished spans.

Why a spool and not DuckDB directly: DuckDB lets one process write a file at a time
and a reader cannot open it while a writer holds it. Agents run in parallel processes
and the viewer reads while they write, so every process appends to a file of its own
and ingestion moves the records into DuckDB in short transactions.

Each record is one ``os.write`` of a full line, so a record reaches the operating
system before the code action returns (it survives ``kill -9`` of the process), and
the file is fsynced when a run ends. The writer holds an exclusive ``flock`` on its
file for as long as it lives: an ingester that can take the lock knows the writer is
gone, so the file will not grow again and a partial last line is torn for good.

No record is dropped for its content: a string with lone surrogates (``os.fsdecode`` of
bytes that are not UTF-8, say) cannot be UTF-8, so such a record is written with each
one shown as the text ``\\udcff``, plus the exact record under ``exact`` (base64 of its
JSON encoded with ``surrogatepass``). And a write the disk refuses (no space left) is
undone (the file is cut back to its last whole line) and counted per run; the count is
written as a ``lost`` record with the next write that succeeds, so the run says how many
of its records could not be stored.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["SpoolWriter", "done_dir", "live_dir", "visible_surrogates", "writer_alive"]


def live_dir(home: Path) -> Path:
    return home / "spool" / "live"


def done_dir(home: Path) -> Path:
    return home / "spool" / "done"


def writer_alive(path: Path) -> bool:
    """True while the process that writes ``path`` still holds its lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


_SURROGATE = re.compile("[\ud800-\udfff]")


def visible_surrogates(text: str) -> str:
    """``text`` with each lone surrogate as the six characters ``\\udcff``: valid UTF-8,
    and what a reader is shown.

    >>> visible_surrogates("report\\udcff.csv")
    'report\\\\udcff.csv'
    """
    return _SURROGATE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def _visible(value: Any) -> Any:
    if isinstance(value, str):
        return visible_surrogates(value)
    if isinstance(value, dict):
        return {visible_surrogates(str(k)): _visible(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_visible(v) for v in value]
    return value


# default=str: an attribute value of an unexpected type must not lose the record. One
# encoder for every record: json.dumps with these options builds a new one each call
# (a few µs of a recorded step's two or more records).
_dumps = json.JSONEncoder(separators=(",", ":"), default=str, ensure_ascii=False).encode


def _encode(record: dict[str, Any]) -> bytes:
    text = _dumps(record)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: shown escaped, kept exactly
        exact = base64.b64encode(text.encode("utf-8", "surrogatepass")).decode("ascii")
        return (_dumps({**_visible(record), "exact": exact}) + "\n").encode("utf-8")


class SpoolWriter:
    """Appends records to this process's spool file under ``home``.

    The file is opened lazily and again after a fork, so a child process never
    writes into its parent's file.
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pending: list[bytes] = []
        self._pid = 0
        self._size = 0  # the file's length: the end of its last whole line
        # Records (spans) the disk refused, per run, not yet told in a "lost" record.
        self._lost: dict[str, int] = {}
        self._lost_since = 0
        self.path: Path | None = None
        os.register_at_fork(after_in_child=self._forget_after_fork)

    def _forget_after_fork(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # also drops the inherited lock in this child
        self._fd = None
        self.path = None
        self._pending = []
        self._lost = {}
        self._lock = threading.Lock()

    def _open(self) -> int:
        directory = live_dir(self.home)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        path = directory / name
        # Locked under a name ingesters ignore, then renamed: an ingester must never see
        # the file unlocked and take it for a dead writer's.
        hidden = directory / f".{name}.new"
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(hidden, path)
        self._fd, self._pid, self.path = fd, os.getpid(), path
        self._size = os.fstat(fd).st_size
        return fd

    def write(self, record: dict[str, Any], *, defer: bool = False) -> None:
        """Append ``record``. With ``defer`` it waits for the next plain write and goes
        out in the same ``os.write``, ahead of it: blobs ride with the span that names
        them, one system call for both."""
        data = _encode(record)
        with self._lock:
            if defer:
                self._pending.append(data)
                return
            self._pending.append(data)
            data = b"".join(self._pending)
            self._pending.clear()
            try:
                self._write_all(self._lost_records() + data if self._lost else data)
            except OSError:
                if record.get("t") == "span" and isinstance(record.get("trace_id"), str):
                    self._lost_since = self._lost_since or time.time_ns()
                    self._lost[record["trace_id"]] = self._lost.get(record["trace_id"], 0) + 1
                raise
            self._lost.clear()

    def _lost_records(self) -> bytes:
        """The "lost" records of what the disk refused so far, to go out ahead of the
        next record (and to stay counted if that write fails too)."""
        return b"".join(
            _encode(
                {
                    "t": "lost",
                    "trace_id": trace_id,
                    "span_id": uuid.uuid4().hex[:16],
                    "start_ns": self._lost_since,
                    "records": count,
                    "reason": "no space left on the store's disk while recording",
                }
            )
            for trace_id, count in self._lost.items()
        )

    def _write_all(self, data: bytes) -> None:
        fd = self._fd if self._fd is not None and self._pid == os.getpid() else self._open()
        start = self._size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            # Cut a partial write back off: the next record must start a line of its own.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        self._size = start + len(data)

    def _flush_pending(self) -> None:
        if self._pending or self._lost:
            data = self._lost_records() + b"".join(self._pending)
            self._pending.clear()
            self._write_all(data)
            self._lost.clear()

    def sync(self) -> None:
        with self._lock:
            self._flush_pending()
            if self._fd is not None and self._pid == os.getpid():
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            self._flush_pending()
            if self._fd is not None and self._pid == os.getpid():
                os.fsync(self._fd)
                os.close(self._fd)
            self._fd = None
            self.path = None
