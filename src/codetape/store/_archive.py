"""Opening a Parquet archive (``codetape export --parquet DIR``) as a read-only store.

``Store(DIR)`` on such a directory reads a DuckDB file built from it, once per process
and archive (again when a later export rewrites it): the store's tables are loaded from
``_store/`` (spans from the ``spans`` table with their exact times from
``_store/span_times``), the search words derived from the steps by the SQL ingestion
uses, and the blobs from ``blobs/``: those the store held in its database go in the
database, the others become files of the built store's blob folder, as in the store. So
every read of ``Store`` runs unchanged on it; nothing is ever written to the archive.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

from ..errors import StoreError

__all__ = [
    "ARCHIVE_FILE",
    "ARCHIVE_FORMAT",
    "archive_error",
    "archive_store",
    "is_archive",
    "reads_of",
    "refuse_archive",
]

# What says a directory is an archive, written by the export once it is done.
ARCHIVE_FILE = "codetape-archive.json"
ARCHIVE_FORMAT = 1
_BLOB_BATCH = 256

_lock = threading.Lock()
# Per archive: the marker's identity it was built from, and the built store's folder
# (removed when this process exits: not by a forked child, whose copy this is too).
_built: dict[str, tuple[tuple[int, int, int], Path, int]] = {}
_retired: list[Path] = []


def is_archive(home: Path) -> bool:
    """Whether ``home`` is a Parquet archive rather than a store."""
    return (home / ARCHIVE_FILE).is_file()


def archive_error(home: Path, what: str) -> StoreError:
    return StoreError(
        f"{home} is a Parquet archive (codetape export --parquet), which is read-only: "
        f"cannot {what}",
        path=home,
        hint="record and replay into a store directory (configure(home=...), --home, "
        "CODETAPE_HOME); an archive is for reading",
    )


def refuse_archive(home: Path, what: str) -> None:
    """Raise ``StoreError`` if ``home`` is an archive: ``what`` would write to it."""
    if is_archive(home):
        raise archive_error(home, what)


def reads_of(home: Path) -> Path:
    """The folder a read of the store ``home`` reads: ``home``, or for an archive the
    store built from it."""
    if is_archive(home):
        return archive_store(home)
    if any(home.glob("runs/day=*")) and not any(home.glob("codetape.duckdb*")):
        raise _unreadable(
            home, "it is a Parquet export without the store's tables (an older codetape's)"
        )
    return home


def archive_store(home: Path) -> Path:
    """The folder of a store built from the archive ``home``, to read it from (built
    the first time, and again when the archive was exported to since)."""
    marker = home / ARCHIVE_FILE
    try:
        stat = marker.stat()
        found = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _unreadable(home, f"its {ARCHIVE_FILE} cannot be read ({exc})") from None
    identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    with _lock:
        known = _built.get(str(home))
        if known is not None and known[0] == identity and known[1].is_dir():
            return known[1]
        built = _build(home, found)
        if known is not None and known[2] == os.getpid():
            # Stores opened before may still read it: removed when this process exits.
            _retired.append(known[1])
        _built[str(home)] = (identity, built, os.getpid())
        return built


def _unreadable(home: Path, why: str) -> StoreError:
    return StoreError(
        f"cannot open the archive {home}: {why}",
        path=home,
        hint="export it again with this codetape: codetape export --parquet DIR --overwrite",
    )


def _build(home: Path, marker: dict[str, object]) -> Path:
    from ._db import SCHEMA_VERSION

    if not isinstance(marker, dict) or marker.get("format") != ARCHIVE_FORMAT:
        raise _unreadable(
            home, f"its format {marker.get('format')!r} is not one this codetape reads"
        )
    schema = marker.get("store_schema")
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise _unreadable(
            home,
            f"it holds a store of schema {schema!r}, newer than "
            f"the {SCHEMA_VERSION} this codetape reads",
        )
    folder = Path(tempfile.mkdtemp(prefix="codetape-archive-"))
    try:
        _load(home, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _files(home: Path, pattern: str) -> str | None:
    """The Parquet files of ``home`` matching ``pattern`` as a DuckDB list, if any."""
    from ._sql import _literal

    files = sorted(home.glob(pattern))
    return f"[{', '.join(_literal(f) for f in files)}]" if files else None


def _load(home: Path, folder: Path) -> None:
    import duckdb

    from ._blobs import BlobStore
    from ._db import connect
    from ._ingest_sql import STEP_WORDS

    folder.mkdir(exist_ok=True)
    with connect(folder, read_only=False) as con:
        try:
            for table in ("runs", "steps", "llm_calls", "lost_records"):
                files = _files(home, f"_store/{table}/day=*/*.parquet")
                if files:
                    con.execute(
                        f"INSERT OR IGNORE INTO main.{table} BY NAME "
                        f"SELECT * FROM read_parquet({files}, hive_partitioning = false)"
                    )
            spans, times = (
                _files(home, "spans/day=*/*.parquet"),
                _files(home, "_store/span_times/day=*/*.parquet"),
            )
            if spans:
                exact = (
                    f"LEFT JOIN read_parquet({times}, hive_partitioning = false) t "
                    "USING (trace_id, span_id)"
                    if times
                    else "CROSS JOIN (SELECT NULL::BIGINT AS start_ns, NULL::BIGINT AS end_ns) t"
                )
                micros = "epoch_us(s.{}) * 1000"
                con.execute(
                    "INSERT OR IGNORE INTO main.spans SELECT s.trace_id, s.span_id, "
                    "s.parent_id, s.name, "
                    f"coalesce(t.start_ns, {micros.format('started_at')}), "
                    f"coalesce(t.end_ns, {micros.format('ended_at')}), s.status, "
                    "s.status_message, s.attributes, s.events "
                    f"FROM read_parquet({spans}, hive_partitioning = false) s {exact}"
                )
            con.execute("INSERT INTO main.search_words " + STEP_WORDS.format(source="main.steps"))
            blobs = _files(home, "blobs/*.parquet")
            if blobs:
                source = f"read_parquet({blobs})"
                con.execute(
                    "INSERT OR IGNORE INTO main.blobs SELECT digest, any_value(data) "
                    f"FROM {source} WHERE NOT is_file GROUP BY digest"
                )
                written = BlobStore(folder / "blobs")
                rows = con.execute(f"SELECT digest, data FROM {source} WHERE is_file")
                while batch := rows.fetchmany(_BLOB_BATCH):
                    for digest, data in batch:
                        written.put(bytes(data), digest)
        except duckdb.Error as exc:
            raise _unreadable(home, str(exc).strip().splitlines()[0]) from None


@atexit.register
def _remove_built() -> None:
    with contextlib.suppress(Exception):
        for folder in _retired:
            shutil.rmtree(folder, ignore_errors=True)
        for _, folder, builder in _built.values():
            if builder == os.getpid():
                shutil.rmtree(folder, ignore_errors=True)
