"""The durable store: per-process spool files, ingestion into DuckDB, blobs, read API.

Users read recorded runs through ``Store``. What codetape's other packages need of the
spool, blobs and ingestion is in ``codetape.store.internal``.
"""

from __future__ import annotations

from ._ingest import IngestStats
from ._read import Store

__all__ = ["IngestStats", "Store"]
