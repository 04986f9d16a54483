"""The durable store: per-process spool files, ingestion into DuckDB, blobs, read API."""

from __future__ import annotations

from ._blobs import BlobStore, digest_of
from ._home import resolve_home, set_default_home
from ._ingest import BackgroundIngester, IngestStats, ingest, rebuild, try_ingest
from ._read import Store
from ._spool import SpoolWriter

__all__ = [
    "BackgroundIngester",
    "BlobStore",
    "IngestStats",
    "SpoolWriter",
    "Store",
    "digest_of",
    "ingest",
    "rebuild",
    "resolve_home",
    "set_default_home",
    "try_ingest",
]
