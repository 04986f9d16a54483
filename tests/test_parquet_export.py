"""``codetape export --parquet DIR``: the views ``runs``, ``steps``, ``tool_calls`` and
``spans`` as Parquet, one ``day=YYYY-MM-DD`` folder per UTC day, read back with DuckDB
and pandas as the same rows ``Store.sql`` answers; ``--since`` and ``--overwrite``;
bad directories and a missing store; a process recording alongside loses nothing."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

import codetape
from codetape.cli import cli
from codetape.store.internal import PARQUET_TABLES, export_parquet
from tests.trajectory_fixtures import make_agent, record_evaluation

from .test_store import child_env
from .test_store_concurrency import RECORD, TIMEOUT, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::codetape.sandbox.NoIsolationWarning")

DAY_NS = 86_400 * 10**9
TODAY = dt.datetime.now(dt.UTC).date()
EARLIER = TODAY - dt.timedelta(days=2)
# The order that makes rows comparable, per table.
ORDER = {
    "runs": "run_id",
    "steps": "run_id, step",
    "tool_calls": "run_id, span_id",
    "llm_calls": "run_id, span_id",
    "spans": "trace_id, span_id",
}


def invoke(home: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--home", str(home), "export", *args])


def parquet(directory: Path, table: str, query: str = "SELECT * EXCLUDE (day) FROM t") -> Any:
    """``query`` over the table's files as a reader would open them (``t``)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    files = str(directory / table / "*" / "*.parquet")
    con.execute(f"CREATE VIEW t AS FROM read_parquet('{files}', hive_partitioning = true)")
    return con.sql(query).fetchall()


def rows_of(store: codetape.Store, table: str) -> list[tuple[Any, ...]]:
    return store.sql(f"SELECT * FROM {table} ORDER BY {ORDER[table]}").fetchall()


