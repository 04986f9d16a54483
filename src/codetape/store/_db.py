"""Opening the DuckDB file: schema, versions, and short-lived connections with retry.

No codetape process keeps the DuckDB file open for long (see ``_spool``): writers
(ingestion) and readers each open it for one short piece of work and close it. DuckDB
answers a conflicting open with a lock error straight away, so both retry briefly.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from ..errors import CorruptStoreError, NewerStoreError, StoreBusyError, StoreError
from ._archive import refuse_archive
from ._ingest_sql import SEARCH_TEXT, STEP_WORDS
from ._views import VIEWS, VIEWS_DIGEST

T = TypeVar("T")

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "connect",
    "disk_full_error",
    "held_by_this_thread",
    "is_disk_full",
    "is_lock_error",
    "no_store_error",
    "opening",
]

DB_NAME = "codetape.duckdb"
# 2: span_starts (steps that started and have not ended) and lost_records.
# 3: llm_calls (the runs' model calls, for their tokens and cost), runs.parent, and
#    steps.error_message/error_line (failure signatures).
# 4: the stable SQL views (schema v1: runs, steps, tool_calls, variables, llm_calls, spans).
SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS spans (
    trace_id VARCHAR NOT NULL,
    span_id VARCHAR NOT NULL,
    parent_id VARCHAR,
    name VARCHAR NOT NULL,
    start_ns BIGINT,
    end_ns BIGINT,
    status VARCHAR,
    status_message VARCHAR,
    attributes JSON,
    events JSON,
    PRIMARY KEY (trace_id, span_id)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    span_id VARCHAR,
    name VARCHAR,
    task VARCHAR,
    status VARCHAR,
    started_ns BIGINT,
    ended_ns BIGINT,
    final_answer VARCHAR,
    replay_of VARCHAR,
    error_type VARCHAR,
    error_message VARCHAR,
    spool VARCHAR
);
-- 3: the step (RUN_ID:STEP_INDEX) whose tool call started the run (a managed agent).
ALTER TABLE runs ADD COLUMN IF NOT EXISTS parent VARCHAR;
-- 3: the final answer's type (str, int, PIL.Image.Image...).
ALTER TABLE runs ADD COLUMN IF NOT EXISTS final_answer_type VARCHAR;
CREATE TABLE IF NOT EXISTS steps (
    run_id VARCHAR NOT NULL,
    span_id VARCHAR NOT NULL,
    step_index INTEGER,
    status VARCHAR,
    started_ns BIGINT,
    ended_ns BIGINT,
    code_preview VARCHAR,
    stdout_preview VARCHAR,
    error_type VARCHAR,
    PRIMARY KEY (run_id, span_id)
);
-- The model calls of each run (chat spans): what runs sum for tokens and cost.
CREATE TABLE IF NOT EXISTS llm_calls (
    run_id VARCHAR NOT NULL,
    span_id VARCHAR NOT NULL,
    call_index INTEGER,
    model VARCHAR,
    input_tokens BIGINT,
    output_tokens BIGINT,
    cost DOUBLE,
    started_ns BIGINT,
    ended_ns BIGINT,
    PRIMARY KEY (run_id, span_id)
);
CREATE TABLE IF NOT EXISTS blobs (digest VARCHAR PRIMARY KEY, data BLOB NOT NULL);
-- 3: what a failing step's failure signature is made of (codetape failures).
ALTER TABLE steps ADD COLUMN IF NOT EXISTS error_message VARCHAR;
ALTER TABLE steps ADD COLUMN IF NOT EXISTS error_line VARCHAR;
CREATE INDEX IF NOT EXISTS spans_trace_id ON spans (trace_id);
CREATE INDEX IF NOT EXISTS steps_run_id ON steps (run_id);
CREATE TABLE IF NOT EXISTS ingest_files (
    name VARCHAR PRIMARY KEY,
    "offset" BIGINT NOT NULL,
    torn_lines BIGINT NOT NULL,
    bad_lines BIGINT NOT NULL,
    done BOOLEAN NOT NULL
);
-- The start records of steps that have not ended: what a killed process was running.
CREATE TABLE IF NOT EXISTS span_starts (
    trace_id VARCHAR NOT NULL,
    span_id VARCHAR NOT NULL,
    parent_id VARCHAR,
    name VARCHAR,
    start_ns BIGINT,
    attributes JSON,
    spool VARCHAR,
    PRIMARY KEY (trace_id, span_id)
);
-- Records that could not be stored: spool lines ingestion had to set aside (id "@offset"),
-- and records the recorder could not write (a "lost" record: id is its span_id).
CREATE TABLE IF NOT EXISTS lost_records (
    spool VARCHAR NOT NULL,
    id VARCHAR NOT NULL,
    run_id VARCHAR,
    records BIGINT NOT NULL,
    reason VARCHAR,
    PRIMARY KEY (spool, id)
);
-- 4: what a search looks through: each step's code, output and error previews,
-- lower-cased, and the words of a run's steps (a run's word once per ingestion pass).
ALTER TABLE steps ADD COLUMN IF NOT EXISTS search_text VARCHAR;
CREATE TABLE IF NOT EXISTS search_words (run_id VARCHAR NOT NULL, word VARCHAR NOT NULL);
"""

