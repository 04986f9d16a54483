"""The store: durable recording, deduplicated blobs, bad input, run ids, idempotent
ingestion and the ``runs`` filters, checked through the real CLI where a user would
use it (``codetape`` as a subprocess) and ``codetape.Store`` where a program would.

Recordings come from child processes (``tests/_child_record.py``) wherever a process
must die or live on its own; otherwise from this process, configured by ``home``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import duckdb
import pytest
from click.testing import CliRunner

import codetape
from codetape.cli import cli as command_line
from codetape.errors import NewerStoreError
from codetape.sandbox.internal import PICKLE_PROTOCOL

HERE = Path(__file__).parent
RECORD = HERE / "_child_record.py"
DB_NAME = "codetape.duckdb"
TIMEOUT = 120  # a guard against hangs only; nothing here asserts on time


def step_code(tag: str, i: int) -> str:
    """The code of step ``i`` recorded by ``_child_record.py`` (same formula)."""
    return f"v{i} = {i} * {i}\nprint({tag!r}, 'step', {i}, v{i})"


def child_env(home: Path, *, strict: bool = True) -> dict[str, str]:
    """The environment of a child process recording into ``home``. ``strict``: errors
    on its recording path raise (exit code 1) instead of being logged."""
    env = {**os.environ, "CODETAPE_HOME": str(home)}
    env["CODETAPE_STRICT"] = "1" if strict else "0"
    for name in (
        "COLUMNS",
        "LINES",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        env.pop(name, None)
    return env


def record(
    home: Path, name: str, steps: int, *options: str, rc: int = 0, strict: bool = True
) -> str:
    """Record one run in a child process; returns its run id."""
    result = subprocess.run(
        [sys.executable, str(RECORD), name, str(steps), *options],
        capture_output=True,
        text=True,
        env=child_env(home, strict=strict),
        timeout=TIMEOUT,
    )
    assert result.returncode == rc, result.stderr
    found = re.search(r"RUN_ID=([0-9a-f]{32})", result.stdout)
    assert found, result.stdout
    return found[1]


def codetape_command() -> list[str]:
    script = Path(sys.executable).with_name("codetape")
    return [str(script)] if script.exists() else [sys.executable, "-m", "codetape"]


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, as a user runs it (stdout and stderr are pipes)."""
    return subprocess.run(
        [*codetape_command(), "--home", str(home), *args],
        capture_output=True,
        text=True,
        env=child_env(home),
        timeout=TIMEOUT,
    )


