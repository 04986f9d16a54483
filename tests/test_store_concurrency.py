"""The store under concurrent use: parallel recording processes, readers that ingest
while agents write, and readers and recorders inside one process.

DESIGN.md, "Store: durable first, queryable second": every process appends to a spool
file of its own, ingestion moves the records into DuckDB in short transactions, and
readers open DuckDB read-only per query, retrying on a lock error. Nobody sees an
error for that, and every record lands in DuckDB exactly once. And read-your-writes: a
``Store`` sees every run this process has finished, whenever it was opened, and every
read sees what other processes had spooled when it began.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

import codetape
from codetape.sandbox import NoIsolationWarning
from codetape.store import _read as store_read
from codetape.store.internal import spool_changed, try_ingest, wait_for_background

from .test_store import child_env, record, step_code

HERE = Path(__file__).parent
RECORD = HERE / "_child_record.py"
READER = HERE / "_child_reader.py"
DB_NAME = "codetape.duckdb"
TIMEOUT = 300  # a guard against hangs only; nothing here asserts on time

WRITERS = 4
STEPS = 50


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codetape", "--home", str(home), *args],
        capture_output=True,
        text=True,
        env=child_env(home),
        timeout=TIMEOUT,
    )


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    """Wait until ``proc`` creates ``path``; fail if it exits first."""
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"child exited {proc.returncode} before creating {path.name}:\n{err}")
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.01)


def test_four_writers_and_a_reader_see_no_error_and_every_step_once(
    home: Path, tmp_path: Path
) -> None:
    signals = tmp_path / "signals"
    signals.mkdir()
    go, ready, stop = signals / "go", signals / "reader-ready", signals / "stop"
    env = child_env(home)

    # The reader starts first and reads an empty store once; then the writers start
    # together and the reader keeps reading (through Store and the CLI) until they end.
    reader = subprocess.Popen(
        [sys.executable, str(READER), str(home), str(ready), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                str(RECORD),
                f"writer-{k}",
                str(STEPS),
                "--go",
                str(go),
                "--step-sleep",
                "0.03",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for k in range(WRITERS)
    ]
    try:
        wait_for(ready, reader)
        go.touch()
        outputs = [w.communicate(timeout=TIMEOUT) for w in writers]
        results = [(w.returncode, out, err) for w, (out, err) in zip(writers, outputs, strict=True)]
        stop.touch()
        reader_out, reader_err = reader.communicate(timeout=TIMEOUT)
    finally:
        for proc in (*writers, reader):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    run_ids: dict[str, str] = {}
    for k, (rc, out, err) in enumerate(results):
        assert (rc, err) == (0, ""), f"writer-{k} exited {rc}:\n{err}"
        run_ids[f"writer-{k}"] = re.search(r"RUN_ID=(\w+)", out)[1]  # type: ignore[index]
    assert reader.returncode == 0, f"reader exited {reader.returncode}:\n{reader_err}"
    assert reader_err == ""

    # The reader's last `runs --json` began after every writer had exited.
    summary = json.loads(reader_out)
    print({k: v for k, v in summary.items() if k != "last_cli"})
    assert summary["rounds"] >= 2
    assert summary["last_cli"] == {rid: ["ok", STEPS] for rid in run_ids.values()}

    store = codetape.Store(home)
    runs = {r.id: r for r in store.runs(limit=100)}
    assert set(runs) == set(run_ids.values())
    for name, run_id in run_ids.items():
        run = runs[run_id]
        assert (run.name, run.status, run.step_count, run.failed_steps) == (name, "ok", STEPS, 0)
        steps = store.steps(run_id)
        assert [s.index for s in steps] == list(range(STEPS)), name
        assert [s.code for s in steps] == [
            f"v{i} = {i} * {i}\nprint({name!r}, 'step', {i}, v{i})" for i in range(STEPS)
        ]
    counts = store.counts()
    assert counts["steps"] == WRITERS * STEPS
    assert (counts["torn_lines"], counts["bad_lines"], counts["pending_spool_files"]) == (0, 0, 0)

    # No duplicates at the DuckDB level either (read-only, as any reader would).
    con = duckdb.connect(str(home / DB_NAME), read_only=True)
    try:
        total, distinct_spans, distinct_keys = con.execute(
            "SELECT count(*), count(DISTINCT span_id), count(DISTINCT (trace_id, span_id)) "
            "FROM spans"
        ).fetchone()  # type: ignore[misc]
        step_rows = con.execute(
            "SELECT run_id, count(*), count(DISTINCT step_index), min(step_index), "
            "max(step_index) FROM steps GROUP BY run_id ORDER BY run_id"
        ).fetchall()
        run_rows = con.execute("SELECT count(*), count(DISTINCT run_id) FROM runs").fetchone()
    finally:
        con.close()
    assert total == distinct_spans == distinct_keys == WRITERS * (1 + STEPS)
    assert step_rows == [(rid, STEPS, STEPS, 0, STEPS - 1) for rid in sorted(run_ids.values())]
    assert run_rows == (WRITERS, WRITERS)


def test_spool_file_seen_before_its_writer_locks_it_is_not_lost(home: Path, tmp_path: Path) -> None:
    """A writer creates its spool file, then takes the flock that says "alive". An
    ingester that looks in between must not take the file for a dead writer's: if it
    moves it to spool/done, everything the writer appends afterwards goes into a file
    nobody ingests, and the run is silently missing. The child pauses in exactly that
    window, so the interleaving is deterministic."""
    opened, go = tmp_path / "spool-opened", tmp_path / "go"
    child = subprocess.Popen(
        [
            sys.executable,
            str(RECORD),
            "late-locker",
            "3",
            "--pause-spool-open",
            str(opened),
            str(go),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(home),
    )
    try:
        wait_for(opened, child)
        # A reader opens the store while the writer sits between create and lock.
        during = cli(home, "runs", "--json")
        assert during.returncode == 0, during.stderr
        go.touch()
        out, err = child.communicate(timeout=TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err
    run_id = re.search(r"RUN_ID=(\w+)", out)[1]  # type: ignore[index]

    after = cli(home, "runs", "--json")
    assert after.returncode == 0, after.stderr
    runs = {r["id"]: r for r in json.loads(after.stdout)}
    assert run_id in runs, (
        f"run {run_id} finished with exit code 0 but is not in the store; spool files: "
        f"{sorted(str(p.relative_to(home)) for p in (home / 'spool').rglob('*.jsonl'))}"
    )
    assert (runs[run_id]["status"], runs[run_id]["step_count"]) == ("ok", 3)


@codetape.code_action
def _execute(code: str, namespace: dict[str, Any]) -> None:
    exec(code, namespace)


def test_run_ends_while_this_process_has_the_store_open_for_reading(
    home: Path, strict: None
) -> None:
    """One process that both reads and records (the viewer, which records replays; an
    agent that looks at its earlier runs) must not take its own open read connection
    for a corrupt store. The read-only DuckDB connection held here is what a
    ``Store`` query on another thread holds while it runs."""
    with codetape.run("first"):
        _execute("a = 1", {})
    assert [r.name for r in codetape.Store(home).runs()] == ["first"]

    reader = duckdb.connect(str(home / DB_NAME), read_only=True)
    try:
        # strict: an error on the recording path (the ingestion at run end) raises.
        with codetape.run("second") as second:
            _execute("b = 2", {})
        # Someone else holds the database: that is "busy" (None), not an error.
        assert try_ingest(home, wait_s=0.1) is None
    finally:
        reader.close()

    runs = {r.id: r for r in codetape.Store(home).runs()}
    assert (runs[second.id].status, runs[second.id].step_count) == ("ok", 1)


def test_store_reads_wait_for_an_ingestion_in_this_process(home: Path) -> None:
    """A read while another thread of the same process is ingesting (holding the DuckDB
    file read-write) waits and retries as it does for other processes; it does not
    report the store as corrupt."""
    with codetape.run("recorded"):
        _execute("a = 1", {})
    codetape.Store(home).refresh()

    holding = threading.Event()
    release = threading.Event()

    def ingester() -> None:
        con = duckdb.connect(str(home / DB_NAME))
        try:
            holding.set()
            release.wait(timeout=TIMEOUT)
        finally:
            con.close()

    thread = threading.Thread(target=ingester)
    timer = threading.Timer(1.0, release.set)
    thread.start()
    try:
        assert holding.wait(timeout=TIMEOUT)
        # Let the ingester go soon; the read below must wait for it rather than fail.
        timer.start()
        runs = codetape.Store(home).runs()
    finally:
        release.set()
        thread.join(timeout=TIMEOUT)
        timer.cancel()
    assert [r.name for r in runs] == ["recorded"]


def test_threads_of_one_process_record_runs_at_the_same_time(home: Path, strict: None) -> None:
    """An agent server runs agents on threads of one process: their runs end (and
    ingest) at the same time. Recording must raise nothing (strict) and lose nothing."""
    errors: list[str] = []
    ids: list[str] = []

    def agent_thread(k: int) -> None:
        for j in range(10):
            try:
                with codetape.run(f"thread-{k}") as run:
                    namespace: dict[str, Any] = {}
                    for i in range(3):
                        _execute(f"x = {k * 100 + j * 10 + i}", namespace)
                ids.append(run.id)
            except Exception as exc:  # strict: the recording path raised
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")

    threads = [threading.Thread(target=agent_thread, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT)
    assert not errors, f"{len(errors)} of 40 runs raised:\n" + "\n".join(sorted(set(errors)))
    store = codetape.Store(home)
    runs = store.runs(limit=100)
    assert sorted(r.id for r in runs) == sorted(ids)
    assert all((r.status, r.step_count) == ("ok", 3) for r in runs)


# -- read-your-writes: every read catches up with the spool first ---------------------

# A process that holds the store's database open (mode argv[2]: "rw" or "ro") from the
# moment it creates argv[3] until argv[4] exists.
HOLD_DATABASE = """
import sys, time, pathlib, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "ro")
pathlib.Path(sys.argv[3]).touch()
while not pathlib.Path(sys.argv[4]).exists():
    time.sleep(0.01)
