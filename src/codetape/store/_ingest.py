"""Ingestion: moving spool records into DuckDB, idempotently.

One short transaction per pass over the pending spool files. DuckDB parses the JSON
lines itself, all files in one parallel scan (far faster than Python would, and faster
than building Arrow tables from them first), the primary keys make a second ingestion
of the same lines a no-op, and each file's offset is committed with its rows, so a
crash at any point never loses or doubles a record. A file whose writer has died is
consumed to its end (a partial last line is torn for good: it is skipped and counted)
and moved to ``spool/done``, where ``codetape doctor --rebuild`` can read it again.

DuckDB reads a dead writer's whole file where it lies (through a hard link in the
pass's scratch folder); of a live writer's file, only the new whole lines are copied
out, since the writer may append while DuckDB reads.

One bad record never costs the others. When the one transaction fails on what a line
holds (too large, not JSON, a value of the wrong type), the files are loaded again in
parts, each part in a transaction of its own, halving a failing part until the line
that fails alone is found; that line is set aside (a row in ``lost_records``: file,
offset, run, reason), counted, and the rest is stored. Its run is marked with it ("2
records could not be stored"); the line itself stays in the spool file.

A step's "start" record (written when the step begins) waits in ``span_starts`` until
the step's span ends; if its process dies first, the step is stored as ``interrupted``
with its code when ingestion finds the process gone.

Ingestion is lazy: a run's end only schedules a pass on a worker thread, a little
later, so a burst of short runs goes into DuckDB in one transaction; a read in this
process (``wait_for_background``) or its exit runs the pass at once, and a read in
any process ingests what is spooled (see ``_catchup``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import mmap
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

import duckdb

from ._background import INGEST_DELAY_S, BackgroundIngester, wait_for_background
from ._catchup import Mark, db_identity, mark, remember, spool_changed
from ._db import DB_NAME, connect, is_lock_error
from ._ingest_sql import (
    CLOSE_SPOOLS,
    COUNTS,
    LOAD,
    LOAD_NEW,
    MAX_RECORD_BYTES,
    READ,
    SAVE_OFFSETS,
)
from ._spool import done_dir, live_dir, writer_alive

__all__ = [
    "INGEST_DELAY_S",
    "MAX_RECORD_BYTES",
    "BackgroundIngester",
    "IngestStats",
    "ingest",
    "rebuild",
    "spool_changed",
    "try_ingest",
    "wait_for_background",
]

T = TypeVar("T")

# What a line can hold that makes DuckDB refuse it (or the batch it is in): these set
# the line aside. Anything else (a lock, a full disk, an I/O error) fails the pass, to
# be retried whole later.
_DATA_ERRORS = (duckdb.InvalidInputException, duckdb.DataError, duckdb.IntegrityError)

# DuckDB threads for a pass. Storing rows in indexed tables and checkpointing them is
# mostly serial, and a second thread spent a fifth more CPU on locks (measured on 2
# cores, 100,000 spans in one pass) for no shorter pass; a pass also runs beside the
# agent that is recording, which needs the other core.
_THREADS = 1

_BLOCK = 65536  # read backwards in blocks this large to find a file's last line end
_COPY_CHUNK = 1 << 20


@dataclass
class IngestStats:
    """What one ingestion pass did. ``bad_lines`` counts the lines that could not be
    stored (set aside), ``torn_lines`` the partial last lines of dead writers."""

    files: int = 0
    records: int = 0
    torn_lines: int = 0
    bad_lines: int = 0
    finished_files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _SetAside:
    """A spool line that could not be stored, and what it says of its run."""

    offset: int
    reason: str
    trace_id: str | None
    start_ns: int | None

    @classmethod
    def of(cls, offset: int, line: bytes, reason: str) -> _SetAside:
        head = line[:_HEAD]
        trace = _TRACE_ID.search(head)
        start = _START_NS.search(head)
        return cls(
            offset,
            reason,
            trace[1].decode() if trace else None,
            int(start[1]) if start else None,
        )


_HEAD = 65536
_TRACE_ID = re.compile(rb'"trace_id"\s*:\s*"([0-9a-f]{32})"')
_START_NS = re.compile(rb'"start_ns"\s*:\s*(\d{1,18})\b')


@dataclass
class _Pending:
    """One spool file's unread part, staged for DuckDB to parse."""

    path: Path
    alive: bool
    offset: int
    end: int  # the new offset once this part is ingested
    torn: int
    bad: int
    new_torn: int = 0
    copy: Path | None = None  # the whole lines from offset, as a file of their own
    oversized: bool = False  # holds a line longer than MAX_RECORD_BYTES
    records: int = 0  # stored by this pass
    unread: int = 0  # lines that were JSON but no record codetape knows
    set_aside: list[_SetAside] = field(default_factory=list)


