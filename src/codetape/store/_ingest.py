"""Ingestion: moving spool records into DuckDB, idempotently.

One short transaction per pass over the pending spool files. DuckDB parses the JSON
lines itself, all files in one parallel scan (far faster than Python would), the
primary keys make a second ingestion of the same lines a no-op, and each file's offset
is committed with its rows, so a crash at any point never loses or doubles a record.
A file whose writer has died is consumed to its end (a partial last line is torn for
good: it is skipped and counted) and moved to ``spool/done``, where ``codetape doctor
--rebuild`` can read it again.

One bad record never costs the others. When the one transaction fails on what a line
holds (too large, not JSON, a value of the wrong type), the files are loaded again in
parts, each part in a transaction of its own, halving a failing part until the line
that fails alone is found; that line is set aside (a row in ``lost_records``: file,
offset, run, reason), counted, and the rest is stored. Its run is marked with it ("2
records could not be stored"); the line itself stays in the spool file.

A step's "start" record (written when the step begins) waits in ``span_starts`` until
the step's span ends; if its process dies first, the step is stored as ``interrupted``
with its code when ingestion finds the process gone.

Readers catch up before every read, so that check must be cheap when there is nothing
to do: each pass remembers, per store, the database file it wrote to and the size and
time of every live spool file it read to the end. ``spool_changed`` compares the spool
with that without opening the database: a read with nothing new costs a directory
listing, a ``stat`` and a lock probe per live spool file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import duckdb

from ..schemas import attributes as A
from ._db import DB_NAME, connect, is_lock_error
from ._spool import done_dir, live_dir, writer_alive

__all__ = [
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

# The largest spool line that is stored (DuckDB's default JSON object limit). codetape
# never writes one this large: it cuts attributes and keeps large values as blob files.
MAX_RECORD_BYTES = 16 * 1024 * 1024

_COLUMNS = (
    "{t: 'VARCHAR', trace_id: 'VARCHAR', span_id: 'VARCHAR', parent_id: 'VARCHAR', "
    "name: 'VARCHAR', start_ns: 'BIGINT', end_ns: 'BIGINT', status: 'VARCHAR', "
    "status_message: 'VARCHAR', attributes: 'JSON', events: 'JSON', digest: 'VARCHAR', "
    "text: 'VARCHAR', b64: 'VARCHAR', records: 'BIGINT', reason: 'VARCHAR'}"
)

_READ = (
    "CREATE TEMP TABLE batch AS SELECT *, regexp_extract(filename, '[^/]+$') AS spool "
    f"FROM read_json(?, format='newline_delimited', columns={_COLUMNS}, "
    f"maximum_object_size={MAX_RECORD_BYTES}, filename=true)"
)

# What a line can hold that makes DuckDB refuse it (or the batch it is in): these set
# the line aside. Anything else (a lock, a full disk, an I/O error) fails the pass, to
# be retried whole later.
_DATA_ERRORS = (duckdb.InvalidInputException, duckdb.DataError, duckdb.IntegrityError)


def _attr(name: str) -> str:
    return f"attributes->>'$.\"{name}\"'"


_INSERT_BLOBS = """
INSERT OR IGNORE INTO blobs
SELECT DISTINCT ON (digest) digest, coalesce(encode(text), from_base64(b64))
FROM batch WHERE t = 'blob' AND digest IS NOT NULL AND (text IS NOT NULL OR b64 IS NOT NULL)
"""

_INSERT_SPANS = """
INSERT OR IGNORE INTO spans
SELECT trace_id, span_id, parent_id, name, start_ns, end_ns, status, status_message,
       attributes, events
FROM batch WHERE t = 'span' AND trace_id IS NOT NULL AND span_id IS NOT NULL
"""

_RUN_COLUMNS = f"""
    trace_id, span_id, {_attr(A.GEN_AI_AGENT_NAME)}, {_attr(A.RUN_TASK)}, {{status}},
    start_ns, {{end}}, {_attr(A.RUN_FINAL_ANSWER)}, {_attr(A.RUN_REPLAY_OF)},
    {_attr(A.ERROR_TYPE)}, {{message}}, spool, {_attr(A.RUN_PARENT)},
    {_attr(A.RUN_FINAL_ANSWER_TYPE)}
