"""Ingestion's own promises: lazy (a run's end schedules a pass, a reader runs it, a
burst of runs is one transaction), retried when the database is busy, and staged
without copying what need not be copied.

DESIGN.md, "Store: durable first, queryable second", step 2: ingestion runs when a run
ends and whenever a reader opens the store; a lock error means someone else is
ingesting. Nothing here asserts on time: waits are guards against hangs only.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

import codetape
from codetape.store import _background, _ingest
from codetape.store.internal import IngestStats, connect, rebuild, spool_changed

DB_NAME = "codetape.duckdb"
GUARD_S = 60.0  # a guard against hangs only


@codetape.code_action
def _execute(code: str, namespace: dict[str, Any]) -> None:
    exec(code, namespace)


def _record_runs(n: int, name: str = "short") -> list[str]:
    ids = []
    for i in range(n):
        with codetape.run(name, task=f"run {i}") as run:
            _execute(f"x = {i}", {})
        ids.append(run.id)
    return ids


class _Passes:
    """Every ingestion pass of this process (each one transaction), with its stats."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.stats: list[IngestStats | None] = []
        self.changed = threading.Condition()
        real = _ingest.try_ingest

        def spy(home: Path, *, wait_s: float = 0.5) -> IngestStats | None:
            stats = real(home, wait_s=wait_s)
            with self.changed:
                self.stats.append(stats)
                self.changed.notify_all()
            return stats

        monkeypatch.setattr(_ingest, "try_ingest", spy)

    def storing(self) -> list[IngestStats]:
        return [s for s in self.stats if s is not None and s.records]

    def wait(self, until: Any) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: until(self), timeout=GUARD_S), self.stats


def _stored_runs(home: Path) -> set[str]:
    with connect(home, read_only=True) as con:
        return {row[0] for row in con.execute("SELECT run_id FROM runs").fetchall()}


def test_a_burst_of_runs_goes_into_the_store_in_one_transaction_when_a_reader_looks(
    home: Path, monkeypatch: pytest.MonkeyPatch, strict: None
) -> None:
    """An eval loop runs twenty short agents back to back: their ends only schedule
    ingestion; the read that follows runs it once, for all of them."""
    monkeypatch.setattr(_background, "INGEST_DELAY_S", 3600.0)  # only the read runs it
    passes = _Passes(monkeypatch)
    ids = _record_runs(20)
    assert passes.stats == []  # ending a run waited for no ingestion

    store = codetape.Store(home)
    runs = store.runs(limit=100)
    assert sorted(r.id for r in runs) == sorted(ids)
    assert all((r.status, r.step_count) == ("ok", 1) for r in runs)
    assert len(passes.stats) == 1
    [one] = passes.storing()
    assert one.files == 1  # this process's spool file, twenty runs in it
    assert store.last_ingest is None  # the read found nothing left to ingest itself


def test_a_run_nobody_reads_is_stored_a_moment_after_it_ends(
    home: Path, monkeypatch: pytest.MonkeyPatch, strict: None
) -> None:
    """A long-lived agent process: its runs reach DuckDB without any reader."""
    monkeypatch.setattr(_background, "INGEST_DELAY_S", 0.05)
    passes = _Passes(monkeypatch)
    [run_id] = _record_runs(1)
    passes.wait(lambda p: p.storing())
    assert not spool_changed(home)
    assert _stored_runs(home) == {run_id}