@pytest.fixture(autouse=True)
def _at_noon_today(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process records as if it were noon (UTC) of ``TODAY``: a test that runs
    across midnight still records its runs on the day it expects."""
    real = time.time_ns
    noon = int(dt.datetime.combine(TODAY, dt.time(12), dt.UTC).timestamp()) * 10**9
    offset = real() - noon
    monkeypatch.setattr(time, "time_ns", lambda: real() - offset)


@pytest.fixture
def recorded(home: Path, monkeypatch: pytest.MonkeyPatch) -> codetape.Store:
    """Three runs started two days ago (the clock set back while they ran) and five
    runs today, of a real smolagents CodeAgent driven by a scripted model."""
    real = time.time_ns
    with monkeypatch.context() as m:
        m.setattr(time, "time_ns", lambda: real() - 2 * DAY_NS)
        record_evaluation(failing=(1, 1, 0), passing=(1, 0, 0))
    record_evaluation(failing=(1, 1, 1), passing=(1, 1, 0))
    store = codetape.Store(home)
    store.refresh()
    return store


def test_the_parquet_is_the_views_rows_by_day(recorded: codetape.Store, tmp_path: Path) -> None:
    out = tmp_path / "archive"
    result = invoke(recorded.home, "--parquet", str(out))
    assert result.exit_code == 0, result.output
    assert f"2 days ({EARLIER} to {TODAY})" in result.output
    for table in PARQUET_TABLES:
        assert sorted(p.name for p in (out / table).iterdir()) == [
            f"day={EARLIER}",
            f"day={TODAY}",
        ]
        # Same columns, same types, same rows as Store.sql over the view.
        view = recorded.sql(f"SELECT * FROM {table} LIMIT 0")
        described = parquet(out, table, "SELECT column_name, column_type FROM (DESCRIBE t)")
        assert described == [
            *zip(view.columns, map(str, view.types), strict=True),
            ("day", "DATE"),
        ]
        ordered = f"SELECT * EXCLUDE (day) FROM t ORDER BY {ORDER[table]}"
        assert parquet(out, table, ordered) == rows_of(recorded, table)
        assert rows_of(recorded, table)
    # The day is the UTC day the run started, for every row of the run.
    assert parquet(out, "runs", "SELECT day, count(*) FROM t GROUP BY day ORDER BY day") == [
        (EARLIER, 3),
        (TODAY, 5),
    ]
    assert parquet(
        out,
        "runs",
        "SELECT count(*) FROM t WHERE day <> CAST(timezone('UTC', started_at) AS DATE)",
    ) == [(0,)]
    for table, run in (
        ("steps", "run_id"),
        ("tool_calls", "run_id"),
        ("llm_calls", "run_id"),
        ("spans", "trace_id"),
    ):
        mismatched = parquet(
            out,
            table,
            f"SELECT count(*) FROM t JOIN read_parquet('{out}/runs/*/*.parquet', "
            f"hive_partitioning = true) r ON r.run_id = t.{run} WHERE r.day <> t.day",
        )
        assert mismatched == [(0,)]


def test_pandas_reads_the_folder_as_one_table(recorded: codetape.Store, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    export_parquet(recorded.home, tmp_path / "archive")
    frame = pd.read_parquet(tmp_path / "archive" / "steps")
    assert len(frame) == len(rows_of(recorded, "steps"))
    assert sorted(map(str, frame["day"].unique())) == [str(EARLIER), str(TODAY)]
    assert str(frame["started_at"].dtype).endswith("UTC]")
    failed = frame[frame["status"] != "ok"]
    assert sorted(failed["error_type"]) == sorted(
        t for (t,) in recorded.sql("SELECT error_type FROM steps WHERE status <> 'ok'").fetchall()
    )


def test_since_exports_the_runs_started_on_or_after_it(
    recorded: codetape.Store, tmp_path: Path
) -> None:
    out = tmp_path / "recent"
    result = invoke(recorded.home, "--parquet", str(out), "--since", str(TODAY))
    assert result.exit_code == 0, result.output
    assert "5 runs" in result.output
    assert f"1 day ({TODAY})" in result.output
    today = recorded.sql(
        "SELECT run_id FROM runs WHERE started_at >= ? ORDER BY run_id",
        [dt.datetime.combine(TODAY, dt.time(), dt.UTC)],
    ).fetchall()
    assert parquet(out, "runs", "SELECT run_id FROM t ORDER BY run_id") == today
    assert [p.name for p in (out / "spans").iterdir()] == [f"day={TODAY}"]
    spans = recorded.sql(
        "SELECT count(*) FROM spans WHERE trace_id IN (SELECT run_id FROM runs WHERE "
        "started_at >= ?)",
        [dt.datetime.combine(TODAY, dt.time(), dt.UTC)],
    ).fetchall()
    assert parquet(out, "spans", "SELECT count(*) FROM t") == spans
    # A day with no runs: nothing written, said so.
    later = invoke(recorded.home, "--parquet", str(tmp_path / "none"), "--since", "2999-01-01")
    assert later.exit_code == 0, later.output
    assert "no runs since 2999-01-01" in later.output


def test_a_directory_with_files_is_refused_unless_overwrite(
    recorded: codetape.Store, tmp_path: Path
) -> None:
    out = tmp_path / "archive"
    assert invoke(recorded.home, "--parquet", str(out)).exit_code == 0
    older = {p: p.read_bytes() for p in (out / "runs" / f"day={EARLIER}").iterdir()}
    refused = invoke(recorded.home, "--parquet", str(out))
    assert refused.exit_code == 2
    assert f"{out} is not empty" in refused.output
    assert "--overwrite" in refused.output
    # One more run today; the next day's export replaces today, keeps the earlier day.
    make_agent([("Thought: done.", "final_answer(1)")], name="late_bot").run("one more")
    recorded.refresh()
    again = invoke(recorded.home, "--parquet", str(out), "--since", str(TODAY), "--overwrite")
    assert again.exit_code == 0, again.output
    assert {p: p.read_bytes() for p in (out / "runs" / f"day={EARLIER}").iterdir()} == older
    assert parquet(out, "runs", "SELECT day, count(*) FROM t GROUP BY day ORDER BY day") == [
        (EARLIER, 3),
        (TODAY, 6),
    ]
    for table in PARQUET_TABLES:
        ordered = f"SELECT * EXCLUDE (day) FROM t ORDER BY {ORDER[table]}"
        assert parquet(out, table, ordered) == rows_of(recorded, table)
    # What is not a day folder of codetape's is never touched; no staging is left.
    (out / "notes.txt").write_text("mine")
    assert invoke(recorded.home, "--parquet", str(out), "--overwrite").exit_code == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*PARQUET_TABLES, "_store", "blobs", "codetape-archive.json", "notes.txt"]
    )


KILLED_EXPORT = """
import os, signal, sys
from pathlib import Path
from codetape.store import _parquet

_parquet._move_in = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
_parquet.export_parquet(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def test_a_killed_exports_staging_is_cleaned_up_and_not_counted(
    recorded: codetape.Store, tmp_path: Path
) -> None:
    out = tmp_path / "archive"
    # An export killed (SIGKILL) once its files are written, before they are moved in.
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_EXPORT, str(recorded.home), str(out)],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [dead] = [p for p in out.iterdir() if p.name.startswith(".codetape-export-")]
    assert list(dead.glob("runs/day=*/*.parquet"))
    # Another export still writing holds its lock.
    alive = out / ".codetape-export-5afe5afe"
    alive.mkdir()
    held = os.open(alive / ".lock", os.O_WRONLY | os.O_CREAT)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = invoke(recorded.home, "--parquet", str(out))
        assert result.exit_code == 0, result.output
        assert not dead.exists()
        assert alive.is_dir()
    finally:
        os.close(held)
    assert parquet(out, "runs", "SELECT count(*) FROM t") == [(8,)]
    # Once its exporter is gone, the next export removes it too.
    again = invoke(recorded.home, "--parquet", str(out), "--overwrite")
    assert again.exit_code == 0, again.output
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_bad_directories_and_a_missing_store_are_clear_errors(
    recorded: codetape.Store, tmp_path: Path
) -> None:
    a_file = tmp_path / "file.parquet"
    a_file.write_text("not a folder")
    result = invoke(recorded.home, "--parquet", str(a_file))
    assert result.exit_code == 2
    assert f"cannot export to {a_file}: it is a file, not a directory" in result.output
    assert "Traceback" not in result.output
    # A folder this user cannot write: root writes anywhere but a read-only file system.
    if os.geteuid() == 0:
        locked = Path("/sys/codetape-export")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
    result = invoke(recorded.home, "--parquet", str(locked))
    assert result.exit_code == 2
    assert f"cannot export to {locked}: " in result.output
    assert "a directory this user can write" in result.output
    # The store itself (or another): an archive there would stop it recording.
    (tmp_path / "spool").mkdir()  # a store nothing was ingested into yet
    for store in (recorded.home, tmp_path):
        result = invoke(recorded.home, "--parquet", str(store), "--overwrite")
        assert result.exit_code == 2
        assert f"cannot export to {store}: it is a codetape store" in result.output
    assert not (recorded.home / "codetape-archive.json").exists()
    missing = tmp_path / "no-store"
    result = invoke(missing, "--parquet", str(tmp_path / "out"))
    assert result.exit_code == 3
    assert f"no store at {missing}" in result.output
    assert not (tmp_path / "out").exists()
    assert not missing.exists()


def test_the_cli_takes_a_bundle_or_parquet(recorded: codetape.Store, tmp_path: Path) -> None:
    ((run_id,),) = recorded.sql("SELECT run_id FROM runs ORDER BY started_at LIMIT 1").fetchall()
    bundle = tmp_path / "one.codetape"
    result = invoke(recorded.home, run_id[:12], "-o", str(bundle))
    assert result.exit_code == 0, result.output
    assert bundle.stat().st_size > 0
    for args, message in [
        ((), "give a RUN and -o FILE (or --parquet DIR for every run)"),
        ((run_id, "--parquet", str(tmp_path / "p")), "--parquet exports every run"),
        (("--since", "2026-01-01", run_id, "-o", str(bundle)), "go with --parquet DIR"),
    ]:
        result = invoke(recorded.home, *args)
        assert result.exit_code == 2
        assert message in result.output
    bad = invoke(recorded.home, "--parquet", str(tmp_path / "p"), "--since", "yesterday")
    assert bad.exit_code == 2
    assert "'yesterday' does not match the format '%Y-%m-%d'" in bad.output


def test_the_store_is_free_once_the_export_returns(
    recorded: codetape.Store, tmp_path: Path
) -> None:
    info = export_parquet(recorded.home, tmp_path / "archive")
    assert info.rows["runs"] == 8
    # Another process could open the file for writing now.
    duckdb.connect(str(recorded.db_path)).close()


def test_a_process_recording_alongside_loses_nothing(home: Path, tmp_path: Path) -> None:
    steps = 40
    go, ready, release = tmp_path / "go", tmp_path / "ready", tmp_path / "release"
    writer = subprocess.Popen(
        [
            sys.executable,
            str(RECORD),
            "alongside",
            str(steps),
            "--go",
            str(go),
            "--step-sleep",
            "0.01",
            "--ready",
            str(ready),
            "--release",
            str(release),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(home),
    )
    store = codetape.Store(home)
    exports: list[Path] = []
    try:
        go.touch()
        while not ready.exists() and writer.poll() is None:
            store.refresh()
            out = tmp_path / f"export-{len(exports)}"
            export_parquet(home, out)
            exports.append(out)
        wait_for(ready, writer)
        release.touch()
        stdout, stderr = writer.communicate(timeout=TIMEOUT)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.communicate()
    assert (writer.returncode, stderr) == (0, "")
    run_id = re.search(r"RUN_ID=(\w+)", stdout)[1]  # type: ignore[index]
    print(f"{len(exports)} exports while the process recorded")
    assert exports
    # Each export is a consistent read: its steps are a prefix of the run's.
    for out in exports:
        if any((out / "steps").glob("*/*.parquet")):
            got = parquet(out, "steps", "SELECT step FROM t ORDER BY step")
            assert got == [(i,) for i in range(len(got))]
    store.refresh()
    assert store.sql("SELECT run_id, status, steps FROM runs").fetchall() == [(run_id, "ok", steps)]
    final = tmp_path / "final"
    export_parquet(home, final)
    assert parquet(final, "steps", "SELECT count(*) FROM t") == [(steps,)]


@pytest.mark.docker
def test_a_sandboxed_run_exports_its_image(home: Path, docker_image: str, tmp_path: Path) -> None:
    from smolagents import CodeAgent

    from codetape.integrations.smolagents import instrument
    from tests.trajectory_fixtures import ScriptedModel, get_orders, refund

    codetape.configure(home=home, otlp=False)
    script = [
        ("Thought: list them.", "orders = get_orders()"),
        ("Thought: refund.", 'final_answer(refund("A-1001")["status"])'),
    ]
    with codetape.Sandbox(image=docker_image) as sandbox:
        agent = CodeAgent(
            tools=[refund, get_orders],
            model=ScriptedModel(script),
            name="sandboxed",
            verbosity_level=-1,
        )
        instrument(agent, sandbox=sandbox).run("Refund in a sandbox")
    store = codetape.Store(home)
    store.refresh()
    export_parquet(home, tmp_path / "archive")
    query = "SELECT step, sandbox_backend, image_id FROM t ORDER BY step"
    got = parquet(tmp_path / "archive", "steps", query)
    assert (
        got
        == store.sql("SELECT step, sandbox_backend, image_id FROM steps ORDER BY step").fetchall()
    )
    assert [backend for _, backend, _ in got] == ["docker", "docker"]
    assert all(image_id for _, _, image_id in got)
    calls = parquet(tmp_path / "archive", "tool_calls", "SELECT tool FROM t ORDER BY started_at")
    assert calls == [("get_orders",), ("refund",), ("final_answer",)]


def test_the_docs_show_the_layout_and_are_linked() -> None:
    root = Path(__file__).parent.parent
    doc = (root / "docs" / "parquet.md").read_text()
    for table in PARQUET_TABLES:
        assert f"{table}/day=" in doc
    assert "read_parquet('archive/runs/*/*.parquet', hive_partitioning = true)" in doc
    assert 'pd.read_parquet("archive/steps")' in doc
    assert "(parquet.md)" in (root / "docs" / "sql.md").read_text()
    assert "(docs/parquet.md)" in (root / "README.md").read_text()