"""

# A run's "start" record makes it visible while it runs (and as incomplete if its
# process dies); its root span, when it ends, replaces that row with the outcome.
_INSERT_RUN_STARTS = f"""
INSERT OR IGNORE INTO runs
SELECT {_RUN_COLUMNS.format(status="'running'", end="NULL", message="NULL")}
FROM batch b WHERE t = 'start' AND parent_id IS NULL AND NOT EXISTS (
    SELECT 1 FROM batch e WHERE e.t = 'span' AND e.parent_id IS NULL AND e.trace_id = b.trace_id)
"""

_UPSERT_RUN_ENDS = f"""
INSERT OR REPLACE INTO runs
SELECT {_RUN_COLUMNS.format(status=_attr(A.RUN_STATUS), end="end_ns", message="status_message")}
FROM batch WHERE t = 'span' AND parent_id IS NULL AND name LIKE '{A.SPAN_INVOKE_AGENT}%'
"""

_STEP_ATTRS = (
    A.STEP_INDEX,
    A.STEP_STATUS,
    A.CODE_PREVIEW,
    A.STDOUT_PREVIEW,
    A.ERROR_TYPE,
    A.ERROR_MESSAGE,
    A.ERROR_LINE,
)
_STEP_PATHS = ", ".join(f"'$.\"{name}\"'" for name in _STEP_ATTRS)
# One JSON parse per span for all its fields, not one per field.
_INSERT_STEPS = f"""
INSERT OR IGNORE INTO steps
SELECT trace_id, span_id, CAST(v[1] AS INTEGER), v[2], start_ns, end_ns, v[3], v[4], v[5],
       v[6], v[7]
FROM (
    SELECT trace_id, span_id, start_ns, end_ns,
           json_extract_string(attributes, [{_STEP_PATHS}]) AS v
    FROM batch WHERE t = 'span' AND name = '{A.SPAN_EXECUTE_CODE}'
)
"""

_LLM_ATTRS = (
    A.LLM_INDEX,
    A.GEN_AI_RESPONSE_MODEL,
    A.GEN_AI_REQUEST_MODEL,
    A.GEN_AI_USAGE_INPUT_TOKENS,
    A.GEN_AI_USAGE_OUTPUT_TOKENS,
    A.LLM_COST,
)
_LLM_PATHS = ", ".join(f"'$.\"{name}\"'" for name in _LLM_ATTRS)
_INSERT_LLM_CALLS = f"""
INSERT OR IGNORE INTO llm_calls
SELECT trace_id, span_id, TRY_CAST(v[1] AS INTEGER), coalesce(v[2], v[3]),
       TRY_CAST(v[4] AS BIGINT), TRY_CAST(v[5] AS BIGINT), TRY_CAST(v[6] AS DOUBLE),
       start_ns, end_ns
FROM (
    SELECT trace_id, span_id, start_ns, end_ns,
           json_extract_string(attributes, [{_LLM_PATHS}]) AS v
    FROM batch WHERE t = 'span' AND starts_with(name, '{A.SPAN_CHAT} ')
        AND {_attr(A.GEN_AI_OPERATION_NAME)} = '{A.OP_CHAT}'
)
"""

# A step's "start" record waits for its span; a step that ended in the same batch
# needs none.
_INSERT_STEP_STARTS = f"""
INSERT OR IGNORE INTO span_starts
SELECT trace_id, span_id, parent_id, name, start_ns, attributes, spool
FROM batch b WHERE t = 'start' AND name = '{A.SPAN_EXECUTE_CODE}'
    AND trace_id IS NOT NULL AND span_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM batch e
        WHERE e.t = 'span' AND e.trace_id = b.trace_id AND e.span_id = b.span_id)