_BACKFILL_STEP_ERRORS = """
UPDATE steps SET error_message = sp.attributes->>'$."codetape.error.message"',
    error_line = sp.attributes->>'$."codetape.error.line"'
FROM spans sp
WHERE steps.status <> 'ok' AND sp.trace_id = steps.run_id AND sp.span_id = steps.span_id
"""

# An older store's steps made searchable (schema 4), as ingestion makes new ones.
_BACKFILL_SEARCH = (
    "UPDATE steps SET search_text = "
    + SEARCH_TEXT.format(
        code="code_preview", stdout="stdout_preview", etype="error_type", emsg="error_message"
    ),
    "INSERT INTO search_words " + STEP_WORDS.format(source="steps"),
)

_LOCK_MARKERS = (
    "Could not set lock",
    "Conflicting lock",
    "database is locked",
    # Another connection of this process has the file open in the other mode.
    "different configuration than existing connections",
    # ... or has it attached (a read's ``_attach``) while this one opens it.
    "Unique file handle conflict",
)


def is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.Error) and any(m in str(exc) for m in _LOCK_MARKERS)


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) has no room left."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    return isinstance(exc, duckdb.Error) and any(
        os.strerror(code) in str(exc) for code in _FULL_ERRNOS
    )


def disk_full_error(home: Path, exc: BaseException) -> StoreError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return StoreError(
        f"no space left on the disk of the store {home}: {first}",
        path=home,
        hint="free space on that disk; nothing already spooled is lost: it is stored "
        "the next time codetape reads the store",
    )


def no_store_error(home: Path) -> StoreError:
    return StoreError(
        f"no store at {home}",
        path=home,
        hint="check --home / CODETAPE_HOME; a store is created by the first recording "
        "(codetape.configure(home=...))",
    )


def _corrupt(path: Path, exc: BaseException) -> CorruptStoreError:
    return CorruptStoreError(
        f"the store database {path} is not readable: {str(exc).splitlines()[0]}",
        path=path,
        hint=(
            f"move it aside (mv {path} {path}.corrupt) and run `codetape doctor --rebuild` "
            "to rebuild it from the spool logs; recorded blobs and spool files are untouched"
        ),
    )


def _open(path: Path, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    return opening(path, wait_s, lambda: _attach(path, read_only))


# A connection attaches the file to an in-memory database this process keeps for the
# store (about 1 ms), where a connection of its own starts a database instance every
# time (about 10 ms: a third of a warm replay, most of a viewer page's reads) and tears
# it down at its close (10-25 ms after an ingestion pass: most of a small pass). The
# file stays attached while any connection of the thread that has it uses it (a read
# nested in another shares it, a read nested in a write reads through the write's), and
# is detached with the last, which releases DuckDB's lock on it for other processes:
# the path's process lock (held by ``connect`` throughout) keeps every other thread of
# this process out meanwhile.
_hosts: dict[str, duckdb.DuckDBPyConnection] = {}
_uses: dict[str, list[Any]] = {}  # path -> [alias, connections using it, writable]
# The allocator gives back what a pass freed on a thread of its own: the in-memory
# database lives as long as the process, and without it a long-running process would
# hold a large pass's memory until its next pass.
_HOST_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "allocator_background_threads": True
}
_hosts_lock = threading.Lock()
_aliases = itertools.count()
_ALIAS = "codetape_store_"


