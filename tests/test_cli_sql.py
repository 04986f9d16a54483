"""``codetape sql``: a query over the views printed as a table, JSON or CSV, or written
to Parquet; refused and bad queries are one message and exit code 2, no traceback."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from codetape.cli import cli
from codetape.store import EXAMPLE_QUERIES
from tests.trajectory_fixtures import make_agent, record_evaluation

pytestmark = pytest.mark.filterwarnings("ignore::codetape.sandbox.NoIsolationWarning")

HOSTILE = "[bold red]owned[/] \x1b[31mred\x1b[0m \u202eevil"


def invoke(home: Path, *args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(cli, ["--home", str(home), "sql", *args], input=input)


@pytest.fixture
def recorded(home: Path) -> Path:
    record_evaluation(failing=(1, 1, 1), passing=(1, 1, 0))
    return home


def test_a_table_of_the_answer_with_its_types(recorded: Path) -> None:
    result = invoke(recorded, "SELECT task, count(*) AS n FROM runs GROUP BY task ORDER BY task")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("task" in line and "n" in line for line in lines)
    assert any("VARCHAR" in line and "BIGINT" in line for line in lines)
    assert any("Refund the order" in line and " 2 " in line for line in lines)
    assert lines[-1] == "3 rows"


def test_the_table_shows_limit_rows_and_says_so(recorded: Path) -> None:
    result = invoke(recorded, "SELECT step FROM steps ORDER BY run_id, step", "--limit", "4")
    assert result.exit_code == 0, result.output
    assert "4 of 11 rows shown (--limit 0 shows all" in result.output
    assert invoke(recorded, "FROM steps", "--limit", "0").output.splitlines()[-1] == "11 rows"


def test_json_csv_and_parquet_carry_every_row(recorded: Path, tmp_path: Path) -> None:
    query = "SELECT run_id, step, status, started_at FROM steps ORDER BY run_id, step"
    as_json = json.loads(invoke(recorded, query, "--json", "--limit", "1").output)
    assert len(as_json) == 11
    assert set(as_json[0]) == {"run_id", "step", "status", "started_at"}
    assert as_json[0]["started_at"].endswith("+00:00")
    rows = list(csv.DictReader(io.StringIO(invoke(recorded, query, "--csv").output)))
    assert [(r["run_id"], int(r["step"]), r["status"]) for r in rows] == [
        (r["run_id"], r["step"], r["status"]) for r in as_json
    ]
    target = tmp_path / "steps.parquet"
    result = invoke(recorded, query, "--parquet", str(target))
    assert result.exit_code == 0, result.output
    assert "wrote 11 rows to" in result.output
    back = duckdb.execute(f"SELECT run_id, step, status FROM '{target}'").fetchall()
    assert back == [(r["run_id"], r["step"], r["status"]) for r in as_json]


def test_a_query_from_a_file_or_standard_input(recorded: Path, tmp_path: Path) -> None:
    query = tmp_path / "failing.sql"
    query.write_text("-- the failing steps\nSELECT count(*) AS failing FROM steps\n"
                     "WHERE status <> 'ok';\n")  # fmt: skip
    assert json.loads(invoke(recorded, "-f", str(query), "--json").output) == [{"failing": 3}]
    piped = invoke(recorded, "-f", "-", "--json", input="SELECT count(*) AS n FROM runs")
    assert json.loads(piped.output) == [{"n": 5}]


def test_the_worked_queries_are_listed_and_run_by_number(recorded: Path) -> None:
    listed = invoke(recorded, "--examples")
    assert listed.exit_code == 0
    for n, example in enumerate(EXAMPLE_QUERIES, 1):
        assert f"{n}. {example.title}" in listed.output
        assert f"codetape sql --example {n}" in listed.output
    errors = json.loads(invoke(recorded, "--example", "6", "--json").output)
    assert errors == [
        {"error_type": t, "steps": 1, "runs": 1}
        for t in ("KeyError", "ValueError", "ZeroDivisionError")
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT nope FROM runs", 'query failed: Binder Error: Referenced column "nope"'),
        ("SELEC 1", "query failed: Parser Error: syntax error"),
        ("COPY runs TO '/tmp/codetape-runs.csv'", "query refused: only reads"),
        ("DROP VIEW steps", "query refused: only reads"),
        ("SELECT * FROM read_csv('/etc/passwd')", "query refused: Permission Error"),
        ("SELECT 1; SELECT 2", "query refused: a query is exactly one statement"),
    ],
)
def test_a_refused_or_bad_query_is_a_message_and_exit_code_2(
    recorded: Path, query: str, message: str
) -> None:
    result = invoke(recorded, query)
    assert result.exit_code == 2
    assert message in result.output
    assert "the views are runs, steps, tool_calls, variables, llm_calls, spans" in result.output
    assert "Traceback" not in result.output


def test_the_line_duckdb_points_at_is_the_querys_own(recorded: Path) -> None:
    result = invoke(recorded, "SELECT agent,\n  nope\nFROM runs")
    assert "LINE 2:   nope" in result.output


def test_a_query_is_needed_once(recorded: Path) -> None:
    assert invoke(recorded).exit_code == 2
    assert invoke(recorded, "SELECT 1", "--example", "1").exit_code == 2
    assert "choose one" in invoke(recorded, "SELECT 1", "--json", "--csv").output


def test_recorded_text_is_shown_as_text(home: Path) -> None:
    make_agent([("Thought: answer.", "final_answer('done')")]).run(HOSTILE)
    table = invoke(home, "SELECT task FROM runs")
    assert table.exit_code == 0, table.output
    assert "[bold red]owned[/]" in table.output  # markup printed, not applied
    assert "\x1b" not in table.output
    assert "\u202e" not in table.output
    assert json.loads(invoke(home, "SELECT task FROM runs", "--json").output) == [{"task": HOSTILE}]
    rows = list(csv.reader(io.StringIO(invoke(home, "SELECT task FROM runs", "--csv").output)))
    assert rows == [["task"], [HOSTILE]]


def test_a_store_that_is_not_there_is_said_so(tmp_path: Path) -> None:
    result = invoke(tmp_path / "nowhere", "SELECT count(*) FROM runs")
    assert result.exit_code == 3
    assert "no store at" in result.output
    assert invoke(tmp_path / "nowhere", "--examples").exit_code == 0
    assert not (tmp_path / "nowhere").exists()