con.close()
"""


def recording_paused(home: Path, name: str, steps: int, tmp_path: Path) -> subprocess.Popen[str]:
    """A child process that records ``steps`` steps of a run, creates ``tmp_path/ready``
    and waits for ``tmp_path/release`` before it ends the run."""
    return subprocess.Popen(
        [
            *(sys.executable, str(RECORD), name, str(steps)),
            *("--ready", str(tmp_path / "ready"), "--release", str(tmp_path / "release")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(home),
    )


def test_a_store_opened_before_a_run_sees_it_when_it_ends(home: Path, strict: None) -> None:
    """A script or notebook opens a ``Store``, runs its agent, then reads."""
    store = codetape.Store(home)
    assert store.runs() == []

    with codetape.run("first", task="count") as first:
        _execute("a = 1", {})
    assert [r.id for r in store.runs()] == [first.id]
    assert store.run(first.id).status == "ok"
    assert store.step(first.id, 0).code == "a = 1"

    @codetape.agent(name="second")
    def second(task: str) -> str:
        namespace: dict[str, Any] = {}
        _execute("b = 2", namespace)
        _execute("c = b + 1", namespace)
        return "done"

    second("add")
    latest = store.run("last")
    assert (latest.name, latest.status, latest.final_answer) == ("second", "ok", "done")
    assert [s.code for s in store.steps(latest.id)] == ["b = 2", "c = b + 1"]
    assert store.count_runs() == 2


def test_a_run_whose_own_ingestion_found_the_store_busy_is_read_later(
    home: Path, strict: None
) -> None:
    """When its run ends, this process's ingestion gives up on a database someone holds
    (here a read-only connection, as a reader on another thread holds one). The next
    read of a Store opened long before still sees the run."""
    store = codetape.Store(home)
    assert store.runs() == []
    reader = duckdb.connect(str(home / DB_NAME), read_only=True)
    try:
        with codetape.run("busy-at-the-end") as run:
            _execute("a = 1", {})
        wait_for_background(home)  # it has given up: nothing was ingested
    finally:
        reader.close()
    assert [r.id for r in store.runs()] == [run.id]
    assert store.run(run.id).status == "ok"


def test_a_store_sees_what_another_process_spooled_after_it_was_opened(
    home: Path, tmp_path: Path
) -> None:
    """Another process's records reach DuckDB when that process ingests them (its
    runs' ends, its exit) or when a reader does. A run still being recorded, and a run
    whose process was killed, are only in the spool: a read must ingest them."""
    store = codetape.Store(home)
    assert store.runs() == []

    ready, release = tmp_path / "ready", tmp_path / "release"
    child = recording_paused(home, "live-bot", 2, tmp_path)
    try:
        wait_for(ready, child)
        [running] = store.runs()
        assert (running.name, running.status, running.step_count) == ("live-bot", "running", 2)
        assert [s.code for s in store.steps(running.id)] == [
            step_code("live-bot", i) for i in range(2)
        ]

        killed = record(home, "killed-bot", 3, "--kill", rc=-signal.SIGKILL)
        assert (store.run(killed).status, store.run(killed).step_count) == ("incomplete", 3)
    finally:
        release.touch()
        _, err = child.communicate(timeout=TIMEOUT)
    assert child.returncode == 0, err
    assert store.run(running.id).status == "ok"


def test_a_read_while_another_process_holds_the_database_reads_what_is_there(
    home: Path, tmp_path: Path
) -> None:
    """A read whose catch-up cannot have the database (another process is ingesting)
    retries briefly, then reads what is there; the next read catches up."""
    store = codetape.Store(home)
    assert store.runs() == []
    killed = record(home, "spooled-only", 2, "--kill", rc=-signal.SIGKILL)
    holding, release = tmp_path / "holding", tmp_path / "release"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLD_DATABASE,
            str(home / DB_NAME),
            "rw",
            str(holding),
            str(release),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Held for longer than a read's catch-up waits for it, then let go.
    timer = threading.Timer(2.0, release.touch)
    try:
        wait_for(holding, holder)
        timer.start()
        during = store.runs()
    finally:
        timer.cancel()
        release.touch()
        _, err = holder.communicate(timeout=TIMEOUT)
    assert holder.returncode == 0, err
    assert all(r.id == killed for r in during)  # the run, or nothing yet
    after = store.run(killed)
    assert (after.status, after.step_count) == ("incomplete", 2)


def test_a_read_with_nothing_new_in_the_spool_does_not_ingest(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catch-up compares the spool files with what this process ingested; when
    nothing changed it opens the database only to read it. A session catches up once."""
    ready, release = tmp_path / "ready", tmp_path / "release"
    # An agent in the middle of a run: a live spool file that does not change.
    child = recording_paused(home, "idle-bot", 1, tmp_path)
    try:
        wait_for(ready, child)
        store = codetape.Store(home)
        [running] = store.runs()
        assert store.last_ingest is not None  # the first read ingested the child's step

        ingested: list[Path] = []
        checks: list[Path] = []

        def spy_ingest(at: Path, *, wait_s: float) -> Any:
            ingested.append(at)
            return try_ingest(at, wait_s=wait_s)

        def spy_check(at: Path) -> bool:
            checks.append(at)
            return spool_changed(at)

        monkeypatch.setattr(store_read, "try_ingest", spy_ingest)
        monkeypatch.setattr(store_read, "spool_changed", spy_check)

        other = codetape.Store(home)
        assert other.run(running.id).step_count == 1
        assert len(store.steps(running.id)) == 1
        assert store.counts()["runs"] == 1
        assert ingested == []
        assert other.last_ingest is None

        checks.clear()
        with store.session():
            store.runs()
            store.steps("last")
            store.count_runs()
        assert len(checks) == 1

        # A run this process records is ingested by its own background pass: still
        # nothing new for the next read, which sees the run all the same.
        with codetape.run("here") as here:
            _execute("h = 1", {})
        assert store.run(here.id).status == "ok"
        assert ingested == []

        # Something new in the spool: the read ingests it.
        killed = record(home, "killed", 1, "--kill", rc=-signal.SIGKILL)
        assert store.run(killed).status == "incomplete"
        assert len(ingested) == 1
    finally:
        release.touch()
        _, err = child.communicate(timeout=TIMEOUT)
    assert child.returncode == 0, err