"""

_DROP_ENDED_STARTS = f"""
DELETE FROM span_starts s USING batch b
WHERE b.t = 'span' AND b.name = '{A.SPAN_EXECUTE_CODE}'
    AND s.trace_id = b.trace_id AND s.span_id = b.span_id
"""

# What a recorder could not write (no space), told by a "lost" record once it could.
_INSERT_LOST = """
INSERT OR IGNORE INTO lost_records
SELECT spool, span_id, trace_id, records, reason FROM batch
WHERE t = 'lost' AND span_id IS NOT NULL AND records > 0
"""

# A run whose every record of its own was lost still shows, marked; its real records,
# if any arrive, replace this row.
_INSERT_LOST_RUNS = """
INSERT OR IGNORE INTO runs (run_id, status, started_ns, spool)
SELECT trace_id, 'running', min(start_ns), any_value(spool) FROM batch
WHERE t = 'lost' AND trace_id IS NOT NULL GROUP BY trace_id
"""

_LOAD = (
    _INSERT_BLOBS,
    _INSERT_SPANS,
    _INSERT_RUN_STARTS,
    _UPSERT_RUN_ENDS,
    _INSERT_STEPS,
    _INSERT_LLM_CALLS,
    _INSERT_STEP_STARTS,
    _DROP_ENDED_STARTS,
    _INSERT_LOST,
    _INSERT_LOST_RUNS,
)

# A dead writer's steps that never ended: interrupted, with the code they were running.
_INTERRUPTED = json.dumps({A.STEP_STATUS: "interrupted"})
_CLOSE_SPOOL = (
    "UPDATE runs SET status = 'incomplete' WHERE spool = $spool AND status = 'running'",
    f"""
    INSERT OR IGNORE INTO spans
    SELECT trace_id, span_id, parent_id, name, start_ns, NULL, 'ERROR',
           'its process ended while the step ran',
           json_merge_patch(coalesce(attributes, '{{}}'), '{_INTERRUPTED}'), '[]'
    FROM span_starts WHERE spool = $spool
    """,
    f"""
    INSERT OR IGNORE INTO steps
    SELECT trace_id, span_id, TRY_CAST({_attr(A.STEP_INDEX)} AS INTEGER), 'interrupted',
           start_ns, NULL, {_attr(A.CODE_PREVIEW)}, NULL, NULL, NULL, NULL
    FROM span_starts WHERE spool = $spool
    """,
    "DELETE FROM span_starts WHERE spool = $spool",
)


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
    """One spool file's unread part, copied out for DuckDB to parse."""

    path: Path
    alive: bool
    offset: int
    end: int  # the new offset once this part is ingested
    torn: int
    bad: int
    copy: Path | None
    new_torn: int
    oversized: bool = False  # holds a line longer than MAX_RECORD_BYTES
    records: int = 0  # stored by this pass
    unread: int = 0  # lines that were JSON but no record codetape knows
    set_aside: list[_SetAside] = field(default_factory=list)


def _has_long_line(data: bytes) -> bool:
    """Whether ``data`` (whole lines) holds a line longer than ``MAX_RECORD_BYTES``;
    DuckDB alone would take some of them (its limit is not exact)."""
    if len(data) <= MAX_RECORD_BYTES:
        return False
    start = 0
    while start < len(data):
        end = data.index(b"\n", start) + 1
        if end - start > MAX_RECORD_BYTES:
            return True
        start = end
    return False


