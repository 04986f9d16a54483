"""The durable store: per-process spool files, ingestion into DuckDB, blobs, read API.

Users read recorded runs through ``Store`` (``Store.sql`` for SQL over the stable views
of docs/sql.md; ``EXAMPLE_QUERIES`` are worked queries). What codetape's other packages
need of the spool, blobs and ingestion is in ``codetape.store.internal``.
"""

from __future__ import annotations

from ._ingest import IngestStats
from ._read import Store
from ._sql_examples import EXAMPLE_QUERIES, ExampleQuery

__all__ = ["EXAMPLE_QUERIES", "ExampleQuery", "IngestStats", "Store"]