def _attach(path: Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection to the file at ``path``, attached (read-only, unless not
    ``read_only``) and in use as its default database; ``_close`` detaches it with its
    last user; a read or a write nested in a write shares its attachment, and so does a
    read nested in a read. Anything but a lock or a full disk falls back to a connection
    of its own (which reports a corrupt file as before); so does a write nested in a
    read, which cannot share the read's attachment (and finds the file busy)."""
    key = str(path)
    _drop_leftover(key)
    use = _uses.get(key)
    if not read_only and use is not None and not use[2]:
        return duckdb.connect(key, read_only=False)  # the file is in use read-only: busy
    with _hosts_lock:
        host = _hosts.get(key)
        if host is None:
            # It spills next to the file, as a connection of its own does.
            config = _HOST_CONFIG | {"temp_directory": key + ".tmp"}
            host = _hosts[key] = duckdb.connect(":memory:", config=config)
        con = host.cursor()
    try:
        use = _uses.get(key)
        if use is None:
            alias = f"{_ALIAS}{next(_aliases)}"
            mode = " (READ_ONLY)" if read_only else ""
            con.execute(f"ATTACH '{key.replace(chr(39), chr(39) * 2)}' AS {alias}{mode}")
            use = _uses[key] = [alias, 0, not read_only]
        con.execute(f"USE {use[0]}")
        use[1] += 1
    except duckdb.Error as exc:
        _close(con)
        if is_lock_error(exc) or is_disk_full(exc):
            raise
        return duckdb.connect(key, read_only=read_only)
    except BaseException:
        _close(con)
        raise
    return con


def _drop_leftover(key: str) -> None:
    """Detach what a connection that was never closed left attached, when this thread
    opens the file afresh (no connection of its own is open: nobody's can be)."""
    if getattr(_held, "paths", {}).get(key, 0) > 1 or key not in _uses:
        return
    del _uses[key]
    with _hosts_lock:
        host = _hosts.get(key)
        con = host.cursor() if host is not None else None
    if con is not None:
        try:
            _detach_all(con)
        finally:
            con.close()


def _detach_all(con: duckdb.DuckDBPyConnection) -> None:
    """Detach every store file attached to ``con``'s in-memory database."""
    con.execute("USE memory")
    rows = con.execute(
        "SELECT database_name FROM duckdb_databases() WHERE starts_with(database_name, ?)",
        [_ALIAS],
    ).fetchall()
    for (name,) in rows:
        con.execute(f"DETACH {name}")


def _close(con: duckdb.DuckDBPyConnection) -> None:
    """Close a connection of ``_open``'s; the last user of an attached file detaches it
    (a failed transaction its statements left is rolled back first). A file that cannot
    be detached (its last checkpoint failed: a full disk) goes with the in-memory
    database it is attached to, so the next connection attaches it afresh."""
    stuck: duckdb.DuckDBPyConnection | None = None
    try:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        last: str | None = None
        with contextlib.suppress(duckdb.Error):  # a connection of its own attached nothing
            row = con.execute("SELECT current_database()").fetchone()
            for key, use in list(_uses.items()):
                if row is not None and use[0] == row[0]:
                    use[1] -= 1
                    if use[1] <= 0:
                        del _uses[key]
                        last = key
                    break
        if last is not None:
            try:
                _detach_all(con)
            except duckdb.Error:
                with _hosts_lock:
                    stuck = _hosts.pop(last, None)
    finally:
        con.close()
        if stuck is not None:
            with contextlib.suppress(duckdb.Error):
                stuck.close()


def opening(path: Path, wait_s: float, attempt: Callable[[], T]) -> T:
    """``attempt()`` (an open or attach of the database file at ``path``), tried again
    while another process holds the file, up to ``wait_s``; its other failures as the
    store's errors (a full disk, a corrupt file)."""
    deadline = time.monotonic() + wait_s
    delay = 0.002
    while True:
        try:
            return attempt()
        except duckdb.Error as exc:
            if is_disk_full(exc):
                raise disk_full_error(path.parent, exc) from exc
            if not is_lock_error(exc):
                raise _corrupt(path, exc) from exc
            if time.monotonic() >= deadline:
                raise StoreBusyError(
                    f"the store database {path} stayed locked by another process for {wait_s:.1f}s",
                    path=path,
                    hint="another codetape process is ingesting; try again in a moment",
                ) from exc
        # Jitter keeps several waiting processes from retrying in lockstep.
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.1)


def _version(con: duckdb.DuckDBPyConnection) -> int:
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except duckdb.CatalogException:  # a new, empty database
        return 0
    return int(row[0]) if row else 0


