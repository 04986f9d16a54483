"""The store under concurrent use: parallel recording processes, readers that ingest
while agents write, and readers and recorders inside one process.

DESIGN.md, "Store: durable first, queryable second": every process appends to a spool
file of its own, ingestion moves the records into DuckDB in short transactions, and
readers open DuckDB read-only per query, retrying on a lock error. Nobody sees an
error for that, and every record lands in DuckDB exactly once.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

import codetape
from codetape.store.internal import try_ingest

from .test_store import child_env

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
    codetape.Store(home)

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