def _collect(con: duckdb.DuckDBPyConnection, path: Path, scratch: Path) -> _Pending | None:
    # Decide liveness before reading: if the writer is gone now, nothing can be
    # appended after our read, so everything up to EOF is final.
    alive = writer_alive(path)
    row = con.execute(
        'SELECT "offset", torn_lines, bad_lines FROM ingest_files WHERE name = ?', [path.name]
    ).fetchone()
    offset, torn, bad = row if row else (0, 0, 0)
    old_torn = torn
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    chunk = data[:end]
    if not alive and end < len(data):
        torn += 1  # a line the dead writer never finished
        end = len(data)
    if not chunk and alive:
        return None
    copy = None
    if chunk:
        # A copy, named as the spool file: a live writer may append while DuckDB reads.
        copy = scratch / path.name
        copy.write_bytes(chunk)
    pending = _Pending(path, alive, offset, offset + end, torn, bad, copy, torn - old_torn)
    pending.oversized = _has_long_line(chunk)
    return pending


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


def _load(con: duckdb.DuckDBPyConnection, files: list[str]) -> dict[str, tuple[int, int]]:
    """Store the records of ``files``; per spool file name: (records, unknown lines)."""
    con.execute("DROP TABLE IF EXISTS batch")
    con.execute(_READ, [files])
    counts = {
        spool: (total - unknown, unknown)
        for spool, total, unknown in con.execute(
            "SELECT spool, count(*), count(*) FILTER (WHERE t IS NULL) FROM batch GROUP BY spool"
        ).fetchall()
    }
    for statement in _LOAD:
        con.execute(statement)
    con.execute("DROP TABLE batch")
    return counts


def _load_all(con: duckdb.DuckDBPyConnection, pending: list[_Pending]) -> None:
    """The fast way: every file in one scan, and the pass's bookkeeping, in one go."""
    copies = [str(p.copy) for p in pending if p.copy is not None]
    counts = _load(con, copies) if copies else {}
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
    """Per file: what was set aside, a dead writer's runs and steps, the new offset."""
    for p in pending:
        _set_aside(con, p)
        if not p.alive:
            for statement in _CLOSE_SPOOL:
                con.execute(statement, {"spool": p.path.name})
        con.execute(
            "INSERT OR REPLACE INTO ingest_files VALUES (?, ?, ?, ?, ?)",
            [p.path.name, p.end, p.torn, p.bad + p.unread + len(p.set_aside), not p.alive],
        )


def _ingest_batch(
    con: duckdb.DuckDBPyConnection, pending: list[_Pending], stats: IngestStats, scratch: Path
) -> None:
    suspect = [p for p in pending if p.oversized]
    try:
        _in_transaction(
            con, functools.partial(_load_all, con, [p for p in pending if not p.oversized])
        )
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


# -- what this process has ingested, so a read with nothing new stays cheap -----------

_Mark = tuple[int, int, int]  # a spool file's inode, size and mtime (ns)


@dataclass(frozen=True)
class _Seen:
    """The spool as of this process's last complete ingestion pass over a store."""

    db: tuple[int, int]  # the database file it wrote to (device, inode)
    files: dict[str, _Mark]  # each live spool file read to its end, writer alive


_seen: dict[Path, _Seen] = {}
_seen_lock = threading.Lock()


def _key(home: Path) -> Path:
    # One key per directory, however it was spelled (relative, via a symlink).
    return Path(os.path.realpath(home))


