"""``codetape sql``: one read-only query over the store's views (docs/sql.md), printed as
a table, JSON or CSV, or written to a Parquet file."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import click
import duckdb
from rich.table import Table

from .._format import cut
from ..store import EXAMPLE_QUERIES
from ..store.internal import plain_value, run_sql, write_csv
from ._app import cli, existing_store, handle_errors, out, print_json, remote_store, shown

__all__: list[str] = []

# A cell of the table shows this many characters at most (--json and --csv: all).
_CELL_CHARS = 300


@cli.command()
@click.argument("query", required=False)
@click.option(
    "-f",
    "--file",
    "query_file",
    type=click.File("r"),
    help="Read the query from this file (- for standard input).",
)
@click.option(
    "--example",
    type=click.IntRange(1, len(EXAMPLE_QUERIES)),
    metavar="N",
    help="Run the N-th worked query of --examples.",
)
@click.option("--examples", "list_examples", is_flag=True, help="List the worked queries.")
@click.option(
    "--limit",
    default=100,
    show_default=True,
    help="How many rows the table shows (0: all); --json, --csv and --parquet get every row.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list of objects.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the rows as CSV, with a header.")
@click.option(
    "--parquet",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the rows to this Parquet file.",
)
@click.pass_context
@handle_errors
def sql(
    ctx: click.Context,
    query: str | None,
    query_file: TextIO | None,
    example: int | None,
    list_examples: bool,
    limit: int,
    as_json: bool,
    as_csv: bool,
    parquet: Path | None,
) -> None:
    """Run one read-only SQL query over the store's views: runs, steps, tool_calls,
    variables, llm_calls and spans (docs/sql.md lists their columns).

    \b
      codetape sql "SELECT agent, count(*) FROM runs GROUP BY agent"
      codetape sql -f query.sql --csv > answer.csv
      codetape sql --examples          worked queries; --example 2 runs the second

    Only reads are allowed: a statement that writes, attaches, copies, installs or
    loads, and any query that reads files or URLs, is refused."""
    if list_examples:
        _print_examples()
        return
    given = [q for q in (query, query_file, example) if q is not None]
    if len(given) != 1:
        raise click.UsageError("give one query: QUERY, -f FILE or --example N")
    if sum((as_json, as_csv)) > 1:
        raise click.UsageError("--json and --csv print different things: choose one")
    if example is not None:
        text = EXAMPLE_QUERIES[example - 1].sql
    elif query_file is not None:
        text = query_file.read()
    else:
        text = query or ""
    store = existing_store(ctx)
    if parquet is not None and remote_store(ctx) is None:
        store.refresh()
        relation = run_sql(store.home, text, parquet=parquet.resolve())
    else:
        relation = store.sql(text)
        if parquet is not None:  # the server's answer, as it came
            relation.write_parquet(str(parquet.resolve()))
    if as_json:
        print_json(
            [
                dict(zip(relation.columns, map(plain_value, row), strict=True))
                for row in relation.fetchall()
            ]
        )
    elif as_csv:
        write_csv(relation, sys.stdout)
    elif parquet is not None:
        rows = relation.shape[0]
        out.print(f"wrote {rows} row{'s' * (rows != 1)} to {shown(str(parquet))}", soft_wrap=True)
    else:
        _print_table(relation, limit)


def _cell(value: Any) -> str:
    if value is None:
        return "[dim]NULL[/]"
    if isinstance(value, float):
        return f"{value:.10g}"
    plain = plain_value(value)
    return shown(cut(plain if isinstance(plain, str) else str(plain), _CELL_CHARS))


def _print_table(relation: duckdb.DuckDBPyRelation, limit: int) -> None:
    total = relation.shape[0]
    rows: Sequence[tuple[Any, ...]] = (relation.limit(limit) if limit > 0 else relation).fetchall()
    table = Table(show_lines=False, header_style="bold")
    for name, kind in zip(relation.columns, relation.types, strict=True):
        table.add_column(f"{shown(name)}\n[dim]{shown(str(kind))}[/]")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    out.print(table)
    if len(rows) < total:
        out.print(
            f"[dim]{len(rows)} of {total} rows shown (--limit 0 shows all; --json, --csv "
            "and --parquet give every row)[/]"
        )
    else:
        out.print(f"[dim]{total} row{'s' * (total != 1)}[/]")


def _print_examples() -> None:
    for n, example in enumerate(EXAMPLE_QUERIES, 1):
        out.print(f"[bold]{n}. {shown(example.title)}[/]  [dim]codetape sql --example {n}[/]")
        for line in example.sql.splitlines():
            out.print(f"    {shown(line)}", soft_wrap=True)
        out.print()
