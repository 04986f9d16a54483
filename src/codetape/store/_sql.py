"""Read-only SQL over a store's views (``Store.sql``, ``codetape sql``).

A query is one statement that reads: DuckDB parses it (``extract_statements``) and
anything but a SELECT (``WITH``, ``FROM``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``) is
refused before it runs. It then runs in an in-memory DuckDB that has the store's file
attached read-only, with external access disabled and the configuration locked: no
file, URL or extension can be read, attached, installed or written, however the query
names it (``read_csv``, ``FROM 'file.csv'``, a CTE...). The answer is copied into that
in-memory database and the store's file detached before it is returned, so the
relation a caller keeps never holds the file other processes ingest into.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import duckdb

from ..errors import BlobNotFoundError, SqlError
from ._archive import reads_of
from ._blobs import BlobStore
from ._db import (
    _SCHEMA,
    DB_NAME,
    SCHEMA_VERSION,
    _check_schema,
    _process_lock,
    connect,
    opening,
    views_current,
)
from ._views import VIEW_NAMES, VIEWS, VIEWS_SCHEMA, missing_manifests, variables_view

__all__ = ["Params", "plain_value", "read_statement", "run_sql", "write_csv"]

Params = Sequence[Any] | Mapping[str, Any] | None

_ALIAS = "codetape_store"
_RESULT = "codetape_result"
_LINE = re.compile(r"^LINE (\d+):", re.MULTILINE)


def _literal(path: Path) -> str:
    """A path as an SQL string literal (ATTACH, SET and COPY take no parameters)."""
    return "'" + str(path).replace("'", "''") + "'"


def _refused(reason: str) -> SqlError:
    return SqlError(reason, refused=True, views=VIEW_NAMES)


def _failed(exc: duckdb.Error, ours: int = 1) -> SqlError:
    # The query runs after a line of ours (CREATE TEMP TABLE ... AS): its line numbers.
    # ``ours=0`` for the parse of the query alone.
    message = _LINE.sub(lambda m: f"LINE {int(m[1]) - ours}:", str(exc).strip())
    refused = isinstance(exc, duckdb.PermissionException) or "disabled by configuration" in message
    return SqlError(message, refused=refused, views=VIEW_NAMES)


def read_statement(query: str) -> str:
    """The text of ``query``'s one statement, if it is a read; else ``SqlError``."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise _failed(exc, ours=0) from None
    if len(statements) != 1:
        raise _refused(
            f"a query is exactly one statement, this is {len(statements)}"
            if statements
            else "the query is empty"
        )
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise _refused(
            f"only reads (SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE) are allowed, "
            f"not a {kind.name} statement: the store is read-only here"
        )
    text = statements[0].query.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


def run_sql(
    home: Path,
    query: str,
    params: Params = None,
    *,
    parquet: Path | None = None,
    wait_s: float = 10.0,
) -> duckdb.DuckDBPyRelation:
    """The answer of ``query`` on the store's views, as a relation over an in-memory
    copy (a ``duckdb.DuckDBPyRelation``), also written to the ``parquet`` file if given
    (the one path the connection may write: the query itself cannot). Raises
    ``SqlError`` for a refused or bad query. The caller catches up ingestion first."""
    text = read_statement(query)
    home = reads_of(home)  # an archive: the store built from it
    con = duckdb.connect(":memory:")
    try:
        # Asked before the store is attached: with its views there, DuckDB would name
        # the tables under them instead.
        wants_variables = "variables" in _names(con, text)
        with _attached(con, home, wait_s) as attached:
            if attached and wants_variables:
                _large_manifests(con, home)
            if parquet is not None:
                con.execute(f"SET allowed_paths = [{_literal(parquet)}]")
            # No spilling to disk: DuckDB would let queries read its temporary folder.
            con.execute("SET temp_directory = ''")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            try:
                # The newline: a query may end in a -- comment.
                con.execute(
                    f"CREATE TEMP TABLE {_RESULT} AS\n{text}\n",
                    params if params is not None else None,
                )
            except duckdb.Error as exc:
                raise _failed(exc) from None
        if parquet is not None:
            _write_parquet(con, parquet)
        return con.sql(f"FROM temp.main.{_RESULT}")
    except BaseException:
        con.close()
        raise