def _db_identity(home: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(home / DB_NAME)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _mark(st: os.stat_result) -> _Mark:
    return st.st_ino, st.st_size, st.st_mtime_ns


def spool_changed(home: Path) -> bool:
    """Whether the spool under ``home`` may hold records the database lacks, judged
    without opening the database: a spool file this process has not read to its end
    (new, grown, or replaced), one whose writer has died since (its running run is now
    incomplete), or a database file other than the one it wrote to. ``True`` when in
    doubt, so the worst a wrong answer costs is one ingestion pass that finds nothing."""
    try:
        entries = os.scandir(live_dir(home))
    except FileNotFoundError:
        return False  # nothing was ever spooled; a read creates the empty database
    with entries:
        with _seen_lock:
            seen = _seen.get(_key(home))
        if seen is None or seen.db != _db_identity(home):
            return True
        for entry in entries:
            if not entry.name.endswith(".jsonl") or entry.name.startswith("."):
                continue
            try:
                mark = _mark(entry.stat())
            except FileNotFoundError:
                continue  # ingested to its end and moved to spool/done meanwhile
            if seen.files.get(entry.name) != mark or not writer_alive(Path(entry.path)):
                return True
    return False


def _remember(home: Path, db: tuple[int, int] | None, files: dict[str, _Mark]) -> None:
    # Only a pass that wrote to the file it started with (not one a rebuild moved away
    # meanwhile) vouches for the database that is there now.
    if db is not None and db == _db_identity(home):
        with _seen_lock:
            _seen[_key(home)] = _Seen(db, files)


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
) -> tuple[list[_Pending], dict[str, _Mark]]:
    """One pass over ``paths``: what it ingested, and the live files it read to the end."""
    read_to_end: dict[str, _Mark] = {}
    pending: list[_Pending] = []
    scratch = _scratch(home)
    try:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):  # another ingester finished it
                # Marked before it is read: what is read is at least this much.
                mark = _mark(path.stat())
                item = _collect(con, path, scratch)
                if item is None or item.alive:
                    read_to_end[path.name] = mark
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
    db = _db_identity(home)
    if not paths and db is not None:
        if files is None:
            _remember(home, db, {})
        return stats
    with connect(home, read_only=False, wait_s=wait_s) as con:
        db = db or _db_identity(home)
        pending, read_to_end = _pass(con, home, paths, stats)
    stats.files = len(pending)
    for p in pending:
        if not p.alive and p.path.parent != done_dir(home):
            target = done_dir(home)
            target.mkdir(parents=True, exist_ok=True)
            os.replace(p.path, target / p.path.name)
            stats.finished_files.append(p.path.name)
    if files is None:
        _remember(home, db, read_to_end)
    return stats


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


# Every live ingester of each store: a process can record into one store through more
# than one runtime (``configure`` and a replay's ``recording_to``).
_background: dict[Path, weakref.WeakSet[BackgroundIngester]] = {}
_background_lock = threading.Lock()


def wait_for_background(home: Path, timeout: float = 10.0) -> None:
    """Let this process's background ingestion of ``home`` finish, so a reader sees the
    runs that ended before it looked (and holds no conflicting connection)."""
    with _background_lock:
        ingesters = list(_background.get(_key(home), ()))
    deadline = time.monotonic() + timeout
    for ingester in ingesters:
        ingester.flush(max(0.0, deadline - time.monotonic()))


class BackgroundIngester:
    """Ingests a store on a worker thread, so ending a run does not wait for DuckDB.

    Requests made while a pass is running are folded into one more pass. ``flush``
    waits for the pending work; it runs at interpreter exit, so a short-lived process
    still leaves its runs ingested (and if it does not, readers ingest on open).
    """

    def __init__(
        self, home: Path, guard: Callable[[str], contextlib.AbstractContextManager[None]]
    ) -> None:
        self.home = home
        # The recording path's error guard (log once, never raise into the agent): the
        # tracer's, passed in, since the store does not depend on the tracer.
        self._guard = guard
        with _background_lock:
            _background.setdefault(_key(home), weakref.WeakSet()).add(self)
        self._wanted = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # What the guard let through (strict mode): raised by the next flush().
        self._error: Exception | None = None

    def request(self) -> None:
        with self._lock:
            self._idle.clear()
            self._wanted.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="codetape-ingest", daemon=True
                )
                self._thread.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._wanted.is_set():
                    self._idle.set()
                    self._thread = None
                    return
                self._wanted.clear()
            try:
                with self._guard("ingesting finished runs"):
                    try_ingest(self.home, wait_s=0.5)
            except Exception as exc:  # strict mode: the thread cannot raise to anyone
                self._error = exc

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait for the pending work; ``False`` if it did not finish in ``timeout``.
        Raises what a pass raised under strict mode (otherwise the guard logged it)."""
        idle = self._idle.wait(timeout)
        error, self._error = self._error, None
        if error is not None:
            raise error
        return idle


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