def cli_here(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The same command line run in this process (faster; for the checks that do not
    need a process of their own). An unexpected exception fails the test with it."""
    result = CliRunner().invoke(command_line, ["--home", str(home), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def cli_json(home: Path, *args: str, here: bool = False) -> Any:
    result = (cli_here if here else cli)(home, *args, "--json")
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return json.loads(result.stdout)


def clean_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert ``result`` is a failure told in one ``error:`` line (plus optional hint
    lines), with no traceback; return that line."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    others = [line for line in lines if not line.startswith(("error:", "hint:"))]
    assert not others, result.stderr
    return errors[0]


def files_under(*roots: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for root in roots for p in root.rglob("*") if p.is_file()}


def dir_size(root: Path) -> int:
    return sum(files_under(root).values())


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> None:
    exec(code, namespace)


# -- 1. durable: a run killed mid-way ---------------------------------------------


def test_killed_run_shows_as_incomplete_with_the_steps_it_finished(home: Path) -> None:
    run_id = record(home, "killed-bot", 5, "--kill", rc=-signal.SIGKILL)

    runs = cli_json(home, "runs")
    assert [(r["id"], r["status"], r["step_count"]) for r in runs] == [(run_id, "incomplete", 5)]
    assert runs[0]["ended_at"] is None

    table = cli(home, "runs")
    assert (table.returncode, table.stderr) == (0, "")
    rows = [line.split() for line in table.stdout.splitlines() if run_id[:12] in line]
    assert len(rows) == 1, table.stdout
    assert rows[0][:4] == [run_id[:12], "killed-bot", "incomplete", "5"], table.stdout

    detail = cli_json(home, "show", run_id)
    assert detail["run"]["status"] == "incomplete"
    steps = detail["steps"]
    assert [s["index"] for s in steps] == [0, 1, 2, 3, 4]
    assert [s["code"] for s in steps] == [step_code("killed-bot", i) for i in range(5)]
    assert [s["status"] for s in steps] == ["ok"] * 5
    assert [s["stdout"] for s in steps] == [f"killed-bot step {i} {i * i}\n" for i in range(5)]


# -- 3. deduplicated: an unchanged 5 MB list ----------------------------------------


def test_unchanged_big_list_is_stored_once_though_pickled_every_step(
    home: Path, strict: None
) -> None:
    big = list(range(1_000_000))
    one_copy = len(cloudpickle.dumps(big, protocol=PICKLE_PROTOCOL))
    assert 4_500_000 < one_copy < 6_000_000
    # A first run creates the database and the spool file: fixed costs, not growth.
    with codetape.run("warm-up"):
        execute("w = 1", {})
    codetape.Store(home).refresh()
    store_before, blobs_before = dir_size(home), dir_size(home / "blobs")

    namespace: dict[str, Any] = {"big": big}
    with codetape.run("dedup") as run:
        for i in range(20):
            execute(f"i = {i}", namespace)
    store = codetape.Store(home)
    store_growth = dir_size(home) - store_before
    blobs_growth = dir_size(home / "blobs") - blobs_before

    steps = store.steps(run.id)
    assert len(steps) == 20
    snaps = [s.variables_after["big"] for s in steps] + [s.variables_before["big"] for s in steps]
    assert {(v.digest, v.size, v.restorable) for v in snaps} == {(snaps[0].digest, one_copy, True)}
    assert snaps[0].digest is not None
    assert store.blob(snaps[0].digest) == cloudpickle.dumps(big, protocol=PICKLE_PROTOCOL)
    # Stored once: the blobs grew by one copy (plus code and manifests, a few KB), the
    # whole store by well under two copies (20 copies would be ~100 MB). DuckDB's file
    # size moves by a few 256 KB blocks as it checkpoints: the constant.
    assert one_copy <= blobs_growth < 1.1 * one_copy
    assert store_growth < 2 * one_copy + 4_000_000

    # And it really is pickled again at each step: a change in place, in a later step of
    # a run, gives a new digest.
    with codetape.run("mutated") as mutated:
        execute("i = 0", namespace)
        execute("big[0] = -1", namespace)
    step = codetape.Store(home).step(mutated.id, 1)
    assert step.variables_before["big"].digest == snaps[0].digest
    assert step.variables_after["big"].digest != snaps[0].digest


def test_list_changed_in_place_between_steps_is_snapshotted_again(home: Path, strict: None) -> None:
    """The agent may change a variable between two code actions (here: append to a
    list in the namespace). Step 1's variables before must be what step 1's code saw;
    replay restores exactly those. Unchanged values may share a digest, changed ones
    must not."""
    namespace: dict[str, Any] = {"data": [1, 2, 3]}
    with codetape.run("between-steps") as run:
        execute("n = len(data)", namespace)
        namespace["data"].append(4)
        execute("n = len(data)", namespace)
    first, second = codetape.Store(home).steps(run.id)
    assert first.variables_after["data"].preview == "[1, 2, 3]"
    assert second.variables_after["n"].preview == "4"
    assert second.variables_before["data"].preview == "[1, 2, 3, 4]"
    assert second.variables_before["data"].digest != first.variables_after["data"].digest


# -- 4. bad store input ----------------------------------------------------------------


@pytest.fixture
def spool_lines(tmp_path: Path) -> list[bytes]:
    """The spool lines of one finished 3-step run ("spooled"), recorded by a child
    process into a scratch store."""
    scratch = tmp_path / "scratch"
    record(scratch, "spooled", 3)
    [spool] = list((scratch / "spool").rglob("*.jsonl"))
    lines = spool.read_bytes().splitlines(keepends=True)
    assert all(line.endswith(b"\n") for line in lines)
    return lines


def span_count(lines: list[bytes]) -> int:
    return sum(json.loads(line)["t"] == "span" for line in lines)


def dead_writers_spool(home: Path, content: bytes) -> Path:
    """A spool file in spool/live whose writer is gone (nobody holds its flock)."""
    live = home / "spool" / "live"
    live.mkdir(parents=True, exist_ok=True)
    path = live / "deadhost-4242-0badc0de.jsonl"
    path.write_bytes(content)
    return path


def test_torn_last_spool_line_is_skipped_and_counted(home: Path, spool_lines: list[bytes]) -> None:
    # The writer died while writing its last record (the run's root span).
    torn = spool_lines[-1][: len(spool_lines[-1]) // 2]
    assert b"\n" not in torn
    dead_writers_spool(home, b"".join(spool_lines[:-1]) + torn)

    store = codetape.Store(home)
    counts = store.counts()
    assert counts["torn_lines"] == 1
    assert counts["bad_lines"] == 0
    assert (counts["runs"], counts["steps"], counts["spans"]) == (
        1,
        3,
        span_count(spool_lines[:-1]),
    )
    assert counts["pending_spool_files"] == 0
    [run] = store.runs()
    assert (run.name, run.status, run.step_count) == ("spooled", "incomplete", 3)
    assert [s.code for s in store.steps(run.id)] == [step_code("spooled", i) for i in range(3)]
    # Counted once, not again on the next open.
    assert codetape.Store(home).counts()["torn_lines"] == 1


def test_garbage_spool_line_in_the_middle_is_skipped_and_counted(
    home: Path, spool_lines: list[bytes]
) -> None:
    garbage = b"\x00\x01 this is not JSON {{{ \xff\n"
    dead_writers_spool(home, b"".join(spool_lines[:2]) + garbage + b"".join(spool_lines[2:]))

    store = codetape.Store(home)
    counts = store.counts()
    assert counts["bad_lines"] == 1
    assert counts["torn_lines"] == 0
    assert (counts["runs"], counts["steps"], counts["spans"]) == (1, 3, span_count(spool_lines))
    [run] = store.runs()
    assert (run.name, run.status, run.step_count) == ("spooled", "ok", 3)
    assert [s.code for s in store.steps(run.id)] == [step_code("spooled", i) for i in range(3)]


@pytest.mark.parametrize(
    ("junk", "commands"),
    [("text", (["runs"], ["show", "KILLED"])), ("truncated", (["runs", "--failed", "--json"],))],
)
def test_corrupt_database_is_one_clear_error_and_deletes_nothing(
    home: Path, junk: str, commands: tuple[list[str], ...]
) -> None:
    record(home, "before-corruption", 2)
    assert len(cli_json(home, "runs")) == 1  # ingested: its spool file is now in spool/done
    killed = record(home, "killed-after", 2, "--kill", rc=-signal.SIGKILL)  # stays in live
    db = home / DB_NAME
    if junk == "text":
        db.write_bytes(b"this is not a DuckDB database\n" * 500)
    else:  # a copy cut short: a valid header, then nothing
        with db.open("r+b") as f:
            f.truncate(12288)
    db.with_name(DB_NAME + ".wal").unlink(missing_ok=True)
    kept = files_under(home / "blobs", home / "spool")
    assert any("/spool/live/" in p for p in kept)
    assert any("/spool/done/" in p for p in kept)
    junk_bytes = db.read_bytes()

    for args in commands:
        result = cli(home, *(killed if a == "KILLED" else a for a in args))
        line = clean_error(result)
        assert str(db) in line, result.stderr  # names the file, whole, on one line
        hint = result.stderr[result.stderr.index(line) + len(line) :]
        assert "doctor --rebuild" in hint or "mv " in hint, result.stderr  # what to do
        assert result.stdout == ""
    if "doctor --rebuild" in result.stderr:  # the command the hint names exists
        assert "--rebuild" in cli_here(home, "doctor", "--help").stdout

    assert files_under(home / "blobs", home / "spool") == kept
    assert db.read_bytes() == junk_bytes


def test_newer_store_is_refused_naming_the_file(home: Path) -> None:
    record(home, "from-the-future", 1)
    cli_json(home, "runs")
    db = home / DB_NAME
    con = duckdb.connect(str(db))
    try:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    finally:
        con.close()
    # A spool file waiting to be ingested, too (its own ingestion at the run's end
    # fails on the newer store; not strict, so the agent carries on regardless).
    record(home, "pending", 1, strict=False)
    before = hashlib.sha256(db.read_bytes()).hexdigest()

    for args in (["runs", "--json"], ["show", "0"]):
        result = cli(home, *args)
        line = clean_error(result)
        assert "newer" in line, result.stderr
        assert str(db) in line, result.stderr
        assert "99" in line, result.stderr
    with pytest.raises(NewerStoreError):
        codetape.Store(home).runs()

    # Refused means left alone: not migrated, not written to.
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [
            ("99",)
        ]
    finally:
        con.close()


# -- 5. run ids in the CLI -------------------------------------------------------------


def test_run_id_prefixes_missing_runs_and_missing_steps(home: Path) -> None:
    # 17 runs: two of them must share a first hex digit.
    ids = []
    for k in range(17):
        with codetape.run(f"run-{k}") as run:
            if k == 0:
                namespace: dict[str, Any] = {}
                for i in range(5):
                    execute(f"s{i} = {i}", namespace)
        ids.append(run.id)
    assert len(cli_json(home, "runs", "--limit", "100", here=True)) == 17

    # A unique prefix works (the shortest one, and in upper case too).
    target = ids[0]
    n = next(n for n in range(1, 33) if sum(i.startswith(target[:n]) for i in ids) == 1)
    for prefix in (target[:n], target[: n + 2].upper()):
        detail = cli_json(home, "show", prefix, here=True)
        assert detail["run"]["id"] == target
        assert [s["index"] for s in detail["steps"]] == [0, 1, 2, 3, 4]
    assert cli_json(home, "show", target[:n], "--step", "3", here=True)["code"] == "s3 = 3"

    # An ambiguous prefix: one clear line that says so and names the candidates.
    first = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) >= 2)
    matching = [i for i in ids if i.startswith(first)]
    result = cli(home, "show", first)
    line = clean_error(result)
    assert "ambiguous" in line, line
    assert sum(m[:12] in line for m in matching) >= 2, line
    assert result.stdout == ""

    # A run id that is not there (hex, so it could have been a prefix).
    missing = next(
        p
        for p in (
            f"{a}{b}{c}"
            for a in "0123456789abcdef"
            for b in "0123456789abcdef"
            for c in "0123456789abcdef"
        )
        if not any(i.startswith(p) for i in ids)
    )
    for wanted in (missing, missing + "0" * 29):
        result = cli_here(home, "show", wanted)
        line = clean_error(result)
        assert wanted in line, line
        assert result.stdout == ""

    # A step that is not there: the error says which steps there are.
    for args in (["--step", "99"], ["--step", "99", "--json"]):
        result = cli_here(home, "show", target[:n], *args)
        line = clean_error(result)
        assert "99" in line, line
        assert re.search(r"\b0\s*(\.\.|-|to)\s*4\b", line) or "0, 1, 2, 3, 4" in line, line
        assert result.stdout == ""


# -- 6. ingestion is idempotent --------------------------------------------------------


def db_rows(home: Path) -> dict[str, Any]:
    con = duckdb.connect(str(home / DB_NAME), read_only=True)
    try:
        return {
            "spans": con.execute(
                "SELECT trace_id, span_id, name, attributes FROM spans ORDER BY 1, 2"
            ).fetchall(),
            "steps": con.execute(
                "SELECT run_id, span_id, step_index, status FROM steps ORDER BY 1, 2"
            ).fetchall(),
            "runs": con.execute(
                "SELECT run_id, name, status, started_ns, ended_ns FROM runs ORDER BY 1"
            ).fetchall(),
        }
    finally:
        con.close()


def test_ingesting_the_same_spool_again_duplicates_nothing(home: Path) -> None:
    ok_id = record(home, "finished", 3)
    killed_id = record(home, "killed", 2, "--kill", rc=-signal.SIGKILL)
    store = codetape.Store(home)
    assert {(r.id, r.status, r.step_count) for r in store.runs()} == {
        (ok_id, "ok", 3),
        (killed_id, "incomplete", 2),
    }
    done = sorted((home / "spool" / "done").glob("*.jsonl"))
    live = home / "spool" / "live"
    assert len(done) == 2
    assert not list(live.glob("*.jsonl"))
    baseline = db_rows(home)
    assert len(baseline["spans"]) == 1 + 3 + 2  # the killed run has no root span
    assert len(baseline["steps"]) == 5
    counts = store.counts()

    def again() -> None:
        store = codetape.Store(home)
        assert db_rows(home) == baseline
        assert store.counts() == counts
        assert not list(live.glob("*.jsonl"))

    # The same files back in live/ under their own names...
    for path in done:
        shutil.copy(path, live / path.name)
    again()
    # ... under new names (as a restore from a backup might), twice over, so that one
    # ingestion pass sees every record twice ...
    for path in done:
        for copy in ("copy-1", "copy-2"):
            shutil.copy(path, live / f"{copy}-{path.name}")
    again()
    # ... and with the ingestion bookkeeping forgotten, as if never read.
    con = duckdb.connect(str(home / DB_NAME))
    try:
        con.execute('UPDATE ingest_files SET "offset" = 0, done = false')
    finally:
        con.close()
    for path in done:
        shutil.copy(path, live / path.name)
    assert db_rows(home)["runs"] == baseline["runs"]
    codetape.Store(home).refresh()
    assert db_rows(home) == baseline


# -- 7. runs --failed and --agent ------------------------------------------------------


def test_runs_failed_and_agent_filters(home: Path, tmp_path: Path) -> None:
    @codetape.agent(name="bot-a")
    def clean_a(task: str) -> str:
        execute("x = 1", {})
        return "fine"

    @codetape.agent(name="bot-a")
    def erroring_a(task: str) -> str:
        execute("y = 2", {})
        raise RuntimeError("the agent gave up")

    @codetape.agent(name="bot-b")
    def failed_step_b(task: str) -> str:
        with pytest.raises(ZeroDivisionError):
            execute("z = 1 / 0", {})
        execute("z = 0", {})
        return "recovered"

    clean_a("clean")
    with pytest.raises(RuntimeError):
        erroring_a("error")
    failed_step_b("failed step")
    ids = {r.name + ":" + (r.task or ""): r.id for r in codetape.Store(home).runs()}
    clean, error, failed_step = ids["bot-a:clean"], ids["bot-a:error"], ids["bot-b:failed step"]
    incomplete = record(home, "bot-b", 2, "--kill", rc=-signal.SIGKILL)
    clean_b = record(home, "bot-b", 2)

    # A run that is still going (its process alive, holding its spool) is not failed.
    ready, release = tmp_path / "ready", tmp_path / "release"
    live_run = subprocess.Popen(
        [
            sys.executable,
            str(RECORD),
            "bot-c",
            "2",
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
    try:
        deadline = time.monotonic() + TIMEOUT
        while not ready.exists():
            assert live_run.poll() is None, live_run.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)

        every = {r["id"]: r for r in cli_json(home, "runs", here=True)}
        [running] = [r for r in every.values() if r["name"] == "bot-c"]
        assert (running["status"], running["step_count"]) == ("running", 2)
        assert {every[i]["status"] for i in (clean, failed_step, clean_b)} == {"ok"}
        assert every[error]["status"] == "error"
        assert every[incomplete]["status"] == "incomplete"
        assert every[failed_step]["failed_steps"] == 1

        failed = {r["id"] for r in cli_json(home, "runs", "--failed", here=True)}
        assert failed == {error, failed_step, incomplete}
        table = cli(home, "runs", "--failed")
        assert table.returncode == 0, table.stderr
        shown = set(re.findall(r"\b[0-9a-f]{12}\b", table.stdout))
        assert shown == {i[:12] for i in (error, failed_step, incomplete)}, table.stdout

        def ids_of(*args: str) -> set[str]:
            return {r["id"] for r in cli_json(home, "runs", *args, here=True)}

        assert ids_of("--agent", "bot-a") == {clean, error}
        assert ids_of("--agent", "bot-b", "--failed") == {failed_step, incomplete}
        assert cli_json(home, "runs", "--agent", "nobody", here=True) == []
    finally:
        release.touch()
        out, err = live_run.communicate(timeout=TIMEOUT)
    assert live_run.returncode == 0, err
    assert running["id"] in out
    ended = {r["id"]: r["status"] for r in cli_json(home, "runs", here=True)}
    assert ended[running["id"]] == "ok"
    assert running["id"] not in {r["id"] for r in cli_json(home, "runs", "--failed", here=True)}
