"""The store as codetape's other packages use it: the spool, blobs, ingestion and the
database file. Not for users: these names may change in any release (use ``Store``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ._archive import is_archive, refuse_archive
from ._blobs import SMALL_BLOB, BlobStore, blob_record, digest_of
from ._db import DB_NAME, connect, is_disk_full, no_store_error
from ._failures import normalize_message
from ._home import resolve_home, set_default_home
from ._ingest import (
    BackgroundIngester,
    IngestStats,
    ingest,
    rebuild,
    spool_changed,
    try_ingest,
    wait_for_background,
)
from ._parquet import PARQUET_TABLES, ParquetExport, export_parquet
from ._spool import SpoolWriter, done_dir, live_dir
from ._sql import plain_value, run_sql, write_csv
from ._views import VIEW_NAMES, VIEWS_SCHEMA

if TYPE_CHECKING:
    from ._otlp import ENDED_SPOOL, TooDeep, is_ended, record_of, request_of, span_of
    from ._read import has_pending, span_row, steps_from_rows
    from ._remote import TOKEN_ENV, RemoteStore, RemoteStoreError, read_token
    from ._ship import REMOTE_ENV, Shipper, ShipStats, remote_url

__all__ = [
    "DB_NAME",
    "ENDED_SPOOL",
    "PARQUET_TABLES",
    "REMOTE_ENV",
    "SMALL_BLOB",
    "TOKEN_ENV",
    "VIEWS_SCHEMA",
    "VIEW_NAMES",
    "BackgroundIngester",
    "BlobStore",
    "IngestStats",
    "ParquetExport",
    "RemoteStore",
    "RemoteStoreError",
    "ShipStats",
    "Shipper",
    "SpoolWriter",
    "TooDeep",
    "blob_record",
    "connect",
    "digest_of",
    "done_dir",
    "export_parquet",
    "has_pending",
    "ingest",
    "is_archive",
    "is_disk_full",
    "is_ended",
    "live_dir",
    "no_store_error",
    "normalize_message",
    "plain_value",
    "read_token",
    "rebuild",
    "record_of",
    "refuse_archive",
    "remote_url",
    "request_of",
    "resolve_home",
    "run_sql",
    "set_default_home",
    "span_of",
    "span_row",
    "spool_changed",
    "steps_from_rows",
    "try_ingest",
    "wait_for_background",
    "write_csv",
]

# The read API (pydantic models) only when a replay reads its run back or a store is
# read through a server, never when recording; the OTLP mapping (protobuf) and the
# shipper (requests) only when shipping.
__getattr__, __dir__ = lazy_names(
    __name__,
    {
        **dict.fromkeys(("has_pending", "span_row", "steps_from_rows"), "._read"),
        **dict.fromkeys(("TOKEN_ENV", "RemoteStore", "RemoteStoreError", "read_token"), "._remote"),
        **dict.fromkeys(
            ("ENDED_SPOOL", "TooDeep", "is_ended", "record_of", "request_of", "span_of"),
            "._otlp",
        ),
        **dict.fromkeys(("REMOTE_ENV", "ShipStats", "Shipper", "remote_url"), "._ship"),
    },
    globals(),
    __all__,
)