# -- staging: each file's new whole lines, as a file DuckDB can read ------------------


def _lines_end(fd: int, start: int, stop: int) -> int:
    """Where the last whole line in bytes ``[start, stop)`` of ``fd`` ends; ``start``
    when there is none. Reads backwards from ``stop``: one small read, as a rule."""
    pos = stop
    while pos > start:
        block = max(start, pos - _BLOCK)
        found = os.pread(fd, pos - block, block).rfind(b"\n")
        if found >= 0:
            return block + found + 1
        pos = block
    return start


def _has_long_line(fd: int, start: int, stop: int) -> bool:
    """Whether bytes ``[start, stop)`` of ``fd`` (whole lines) hold a line longer than
    ``MAX_RECORD_BYTES`` (DuckDB alone would take some of them: its limit is not
    exact): a stretch that long without a line end. One search per 16 MB."""
    if stop - start <= MAX_RECORD_BYTES:
        return False
    with mmap.mmap(fd, stop, access=mmap.ACCESS_READ) as view:
        pos = start
        while stop - pos > MAX_RECORD_BYTES:
            line_end = view.rfind(b"\n", pos, pos + MAX_RECORD_BYTES)
            if line_end < 0:
                return True
            pos = line_end + 1
    return False


def _copy_out(f: BinaryIO, start: int, stop: int, target: Path) -> None:
    f.seek(start)
    with target.open("xb") as out:  # never through a link to a spool file
        left = stop - start
        while left:
            chunk = f.read(min(left, _COPY_CHUNK))
            if not chunk:  # cut back by its writer (a write the disk refused)
                raise OSError(f"spool file {f.name} was cut short while being read")
            out.write(chunk)
            left -= len(chunk)


def _stage(f: BinaryIO, p: _Pending, lines_end: int, whole: bool, scratch: Path) -> None:
    """Give DuckDB ``p``'s new whole lines as a file named as the spool file: the file
    itself when it is final and holds nothing else, else a copy of them."""
    folder = scratch
    if (scratch / p.path.name).exists():  # a name seen twice in one pass (a rebuild)
        folder = scratch / uuid.uuid4().hex[:8]
        folder.mkdir()
    p.copy = folder / p.path.name
    if whole:
        with contextlib.suppress(OSError):  # no hard links there: copy it
            os.link(p.path, p.copy)
            return
    _copy_out(f, p.offset, lines_end, p.copy)


def _collect(path: Path, known: tuple[int, int, int] | None, scratch: Path) -> _Pending | None:
    # Decide liveness before reading: if the writer is gone now, nothing can be
    # appended after our read, so everything up to EOF is final.
    alive = writer_alive(path)
    offset, torn, bad = known or (0, 0, 0)
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        lines_end = _lines_end(f.fileno(), offset, size) if size > offset else offset
        if lines_end == offset and alive:
            return None
        p = _Pending(path, alive, offset, lines_end, torn, bad)
        if not alive and lines_end < size:
            p.torn, p.new_torn, p.end = torn + 1, 1, size  # a line it never finished
        if lines_end > offset:
            p.oversized = _has_long_line(f.fileno(), offset, lines_end)
            whole = not alive and offset == 0 and lines_end == size
            _stage(f, p, lines_end, whole, scratch)
    return p


def _known(con: duckdb.DuckDBPyConnection, paths: list[Path]) -> dict[str, tuple[int, int, int]]:
    """What earlier passes read of each file: its offset, torn and bad lines."""
    rows = con.execute(
        'SELECT name, "offset", torn_lines, bad_lines FROM ingest_files '
        "WHERE name IN (SELECT unnest(?))",
        [[path.name for path in paths]],
    ).fetchall()
    return {name: (offset, torn, bad) for name, offset, torn, bad in rows}


# -- loading: one transaction for everything, or parts around what cannot be stored ---


def _in_transaction(con: duckdb.DuckDBPyConnection, work: Callable[[], T]) -> T:
    con.execute("BEGIN TRANSACTION")
    try:
        result = work()
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # a failed COMMIT has rolled back already
            con.execute("ROLLBACK")
        raise
    return result


def _load(
    con: duckdb.DuckDBPyConnection, files: list[str], statements: tuple[str, ...] = LOAD
) -> dict[str, tuple[int, int]]:
    """Store the records of ``files``; per spool file name: (records, unknown lines)."""
    con.execute("DROP TABLE IF EXISTS batch")
    con.execute(READ, [files])
    counts = {
        spool: (total - unknown, unknown)
        for spool, total, unknown in con.execute(COUNTS).fetchall()
    }
    for statement in statements:
        con.execute(statement)
    con.execute("DROP TABLE batch")
    return counts


