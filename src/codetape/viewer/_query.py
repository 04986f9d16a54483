"""The Query page's blocks: the worked queries to start from, one read-only SQL query over
the store's views (``Store.sql``, so the rules of ``codetape sql``), its first rows as a
table and every row as a CSV download.

The answer is kept in the session until the next run, so reruns (a download, a resize)
show it again without running the query again. Cells hold text (control and bidi
characters as escapes, long values cut) or numbers; the CSV has every value whole, as
``codetape sql --csv`` prints it.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import streamlit as st

from .._format import cut, visible
from ..errors import CodetapeError, SqlError
from ..store import EXAMPLE_QUERIES
from ..store.internal import plain_value, write_csv
from . import _data
from . import _widgets as w

__all__ = [
    "CELL_CHARS",
    "ROWS_SHOWN",
    "SQL_KEY",
    "Answer",
    "answer",
    "csv_bytes",
    "editor",
    "examples",
    "run",
    "show",
]

# The table shows this many rows; the download has all of them.
ROWS_SHOWN = 1_000
# A cell shows this many characters of a value; the download has all of it.
CELL_CHARS = 2_000
SQL_KEY = "query-sql"
_EXAMPLE_KEY = "query-example"
_DRAFT_KEY = "query-draft"
_ANSWER_KEY = "query-answer"
_INTEGERS = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER",
     "UBIGINT", "HUGEINT", "UHUGEINT"}
)  # fmt: skip
_FLOATS = frozenset({"FLOAT", "DOUBLE"})
# ASCII punctuation: a backslash before each shows it as itself in Markdown.
_MARKDOWN = re.compile(r"([!-/:-@\[-`{-~])")
# Integers past this lose digits as the table's numbers: their column shows text.
_EXACT = 2**53


@dataclass(frozen=True)
class Answer:
    """A query's answer: its first rows as table columns, how many rows it has, and the
    relation (in memory) the CSV is written from when asked for."""

    columns: dict[str, list[Any]]
    integers: tuple[str, ...]
    total: int
    relation: duckdb.DuckDBPyRelation
    # The CSV is written on the download's own thread: one at a time.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def csv(self) -> bytes:
        with self.lock:
            return csv_bytes(self.relation)


def examples() -> None:
    """The worked queries in a select box; choosing one puts its SQL in the text area."""

    def chosen() -> None:
        st.session_state[SQL_KEY] = EXAMPLE_QUERIES[st.session_state[_EXAMPLE_KEY]].sql

    st.selectbox(
        "Worked query",
        range(len(EXAMPLE_QUERIES)),
        format_func=lambda n: f"{n + 1}. {EXAMPLE_QUERIES[n].title}",
        key=_EXAMPLE_KEY,
        on_change=chosen,
        help="Choosing one puts its SQL below; docs/sql.md explains each.",
    )


def editor() -> str:
    """The SQL text area, holding the first worked query to begin with. What it holds
    outlives a visit to another page (Streamlit forgets a widget it did not draw)."""
    if SQL_KEY not in st.session_state:
        st.session_state[SQL_KEY] = st.session_state.get(_DRAFT_KEY, EXAMPLE_QUERIES[0].sql)
    query = st.text_area("SQL", key=SQL_KEY, height=220)
    st.session_state[_DRAFT_KEY] = query
    return query


def run(query: str) -> None:
    """Run ``query`` and keep its answer, or the error, for the page to show."""
    try:
        st.session_state[_ANSWER_KEY] = answer(_data.sql(query))
    except CodetapeError as exc:
        st.session_state[_ANSWER_KEY] = exc


def answer(relation: duckdb.DuckDBPyRelation) -> Answer:
    names = _unique([visible(n) for n in relation.columns])
    kinds = [str(t) for t in relation.types]
    rows = relation.limit(ROWS_SHOWN).fetchall()
    columns: dict[str, list[Any]] = {}
    integers = []
    for at, (name, kind) in enumerate(zip(names, kinds, strict=True)):
        values = [row[at] for row in rows]
        if kind in _INTEGERS and all(v is None or abs(v) <= _EXACT for v in values):
            integers.append(name)
        elif kind not in _FLOATS:
            values = [None if v is None else visible(cut(_text(v), CELL_CHARS)) for v in values]
        columns[name] = values
    return Answer(columns, tuple(integers), relation.shape[0], relation)


def show() -> None:
    """The last answer (its row count, table and download), or why the query did not
    run."""
    kept = st.session_state.get(_ANSWER_KEY)
    if isinstance(kept, SqlError):
        st.error(_error_text(kept))
    elif isinstance(kept, CodetapeError):
        w.problem("The query could not run.", kept)
    elif isinstance(kept, Answer):
        _table(kept)


def _table(answer: Answer) -> None:
    shown = min(answer.total, ROWS_SHOWN)
    if shown < answer.total:
        st.caption(
            f"Showing the first {shown:,} of {answer.total:,} rows: the CSV download has "
            "all of them."
        )
    else:
        st.caption(w.plural(answer.total, "row"))
    st.dataframe(
        answer.columns,
        hide_index=True,
        width="stretch",
        key="query-answer-table",
        column_config={n: st.column_config.NumberColumn(format="%d") for n in answer.integers},
    )
    st.download_button(
        f"Download all {w.plural(answer.total, 'row')} as CSV",
        answer.csv,  # written only when asked for
        file_name="codetape-query.csv",
        mime="text/csv",
        key="query-download",
        on_click="ignore",
    )


def _error_text(exc: SqlError) -> str:
    """A headline, the reason as text (every Markdown character escaped, so it wraps
    and shows as written), DuckDB's ``LINE n`` and caret lines in a code block (a fence
    longer than any run of backticks in them), then the hint (fixed wording and the
    views' names)."""
    reason, _, where = visible(exc.reason).partition("\n\n")
    text = f"**{'Query refused' if exc.refused else 'Query failed'}**\n\n"
    text += "  \n".join(_MARKDOWN.sub(r"\\\1", line) for line in reason.splitlines())
    if where.strip():
        fence = "`" * max(3, _longest_backticks(where) + 1)
        text += f"\n\n{fence}text\n{where}\n{fence}"
    return text + f"\n\n{exc.hint or ''}"


def _longest_backticks(text: str) -> int:
    return max((len(run) for run in re.findall("`+", text)), default=0)


def _unique(names: Sequence[str]) -> list[str]:
    """Column names as the table needs them: one column per name (``n``, ``n (2)``)."""
    seen: set[str] = set()
    unique = []
    for name in names:
        candidate, n = name, 1
        while candidate in seen:
            n += 1
            candidate = f"{name} ({n})"
        seen.add(candidate)
        unique.append(candidate)
    return unique


def _text(value: Any) -> str:
    plain = plain_value(value)
    return plain if isinstance(plain, str) else str(plain)


def csv_bytes(relation: duckdb.DuckDBPyRelation) -> bytes:
    """Every row of ``relation`` as CSV (UTF-8, a header row, NULL as an empty field),
    as ``codetape sql --csv`` prints it."""
    out = io.StringIO()
    write_csv(relation, out)
    return out.getvalue().encode("utf-8")
