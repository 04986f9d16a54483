"""``codetape export --parquet DIR``: the views ``runs``, ``steps``, ``tool_calls``,
``llm_calls`` and ``spans`` (schema ``v1``, docs/sql.md) as Parquet, one Hive-style
``day=YYYY-MM-DD`` folder per day, and beside them what ``Store`` needs to open the
directory as a read-only archive (docs/parquet.md): the store's own tables under
``_store/`` and its blobs under ``blobs/``.

A row's day is the UTC day its run started (a span of no recorded run: its own start),
so the rows of one run share a day folder and ``since`` keeps or drops whole runs. The
store's file is attached read-only only while the rows are copied into an in-memory
DuckDB (which spills to the output directory when large); the rows are sorted and written
after it is detached, into a staging folder whose day folders are then moved in place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ..errors import CodetapeError
from ._archive import ARCHIVE_FILE, ARCHIVE_FORMAT, reads_of
from ._db import DB_NAME, SCHEMA_VERSION, no_store_error
from ._sql import _ALIAS, _attached, _literal
from ._views import VIEWS_SCHEMA

__all__ = [
    "PARQUET_TABLES",
    "STORE_TABLES",
    "ParquetExport",
    "export_parquet",
]

PARQUET_TABLES = ("runs", "steps", "tool_calls", "llm_calls", "spans")
# The store's own tables an archive is opened from, under ``_store/``: its rows as the
# store holds them (times in nanoseconds); of ``spans`` only the exact times, the rest of
# each span is the ``spans`` table's.
STORE_TABLES = ("runs", "steps", "llm_calls", "lost_records", "span_times")

_STAGING = ".codetape-export-"
_LOCK = ".lock"
# A staging folder without its lock file is an exporter's that has just made it: it is
# left alone this long.
_STAGING_GRACE_S = 60.0
_DAY = re.compile(r"^day=(\d{4}-\d{2}-\d{2})$")
_EPOCH = "DATE '1970-01-01'"

# Each table's rows with their day, read while the store is attached.
_RUNS = f"""
SELECT *, coalesce(CAST(timezone('UTC', started_at) AS DATE), {_EPOCH}) AS day FROM runs
"""
_OF_RUN = """
SELECT v.*, coalesce(r.day, CAST(timezone('UTC', v.started_at) AS DATE), {epoch}) AS day
FROM {view} v LEFT JOIN temp.main.parquet_runs r ON r.run_id = v.{run}
"""
# The store's tables: a row's day is its run's (the same as its view row's).
_STORE_OF_RUN = f"""
SELECT t.*, coalesce(r.day, {{own}}, {_EPOCH}) AS day
FROM {_ALIAS}.main.{{table}} t LEFT JOIN temp.main.parquet_runs r ON r.run_id = t.{{run}}
"""
_SPAN_DAY = "CAST(timezone('UTC', make_timestamp(t.start_ns // 1000)) AS DATE)"
_QUERIES = {
    "runs": _RUNS,
    "steps": _OF_RUN.format(epoch=_EPOCH, view="steps", run="run_id"),
    "tool_calls": _OF_RUN.format(epoch=_EPOCH, view="tool_calls", run="run_id"),
    "llm_calls": _OF_RUN.format(epoch=_EPOCH, view="llm_calls", run="run_id"),
    "spans": _OF_RUN.format(epoch=_EPOCH, view="spans", run="trace_id"),
    "_store/runs": _STORE_OF_RUN.format(table="runs", run="run_id", own="NULL"),
    "_store/steps": _STORE_OF_RUN.format(table="steps", run="run_id", own="NULL"),
    "_store/llm_calls": _STORE_OF_RUN.format(table="llm_calls", run="run_id", own="NULL"),
    "_store/lost_records": _STORE_OF_RUN.format(table="lost_records", run="run_id", own="NULL"),
    "_store/span_times": _STORE_OF_RUN.replace(
        "t.*", "t.trace_id, t.span_id, t.start_ns, t.end_ns"
    ).format(table="spans", run="trace_id", own=_SPAN_DAY),
}
# The order of the rows within a day's file: sorted once the store is detached.
_ORDER = {
    "runs": "started_at, run_id",
    "steps": "run_id, step",
    "tool_calls": "run_id, started_at, span_id",
    "llm_calls": "run_id, call_index, span_id",
    "spans": "trace_id, started_at, span_id",
    "_store/runs": "started_ns, run_id",
    "_store/steps": "run_id, step_index, span_id",
    "_store/llm_calls": "run_id, call_index, span_id",
    "_store/lost_records": "spool, id",
    "_store/span_times": "trace_id, span_id",
}
_FOLDERS = (*PARQUET_TABLES, *(f"_store/{table}" for table in STORE_TABLES))


def _temp(folder: str) -> str:
    return "temp.main.parquet_" + folder.replace("/", "")


@dataclass(frozen=True)
class ParquetExport:
    """What ``export_parquet`` wrote: rows per table (and the blobs new to the
    directory), the day folders (written or replaced) and the ones it removed because
    no row of the store is of that day now."""

    directory: Path
    rows: dict[str, int]
    days: list[dt.date]
    since: dt.date | None
    removed_days: list[dt.date]


def export_parquet(
    home: Path,
    directory: Path,
    *,
    since: dt.date | None = None,
    overwrite: bool = False,
    wait_s: float = 10.0,
) -> ParquetExport:
    """Write the store's ``runs``, ``steps``, ``tool_calls``, ``llm_calls`` and
    ``spans`` (of the runs started on or after ``since``, a UTC day) under
    ``directory``, as ``TABLE/day=YYYY-MM-DD/*.parquet``, with what ``Store`` opens an
    archive from (``_store/``, ``blobs/``). A directory that has anything in it is
    refused unless ``overwrite``: then the day folders this export covers (every one, or
    those on and after ``since``) are replaced and older days kept. The caller catches
    up ingestion first.

    >>> export_parquet(store.home, Path("archive"), since=dt.date(2026, 11, 1))  # doctest: +SKIP
    """
    if not home.is_dir():
        raise no_store_error(home)
    home = reads_of(home)  # an archive: the store built from it
    directory = Path(os.path.abspath(directory))
    with _staging(directory, overwrite) as staging:
        con = duckdb.connect(":memory:")
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.execute(f"SET temp_directory = {_literal(staging / 'spill')}")
            _archived_blobs(con, directory)
            rows = _read(con, home, since, wait_s)
            for folder in _FOLDERS:
                if rows[folder]:
                    _write(con, folder, staging)
            rows["blobs"] = _blobs(con, home, staging)
            days, removed = _move_in(staging, directory, since, overwrite)
            _write_marker(directory, since)
        finally:
            con.close()
    shown = {table: rows[table] for table in (*PARQUET_TABLES, "blobs")}
    return ParquetExport(directory, shown, days, since, removed)


def _unusable(directory: Path, why: str) -> CodetapeError:
    return CodetapeError(
        f"cannot export to {directory}: {why}",
        hint="give --parquet a directory this user can write (it is created if missing)",
    )


def _stale(folder: Path) -> bool:
    """Whether a staging folder is a dead exporter's: its lock is not held (or it has
    no lock file, and has had none for a while)."""
    try:
        fd = os.open(folder / _LOCK, os.O_RDONLY)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            return time.time() - folder.stat().st_mtime > _STAGING_GRACE_S
        return False
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        return True
    finally:
        os.close(fd)


def _sweep(directory: Path) -> None:
    """Remove the staging folders exporters killed before they finished left behind."""
    for folder in directory.glob(_STAGING + "*"):
        if folder.is_dir() and _stale(folder):
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _staging(directory: Path, overwrite: bool) -> Iterator[Path]:
    """The staging folder inside ``directory`` (locked while this export lives, removed
    after), once ``directory`` is known to be one it may write."""
    if directory.exists() and not directory.is_dir():
        raise _unusable(directory, "it is a file, not a directory")
    if (directory / DB_NAME).exists() or (directory / "spool").is_dir():
        raise _unusable(directory, "it is a codetape store: an archive is a directory of its own")
    if directory.is_dir():
        _sweep(directory)
        if not overwrite and any(not p.name.startswith(_STAGING) for p in directory.iterdir()):
            raise CodetapeError(
                f"{directory} is not empty: an export writes into an empty directory",
                hint="--overwrite replaces the day folders this export writes (with "
                "--since, the days on and after it; older days stay), or choose a new "
                "directory",
            )
    staging = directory / f"{_STAGING}{uuid.uuid4().hex[:8]}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        lock = os.open(staging / _LOCK, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise _unusable(directory, exc.strerror or str(exc)) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        os.close(lock)


def _archived_blobs(con: duckdb.DuckDBPyConnection, directory: Path) -> None:
    """``temp.main.archived``: the digests of the blobs the directory has already."""
    files = sorted((directory / "blobs").glob("*.parquet"))
    if not files:
        con.execute("CREATE TEMP TABLE archived (digest VARCHAR)")
        return
    listed = ", ".join(_literal(f) for f in files)
    try:
        con.execute(
            f"CREATE TEMP TABLE archived AS SELECT DISTINCT digest FROM read_parquet([{listed}])"
        )
    except duckdb.Error as exc:
        raise _unusable(directory, f"its blobs cannot be read: {str(exc).strip()}") from None


def _read(
    con: duckdb.DuckDBPyConnection, home: Path, since: dt.date | None, wait_s: float
) -> dict[str, int]:
    """Copy each table's rows (and the blobs the directory lacks) into memory while the
    store is attached (one consistent read: no process writes the file meanwhile);
    their counts."""
    # With ``since``, only the runs (each row's day comes from its run's) are read whole;
    # the other tables' older rows are never copied out of the store.
    kept = "" if since is None else "WHERE day >= ?"
    with _attached(con, home, wait_s):
        con.execute(f"CREATE TEMP TABLE {_temp('runs')} AS {_QUERIES['runs']}")
        for folder in _FOLDERS[1:]:
            con.execute(
                f"CREATE TEMP TABLE {_temp(folder)} AS FROM ({_QUERIES[folder]}) {kept}",
                [] if since is None else [since],
            )
        con.execute(
            "CREATE TEMP TABLE parquet_blobs AS SELECT digest, data, false AS is_file "
            f"FROM {_ALIAS}.main.blobs WHERE digest NOT IN (SELECT digest FROM temp.main.archived)"
        )
    if since is not None:
        con.execute(f"DELETE FROM {_temp('runs')} WHERE day < ?", [since])
    rows = {}
    for folder in _FOLDERS:
        (count,) = con.execute(f"SELECT count(*) FROM {_temp(folder)}").fetchone() or (0,)
        rows[folder] = int(count)
    return rows


def _write(con: duckdb.DuckDBPyConnection, folder: str, staging: Path) -> None:
    # The day is the folder's name, not a column of the files: the files hold exactly
    # the view's columns (or the store table's).
    target = staging / folder
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        con.execute(
            f"COPY (FROM {_temp(folder)} ORDER BY day, {_ORDER[folder]}) "
            f"TO {_literal(target)} "
            "(FORMAT parquet, PARTITION_BY (day), COMPRESSION zstd)"
        )
    except (duckdb.Error, OSError) as exc:
        raise _unusable(staging.parent, str(exc).strip()) from None


def _blobs(con: duckdb.DuckDBPyConnection, home: Path, staging: Path) -> int:
    """Write the blobs the directory lacks, those of the database and the store's blob
    files, as one Parquet file of ``staging/blobs``; how many."""
    con.execute(
        "CREATE TEMP TABLE known AS SELECT digest FROM temp.main.archived "
        "UNION SELECT digest FROM temp.main.parquet_blobs"
    )
    known = {d for (d,) in con.execute("SELECT digest FROM temp.main.known").fetchall()}
    batch: list[tuple[str, bytes, bool]] = []
    for path in sorted((home / "blobs").glob("??/*")):
        digest = f"sha256:{path.parent.name}{path.name}"
        if path.name.startswith(".") or len(digest) != 71 or digest in known:
            continue
        with contextlib.suppress(FileNotFoundError):
            batch.append((digest, path.read_bytes(), True))
        if len(batch) >= 64:
            con.executemany("INSERT INTO temp.main.parquet_blobs VALUES (?, ?, ?)", batch)
            batch = []
    if batch:
        con.executemany("INSERT INTO temp.main.parquet_blobs VALUES (?, ?, ?)", batch)
    (count,) = con.execute("SELECT count(*) FROM temp.main.parquet_blobs").fetchone() or (0,)
    if count:
        name = f"blobs-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}.parquet"
        (staging / "blobs").mkdir()
        target = staging / "blobs" / name
        try:
            con.execute(
                f"COPY (FROM temp.main.parquet_blobs ORDER BY digest) TO {_literal(target)} "
                "(FORMAT parquet, COMPRESSION zstd)"
            )
        except duckdb.Error as exc:
            raise _unusable(staging.parent, str(exc).strip()) from None
    return int(count)


def _day(name: str) -> dt.date | None:
    match = _DAY.match(name)
    if match is None:
        return None
    with contextlib.suppress(ValueError):
        return dt.date.fromisoformat(match[1])
    return None


def _move_in(
    staging: Path, directory: Path, since: dt.date | None, overwrite: bool
) -> tuple[list[dt.date], list[dt.date]]:
    """Move the new day folders (and blob file) in place: with ``overwrite``, first
    remove the old day folders this export covers. The days written and the days removed
    without a new folder."""
    written: set[dt.date] = set()
    removed: set[dt.date] = set()
    try:
        for folder in _FOLDERS:
            target = directory / folder
            new = {
                day: path
                for path in (staging / folder).glob("day=*")
                if (day := _day(path.name)) is not None
            }
            if new:
                target.mkdir(parents=True, exist_ok=True)
            if overwrite and target.is_dir():
                for old in target.glob("day=*"):
                    day = _day(old.name)
                    if day is not None and (since is None or day >= since):
                        shutil.rmtree(old)
                        if day not in new:
                            removed.add(day)
            for path in new.values():
                path.rename(target / path.name)
            if folder in PARQUET_TABLES:
                written |= new.keys()
        for path in (staging / "blobs").glob("*.parquet"):
            (directory / "blobs").mkdir(exist_ok=True)
            path.rename(directory / "blobs" / path.name)
    except OSError as exc:
        raise _unusable(directory, exc.strerror or str(exc)) from None
    return sorted(written), sorted(removed - written)


def _write_marker(directory: Path, since: dt.date | None) -> None:
    """Say in ``directory`` that it is an archive ``Store`` can open, and of what."""
    marker = {
        "format": ARCHIVE_FORMAT,
        "store_schema": SCHEMA_VERSION,
        "views": VIEWS_SCHEMA,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(),
        "since": since.isoformat() if since else None,
    }
    tmp = directory / f".{ARCHIVE_FILE}.{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, directory / ARCHIVE_FILE)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _unusable(directory, exc.strerror or str(exc)) from None
