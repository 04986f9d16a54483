"""Ingestion: moving spool records into DuckDB, idempotently.

One short transaction per spool file. DuckDB parses the JSON lines itself (far faster
than Python would), the primary keys make a second ingestion of the same lines a
no-op, and the per-file offset is committed with the rows, so a crash between two
steps never loses or doubles a record. A file whose writer has died is consumed to
its end (a partial last line is torn for good: it is skipped and counted) and moved
to ``spool/done``, where ``codetape doctor --rebuild`` can read it again.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from ..schemas import attributes as A
from ._db import DB_NAME, connect, is_lock_error
from ._spool import done_dir, live_dir, writer_alive

__all__ = ["IngestStats", "ingest", "rebuild", "try_ingest"]

_COLUMNS = (
    "{t: 'VARCHAR', trace_id: 'VARCHAR', span_id: 'VARCHAR', parent_id: 'VARCHAR', "
    "name: 'VARCHAR', start_ns: 'BIGINT', end_ns: 'BIGINT', status: 'VARCHAR', "
    "status_message: 'VARCHAR', attributes: 'JSON', events: 'JSON', digest: 'VARCHAR', "
    "text: 'VARCHAR', b64: 'VARCHAR'}"
)


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
    {_attr(A.ERROR_TYPE)}, {{message}}, ?
"""

# A run's "start" record makes it visible while it runs (and as incomplete if its
# process dies); its root span, when it ends, replaces that row with the outcome.
_INSERT_RUN_STARTS = f"""
INSERT OR IGNORE INTO runs
SELECT {_RUN_COLUMNS.format(status="'running'", end="NULL", message="NULL")}
FROM batch b WHERE t = 'start' AND NOT EXISTS (
    SELECT 1 FROM batch e WHERE e.t = 'span' AND e.parent_id IS NULL AND e.trace_id = b.trace_id)
"""

_UPSERT_RUN_ENDS = f"""
INSERT OR REPLACE INTO runs
SELECT {_RUN_COLUMNS.format(status=_attr(A.RUN_STATUS), end="end_ns", message="status_message")}
FROM batch WHERE t = 'span' AND parent_id IS NULL AND name LIKE '{A.SPAN_INVOKE_AGENT}%'
"""

_STEP_ATTRS = (A.STEP_INDEX, A.STEP_STATUS, A.CODE_PREVIEW, A.STDOUT_PREVIEW, A.ERROR_TYPE)
_STEP_PATHS = ", ".join(f"'$.\"{name}\"'" for name in _STEP_ATTRS)
# One JSON parse per span for all five fields, not one per field.
_INSERT_STEPS = f"""
INSERT OR IGNORE INTO steps
SELECT trace_id, span_id, CAST(v[1] AS INTEGER), v[2], start_ns, end_ns, v[3], v[4], v[5]
FROM (
    SELECT trace_id, span_id, start_ns, end_ns, json_extract_string(attributes, [{_STEP_PATHS}]) AS v
    FROM batch WHERE t = 'span' AND name = '{A.SPAN_EXECUTE_CODE}'
)
"""


@dataclass
class IngestStats:
    """What one ingestion pass did."""

    files: int = 0
    records: int = 0
    torn_lines: int = 0
    bad_lines: int = 0
    finished_files: list[str] = field(default_factory=list)


def _ingest_file(
    con: duckdb.DuckDBPyConnection, home: Path, path: Path, stats: IngestStats
) -> None:
    # Decide liveness before reading: if the writer is gone now, nothing can be
    # appended after our read, so everything up to EOF is final.
    alive = writer_alive(path)
    row = con.execute(
        'SELECT "offset", torn_lines, bad_lines FROM ingest_files WHERE name = ?', [path.name]
    ).fetchone()
    offset, torn, bad = row if row else (0, 0, 0)
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    chunk = data[:end]
    if not alive and end < len(data):
        torn += 1  # a line the dead writer never finished
        end = len(data)
    if not chunk and alive:
        return

    tmp = home / "tmp" / f"ingest-{uuid.uuid4().hex}.jsonl"
    if chunk:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(chunk)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            if chunk:
                con.execute(
                    "CREATE TEMP TABLE batch AS SELECT * FROM read_json(?, "
                    f"format='newline_delimited', columns={_COLUMNS}, ignore_errors=true)",
                    [str(tmp)],
                )
                total, bad_now = con.execute(
                    "SELECT count(*), count(*) FILTER (WHERE t IS NULL) FROM batch"
                ).fetchone() or (0, 0)
                bad += bad_now
                stats.records += total - bad_now
                con.execute(_INSERT_BLOBS)
                con.execute(_INSERT_SPANS)
                con.execute(_INSERT_RUN_STARTS, [path.name])
                con.execute(_UPSERT_RUN_ENDS, [path.name])
                con.execute(_INSERT_STEPS)
                con.execute("DROP TABLE batch")
            if not alive:
                con.execute(
                    "UPDATE runs SET status = 'incomplete' WHERE spool = ? AND status = 'running'",
                    [path.name],
                )
            con.execute(
                "INSERT OR REPLACE INTO ingest_files VALUES (?, ?, ?, ?, ?)",
                [path.name, offset + end, torn, bad, not alive],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        tmp.unlink(missing_ok=True)
    stats.files += 1
    stats.torn_lines += torn - (row[1] if row else 0)
    stats.bad_lines += bad - (row[2] if row else 0)
    if not alive and path.parent != done_dir(home):
        target = done_dir(home)
        target.mkdir(parents=True, exist_ok=True)
        os.replace(path, target / path.name)
        stats.finished_files.append(path.name)


def ingest(home: Path, *, wait_s: float = 10.0, files: list[Path] | None = None) -> IngestStats:
    """Move every pending spool record under ``home`` into DuckDB.

    Raises :class:`~codetape.errors.StoreBusyError` when another process holds the
    database for longer than ``wait_s``.
    """
    stats = IngestStats()
    pending = files if files is not None else sorted(live_dir(home).glob("*.jsonl"))
    with connect(home, read_only=False, wait_s=wait_s) as con:
        for path in pending:
            with contextlib.suppress(FileNotFoundError):  # another ingester finished it
                _ingest_file(con, home, path, stats)
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
        while (kept := db.with_name(f"{DB_NAME}.old-{n}")).exists():
            n += 1
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
