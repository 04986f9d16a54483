"""The viewer's Query page, driven by AppTest against a store of real recordings
(observed runs through @code_action): a worked query answers with the rows the runs make,
statements that write or read files are refused with DuckDB's message and leave the
store as it was, bad SQL shows DuckDB's message, recorded strings show as text, a long
answer is cut to its first rows with all of them in the CSV download."""

from __future__ import annotations

import contextlib
import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from click.testing import CliRunner
from streamlit.testing.v1 import AppTest

import codetape
from codetape._format import visible
from codetape.cli import cli
from codetape.errors import SqlError
from codetape.store import EXAMPLE_QUERIES
from codetape.testing import capture
from codetape.viewer import _query

from .test_viewer_apptest import IMG, LINK, SCRIPT, assert_inert, open_page

BOLD = "**bold**"
RTL = "abc\u202edef"
HOSTILE = f"{SCRIPT} {IMG} {LINK} {BOLD} {RTL}"
MOST_COMMON_ERRORS = next(
    n for n, e in enumerate(EXAMPLE_QUERIES) if e.title == "The most common errors"
)


@codetape.code_action
def _execute(code: str, namespace: dict[str, Any]) -> None:
    exec(compile(code, "<code action>", "exec"), namespace)


def _record(name: str, snippets: list[str]) -> str:
    namespace: dict[str, Any] = {}
    with codetape.run(name, task="query me") as run:
        for code in snippets:
            with contextlib.suppress(Exception):
                _execute(code, namespace)
    return run.id


