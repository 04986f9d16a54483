"""``Store.sql``: one read-only query over the store's stable views, answered from an
in-memory copy; anything that writes, attaches, installs or reads files is refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import duckdb
import pytest

import codetape
from codetape.errors import SqlError
from codetape.store.internal import VIEW_NAMES
from tests.trajectory_fixtures import make_agent, record_evaluation

pytestmark = pytest.mark.filterwarnings("ignore::codetape.sandbox.NoIsolationWarning")


@pytest.fixture
def evaluated(home: Path) -> codetape.Store:
    record_evaluation(failing=(1, 1, 1), passing=(1, 1, 0))
    return codetape.Store()


def test_a_query_answers_from_memory_and_leaves_the_file_free(
    evaluated: codetape.Store, home: Path
) -> None:
    relation = evaluated.sql("SELECT agent, count(*) AS runs FROM runs GROUP BY agent")
    # Another process could open the file for writing now: the relation holds a copy.
    duckdb.connect(str(home / "codetape.duckdb")).close()
    assert relation.fetchall() == [("orders_bot", 5)]
    assert relation.columns == ["agent", "runs"]
    assert list(relation.df()["runs"]) == [5]
    # Times are UTC instants, ids text; pyarrow, when installed, gets the same columns.
    started = evaluated.sql("SELECT run_id, started_at FROM runs ORDER BY started_at")
    assert [str(t) for t in started.types] == ["VARCHAR", "TIMESTAMP WITH TIME ZONE"]
    assert started.fetchall()[0][1].utcoffset().total_seconds() == 0
    if importlib.util.find_spec("pyarrow") is not None:
        table = started.arrow().read_all()  # DuckDB 2: a RecordBatchReader
        assert table.column_names == ["run_id", "started_at"]
        assert table.num_rows == 5


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("INSERT INTO runs (run_id) VALUES ('x')", "not a INSERT statement"),
        ("DELETE FROM runs", "not a DELETE statement"),
        ("ATTACH '/tmp/other.duckdb' AS other", "not a ATTACH statement"),
        ("DETACH codetape_store", "not a DETACH statement"),
        ("COPY runs TO '/tmp/codetape-runs.csv'", "not a COPY statement"),
        ("COPY runs FROM '/etc/hostname'", "not a COPY statement"),
        ("INSTALL httpfs", "not a LOAD statement"),
        ("LOAD httpfs", "not a LOAD statement"),
        ("SET enable_external_access = true", "not a SET statement"),
        ("PRAGMA enable_profiling", "not a PRAGMA statement"),
        ("CHECKPOINT", "not a CALL statement"),
        ("SELECT 1; SELECT 2", "exactly one statement, this is 2"),
        ("SELECT 1; DROP VIEW steps", "exactly one statement, this is 2"),
        ("", "the query is empty"),
        ("SELECT * FROM read_csv('/etc/passwd')", "disabled by configuration"),
        ("WITH f AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM f", "disabled by"),
        ("SELECT * FROM (SELECT * FROM read_text('/etc/hostname'))", "disabled by"),
        ("SELECT * FROM read_parquet('/tmp/x.parquet')", "disabled by configuration"),
        ("SELECT * FROM read_json('/tmp/x.json')", "disabled by configuration"),
        ("SELECT * FROM read_blob('/etc/hostname')", "disabled by configuration"),
        ("SELECT * FROM glob('/etc/*')", "disabled by configuration"),
        ("SELECT * FROM 'https://example.com/x.csv'", "disabled by configuration"),
    ],
)
def test_writes_and_file_reads_are_refused(evaluated: codetape.Store, query: str, why: str) -> None:
    with pytest.raises(SqlError) as caught:
        evaluated.sql(query)
    assert caught.value.refused
    assert why in caught.value.reason
    assert all(view in (caught.value.hint or "") for view in VIEW_NAMES)
    assert evaluated.sql("SELECT count(*) FROM runs").fetchall() == [(5,)]


def test_a_replacement_scan_of_a_file_path_reads_nothing(
    evaluated: codetape.Store, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("token\nhunter2\n")
    with pytest.raises(SqlError) as caught:
        evaluated.sql(f"SELECT * FROM '{secret}'")
    assert "hunter2" not in str(caught.value)


def test_bad_sql_says_what_duckdb_said(evaluated: codetape.Store) -> None:
    with pytest.raises(SqlError) as caught:
        evaluated.sql("SELECT nope FROM steps")
    assert not caught.value.refused
    assert 'Referenced column "nope" not found' in caught.value.reason
    with pytest.raises(SqlError, match="syntax error"):
        evaluated.sql("SELEC 1")


def test_parameters_are_data(evaluated: codetape.Store) -> None:
    hostile = "'; DROP VIEW steps; --"
    assert evaluated.sql("SELECT count(*) FROM steps WHERE code = ?", [hostile]).fetchall() == [
        (0,)
    ]
    assert evaluated.sql("SELECT $name AS name", {"name": hostile}).fetchall() == [(hostile,)]
    assert evaluated.sql("SELECT count(*) FROM steps").fetchall() == [(11,)]


def test_a_store_not_yet_created_has_empty_views(tmp_path: Path) -> None:
    store = codetape.Store(tmp_path / "nowhere")
    for view in VIEW_NAMES:
        assert store.sql(f"SELECT count(*) FROM {view}").fetchall() == [(0,)]
    assert not (tmp_path / "nowhere").exists()


def test_a_store_of_schema_3_is_migrated_to_4_and_gets_the_views(
    evaluated: codetape.Store, home: Path
) -> None:
    evaluated.refresh()
    # The store as schema 3 left it: no views.
    con = duckdb.connect(str(home / "codetape.duckdb"))
    con.execute("DROP SCHEMA v1 CASCADE")
    con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    con.close()
    store = codetape.Store(home)
    assert store.sql("SELECT count(*) FROM steps WHERE status <> 'ok'").fetchall() == [(3,)]
    con = duckdb.connect(str(home / "codetape.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [
            ("4",)
        ]
        views = con.execute("SELECT view_name FROM duckdb_views() WHERE schema_name = 'v1'")
        assert sorted(v for (v,) in views.fetchall()) == sorted(VIEW_NAMES)
    finally:
        con.close()


def test_recorded_text_that_looks_like_sql_is_data(home: Path) -> None:
    hostile = "x'); DROP VIEW v1.steps; SELECT ('"
    make_agent([("Thought: answer.", f"final_answer({hostile!r})")]).run(hostile)
    store = codetape.Store(home)
    assert store.sql("SELECT task, final_answer FROM runs").fetchall() == [(hostile, hostile)]
    assert store.sql("SELECT count(*) FROM runs WHERE task = ?", [hostile]).fetchall() == [(1,)]
    assert store.sql("SELECT count(*) FROM steps").fetchall() == [(1,)]


def test_a_query_inside_a_session_of_the_same_store(evaluated: codetape.Store) -> None:
    with evaluated.session():
        runs = evaluated.runs()
        answer = evaluated.sql("SELECT count(*) FROM runs").fetchall()
    assert answer == [(len(runs),)]


def test_variables_of_a_step_whose_manifest_is_a_file_of_the_blob_folder(home: Path) -> None:
    @codetape.code_action
    def execute(code: str, namespace: dict[str, Any]) -> None:
        exec(code, namespace)

    @codetape.agent(name="many_names")
    def solve(task: str) -> None:
        namespace: dict[str, Any] = {}
        execute("\n".join(f"small{i} = {i}" for i in range(3)), namespace)
        # About 300 bytes a variable: the manifest is over 16 KB, a file of its own.
        execute("\n".join(f"w{i} = 'y' * 300" for i in range(90)), namespace)

    solve("name many things")
    store = codetape.Store(home)
    (run,) = store.runs()
    steps = store.steps(run.id)
    manifest = steps[1].state_after
    assert manifest is not None
    assert store.blobs.path(manifest).exists()
    in_database = store.sql("SELECT count(*) FROM main.blobs WHERE digest = ?", [manifest])
    assert in_database.fetchall() == [(0,)]
    rows = store.sql(
        "SELECT step, name, type, digest, size, preview FROM variables "
        "WHERE state = 'after' ORDER BY step, name"
    ).fetchall()
    assert rows == sorted(
        (s.index, v.name, v.type, v.digest, v.size, v.preview)
        for s in steps
        for v in s.variables_after.values()
    )
    assert len(rows) == 3 + 93


def test_views_another_codetape_made_are_made_again(evaluated: codetape.Store, home: Path) -> None:
    evaluated.refresh()
    # Schema 4 with other views: one missing, one of other columns.
    con = duckdb.connect(str(home / "codetape.duckdb"))
    con.execute("DROP VIEW v1.tool_calls")
    con.execute("CREATE OR REPLACE VIEW v1.runs AS SELECT run_id FROM main.runs")
    con.execute("UPDATE meta SET value = 'older' WHERE key = 'views'")
    con.close()
    assert evaluated.sql("SELECT count(*), count(DISTINCT agent) FROM runs").fetchall() == [(5, 1)]
    assert evaluated.sql("SELECT count(*) FROM tool_calls").fetchall() == [(5,)]


def test_a_parse_error_points_at_the_querys_own_line(evaluated: codetape.Store) -> None:
    with pytest.raises(SqlError) as caught:
        evaluated.sql("SELECT 1\nFROM steps WHERE (")
    assert "LINE 2:" in caught.value.reason
