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

import contextlib
import random
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb

from ..errors import SqlError, StoreBusyError
from ._db import (
    _SCHEMA,
    DB_NAME,
    SCHEMA_VERSION,
    _check_schema,
    _corrupt,
    _process_lock,
    connect,
    disk_full_error,
    is_disk_full,
    is_lock_error,
)
from ._views import VIEW_NAMES, VIEWS, VIEWS_SCHEMA

__all__ = ["Params", "read_statement", "run_sql"]

Params = Sequence[Any] | Mapping[str, Any] | None

_ALIAS = "codetape_store"
_RESULT = "codetape_result"
_LINE = re.compile(r"^LINE (\d+):", re.MULTILINE)


def _literal(path: Path) -> str:
    """A path as an SQL string literal (ATTACH, SET and COPY take no parameters)."""
    return "'" + str(path).replace("'", "''") + "'"


def _refused(reason: str) -> SqlError:
    return SqlError(reason, refused=True, views=VIEW_NAMES)


def _failed(exc: duckdb.Error) -> SqlError:
    # The query runs after a line of ours (CREATE TEMP TABLE ... AS): its line numbers.
    message = _LINE.sub(lambda m: f"LINE {int(m[1]) - 1}:", str(exc).strip())
    refused = isinstance(exc, duckdb.PermissionException) or "disabled by configuration" in message
    return SqlError(message, refused=refused, views=VIEW_NAMES)


def read_statement(query: str) -> str:
    """The text of ``query``'s one statement, if it is a read; else ``SqlError``."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise _failed(exc) from None
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
    con = duckdb.connect(":memory:")
    try:
        with _attached(con, home, wait_s):
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


@contextlib.contextmanager
def _attached(con: duckdb.DuckDBPyConnection, home: Path, wait_s: float) -> Iterator[None]:
    """The store's views as the connection's unqualified names while inside."""
    path = home / DB_NAME
    if not home.is_dir():  # no store yet: empty views, and nothing created
        con.execute(_SCHEMA)
        con.execute(VIEWS)
        con.execute(f"SET search_path = '{VIEWS_SCHEMA}'")
        yield
        return
    with _process_lock(path, wait_s):
        if not path.exists():
            with connect(home, read_only=False, wait_s=wait_s):
                pass  # created
        _attach(con, path, wait_s)
        try:
            if _version(con, path) < SCHEMA_VERSION:
                con.execute(f"DETACH {_ALIAS}")
                with connect(home, read_only=False, wait_s=wait_s):
                    pass  # migrated
                _attach(con, path, wait_s)
            con.execute(f"SET search_path = '{_ALIAS}.{VIEWS_SCHEMA}'")
            yield
        finally:
            # The search path made the store the default database: not detachable.
            con.execute("USE memory")
            con.execute(f"DETACH {_ALIAS}")


def _version(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    con.execute(f"USE {_ALIAS}")
    try:
        return _check_schema(con, path, read_only=True)
    finally:
        con.execute("USE memory")


def _attach(con: duckdb.DuckDBPyConnection, path: Path, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    delay = 0.002
    while True:
        try:
            con.execute(f"ATTACH {_literal(path)} AS {_ALIAS} (READ_ONLY)")
            return
        except duckdb.Error as exc:
            if is_disk_full(exc):
                raise disk_full_error(path.parent, exc) from exc
            if not is_lock_error(exc):
                raise _corrupt(path, exc) from exc
            if time.monotonic() >= deadline:
                raise StoreBusyError(
                    f"the store database {path} stayed locked by another process for {wait_s:.1f}s",
                    path=path,
                    hint="another codetape process is ingesting; try again in a moment",
                ) from exc
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.1)
