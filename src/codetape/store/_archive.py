"""Opening a Parquet archive (``codetape export --parquet DIR``) as a read-only store.

``Store(DIR)`` on such a directory reads a DuckDB file built from it: the store's
tables are loaded from ``_store/`` (spans from the ``spans`` table with their exact
times from ``_store/span_times``), the search words derived from the steps by the SQL
ingestion uses, and the blobs from ``blobs/``: those the store held in its database go
in the database, the others become files of the built store's blob folder, as in the
store. So every read of ``Store`` runs unchanged on it; nothing is written to the
archive.

The built store is a cache in the system's temporary folder, shared by the processes
of this user (a viewer, each CLI command): one per archive and export, built by the
first process that needs it (in a folder of its own, renamed into place when whole),
and replaced when a later export rewrites the archive's ``codetape-archive.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
import threading
import time
import uuid
from pathlib import Path

import duckdb

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
_SOURCE = "archive.txt"  # in a built store: the archive it was built from
# A built store of an archive's earlier export is removed once no process has opened it
# for this long (a Store opened before the new export may still be reading it).
_STALE_S = 600.0

_lock = threading.Lock()


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


def _cache() -> Path:
    return Path(tempfile.gettempdir()) / f"codetape-archives-{os.getuid()}"


def _own_cache(home: Path) -> Path:
    """The cache folder, made if missing (and made private if it is not): refused
    unless it is a folder of this user's, since in a shared temporary folder another
    user could have made it (or a link by its name) to hand us a store."""
    root = _cache()
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        found = root.lstat()
    except OSError as exc:
        raise _unreadable(home, f"cannot make the folder {root}: {exc}") from None
    if stat.S_ISDIR(found.st_mode) and found.st_uid == os.getuid():
        if found.st_mode & 0o077:
            root.chmod(0o700)
    else:
        raise StoreError(
            f"cannot open the archive {home}: {root} is not a folder of this user's alone",
            path=root,
            hint=f"remove {root} (codetape makes it again) or set TMPDIR to a folder of yours",
        )
    return root


def archive_store(home: Path) -> Path:
    """The folder of the store built from the archive ``home``, to read it from (built
    the first time, and again when the archive was exported to since)."""
    try:
        text = (home / ARCHIVE_FILE).read_bytes()
        marker = json.loads(text)
    except (OSError, ValueError) as exc:
        raise _unreadable(home, f"its {ARCHIVE_FILE} cannot be read ({exc})") from None
    _check(home, marker)
    place = hashlib.sha256(str(home).encode()).hexdigest()[:16]
    built = _own_cache(home) / f"{place}-{hashlib.sha256(text).hexdigest()[:16]}"
    with _lock:
        if not built.is_dir():
            _build(home, built)
            _forget_older(place, built)
    with contextlib.suppress(OSError):
        os.utime(built)  # in use: see _forget_older
    return built


def _unreadable(home: Path, why: str) -> StoreError:
    return StoreError(
        f"cannot open the archive {home}: {why}",
        path=home,
        hint="export it again with this codetape: codetape export --parquet DIR --overwrite",
    )


def _check(home: Path, marker: object) -> None:
    from ._db import SCHEMA_VERSION

    if not isinstance(marker, dict) or marker.get("format") != ARCHIVE_FORMAT:
        found = marker.get("format") if isinstance(marker, dict) else marker
        raise _unreadable(home, f"its format {found!r} is not one this codetape reads")
    schema = marker.get("store_schema")
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise _unreadable(
            home,
            f"it holds a store of schema {schema!r}, newer than the {SCHEMA_VERSION} "
            "this codetape reads",
        )


def _build(home: Path, built: Path) -> None:
    """Build the store of ``home`` in a folder of this process's, then rename it to
    ``built`` (another process may have got there first: then its build is kept)."""
    building = built.with_name(f".{built.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        building.mkdir(parents=True, mode=0o700)
        (building / _SOURCE).write_text(str(home), encoding="utf-8")
        _load(home, building)
        try:
            building.rename(built)
        except OSError:
            if not built.is_dir():
                raise
    except OSError as exc:
        raise _unreadable(home, f"cannot build its store in {built.parent}: {exc}") from None
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _forget_older(place: str, built: Path) -> None:
    """Remove, of the stores no process has opened lately, those built from this
    archive's earlier exports or from archives that are gone, and builds left by
    processes killed meanwhile."""
    now = time.time()
    for other in _cache().iterdir():
        with contextlib.suppress(OSError):
            if other == built or now - other.stat().st_mtime <= _STALE_S:
                continue
            source = other / _SOURCE
            gone = not source.is_file() or not is_archive(Path(source.read_text("utf-8")))
            if place in other.name or gone:
                shutil.rmtree(other, ignore_errors=True)


def _files(home: Path, pattern: str) -> str | None:
    """The Parquet files of ``home`` matching ``pattern`` as a DuckDB list, if any."""
    from ._sql import _literal

    files = sorted(home.glob(pattern))
    return f"[{', '.join(_literal(f) for f in files)}]" if files else None


def _insert(con: duckdb.DuckDBPyConnection, statement: str) -> None:
    """``statement`` (an ``INSERT INTO``) as a plain insert, which skips DuckDB's search
    for rows to ignore; should a key repeat (the same run in two exports' day folders),
    again with ``INSERT OR IGNORE``."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(statement)
        con.execute("COMMIT")
    except duckdb.ConstraintException:
        con.execute("ROLLBACK")
        con.execute(statement.replace("INSERT INTO", "INSERT OR IGNORE INTO", 1))


def _load(home: Path, folder: Path) -> None:
    from ._blobs import BlobStore
    from ._db import connect
    from ._ingest_sql import STEP_WORDS

    with connect(folder, read_only=False) as con:
        try:
            for table in ("runs", "steps", "llm_calls", "lost_records"):
                files = _files(home, f"_store/{table}/day=*/*.parquet")
                if files:
                    _insert(
                        con,
                        f"INSERT INTO main.{table} BY NAME "
                        f"SELECT * FROM read_parquet({files}, hive_partitioning = false)",
                    )
            spans = _files(home, "spans/day=*/*.parquet")
            times = _files(home, "_store/span_times/day=*/*.parquet")
            if spans:
                exact = (
                    f"LEFT JOIN read_parquet({times}, hive_partitioning = false) t "
                    "USING (trace_id, span_id)"
                    if times
                    else "CROSS JOIN (SELECT NULL::BIGINT AS start_ns, NULL::BIGINT AS end_ns) t"
                )
                micros = "epoch_us(s.{}) * 1000"
                _insert(
                    con,
                    "INSERT INTO main.spans SELECT s.trace_id, s.span_id, "
                    "s.parent_id, s.name, "
                    f"coalesce(t.start_ns, {micros.format('started_at')}), "
                    f"coalesce(t.end_ns, {micros.format('ended_at')}), s.status, "
                    "s.status_message, s.attributes, s.events "
                    f"FROM read_parquet({spans}, hive_partitioning = false) s {exact}",
                )
            con.execute("INSERT INTO main.search_words " + STEP_WORDS.format(source="main.steps"))
            blobs = _files(home, "blobs/*.parquet")
            if blobs:
                source = f"read_parquet({blobs})"
                _insert(
                    con,
                    "INSERT INTO main.blobs SELECT digest, any_value(data) "
                    f"FROM {source} WHERE NOT is_file GROUP BY digest",
                )
                written = BlobStore(folder / "blobs")
                rows = con.execute(f"SELECT DISTINCT digest, data FROM {source} WHERE is_file")
                while batch := rows.fetchmany(_BLOB_BATCH):
                    for digest, data in batch:
                        written.put(bytes(data), digest)
        except duckdb.Error as exc:
            raise _unreadable(home, str(exc).strip().splitlines()[0]) from None
