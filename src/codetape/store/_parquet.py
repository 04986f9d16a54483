"""``codetape export --parquet DIR``: the views ``runs``, ``steps``, ``tool_calls`` and
``spans`` (schema ``v1``, docs/sql.md) as Parquet, one Hive-style ``day=YYYY-MM-DD``
folder per day (docs/parquet.md).

A row's day is the UTC day its run started (a span of no recorded run: its own start),
so the rows of one run share a day folder and ``since`` keeps or drops whole runs. The
store's file is attached read-only only while the rows are copied into an in-memory
DuckDB (which spills to the output directory when large); the rows are sorted and written
after it is detached, into a staging folder whose day folders are then moved in place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ..errors import CodetapeError
from ._db import no_store_error
from ._sql import _attached, _literal

__all__ = ["PARQUET_TABLES", "ParquetExport", "export_parquet"]

PARQUET_TABLES = ("runs", "steps", "tool_calls", "spans")

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
_QUERIES = {
    "runs": _RUNS,
    "steps": _OF_RUN.format(epoch=_EPOCH, view="steps", run="run_id"),
    "tool_calls": _OF_RUN.format(epoch=_EPOCH, view="tool_calls", run="run_id"),
    "spans": _OF_RUN.format(epoch=_EPOCH, view="spans", run="trace_id"),
}
# The order of the rows within a day's file: sorted once the store is detached.
_ORDER = {
    "runs": "started_at, run_id",
    "steps": "run_id, step",
    "tool_calls": "run_id, started_at, span_id",
    "spans": "trace_id, started_at, span_id",
}


@dataclass(frozen=True)
class ParquetExport:
    """What ``export_parquet`` wrote: rows per table, the day folders (written or
    replaced) and the ones it removed because no row of the store is of that day now."""

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
    """Write the store's ``runs``, ``steps``, ``tool_calls`` and ``spans`` (of the runs
    started on or after ``since``, a UTC day) under ``directory``, as
    ``TABLE/day=YYYY-MM-DD/*.parquet``. A directory that has anything in it is refused
    unless ``overwrite``: then the day folders this export covers (every one, or those
    on and after ``since``) are replaced and older days kept. The caller catches up
    ingestion first.

    >>> export_parquet(store.home, Path("archive"), since=dt.date(2026, 11, 1))  # doctest: +SKIP
    """
    if not home.is_dir():
        raise no_store_error(home)
    directory = Path(os.path.abspath(directory))
    staging = _prepare(directory, overwrite)
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET temp_directory = {_literal(staging / 'spill')}")
        rows = _read(con, home, since, wait_s)
        for table in PARQUET_TABLES:
            if rows[table]:
                _write(con, table, staging / table)
        days, removed = _move_in(staging, directory, since, overwrite)
    finally:
        con.close()
        shutil.rmtree(staging, ignore_errors=True)
    return ParquetExport(directory, rows, days, since, removed)


def _unusable(directory: Path, why: str) -> CodetapeError:
    return CodetapeError(
        f"cannot export to {directory}: {why}",
        hint="give --parquet a directory this user can write (it is created if missing)",
    )


def _prepare(directory: Path, overwrite: bool) -> Path:
    """The staging folder inside ``directory``, after checking it may be written."""
    if directory.exists() and not directory.is_dir():
        raise _unusable(directory, "it is a file, not a directory")
    if directory.is_dir() and not overwrite and any(directory.iterdir()):
        raise CodetapeError(
            f"{directory} is not empty: an export writes into an empty directory",
            hint="--overwrite replaces the day folders this export writes (with --since, "
            "the days on and after it; older days stay), or choose a new directory",
        )
    staging = directory / f".codetape-export-{uuid.uuid4().hex[:8]}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as exc:
        raise _unusable(directory, exc.strerror or str(exc)) from None
    return staging


def _read(
    con: duckdb.DuckDBPyConnection, home: Path, since: dt.date | None, wait_s: float
) -> dict[str, int]:
    """Copy each table's rows into memory while the store is attached (one consistent
    read: no process writes the file meanwhile); their counts."""
    # With ``since``, only the runs (each row's day comes from its run's) are read whole;
    # the other tables' older rows are never copied out of the store.
    kept = "" if since is None else "WHERE day >= ?"
    with _attached(con, home, wait_s):
        con.execute(f"CREATE TEMP TABLE parquet_runs AS {_QUERIES['runs']}")
        for table in PARQUET_TABLES[1:]:
            con.execute(
                f"CREATE TEMP TABLE parquet_{table} AS FROM ({_QUERIES[table]}) {kept}",
                [] if since is None else [since],
            )
    if since is not None:
        con.execute("DELETE FROM temp.main.parquet_runs WHERE day < ?", [since])
    rows = {}
    for table in PARQUET_TABLES:
        (count,) = con.execute(f"SELECT count(*) FROM temp.main.parquet_{table}").fetchone() or (0,)
        rows[table] = int(count)
    return rows


def _write(con: duckdb.DuckDBPyConnection, table: str, folder: Path) -> None:
    # The day is the folder's name, not a column of the files: the files hold exactly
    # the view's columns.
    try:
        con.execute(
            f"COPY (FROM temp.main.parquet_{table} ORDER BY day, {_ORDER[table]}) "
            f"TO {_literal(folder)} "
            "(FORMAT parquet, PARTITION_BY (day), COMPRESSION zstd)"
        )
    except duckdb.Error as exc:
        raise _unusable(folder.parent.parent, str(exc).strip()) from None


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
    """Move the new day folders in place: with ``overwrite``, first remove the old day
    folders this export covers. The days written and the days removed without a new
    folder."""
    written: set[dt.date] = set()
    removed: set[dt.date] = set()
    for table in PARQUET_TABLES:
        target = directory / table
        new = {
            day: path
            for path in (staging / table).glob("day=*")
            if (day := _day(path.name)) is not None
        }
        try:
            if new:
                target.mkdir(exist_ok=True)
            if overwrite and target.is_dir():
                for old in target.glob("day=*"):
                    day = _day(old.name)
                    if day is not None and (since is None or day >= since):
                        shutil.rmtree(old)
                        if day not in new:
                            removed.add(day)
            for path in new.values():
                path.rename(target / path.name)
        except OSError as exc:
            raise _unusable(directory, exc.strerror or str(exc)) from None
        written |= new.keys()
    return sorted(written), sorted(removed - written)
