"""The durable store: per-process spool files, ingestion into DuckDB, blobs, read API.

Users read recorded runs through ``Store`` (``Store.sql`` for SQL over the stable views
of docs/sql.md; ``EXAMPLE_QUERIES`` are worked queries). What codetape's other packages
need of the spool, blobs and ingestion is in ``codetape.store.internal``.

The names here are imported when first used: a process that only records writes the
spool through ``codetape.store.internal`` and never loads the read API's models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from ._ingest import IngestStats
    from ._read import Store
    from ._sql_examples import EXAMPLE_QUERIES, ExampleQuery

_LAZY = {
    "EXAMPLE_QUERIES": "._sql_examples",
    "ExampleQuery": "._sql_examples",
    "IngestStats": "._ingest",
    "Store": "._read",
}

__all__ = ["EXAMPLE_QUERIES", "ExampleQuery", "IngestStats", "Store"]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals(), __all__)