def views_current(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the store's SQL views are the ones this codetape makes."""
    row = con.execute("SELECT value FROM meta WHERE key = 'views'").fetchone()
    return row is not None and row[0] == VIEWS_DIGEST


def _migrate(con: duckdb.DuckDBPyConnection, found: int) -> None:
    """Bring a store of schema ``found`` (0: a new file) to ``SCHEMA_VERSION``, in one
    transaction: all of it or none, and one commit rather than one per table."""
    con.execute("BEGIN TRANSACTION")
    try:
        # Every change so far only adds tables and columns: creating what is missing
        # migrates, and what a new column says of older rows is filled in.
        con.execute(_SCHEMA)
        con.execute(VIEWS)
        if 0 < found < 3:
            con.execute(_BACKFILL_STEP_ERRORS)
        if 0 < found < 4:
            for statement in _BACKFILL_SEARCH:
                con.execute(statement)
        con.execute(
            "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
        )
        con.execute("INSERT OR REPLACE INTO meta VALUES ('views', ?)", [VIEWS_DIGEST])
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise


def _check_schema(con: duckdb.DuckDBPyConnection, path: Path, read_only: bool) -> int:
    """The store's schema version, after migrating an older one (when writing)."""
    try:
        # The version first: a newer store is refused before anything is written to it.
        found = _version(con)
        if not read_only and (
            found < SCHEMA_VERSION or (found == SCHEMA_VERSION and not views_current(con))
        ):
            _migrate(con, found)  # of the current version: only the views made again
            found = SCHEMA_VERSION
    except duckdb.CatalogException as exc:
        raise _corrupt(path, exc) from exc
    except duckdb.Error as exc:
        if is_lock_error(exc):
            raise
        if is_disk_full(exc):
            raise disk_full_error(path.parent, exc) from exc
        raise _corrupt(path, exc) from exc
    if found > SCHEMA_VERSION:
        raise NewerStoreError(path, found, SCHEMA_VERSION)
    return found


@contextlib.contextmanager
def connect(
    home: Path, *, read_only: bool, wait_s: float = 10.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection to the store's DuckDB file, closed on exit.

    A read-only open of a store directory that has no database yet creates it first (and
    one of an older schema migrates it), so readers of a fresh store see empty tables
    rather than an error. A directory that does not exist is read as an empty store and
    left uncreated; writing to one raises ``StoreError``.
    """
    if not read_only:
        refuse_archive(home, "store records in it")
    path = home / DB_NAME
    if not home.is_dir():
        if not read_only:
            raise no_store_error(home)
        with _empty_store() as con:
            yield con
        return
    # DuckDB's file lock only keeps other processes out: within this one, connections
    # of different modes to one file conflict, and concurrent writers collide. So the
    # threads of a process take turns.
    with _process_lock(path, wait_s):
        if read_only and not path.exists():
            with connect(home, read_only=False, wait_s=wait_s):
                pass
        con = _open(path, read_only, wait_s)
        try:
            if _check_schema(con, path, read_only) < SCHEMA_VERSION:
                _close(con)
                with connect(home, read_only=False, wait_s=wait_s):
                    pass  # migrated
                con = _open(path, read_only, wait_s)
            yield con
        finally:
            _close(con)


@contextlib.contextmanager
def _empty_store() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory database with the store's tables and no rows."""
    con = duckdb.connect(":memory:")
    try:
        con.execute(_SCHEMA)
        con.execute(VIEWS)
        yield con
    finally:
        con.close()


_locks_guard = threading.Lock()
_locks: dict[str, threading.RLock] = {}
_orphans: list[duckdb.DuckDBPyConnection] = []


def _forget_locks_after_fork() -> None:
    # A lock another thread of the parent held at the fork would never be released here,
    # and the parent's in-memory databases are not the child's to use.
    global _locks_guard, _hosts_lock
    _locks_guard = threading.Lock()
    _locks.clear()
    _held.__dict__.clear()
    _hosts_lock = threading.Lock()
    _orphans.extend(_hosts.values())  # not closed here: their threads are the parent's
    _hosts.clear()
    _uses.clear()


os.register_at_fork(after_in_child=_forget_locks_after_fork)
# The database files this thread has a connection to, and how many (the lock is
# re-entrant): such a thread cannot open the file in the other mode.
_held = threading.local()


def held_by_this_thread(home: Path) -> bool:
    """True while this thread has the store's database open (a ``Store.session``, say):
    it cannot ingest until it closes it, and nobody else in this process can either."""
    held: dict[str, int] = getattr(_held, "paths", {})
    return held.get(str(home / DB_NAME), 0) > 0


@contextlib.contextmanager
def _process_lock(path: Path, wait_s: float) -> Iterator[None]:
    with _locks_guard:
        lock = _locks.setdefault(str(path), threading.RLock())
    if not lock.acquire(timeout=wait_s):
        raise StoreBusyError(
            f"the store database {path} stayed busy in this process for {wait_s:.1f}s",
            path=path,
            hint="another thread holds it; try again in a moment",
        )
    held: dict[str, int] = _held.__dict__.setdefault("paths", {})
    held[str(path)] = held.get(str(path), 0) + 1
    try:
        yield
    finally:
        held[str(path)] -= 1
        lock.release()
