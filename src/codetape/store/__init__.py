"""The durable store: per-process spool files, ingestion into DuckDB, blobs, read API.

Users read recorded runs through ``Store`` (``Store.sql`` for SQL over the stable views
of docs/sql.md; ``EXAMPLE_QUERIES`` are worked queries). What codetape's other packages
need of the spool, blobs and ingestion is in ``codetape.store.internal``.

The names here are imported when first used: a process that only records writes the
spool through ``codetape.store.internal`` and never loads the read API's models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