def _write_parquet(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    try:
        con.execute(f"COPY temp.main.{_RESULT} TO {_literal(path)} (FORMAT parquet)")
    except duckdb.Error as exc:
        raise SqlError(
            f"cannot write {path}: {str(exc).strip()}", refused=False, views=VIEW_NAMES
        ) from None


def _names(con: duckdb.DuckDBPyConnection, text: str) -> set[str]:
    """The names of the tables and views a query reads, as written."""
    try:
        return set(con.get_table_names(text))
    except duckdb.Error:
        return set()  # the query's own error is told when it runs


def _large_manifests(con: duckdb.DuckDBPyConnection, home: Path) -> None:
    """For a query of ``variables``: the variable manifests over 16 KB, which are files
    of the blob folder rather than rows of the database, read into memory and a
    ``variables`` view over them put first on the search path."""
    digests = [d for (d,) in con.execute(missing_manifests(f"{_ALIAS}.main")).fetchall()]
    files = BlobStore(home / "blobs")
    rows = []
    for digest in digests:
        with contextlib.suppress(BlobNotFoundError):
            rows.append((digest, files.get(digest)))
    if not rows:
        return
    con.execute("CREATE TABLE memory.main.codetape_manifests (digest VARCHAR, data BLOB)")
    con.executemany("INSERT INTO memory.main.codetape_manifests VALUES (?, ?)", rows)
    blobs = (
        f"(SELECT digest, data FROM {_ALIAS}.main.blobs "
        "UNION ALL SELECT digest, data FROM memory.main.codetape_manifests)"
    )
    con.execute(f"CREATE SCHEMA memory.{VIEWS_SCHEMA}")
    con.execute(variables_view(f"memory.{VIEWS_SCHEMA}", f"{_ALIAS}.main", blobs))
    con.execute(f"SET search_path = 'memory.{VIEWS_SCHEMA},{_ALIAS}.{VIEWS_SCHEMA}'")


@contextlib.contextmanager
def _attached(con: duckdb.DuckDBPyConnection, home: Path, wait_s: float) -> Iterator[bool]:
    """The store's views as the connection's unqualified names while inside; whether a
    store's file is attached (not for a store not yet created)."""
    path = home / DB_NAME
    if not home.is_dir():  # no store yet: empty views, and nothing created
        con.execute(_SCHEMA)
        con.execute(VIEWS)
        con.execute(f"SET search_path = '{VIEWS_SCHEMA}'")
        yield False
        return
    with _process_lock(path, wait_s):
        if not path.exists():
            with connect(home, read_only=False, wait_s=wait_s):
                pass  # created
        _attach(con, path, wait_s)
        try:
            if not _current(con, path):
                con.execute(f"DETACH {_ALIAS}")
                with connect(home, read_only=False, wait_s=wait_s):
                    pass  # migrated
                _attach(con, path, wait_s)
            con.execute(f"SET search_path = '{_ALIAS}.{VIEWS_SCHEMA}'")
            yield True
        finally:
            # The search path made the store the default database: not detachable.
            con.execute("USE memory")
            # IF EXISTS: attaching it again after a migration may have failed.
            con.execute(f"DETACH DATABASE IF EXISTS {_ALIAS}")


def _current(con: duckdb.DuckDBPyConnection, path: Path) -> bool:
    """Whether the attached store has this codetape's schema and views (a newer one
    raises ``NewerStoreError``)."""
    con.execute(f"USE {_ALIAS}")
    try:
        return _check_schema(con, path, read_only=True) == SCHEMA_VERSION and views_current(con)
    finally:
        con.execute("USE memory")


def _attach(con: duckdb.DuckDBPyConnection, path: Path, wait_s: float) -> None:
    opening(path, wait_s, lambda: con.execute(f"ATTACH {_literal(path)} AS {_ALIAS} (READ_ONLY)"))


def plain_value(value: Any) -> Any:
    """A value of an answer as ``codetape sql --json`` and ``--csv`` have it: times in
    ISO 8601, bytes in base64, decimals and intervals as text."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Decimal | dt.timedelta):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(v) for v in value]
    return value


def write_csv(relation: duckdb.DuckDBPyRelation, stream: TextIO) -> None:
    """Every row of ``relation`` as CSV: a header row, NULL as an empty field, values
    as ``plain_value`` has them (the CLI's ``--csv`` and the viewer's download)."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(relation.columns)
    for row in relation.iter_rows():
        writer.writerow(["" if v is None else plain_value(v) for v in row])
