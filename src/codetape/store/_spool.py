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
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

__all__ = ["SpoolWriter", "done_dir", "live_dir", "writer_alive"]


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


def _encode(record: dict[str, Any]) -> bytes:
    # default=str: an attribute value of an unexpected type must not lose the record.
    return (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode(
        "utf-8", "surrogatepass"
    )


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
        self.path: Path | None = None
        os.register_at_fork(after_in_child=self._forget_after_fork)

    def _forget_after_fork(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # also drops the inherited lock in this child
        self._fd = None
        self.path = None
        self._pending = []
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
            if self._pending:
                self._pending.append(data)
                data = b"".join(self._pending)
                self._pending.clear()
            self._write_all(data)

    def _write_all(self, data: bytes) -> None:
        fd = self._fd if self._fd is not None and self._pid == os.getpid() else self._open()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def _flush_pending(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._write_all(data)

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