def test_each_run_that_ends_puts_the_pass_off_but_only_so_far(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs that end back to back (an eval loop) are one burst: each puts the pass off
    to a delay after it, so the burst is one transaction, but no further than
    INGEST_MAX_DELAY_S after the first, so a process whose runs never stop still stores
    them without a reader. The ingester's clock is a fake one here."""
    clock = [1000.0]
    fake_time = type("FakeTime", (), {"monotonic": lambda: clock[0], "time": time.time})
    monkeypatch.setattr(_background, "time", fake_time)
    monkeypatch.setattr(_background, "INGEST_MAX_DELAY_S", 10.0)
    ingester = _background.BackgroundIngester(home, lambda _: contextlib.nullcontext(), 1.0)
    try:
        # The ingester's lock held while the clock moves: its thread must not see the
        # clock past a due time before the request that puts it off.
        with ingester._cond:
            ingester.request()  # a run ends at t=0: due at 1
            assert ingester._due == 1001.0
            clock[0] = 1000.9
            ingester.request()  # another before it: put off to 1.9
            assert ingester._due == 1001.9
            clock[0] = 1009.5
            ingester.request()  # 9.5 s into the burst: no later than 10 after the first
            assert ingester._due == 1010.0
    finally:
        assert ingester.flush(GUARD_S)  # the pass runs now, on the real clock
    assert ingester._due is None
    assert ingester._first is None


def test_a_pass_that_finds_the_database_busy_tries_again_without_a_reader(
    home: Path, monkeypatch: pytest.MonkeyPatch, strict: None
) -> None:
    """Another process (here a connection of this one, as a reader on another thread
    has) holds the database when the run's pass comes: the pass gives up quickly, and
    tries again a little later rather than leaving the run for the next reader."""
    codetape.Store(home).runs()  # the database exists
    monkeypatch.setattr(_background, "INGEST_DELAY_S", 0.05)
    passes = _Passes(monkeypatch)
    holder = duckdb.connect(str(home / DB_NAME), read_only=True)
    try:
        [run_id] = _record_runs(1)
        passes.wait(lambda p: None in p.stats)  # busy
    finally:
        holder.close()
    passes.wait(lambda p: p.storing())
    assert _stored_runs(home) == {run_id}


def test_a_scheduled_pass_runs_when_the_process_shuts_down(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short script: its runs end and it exits well before the delay."""
    monkeypatch.setattr(_background, "INGEST_DELAY_S", 3600.0)
    passes = _Passes(monkeypatch)
    ids = _record_runs(3)
    codetape.tracer.internal.runtime().shutdown()  # what the interpreter's exit runs
    assert len(passes.storing()) == 1
    assert _stored_runs(home) == set(ids)


def test_a_pass_with_records_stored_already_stores_the_new_ones_once(
    home: Path, strict: None
) -> None:
    """A spool file restored from a backup (every record stored already) in the same
    pass as a new run: the new run is stored, nothing twice, nothing set aside."""
    [first] = _record_runs(1, "first")
    store = codetape.Store(home)
    assert [r.id for r in store.runs()] == [first]
    [spool] = (home / "spool" / "live").glob("*.jsonl")
    (spool.parent / f"restored-{spool.name}").write_bytes(spool.read_bytes())
    [second] = _record_runs(1, "second")

    assert sorted(r.id for r in store.runs()) == sorted([first, second])
    with connect(home, read_only=True) as con:
        spans, keys, steps = con.execute(
            "SELECT count(*), count(DISTINCT (trace_id, span_id)), "
            "(SELECT count(*) FROM steps) FROM spans"
        ).fetchone()  # type: ignore[misc]
    assert (spans, keys, steps) == (4, 4, 2)
    counts = store.counts()
    assert (counts["bad_lines"], counts["torn_lines"], counts["pending_spool_files"]) == (0, 0, 1)


def test_a_finished_file_another_pass_moved_first_is_no_error(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes' passes both read a finished spool file to its end (the second
    finds nothing new in it); whichever moves it to spool/done second finds it gone."""
    [run_id] = _record_runs(1)
    [spool] = (home / "spool" / "live").glob("*.jsonl")
    dead = spool.parent / "finished.jsonl"
    dead.write_bytes(spool.read_bytes())  # a dead writer's copy
    real = _ingest._pass

    def then_moved(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        dead.rename(tmp_path / dead.name)  # what another process's pass did meanwhile
        return result

    monkeypatch.setattr(_ingest, "_pass", then_moved)
    stats = _ingest.ingest(home)
    assert stats.finished_files == []
    assert _stored_runs(home) == {run_id}


# -- staging: what DuckDB reads ------------------------------------------------------


def _lines(n: int, size: int = 100) -> bytes:
    return b"".join(b'{"t":"x","pad":"' + b"a" * (size - 20) + b'"}\n' for _ in range(n))


def test_a_dead_writers_file_is_read_where_it_lies_and_a_live_ones_new_lines_are_copied(
    tmp_path: Path,
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    dead = tmp_path / "dead.jsonl"
    dead.write_bytes(_lines(5))
    staged = _ingest._collect(dead, None, scratch)
    assert staged is not None
    assert staged.copy is not None
    assert os.stat(staged.copy).st_ino == os.stat(dead).st_ino  # a hard link, no copy
    assert (staged.alive, staged.end, staged.new_torn) == (False, dead.stat().st_size, 0)

    # Read before, to its third line; then a torn last line: only whole lines go.
    (scratch / dead.name).unlink()
    third = len(_lines(3))
    torn = dead.read_bytes() + b'{"t":"x","pa'
    dead.write_bytes(torn)
    staged = _ingest._collect(dead, (third, 0, 0), scratch)
    assert staged is not None
    assert staged.copy is not None
    assert staged.copy.read_bytes() == _lines(2)
    assert (staged.end, staged.torn, staged.new_torn) == (len(torn), 1, 1)


def test_a_name_seen_twice_in_one_pass_is_read_twice_and_neither_file_is_written(
    home: Path, tmp_path: Path, strict: None
) -> None:
    """A rebuild reads spool/done and spool/live: were a name in both, staging one file
    must never write into the other through its hard link, and both are stored."""
    first, second = _record_runs(2)
    [spool] = (home / "spool" / "live").glob("*.jsonl")
    lines = spool.read_bytes().splitlines(keepends=True)
    first_end = next(
        i
        for i, line in enumerate(lines)
        if line.startswith(b'{"t":"span"') and b'"parent_id":null' in line
    )
    done = home / "spool" / "done"
    done.mkdir(parents=True)
    (done / "twin.jsonl").write_bytes(b"".join(lines[: first_end + 1]))  # the first run
    (spool.parent / "twin.jsonl").write_bytes(b"".join(lines[first_end + 1 :]))  # the second
    spool.rename(tmp_path / spool.name)  # only the twins hold the runs

    _, stats = rebuild(home)
    assert stats.bad_lines == 0
    assert _stored_runs(home) == {first, second}


def test_a_line_too_long_is_found_wherever_it_is(tmp_path: Path) -> None:
    limit = _ingest.MAX_RECORD_BYTES
    long_line = b"b" * limit + b"\n"  # one byte over, with its line end
    cases = {
        "short lines only": (_lines(3 * limit // 100_000, 100_000), False),
        "a long line first": (long_line + _lines(10), True),
        "a long line after 20 MB": (_lines(200, 100_000) + long_line + _lines(3), True),
        "a line just at the limit": (_lines(200, 100_000) + long_line[1:] + _lines(3), False),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / "spool.jsonl"
        path.write_bytes(data)
        with path.open("rb") as f:
            assert _ingest._has_long_line(f.fileno(), 0, len(data)) is expected, name
            later = len(_lines(1, 100_000))
            if name == "a long line after 20 MB":
                assert _ingest._has_long_line(f.fileno(), later, len(data)) is expected, name


def test_a_forked_child_schedules_its_own_passes(home: Path, strict: None) -> None:
    """After a fork the child has no ingestion thread: its runs' ends start its own."""
    _record_runs(1, "parent")
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            _record_runs(1, "child")
            rt = codetape.tracer.internal.runtime()
            code = 0 if rt.ingester.flush(GUARD_S) else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + GUARD_S
    while (waited := os.waitpid(pid, os.WNOHANG)) == (0, 0):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(waited[1]) == 0
    runs = codetape.Store(home).runs()
    assert sorted(r.name for r in runs) == ["child", "parent"]


def test_a_scheduled_pass_waits_while_the_store_was_just_written(tmp_path: Path) -> None:
    """Agents recording into one store take turns: a pass another process has just
    made (it ingested every spool file) postpones this process's."""
    delay = 5.0
    assert _background.quiet_for(tmp_path, delay) == 0.0  # no database yet
    db = tmp_path / DB_NAME
    db.touch()
    now = time.time()
    os.utime(db, (now - 1.0, now - 1.0))
    assert 0.0 < _background.quiet_for(tmp_path, delay) <= 4.0
    os.utime(db, (now - 10.0, now - 10.0))
    assert _background.quiet_for(tmp_path, delay) == 0.0
    wal = tmp_path / (DB_NAME + ".wal")
    wal.touch()  # a commit wrote the log just now
    assert _background.quiet_for(tmp_path, delay) > 0.0
    os.utime(wal, (now + 3600.0, now + 3600.0))  # the clock went back since
    assert _background.quiet_for(tmp_path, delay) == 0.0