def test_a_replay_right_after_recording_reads_the_run(home: Path) -> None:
    """Record, then replay at once, in one script, with a Store opened beforehand."""
    store = codetape.Store(home)
    assert store.runs() == []
    namespace: dict[str, Any] = {}
    with codetape.run("to-replay") as run:
        _execute("prices = [3, 4]\ntotal = sum(prices)", namespace)
        _execute("print(total * 2)", namespace)

    [latest] = store.runs()
    with pytest.warns(NoIsolationWarning):
        report = codetape.replay(latest.id, 1)
    assert report.verdict == "reproduced", report
    assert report.replay_run_id is not None
    assert store.run(report.replay_run_id).replay_of == f"{run.id}:1"
    assert store.step(report.replay_run_id, 0).stdout == "14\n"


# -- many recording processes at once -------------------------------------------------

BURST = HERE / "_child_burst.py"
PROCESSES = 8
BURST_RUNS = 6
BURST_STEPS = 3


def _burst_code(name: str, run: int, step: int) -> str:
    """The code of step ``step`` of run ``run`` of ``_child_burst.py`` (same formula)."""
    return f"r{step} = lookup({f'{name}/{run}/{step}'!r})\nprint(r{step})"


def test_eight_processes_recording_bursts_of_runs_at_once_lose_nothing(
    home: Path, tmp_path: Path
) -> None:
    """Eight agents start together, each a burst of short runs (a model call, then
    steps that call a tool), each ingesting as codetape does when its runs end, while
    a reader reads through ``Store`` and the CLI. Every run, step, model call and span
    is stored exactly once, with its code and output, and nothing is left pending."""
    go, ready, stop = tmp_path / "go", tmp_path / "reader-ready", tmp_path / "stop"
    env = child_env(home)
    reader = subprocess.Popen(
        [sys.executable, str(READER), str(home), str(ready), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    writers = [
        subprocess.Popen(
            [sys.executable, str(BURST), f"burst-{k}", str(BURST_RUNS), str(BURST_STEPS), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for k in range(PROCESSES)
    ]
    try:
        wait_for(ready, reader)
        go.touch()
        outputs = [w.communicate(timeout=TIMEOUT) for w in writers]
        stop.touch()
        reader_out, reader_err = reader.communicate(timeout=TIMEOUT)
    finally:
        for proc in (*writers, reader):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    run_names: dict[str, tuple[str, int]] = {}
    for k, (w, (out, err)) in enumerate(zip(writers, outputs, strict=True)):
        assert (w.returncode, err) == (0, ""), f"burst-{k} exited {w.returncode}:\n{err}"
        ids = re.findall(r"RUN_ID=(\w+)", out)
        assert len(ids) == BURST_RUNS, out
        run_names.update({rid: (f"burst-{k}", r) for r, rid in enumerate(ids)})
    assert (reader.returncode, reader_err) == (0, ""), reader_err
    assert json.loads(reader_out)["rounds"] >= 2

    store = codetape.Store(home)
    runs = {r.id: r for r in store.runs(limit=1000)}
    assert set(runs) == set(run_names)
    for run_id, (name, r) in run_names.items():
        run = runs[run_id]
        assert (run.name, run.status, run.step_count, run.failed_steps, run.llm_calls) == (
            name,
            "ok",
            BURST_STEPS,
            0,
            1,
        )
        steps = store.steps(run_id)
        assert [s.code for s in steps] == [_burst_code(name, r, i) for i in range(BURST_STEPS)]
        assert [s.stdout for s in steps] == [
            f"{name}/{r}/{i}".upper() + "\n" for i in range(BURST_STEPS)
        ]
        assert [[c.name for c in s.tool_calls] for s in steps] == [["lookup"]] * BURST_STEPS
    counts = store.counts()
    assert (counts["torn_lines"], counts["bad_lines"], counts["pending_spool_files"]) == (0, 0, 0)

    # Exactly once at the DuckDB level: each run's root, model call, steps and tool calls.
    total_runs = PROCESSES * BURST_RUNS
    con = duckdb.connect(str(home / DB_NAME), read_only=True)
    try:
        spans, keys = con.execute(
            "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans"
        ).fetchone()  # type: ignore[misc]
        tables = con.execute(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM steps), "
            "(SELECT count(*) FROM llm_calls), (SELECT count(*) FROM span_starts), "
            "(SELECT count(*) FROM lost_records)"
        ).fetchone()
    finally:
        con.close()
    assert spans == keys == total_runs * (2 + 2 * BURST_STEPS)
    assert tables == (total_runs, total_runs * BURST_STEPS, total_runs, 0, 0)


def rename_in_another_process(home: Path, run_id: str) -> None:
    """Another process opens the store's file for writing, at its first attempt (no
    waiting: a lock error fails), and renames the run to 'renamed'."""
    writer = (
        "import duckdb, sys\n"
        "con = duckdb.connect(sys.argv[1])\n"
        "con.execute(\"UPDATE runs SET name = 'renamed' WHERE run_id = ?\", [sys.argv[2]])\n"
        "con.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", writer, str(home / DB_NAME), run_id],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr


def test_a_finished_read_leaves_the_database_free_for_another_process(home: Path) -> None:
    """Reads attach the file to a database this process keeps: once a read returns,
    another process (an agent's ingestion) opens the file for writing at the first
    attempt, and what it writes is what the next read sees."""
    run_id = record(home, "read-then-written", 1)
    store = codetape.Store(home)
    assert [r.id for r in store.runs()] == [run_id]
    with store.session():
        assert store.run(run_id).step_count == 1
    rename_in_another_process(home, run_id)  # no lock error: nothing held the file
    assert store.run(run_id).name == "renamed"


def test_an_ingestion_pass_leaves_the_database_free_for_another_process(
    home: Path, strict: None
) -> None:
    """Ingestion attaches the file for writing to the database this process keeps, as
    reads do: once the pass is done, another process opens the file for writing at the
    first attempt, and this process's next pass and reads work after it."""
    with codetape.run("ingested-here") as run:
        _execute("a = 1", {})
    first = run.id
    wait_for_background(home)  # the run's end: a pass of this process
    store = codetape.Store(home)
    assert [r.id for r in store.runs()] == [first]
    rename_in_another_process(home, first)  # no lock error: the pass let the file go
    with codetape.run("ingested-after") as run:
        _execute("b = 2", {})
    wait_for_background(home)
    assert {r.id: r.name for r in store.runs()} == {first: "renamed", run.id: "ingested-after"}


def test_writes_and_reads_nested_in_a_write_share_its_attachment(home: Path) -> None:
    """A write (or a read) opened while this thread writes goes through the same
    attachment at once, rather than waiting for the file to be free and giving up."""
    from codetape.store.internal import connect

    assert codetape.Store(home).runs() == []  # the database exists
    with connect(home, read_only=False, wait_s=1) as outer:
        outer.execute("INSERT INTO meta VALUES ('probe outer', '1')")
        with connect(home, read_only=False, wait_s=1) as inner:
            inner.execute("INSERT INTO meta VALUES ('probe inner', '2')")
        with connect(home, read_only=True, wait_s=1) as read:
            seen = read.execute("SELECT count(*) FROM meta WHERE key LIKE 'probe %'").fetchone()
        assert seen == (2,)
        outer.execute("INSERT INTO meta VALUES ('probe after', '3')")
    rename = subprocess.run(  # and the file is free for another process afterwards
        [
            sys.executable,
            "-c",
            "import duckdb, sys; duckdb.connect(sys.argv[1]).execute("
            "\"SELECT count(*) FROM meta WHERE key LIKE 'probe %'\").fetchone()[0] == 3 "
            "or sys.exit(3)",
            str(home / DB_NAME),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert rename.returncode == 0, rename.stderr


def test_a_file_that_could_not_be_detached_does_not_block_later_passes(
    home: Path, strict: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When letting the file go fails once (its last checkpoint hit a full disk, say),
    the process drops the in-memory database it was attached to: the next pass and read
    attach it afresh instead of finding the store busy for good."""
    from codetape.store import _db

    with codetape.run("before") as before:
        _execute("a = 1", {})
    wait_for_background(home)
    real = _db._detach_all
    failures: list[duckdb.DuckDBPyConnection] = []

    def fails_once(con: duckdb.DuckDBPyConnection) -> None:
        if not failures:
            failures.append(con)
            raise duckdb.IOException("IO Error: No space left on device")
        real(con)

    monkeypatch.setattr(_db, "_detach_all", fails_once)
    store = codetape.Store(home)
    assert [r.id for r in store.runs()] == [before.id]  # this read's detach failed
    assert failures
    with codetape.run("after") as after:
        _execute("b = 2", {})
    wait_for_background(home)
    assert {r.id for r in store.runs()} == {before.id, after.id}
    assert store.step(after.id, 0).code == "b = 2"


def test_a_read_left_open_by_a_failure_does_not_block_later_reads_or_writes(home: Path) -> None:
    """A connection that was never closed (an error between opening and closing it)
    leaves the file attached; the next read or write of this process detaches it rather
    than taking the store for locked or corrupt."""
    from codetape.store import _db

    run_id = record(home, "left-open", 1)
    store = codetape.Store(home)
    assert store.run(run_id).step_count == 1
    path = home / DB_NAME
    with _db._process_lock(path, 5.0):
        _db._open(path, read_only=True, wait_s=5.0)  # and never closed
    another = record(home, "after-the-leftover", 1)  # ingests: a writer of this process
    assert {r.id for r in store.runs()} == {run_id, another}
    with store.session():  # a read nested in another shares its attachment
        assert codetape.Store(home).run(another).name == "after-the-leftover"
        assert store.run(run_id).step_count == 1
