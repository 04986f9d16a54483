"""``Store`` over a Parquet archive (``codetape export --parquet DIR``): real smolagents
runs (a scripted CodeAgent, observed and in a Docker sandbox, with failing steps, tool
calls, model calls and an output too large for the database) are exported, and the
archive answers every read as the store did, through ``Store``, the CLI and the viewer;
anything that would write to it is refused, saying it is an archive."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import streamlit as st
from click.testing import CliRunner

import codetape
from codetape.cli import cli
from codetape.errors import StoreError
from codetape.replayer import export_run, import_bundle
from codetape.store.internal import PARQUET_TABLES, export_parquet
from codetape.testing import capture
from tests.trajectory_fixtures import ScriptedModel, get_orders, make_agent, record_evaluation
from tests.trajectory_fixtures import refund as refund_tool

from .test_viewer_apptest import facts, open_page

pytestmark = [
    pytest.mark.docker,
    pytest.mark.filterwarnings("ignore::codetape.sandbox.NoIsolationWarning"),
]

VIEWS = {
    "runs": "run_id",
    "steps": "run_id, step",
    "tool_calls": "run_id, span_id",
    "variables": "run_id, step, state, name",
    "llm_calls": "run_id, span_id",
    "spans": "trace_id, span_id",
}
BIG = 20_000  # characters of output: kept as a blob file, not in the database
SANDBOXED = [
    ("Thought: list them.", f"orders = get_orders()\nprint('x' * {BIG})"),
    ("Thought: the 500th.", "print(orders[500])"),
    ("Thought: refund.", 'final_answer(refund("A-1001")["status"])'),
]
ARCHIVE_MESSAGE = "is a Parquet archive (codetape export --parquet), which is read-only"


@dataclass(frozen=True)
class Archived:
    live: codetape.Store
    archive: codetape.Store
    sandboxed: str  # the Docker run's id


@pytest.fixture(scope="module")
def archived(tmp_path_factory: pytest.TempPathFactory, docker_image: str) -> Iterator[Archived]:
    from smolagents import CodeAgent

    from codetape.integrations.smolagents import instrument

    root = tmp_path_factory.mktemp("parquet-store")
    with capture(root / "store") as captured:
        record_evaluation(failing=(1, 1, 1), passing=(1, 1, 0))
        with codetape.Sandbox(image=docker_image) as sandbox:
            agent = CodeAgent(
                tools=[refund_tool, get_orders],
                model=ScriptedModel(SANDBOXED),
                name="sandboxed",
                verbosity_level=-1,
            )
            instrument(agent, sandbox=sandbox).run("Refund in a sandbox")
        live = captured.store
        live.refresh()
        export_parquet(live.home, root / "archive")
        [sandboxed] = [r.id for r in live.runs(agent="sandboxed")]
        yield Archived(live, codetape.Store(root / "archive"), sandboxed)


def _files(directory: Path) -> dict[str, int]:
    return {
        str(p.relative_to(directory)): p.stat().st_mtime_ns
        for p in directory.rglob("*")
        if p.is_file()
    }


def test_every_read_of_the_archive_answers_as_the_store(archived: Archived) -> None:
    live, archive = archived.live, archived.archive
    assert archive.archive
    assert not live.archive
    runs = live.runs()
    assert len(runs) == 6
    assert archive.runs() == runs
    assert archive.agents() == live.agents() == ["orders_bot", "sandboxed"]
    for kwargs in ({"failed": True}, {"search": "refund"}, {"search": "o['amount']"}):
        assert archive.runs(**kwargs) == live.runs(**kwargs)
        assert archive.runs(**kwargs)
        assert archive.count_runs(**kwargs) == live.count_runs(**kwargs)
    for run in runs:
        assert archive.run(run.id[:8]) == live.run(run.id)
        assert archive.detail(run.id) == live.detail(run.id)
        assert archive.steps(run.id) == live.steps(run.id)
        assert archive.steps(run.id, contents=False) == live.steps(run.id, contents=False)
        assert archive.steps(run.id, 1, 1) == live.steps(run.id, 1, 1)
        assert archive.llm_calls(run.id) == live.llm_calls(run.id)
        assert archive.step_codes(run.id) == live.step_codes(run.id)
    assert archive.failures() == live.failures()
    assert {g.error_type for g in archive.failures()} >= {"ValueError", "KeyError", "IndexError"}
    for view, order in VIEWS.items():
        query = f"SELECT * FROM {view} ORDER BY {order}"
        assert archive.sql(query).fetchall() == live.sql(query).fetchall()
        assert archive.sql(query).fetchall(), view
    a, b = (r.id for r in live.runs(agent="orders_bot", limit=2))
    assert codetape.diff_runs(a, b, home=archive.home) == codetape.diff_runs(a, b, home=live.home)


def test_the_sandboxed_run_keeps_its_blobs_tool_calls_and_failure(archived: Archived) -> None:
    steps = archived.archive.steps(archived.sandboxed)
    assert [s.status for s in steps] == ["ok", "error", "ok"]
    assert steps[0].stdout == "x" * BIG + "\n"  # a blob file of the store
    assert steps[0].sandbox.backend == "docker"
    assert steps[0].sandbox.image_id
    assert steps[0].variables_after["orders"].type == "list"
    assert steps[1].error is not None
    assert steps[1].error.type == "IndexError"
    assert "IndexError: list index out of range" in (steps[1].error.traceback or "")
    assert [c.name for s in steps for c in s.tool_calls] == ["get_orders", "refund", "final_answer"]
    assert steps[2].tool_calls[0].result == {"order_id": "A-1001", "status": "refunded"}
    assert all(s.thought for s in steps)
    [run] = archived.archive.runs(agent="sandboxed")
    assert run.llm_calls == 3
    assert run.input_tokens > 0
    assert run.final_answer == "refunded"


def test_the_cli_reads_the_archive(archived: Archived) -> None:
    def shown(home: Path, *args: str) -> str:
        result = CliRunner().invoke(cli, ["--home", str(home), *args])
        assert result.exit_code == 0, result.output
        return result.output

    run = archived.sandboxed
    for args in (
        ("runs",),
        ("runs", "--failed"),
        ("show", run[:8]),
        ("show", run[:8], "--step", "1"),
        ("show", run[:8], "--llm"),
        ("failures",),
        ("sql", "SELECT agent, count(*) FROM runs GROUP BY ALL ORDER BY 1"),
    ):
        assert shown(archived.archive.home, *args) == shown(archived.live.home, *args)
    step = shown(archived.archive.home, "show", run[:8], "--step", "1")
    assert "IndexError" in step
    assert "print(orders[500])" in step


def test_another_process_reads_the_store_built_from_the_archive(archived: Archived) -> None:
    built = archived.archive.db_path
    before = built.stat().st_mtime_ns
    place = built.parent.name.split("-")[0]  # the builds of this archive

    def builds() -> list[str]:
        return sorted(p.name for p in built.parent.parent.iterdir() if place in p.name)

    caches = builds()
    result = subprocess.run(
        [sys.executable, "-m", "codetape", "--home", str(archived.archive.home), "runs"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert archived.sandboxed[:8] in result.stdout
    # Read from the same build: nothing built again, nothing written to it.
    assert builds() == caches
    assert built.stat().st_mtime_ns == before


def test_the_viewer_shows_a_run_and_a_step_from_the_archive(
    archived: Archived, monkeypatch: pytest.MonkeyPatch
) -> None:
    st.cache_data.clear()
    st.cache_resource.clear()
    monkeypatch.setenv("CODETAPE_HOME", str(archived.archive.home))
    at = open_page("runs")
    shown = "\n".join(df.value.to_csv() for df in at.dataframe)
    assert archived.sandboxed[:8] in shown
    assert "orders_bot" in shown
    at = open_page("run", run=archived.sandboxed[:10])
    fields = facts(at)
    assert fields["run"] == archived.sandboxed
    assert fields["status"] == "ok"
    assert fields["steps"] == "3 (1 failed)"
    labels = [e.label for e in at.expander]
    assert any(label.startswith("✗ Step 1 · error") for label in labels), labels
    assert any("print(orders[500])" in c.value for c in at.code)
    assert any("IndexError" in c.value for c in at.code)


def test_writing_to_the_archive_is_refused(archived: Archived, tmp_path: Path) -> None:
    home = archived.archive.home
    before = _files(home)
    with capture(tmp_path / "elsewhere") as elsewhere:
        with pytest.raises(StoreError, match=re.escape(ARCHIVE_MESSAGE)) as raised:
            codetape.configure(home=home, otlp=False)
        assert "cannot record into it" in str(raised.value)
        # What was being recorded goes on being recorded where it was.
        make_agent([("Thought: done.", "final_answer(1)")], name="after").run("one")
        assert [r.name for r in elsewhere.runs()] == ["after"]
    with pytest.raises(StoreError, match=re.escape(ARCHIVE_MESSAGE)):
        codetape.replay(archived.sandboxed, 0, home=home)
    bundle = tmp_path / "run.codetape"
    export_run(archived.sandboxed, bundle, home=home)  # reading it is fine
    with pytest.raises(StoreError, match=re.escape(ARCHIVE_MESSAGE)):
        import_bundle(bundle, home=home)
    result = CliRunner().invoke(cli, ["--home", str(home), "doctor", "--rebuild"])
    assert result.exit_code == 3
    assert ARCHIVE_MESSAGE in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert _files(home) == before
    # Reads still work, and the store it came from is untouched.
    assert archived.archive.runs() == archived.live.runs()


def test_an_archive_exports_as_its_store_did(archived: Archived, tmp_path: Path) -> None:
    again = tmp_path / "again"
    export_parquet(archived.archive.home, again)
    copy = codetape.Store(again)
    assert copy.runs() == archived.live.runs()
    assert copy.steps(archived.sandboxed) == archived.live.steps(archived.sandboxed)


def test_a_later_export_is_read_by_the_next_store_opened(tmp_path: Path) -> None:
    out = tmp_path / "archive"
    with capture(tmp_path / "store") as captured:
        make_agent([("Thought: done.", "final_answer(1)")], name="first").run("one")
        captured.store.refresh()
        export_parquet(captured.home, out)
        assert [r.name for r in codetape.Store(out).runs()] == ["first"]
        make_agent([("Thought: done.", "final_answer(2)")], name="second").run("two")
        captured.store.refresh()
        today = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        export_parquet(captured.home, out, since=today, overwrite=True)
        assert [r.name for r in codetape.Store(out).runs()] == ["second", "first"]
        # The blobs already in DIR were not written again.
        assert len(list((out / "blobs").glob("*.parquet"))) == 2
        assert codetape.Store(out).steps("last") == captured.store.steps("last")


def test_an_export_without_the_store_tables_is_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "archive"
    with capture(tmp_path / "store") as captured:
        make_agent([("Thought: done.", "final_answer(1)")]).run("one")
        captured.store.refresh()
        export_parquet(captured.home, out)
    # What an older codetape wrote: the tables alone.
    (out / "codetape-archive.json").unlink()
    for extra in ("_store", "blobs"):
        for path in sorted((out / extra).rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        (out / extra).rmdir()
    tables = sorted(p.name for p in out.iterdir())
    assert set(tables) <= set(PARQUET_TABLES)
    with pytest.raises(StoreError, match="without the store's tables") as raised:
        codetape.Store(out)
    assert "export --parquet" in (raised.value.hint or "")
    assert sorted(p.name for p in out.iterdir()) == tables  # nothing created there


def test_a_cache_folder_not_of_this_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "archive"
    with capture(tmp_path / "store") as captured:
        make_agent([("Thought: done.", "final_answer(1)")]).run("one")
        captured.store.refresh()
        export_parquet(captured.home, out)
    # Another user's link where the cache folder goes, in a shared temporary folder.
    shared = tmp_path / "tmp"
    (shared / "theirs").mkdir(parents=True)
    (shared / f"codetape-archives-{os.getuid()}").symlink_to(shared / "theirs")
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    with pytest.raises(StoreError, match="is not a folder of this user's alone") as raised:
        codetape.Store(out)
    assert "TMPDIR" in (raised.value.hint or "")
    assert not list((shared / "theirs").iterdir())