def _load_all(
    con: duckdb.DuckDBPyConnection, pending: list[_Pending], statements: tuple[str, ...]
) -> None:
    """The fast way: every file in one scan, and the pass's bookkeeping, in one go."""
    copies = [str(p.copy) for p in pending if p.copy is not None]
    counts = _load(con, copies, statements) if copies else {}
    for p in pending:
        p.records, p.unread = counts.get(p.path.name, (0, 0))
    _finish(con, pending)


def _lines(data: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    """The lines of a chunk read at ``offset``, each with its own offset in the file."""
    start = 0
    while start < len(data):
        end = data.index(b"\n", start) + 1
        yield offset + start, data[start:end]
        start = end


def _unreadable(line: bytes) -> str | None:
    """Why a line cannot be a record, as far as Python can tell cheaply; or None."""
    if len(line) > MAX_RECORD_BYTES:
        return f"too large ({len(line):,} bytes; a record may have {MAX_RECORD_BYTES:,})"
    try:
        record = json.loads(line)
    except ValueError:
        return "not JSON"
    return None if isinstance(record, dict) else "not a JSON object"


def _reason(exc: BaseException) -> str:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r' (?:in|while reading) file "[^"]*"', "", first)[:300]


def _load_part(
    con: duckdb.DuckDBPyConnection, p: _Pending, part: list[tuple[int, bytes]], scratch: Path
) -> tuple[int, int]:
    folder = scratch / f"part-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    copy = folder / p.path.name
    copy.write_bytes(b"".join(line for _, line in part))
    try:
        return _load(con, [str(copy)]).get(p.path.name, (0, 0))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _isolate(con: duckdb.DuckDBPyConnection, p: _Pending, scratch: Path) -> None:
    """Store what ``p`` holds in parts, so that a line that cannot be stored costs only
    itself: lines Python already sees are no record are set aside first; then a part
    that fails is halved until the line that fails alone is found."""
    assert p.copy is not None
    good = []
    for offset, line in _lines(p.copy.read_bytes(), p.offset):
        reason = _unreadable(line)
        if reason is None:
            good.append((offset, line))
        else:
            p.set_aside.append(_SetAside.of(offset, line, reason))
    parts = [good] if good else []
    while parts:
        part = parts.pop()
        try:
            records, unread = _in_transaction(
                con, functools.partial(_load_part, con, p, part, scratch)
            )
        except _DATA_ERRORS as exc:
            if len(part) == 1:
                p.set_aside.append(_SetAside.of(*part[0], _reason(exc)))
            else:  # the first half first: a step's start record goes in before its end
                parts += [part[len(part) // 2 :], part[: len(part) // 2]]
            continue
        p.records += records
        p.unread += unread


def _set_aside(con: duckdb.DuckDBPyConnection, p: _Pending) -> None:
    """Record what ``p`` could not store, on its run (a row for a run that has none)."""
    for bad in p.set_aside:
        con.execute(
            "INSERT OR IGNORE INTO lost_records VALUES (?, ?, ?, 1, ?)",
            [p.path.name, f"@{bad.offset}", bad.trace_id, bad.reason],
        )
        if bad.trace_id is not None:
            con.execute(
                "INSERT OR IGNORE INTO runs (run_id, status, started_ns, spool) "
                "VALUES (?, 'running', ?, ?)",
                [bad.trace_id, bad.start_ns, p.path.name],
            )


def _finish(con: duckdb.DuckDBPyConnection, pending: list[_Pending]) -> None:
    """What was set aside, dead writers' runs and steps, and every file's new offset."""
    for p in pending:
        _set_aside(con, p)
    dead = [p.path.name for p in pending if not p.alive]
    if dead:
        for statement in CLOSE_SPOOLS:
            con.execute(statement, {"spools": dead})
    con.execute(
        SAVE_OFFSETS,
        {
            "names": [p.path.name for p in pending],
            "offsets": [p.end for p in pending],
            "torn": [p.torn for p in pending],
            "bad": [p.bad + p.unread + len(p.set_aside) for p in pending],
            "done": [not p.alive for p in pending],
        },
    )


def _ingest_batch(
    con: duckdb.DuckDBPyConnection, pending: list[_Pending], stats: IngestStats, scratch: Path
) -> None:
    suspect = [p for p in pending if p.oversized]
    ready = [p for p in pending if not p.oversized]
    try:
        try:  # as new records (nearly always what they are), then as maybe not
            _in_transaction(con, functools.partial(_load_all, con, ready, LOAD_NEW))
        except duckdb.ConstraintException:  # stored already, or one breaks a constraint
            _in_transaction(con, functools.partial(_load_all, con, ready, LOAD))
    except _DATA_ERRORS:
        suspect = pending
    # Something in these files cannot be stored: find it, and store everything else.
    for p in suspect:
        p.records = p.unread = 0
        if p.copy is not None:
            _isolate(con, p, scratch)
    if suspect:
        _in_transaction(con, functools.partial(_finish, con, suspect))
    for p in pending:
        stats.records += p.records
        stats.bad_lines += p.unread + len(p.set_aside)


# -- a pass ------------------------------------------------------------------------------


def _scratch(home: Path) -> Path:
    """A fresh scratch folder for this pass. Called with the database open for writing,
    which no other process or thread can have now: any ``ingest-*`` folder there is
    left over from a pass that was killed, and goes."""
    tmp = home / "tmp"
    for stale in tmp.glob("ingest-*"):
        shutil.rmtree(stale, ignore_errors=True)
    scratch = tmp / f"ingest-{uuid.uuid4().hex}"
    scratch.mkdir(parents=True)
    return scratch


def _pass(
    con: duckdb.DuckDBPyConnection, home: Path, paths: list[Path], stats: IngestStats
) -> tuple[list[_Pending], dict[str, Mark]]:
    """One pass over ``paths``: what it ingested, and the live files it read to the end."""
    read_to_end: dict[str, Mark] = {}
    pending: list[_Pending] = []
    scratch = _scratch(home)
    try:
        known = _known(con, paths)
        for path in paths:
            with contextlib.suppress(FileNotFoundError):  # another ingester finished it
                # Marked before it is read: what is read is at least this much.
                seen = mark(path.stat())
                item = _collect(path, known.get(path.name), scratch)
                if item is None or item.alive:
                    read_to_end[path.name] = seen
                if item is not None:
                    pending.append(item)
                    stats.torn_lines += item.new_torn
        if pending:
            _ingest_batch(con, pending, stats, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return pending, read_to_end


def ingest(home: Path, *, wait_s: float = 10.0, files: list[Path] | None = None) -> IngestStats:
    """Move every pending spool record under ``home`` into DuckDB.

    Raises :class:`~codetape.errors.StoreBusyError` when another process holds the
    database for longer than ``wait_s``. A ``home`` that does not exist is left so.
    """
    stats = IngestStats()
    if not home.is_dir():
        return stats
    paths = files if files is not None else sorted(live_dir(home).glob("*.jsonl"))
    db = db_identity(home)
    if not paths and db is not None:
        if files is None:
            remember(home, db, {})
        return stats
    with connect(home, read_only=False, wait_s=wait_s) as con:
        db = db or db_identity(home)
        con.execute(f"SET threads = {_THREADS}")
        try:
            pending, read_to_end = _pass(con, home, paths, stats)
        finally:  # the setting is the process's in-memory database's: reads keep theirs
            with contextlib.suppress(duckdb.Error):
                con.execute("RESET threads")
        # Still holding the database, so that no other pass reads them meanwhile.
        _retire(home, pending, stats)
    stats.files = len(pending)
    if files is None:
        remember(home, db, read_to_end)
    return stats


def _retire(home: Path, pending: list[_Pending], stats: IngestStats) -> None:
    """Move the files of dead writers, now read to their end, to ``spool/done``."""
    target = done_dir(home)
    for p in pending:
        if p.alive or p.path.parent == target:
            continue
        target.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # moved by another pass already
            os.replace(p.path, target / p.path.name)
            stats.finished_files.append(p.path.name)


def rebuild(home: Path) -> tuple[Path | None, IngestStats]:
    """Build a new DuckDB file from every spool log, finished and live.

    The old file, readable or not, is kept beside it as ``codetape.duckdb.old-N`` and
    returned with the stats: rebuilding never deletes a recording.
    """
    db = home / DB_NAME
    kept: Path | None = None
    if db.exists():
        n = 1
        while db.with_name(f"{DB_NAME}.old-{n}").exists():
            n += 1
        kept = db.with_name(f"{DB_NAME}.old-{n}")
        os.replace(db, kept)
        wal = db.with_name(DB_NAME + ".wal")
        if wal.exists():
            os.replace(wal, kept.with_name(kept.name + ".wal"))
    files = sorted(done_dir(home).glob("*.jsonl")) + sorted(live_dir(home).glob("*.jsonl"))
    return kept, ingest(home, files=files)


def try_ingest(home: Path, *, wait_s: float = 0.5) -> IngestStats | None:
    """Ingest if the database can be had soon; ``None`` when someone else holds it.

    Readers call this when they open the store: if another process is ingesting, that
    process does the work, so a short wait and then carrying on is enough.
    """
    from ..errors import StoreBusyError

    try:
        return ingest(home, wait_s=wait_s)
    except StoreBusyError:
        return None
    except duckdb.Error as exc:
        if is_lock_error(exc):
            return None
        raise