@pytest.fixture(scope="module")
def store_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three runs: two steps that raise KeyError (in two runs), one ZeroDivisionError,
    and a step whose output and variable carry hostile strings."""
    home = tmp_path_factory.mktemp("query") / "store"
    with pytest.MonkeyPatch.context() as mp, capture(home):
        mp.setenv("CODETAPE_HOME", str(home))
        mp.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        mp.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        _record("orders", ["order = {'id': 1}", "order['total']", "1 / 0"])
        _record("orders", ["order = {'id': 2}", "order['customer']"])
        _record("hostile", [f"note = {HOSTILE!r}\nprint(note)"])
    return home


@pytest.fixture
def viewer_home(store_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CODETAPE_HOME", str(store_home))
    st.cache_data.clear()
    st.cache_resource.clear()
    return store_home


def run_query(at: AppTest, query: str) -> AppTest:
    at.text_area(key=_query.SQL_KEY).input(query)
    at.button(key="query-run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def answer(at: AppTest) -> Any:
    [table] = at.dataframe
    return table.value


def error_shown(at: AppTest) -> str:
    """The one error on the page as its reader sees the text (Markdown escapes undone)."""
    [error] = at.error
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", str(error.value))


def step_count(home: Path) -> int:
    return int(codetape.Store(home).sql("SELECT count(*) FROM steps").fetchall()[0][0])


def sql_error(home: Path, query: str) -> SqlError:
    with pytest.raises(SqlError) as caught:
        codetape.Store(home).sql(query)
    return caught.value


def test_the_query_page_is_in_the_navigation(viewer_home: Path) -> None:
    at = open_page("query")
    assert at.title[0].value == "Query"
    # It starts from the first worked query, every one of them a choice by its title.
    assert at.text_area(key=_query.SQL_KEY).value == EXAMPLE_QUERIES[0].sql
    picker = at.selectbox(key="query-example")
    assert picker.options == [f"{n}. {e.title}" for n, e in enumerate(EXAMPLE_QUERIES, 1)]
    assert not at.dataframe  # nothing runs before Run


def test_the_query_and_its_answer_outlive_a_visit_to_another_page(viewer_home: Path) -> None:
    at = run_query(open_page("query"), "SELECT count(*) AS n FROM runs")
    at.switch_page("pages/runs.py").run()
    assert at.title[0].value == "Runs"
    at.switch_page("pages/query.py").run()
    assert at.text_area(key=_query.SQL_KEY).value == "SELECT count(*) AS n FROM runs"
    assert list(answer(at)["n"]) == [3]


def test_a_worked_query_answers_with_the_recorded_rows(viewer_home: Path) -> None:
    at = open_page("query")
    at.selectbox(key="query-example").select(MOST_COMMON_ERRORS).run()
    query = EXAMPLE_QUERIES[MOST_COMMON_ERRORS].sql
    assert at.text_area(key=_query.SQL_KEY).value == query
    at.button(key="query-run").click().run()
    assert not at.exception
    rows = answer(at)
    assert list(rows.columns) == ["error_type", "steps", "runs"]
    assert [tuple(r) for r in rows.itertuples(index=False)] == [
        ("KeyError", 2, 2),
        ("ZeroDivisionError", 1, 1),
    ]
    assert [c.value for c in at.caption][-1] == "2 rows"
    download = at.get("download_button")
    assert len(download) == 1
    assert not at.error
    assert_inert(at)


def test_the_download_is_what_codetape_sql_csv_prints(viewer_home: Path) -> None:
    query = EXAMPLE_QUERIES[MOST_COMMON_ERRORS].sql
    at = run_query(open_page("query"), query)
    downloaded = at.session_state["query-answer"].csv().decode("utf-8")
    printed = CliRunner().invoke(cli, ["--home", str(viewer_home), "sql", "--csv", query])
    assert printed.exit_code == 0, printed.output
    assert downloaded == printed.output
    assert list(csv.reader(io.StringIO(downloaded)))[1] == ["KeyError", "2", "2"]


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM steps",
        "DROP VIEW steps",
        "COPY steps TO '{out}'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "WITH f AS (SELECT * FROM read_text('/etc/passwd')) SELECT * FROM f",
        "SELECT * FROM '/etc/passwd'",
        "ATTACH '{out}.db' AS other",
        "INSTALL httpfs",
        "SELECT 1; DELETE FROM runs",
    ],
)
def test_writing_or_file_reading_statements_are_refused(
    viewer_home: Path, tmp_path: Path, statement: str
) -> None:
    out = tmp_path / "out.csv"
    query = statement.format(out=out)
    before = step_count(viewer_home)
    expected = sql_error(viewer_home, query)
    # A path in FROM is no table to DuckDB once files are off: failed, not refused.
    assert expected.refused or "/etc/passwd does not exist" in expected.message
    at = run_query(open_page("query"), query)
    shown = error_shown(at)
    assert shown.startswith("**Query refused**" if expected.refused else "**Query failed**")
    for line in visible(expected.reason).splitlines():
        assert line in shown
    assert "root:" not in shown
    assert "the views are runs, steps, tool_calls" in shown  # the hint
    assert not at.dataframe
    assert step_count(viewer_home) == before
    assert not out.exists()
    assert not Path(f"{out}.db").exists()


def test_a_syntax_error_shows_duckdbs_message(viewer_home: Path) -> None:
    at = run_query(open_page("query"), "SELEC agent FROM runs")
    shown = error_shown(at)
    assert shown.startswith("**Query failed**")
    assert 'Parser Error: syntax error at or near "SELEC"' in shown
    assert "LINE 1: SELEC agent FROM runs" in shown  # the query's own line
    run_query(at, "SELECT agent,\n  count(*) FROM runs\nGROUP BY agent agent")
    assert "LINE 3: GROUP BY agent agent" in error_shown(at)
    assert not at.dataframe
    # The next good query replaces the error with its answer.
    run_query(at, "SELECT count(*) AS n FROM runs")
    assert not at.error
    assert list(answer(at)["n"]) == [3]


def test_recorded_strings_show_as_text(viewer_home: Path) -> None:
    query = (
        'SELECT stdout_preview AS out, code, agent AS "<b>{agent}</b>" FROM steps '
        "WHERE agent = 'hostile'"
    )
    at = run_query(open_page("query"), query)
    [row] = answer(at).to_dict("records")
    assert row["out"] == visible(HOSTILE) + "\n"
    assert row["out"].endswith("abc\\u202edef\n")  # the override as an escape
    assert row["code"] == f"note = {HOSTILE!r}\nprint(note)".replace("\u202e", "\\u202e")
    assert row["<b>{agent}</b>"] == "hostile"
    assert_inert(at)
    for text in (e.value for e in at.error):
        assert SCRIPT not in text


def test_a_long_answer_shows_its_first_rows_and_downloads_all(viewer_home: Path) -> None:
    total = _query.ROWS_SHOWN + 1_500
    at = run_query(
        open_page("query"), f"SELECT range AS n, 'row ' || range AS label FROM range({total})"
    )
    rows = answer(at)
    assert len(rows) == _query.ROWS_SHOWN
    assert list(rows["n"][:3]) == [0, 1, 2]
    assert f"Showing the first 1,000 of {total:,} rows" in at.caption[-1].value
    downloaded = list(csv.reader(io.StringIO(at.session_state["query-answer"].csv().decode())))
    assert len(downloaded) == total + 1
    assert downloaded[-1] == [str(total - 1), f"row {total - 1}"]


def test_any_column_type_shows(viewer_home: Path) -> None:
    query = (
        "SELECT 1 AS a, 'x' AS a, NULL::INTEGER AS missing, [1, 2] AS list, "
        "{'k': 'v'} AS struct, TIMESTAMPTZ '2026-01-02 03:04:05+00' AS at, "
        "1.50::DECIMAL(5, 2) AS price, 2::BIGINT ** 53 AS exact, 1::UBIGINT << 60 AS big, "
        "'\\x00'::BLOB AS bytes, INTERVAL 90 MINUTE AS took, true AS ok, 0.25::DOUBLE AS ratio"
    )
    at = run_query(open_page("query"), query)
    [row] = answer(at).to_dict("records")
    assert row["a"] == 1
    assert row["a_1"] == "x"  # DuckDB names the second a_1
    assert row["list"] == "[1, 2]"
    assert row["struct"] == "{'k': 'v'}"
    assert row["at"] == "2026-01-02T03:04:05+00:00"
    assert row["price"] == "1.50"
    assert row["exact"] == 2**53
    assert row["big"] == str(2**60)  # past 2**53: shown as text, every digit
    assert row["bytes"] == "AA=="  # base64, as codetape sql --json has it
    assert row["took"] == "1:30:00"
    assert row["ok"] == "True"
    assert row["ratio"] == 0.25


def test_a_store_nothing_recorded_into_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "not-yet"
    monkeypatch.setenv("CODETAPE_HOME", str(home))
    at = open_page("query")
    assert [i.value for i in at.info] == ["No runs yet: nothing has recorded into this store."]
    assert not home.exists()


def test_an_error_quoting_the_query_shows_it_as_text(viewer_home: Path) -> None:
    name = f"{BOLD} {IMG} {LINK}"
    at = run_query(open_page("query"), f'SELECT * FROM "{name}"')
    [error] = at.error
    assert f"Table with name {name} does not exist" in error_shown(at)
    # Every Markdown character of the message is escaped: none of it is markup.
    for payload in (BOLD, IMG, LINK):
        assert payload not in str(error.value).split("```")[0]
