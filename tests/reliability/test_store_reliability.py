"""Store: one bad record never costs the other records.

Each case is what a hostile user, a broken disk or a crashing host did to the store
(issue 10, items 1 to 5), recorded by real processes into a real DuckDB store and read
back through the real command line, as a user would:

1. a 40 MB task, and spool lines too large to store (in the spool, in a bundle);
2. lone surrogates in a task, a tool's answer and stderr; records that cannot be stored;
3. a full disk while recording and while reading (a small tmpfs, mounted as root);
4. a process terminated (SIGTERM), interrupted (SIGINT) or killed (SIGKILL) mid-step,
   and an agent with a SIGTERM handler of its own;
5. an ingestion killed mid-way, a store directory that does not exist, a forked child
   that records a step, and a wall clock that jumps back while a run is recorded.
"""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import opentelemetry.sdk.trace as otel_sdk_trace
import pytest

import codetape
from codetape.schemas import attributes as A

from ..conftest import require
from ..test_store import child_env, clean_error, cli, cli_here, cli_json, record, step_code

HERE = Path(__file__).parent
CHILD = HERE / "_store_child.py"
DB_NAME = "codetape.duckdb"
TIMEOUT = 180  # a guard against hangs only; nothing here asserts on time
HUGE = 20 * 1024 * 1024  # a task larger than a spool line may be (16 MiB)


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> None:
    exec(code, namespace)


def python(home: Path, code: str, *, strict: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child process recording into ``home``."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=child_env(home, strict=strict),
        timeout=TIMEOUT,
    )


def child(home: Path, *args: str, strict: bool = True) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(home, strict=strict),
    )


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    """Wait until ``proc`` creates ``path``; fail if it exits first."""
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"child exited {proc.returncode} before {path.name}:\n{out}\n{err}")
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.01)


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run_id_of(out: str) -> str:
    found = re.search(r"RUN_ID=([0-9a-f]{32})", out)
    assert found, out
    return found[1]


def runs_by_name(home: Path) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in cli_json(home, "runs")}


def store_check(home: Path) -> dict[str, Any]:
    """The doctor's store check, as ``codetape doctor --json`` reports it."""
    result = cli_here(home, "doctor", "--json")
    assert "Traceback" not in result.stderr, result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    return dict(checks["store"])


def spooled(tmp_path: Path, name: str, steps: int) -> list[bytes]:
    """The spool lines of one finished run ``name``, recorded by a child process into a
    scratch store of its own."""
    scratch = tmp_path / f"scratch-{name}"
    record(scratch, name, steps)
    [spool] = list((scratch / "spool").rglob("*.jsonl"))
    lines = spool.read_bytes().splitlines(keepends=True)
    assert all(line.endswith(b"\n") for line in lines)
    return lines


def dead_writers_spool(home: Path, content: bytes, name: str = "oldhost-4242-0badc0de") -> Path:
    """A spool file in spool/live whose writer is gone (nobody holds its flock)."""
    live = home / "spool" / "live"
    live.mkdir(parents=True, exist_ok=True)
    path = live / f"{name}.jsonl"
    path.write_bytes(content)
    return path


def with_task(line: bytes, task: str) -> bytes:
    """A run's start record or root span, as a codetape that did not cut tasks wrote it."""
    record = json.loads(line)
    record["attributes"][A.RUN_TASK] = task
    return json.dumps(record).encode() + b"\n"


def is_run_record(line: bytes) -> bool:
    record = json.loads(line)
    return record["t"] in ("start", "span") and record["parent_id"] is None


# -- 1. a 40 MB task or run name ------------------------------------------------------


def test_a_40_mb_task_is_recorded_cut_with_its_full_text_in_a_blob(
    home: Path, tmp_path: Path
) -> None:
    big = python(home, 'import codetape\nwith codetape.run("big", task="A" * 40_000_000): pass\n')
    assert big.returncode == 0, big.stderr
    record(home, "after-big", 2)

    result = cli(home, "runs", "--json")
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    runs = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(runs) == {"big", "after-big"}
    assert runs["after-big"]["step_count"] == 2
    task = runs["big"]["task"]
    assert task == "A" * 1999 + "…"
    assert store_check(home)["status"] == "ok"

    # The whole task is kept, as a blob the run's span names.
    store = codetape.Store(home)
    store.refresh()
    con = duckdb.connect(str(home / DB_NAME), read_only=True)
    try:
        [(raw,)] = con.execute(
            "SELECT attributes FROM spans WHERE trace_id = ? AND parent_id IS NULL",
            [runs["big"]["id"]],
        ).fetchall()
    finally:
        con.close()
    full = json.loads(store.blob(json.loads(raw)[A.ATTRIBUTES_FULL_DIGEST]))
    assert full[A.RUN_TASK] == "A" * 40_000_000

    rebuilt = cli(home, "doctor", "--rebuild")
    assert "Traceback" not in rebuilt.stderr, rebuilt.stderr
    assert "rebuilt" in rebuilt.stderr
    assert set(runs_by_name(home)) == {"big", "after-big"}


def test_a_spool_line_too_large_to_store_is_set_aside_and_every_other_record_is_stored(
    home: Path, tmp_path: Path
) -> None:
    # An older recorder wrote a 20 MB task into both records of its run; another run
    # follows in the same spool file.
    carrier = spooled(tmp_path, "carrier", 3)
    bystander = spooled(tmp_path, "bystander", 2)
    huge = [with_task(line, "A" * HUGE) if is_run_record(line) else line for line in carrier]
    spool = dead_writers_spool(home, b"".join(huge + bystander))

    result = cli(home, "runs")
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert "(2 lost)" in result.stdout
    runs = runs_by_name(home)
    assert (runs["bystander"]["status"], runs["bystander"]["step_count"]) == ("ok", 2)
    assert runs["bystander"]["lost_records"] == 0
    # The carrier's own records were set aside; its steps are stored, and it says so.
    [carrier_run] = [r for r in runs.values() if r["name"] != "bystander"]
    assert (carrier_run["status"], carrier_run["step_count"]) == ("incomplete", 3)
    assert carrier_run["lost_records"] == 2
    shown = cli(home, "show", carrier_run["id"])
    assert shown.returncode == 0, shown.stderr
    assert "2 records could not be stored" in shown.stdout
    assert "v2 = 2 * 2" in shown.stdout  # the code of the run's last step

    check = store_check(home)
    assert check["status"] == "warn"
    assert "2 spool lines could not be stored" in check["detail"]
    assert f"{spool.name} at byte 0, run {carrier_run['id'][:12]}: too large" in check["detail"]

    rebuilt = cli(home, "doctor", "--rebuild")
    assert "Traceback" not in rebuilt.stderr, rebuilt.stderr
    assert "2 lines could not be stored" in rebuilt.stderr
    assert runs_by_name(home) == runs


def test_a_bundle_carrying_a_line_too_large_to_store_imports_everything_else(
    home: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    run_id = record(source, "exported", 2)
    bundle = tmp_path / "run.codetape"
    exported = cli(source, "export", run_id, "-o", str(bundle))
    assert exported.returncode == 0, exported.stderr

    # The same bundle, its run's records (its start and its root span) carrying a
    # 20 MB task.
    tampered = tmp_path / "tampered.codetape"
    with tarfile.open(bundle) as src, tarfile.open(tampered, "w:gz") as dst:
        for member in src.getmembers():
            stream = src.extractfile(member)
            if stream is None:
                dst.addfile(member)
                continue
            data = stream.read()
            if member.name == "spans.jsonl":
                data = b"".join(
                    with_task(line, "B" * HUGE) if is_run_record(line) else line
                    for line in data.splitlines(keepends=True)
                )
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))

    imported = cli(home, "import", str(tampered))
    assert (imported.returncode, "Traceback" in imported.stderr) == (0, False), imported.stderr
    [run] = cli_json(home, "runs")
    assert (run["id"], run["step_count"], run["lost_records"]) == (run_id, 2, 2)
    steps = cli_json(home, "show", run_id)["steps"]
    assert [s["code"] for s in steps] == [step_code("exported", i) for i in range(2)]


# -- 2. lone surrogates; records that cannot be stored --------------------------------

SURROGATES = """
import os, sys
import codetape

@codetape.tool
def list_reports() -> list:
    return [os.fsdecode(b"report\\xff.csv")]

@codetape.code_action
def execute(code: str, namespace: dict) -> None:
    exec(code, namespace)

with codetape.run("surrogates", task="bad \\udcff") as run:
    ns = {"list_reports": list_reports}
    execute("names = list_reports()", ns)
    execute("import sys\\nsys.stderr.write('bad \\\\udcff\\\\n')", ns)
    execute("done = True", ns)
print(f"RUN_ID={run.id}")
"""


def test_lone_surrogates_in_a_task_a_tool_answer_and_stderr_lose_no_record(home: Path) -> None:
    result = python(home, SURROGATES)
    assert result.returncode == 0, result.stderr
    run_id = run_id_of(result.stdout)

    [run] = cli_json(home, "runs")
    assert (run["id"], run["task"], run["step_count"]) == (run_id, "bad \\udcff", 3)
    steps = cli_json(home, "show", run_id)["steps"]
    [call] = steps[0]["tool_calls"]
    assert (call["name"], call["result"]) == ("list_reports", ["report\\udcff.csv"])
    assert steps[1]["stderr"] == "bad \\udcff\n"
    assert store_check(home)["status"] == "ok"
    # The spool keeps the exact text.
    [spool] = list((home / "spool").rglob("*.jsonl"))
    exact = [json.loads(line).get("exact") for line in spool.read_bytes().splitlines()]
    assert any(b"bad \xed\xb3\xbf" in base64.b64decode(e) for e in exact if e)


def test_records_that_cannot_be_stored_are_counted_shown_by_doctor_and_marked_on_the_run(
    home: Path, tmp_path: Path
) -> None:
    lines = spooled(tmp_path, "damaged", 4)
    damaged = []
    for line in lines:
        record = json.loads(line)
        if record["t"] == "span" and record["name"] == A.SPAN_EXECUTE_CODE:
            index = record["attributes"][A.STEP_INDEX]
            if index == 1:
                record["start_ns"] = "yesterday"
            elif index == 2:
                record["attributes"][A.STEP_INDEX] = "second"
            line = json.dumps(record).encode() + b"\n"
        damaged.append(line)
    spool = dead_writers_spool(home, b"".join(damaged))

    listing = cli(home, "runs")
    assert (listing.returncode, listing.stderr) == (0, ""), listing.stderr
    assert "(2 lost)" in listing.stdout
    [run] = cli_json(home, "runs")
    assert (run["name"], run["status"], run["lost_records"]) == ("damaged", "ok", 2)
    shown = cli(home, "show", run["id"])
    assert "2 records could not be stored" in shown.stdout, shown.stdout
    # Steps 0 and 3 are whole; 1 and 2 lost their outcome and keep their code.
    steps = {s["index"]: s for s in cli_json(home, "show", run["id"])["steps"]}
    assert {i: s["status"] for i, s in steps.items()} == {
        0: "ok",
        1: "interrupted",
        2: "interrupted",
        3: "ok",
    }
    assert [s["code"] for s in steps.values()] == [step_code("damaged", i) for i in range(4)]

    check = store_check(home)
    assert check["status"] == "warn"
    assert "2 spool lines could not be stored" in check["detail"]
    assert check["detail"].count(f"{spool.name} at byte ") == 2
    assert f"run {run['id'][:12]}" in check["detail"]


# -- 3. a full disk -----------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 5 MiB tmpfs of its own, unmounted afterwards whatever happened."""
    require(os.geteuid() == 0, "root (to mount a small tmpfs)", "run the tests as root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> Path:
    """Write a file until ``disk`` has no byte left."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            refused = _write_until_refused(fd, size)
            assert refused == errno.ENOSPC, os.strerror(refused)
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0
    return filler


def _write_until_refused(fd: int, size: int) -> int:
    try:
        while True:
            os.write(fd, b"\0" * size)
    except OSError as exc:
        return exc.errno or 0


def codetape_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "codetape" in line]


def test_a_full_disk_is_said_once_marked_on_the_run_and_recovered_from(
    small_disk: Path, tmp_path: Path
) -> None:
    home = small_disk / "store"
    record(home, "first", 1)  # stored: the database exists
    record(home, "before", 3, "--kill", rc=-signal.SIGKILL)  # spooled, not yet stored
    filler = fill(small_disk)

    ready, release = tmp_path / "ready", tmp_path / "release"
    agent = child(home, "starved", str(ready), str(release), strict=False)
    try:
        wait_for(ready, agent)
        # A reader: one clear line, what was stored before, no traceback.
        reading = cli(home, "runs", "--json")
        assert "Traceback" not in reading.stderr, reading.stderr
        assert reading.returncode == 0, reading.stderr
        [warning] = reading.stderr.splitlines()
        assert "no space left on the disk of the store" in warning
        assert [r["name"] for r in json.loads(reading.stdout)] == ["first"]
        filler.unlink()
        release.touch()
        out, err = finish(agent)
    finally:
        release.touch()
        finish(agent)
    assert agent.returncode == 0, err
    assert "Traceback" not in err, err
    [loud] = codetape_lines(err)
    assert "NOT RECORDING: no space left" in loud

    runs = runs_by_name(home)
    assert (runs["first"]["status"], runs["first"]["step_count"]) == ("ok", 1)
    # What was spooled before the disk filled is all there.
    assert (runs["before"]["status"], runs["before"]["step_count"]) == ("incomplete", 3)
    # The starved run: what it wrote once there was space, and how much it lost.
    starved = runs["starved"]
    assert (starved["id"], starved["status"]) == (run_id_of(out), "ok")
    assert (starved["step_count"], starved["lost_records"]) == (1, 2)
    assert "2 records could not be stored" in cli(home, "show", starved["id"]).stdout
    check = store_check(home)
    assert "2 records were not written (no space left on disk)" in check["detail"]


# -- 4. a terminated, interrupted or killed process ---------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_the_step_a_signal_stopped_is_shown_interrupted_with_its_code(
    home: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    ready = tmp_path / "in-step-1"
    agent = child(home, "block", str(ready))
    try:
        wait_for(ready, agent)
        agent.send_signal(signum)
        out, err = finish(agent)
    finally:
        finish(agent)
    # The signal did what it does without codetape: the process ended by it.
    assert agent.returncode == -signum, err
    run_id = run_id_of(out)

    detail = cli_json(home, "show", run_id)
    assert detail["run"]["status"] == ("error" if signum == signal.SIGINT else "incomplete")
    steps = detail["steps"]
    assert [(s["index"], s["status"]) for s in steps] == [(0, "ok"), (1, "interrupted")]
    assert steps[1]["code"].startswith("open(READY, 'w').close()")
    assert steps[0]["stdout"] == "total 42\n"
    if signum != signal.SIGKILL:
        expected = "KeyboardInterrupt" if signum == signal.SIGINT else signum.name
        assert steps[1]["error"]["type"] == expected
    failed = cli_json(home, "runs", "--failed")
    assert [r["id"] for r in failed] == [run_id]
    assert "interrupted" in cli(home, "show", run_id).stdout


def test_an_agents_own_sigterm_handler_still_runs_and_its_run_goes_on(
    home: Path, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    agent = child(home, "own-handler", str(ready))
    try:
        wait_for(ready, agent)
        agent.send_signal(signal.SIGTERM)
        out, err = finish(agent)
    finally:
        finish(agent)
    assert agent.returncode == 0, err
    assert "agent handler: stopping" in out
    detail = cli_json(home, "show", run_id_of(out))
    assert detail["run"]["status"] == "ok"
    steps = detail["steps"]
    assert len(steps) >= 3
    assert {s["status"] for s in steps} == {"ok"}
    assert steps[-1]["stdout"] == "cleaned up\n"


# -- 5. killed ingestion, missing store, fork, clock ---------------------------------------


def test_the_scratch_folder_of_a_killed_ingestion_is_removed_by_the_next_one(
    home: Path, tmp_path: Path
) -> None:
    run_id = record(home, "pending", 2, "--kill", rc=-signal.SIGKILL)
    marker = tmp_path / "ingesting"
    ingester = child(home, "ingest-and-pause", str(marker))
    try:
        wait_for(marker, ingester)
        ingester.kill()
        finish(ingester)
    finally:
        finish(ingester)
    left = list((home / "tmp").glob("ingest-*"))
    assert any(list(p.iterdir()) for p in left)  # what the killed pass wrote

    [run] = cli_json(home, "runs")
    assert (run["id"], run["step_count"]) == (run_id, 2)
    assert list((home / "tmp").glob("ingest-*")) == []


@pytest.mark.parametrize("args", [["runs"], ["show", "last"], ["runs", "--json"]])
def test_reading_a_store_that_does_not_exist_says_so_and_creates_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    missing = tmp_path / "nonexistent" / "deep" / "store"
    line = clean_error(cli(missing, *args))
    assert f"no store at {missing}" in line
    assert not (tmp_path / "nonexistent").exists()


def test_a_forked_child_that_records_a_step_gets_a_run_of_its_own(home: Path) -> None:
    agent = child(home, "fork")
    out, err = finish(agent)
    assert agent.returncode == 0, err
    assert "CHILD_DONE" in out
    parent_id = run_id_of(out)

    runs = cli_json(home, "runs")
    assert len(runs) == 2
    [forked] = [r for r in runs if r["id"] != parent_id]
    parent = cli_json(home, "show", parent_id)["steps"]
    assert [(s["index"], s["code"]) for s in parent] == [(0, "parent_0 = 0"), (1, "parent_1 = 1")]
    child_steps = cli_json(home, "show", forked["id"])["steps"]
    assert [(s["index"], s["code"]) for s in child_steps] == [(0, "child_step = 'in the child'")]
    assert forked["status"] == "ok"


def test_a_wall_clock_jump_back_makes_no_duration_negative(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = time.time_ns

    def an_hour_ago() -> int:
        return real() - 3600 * 10**9

    def jump_back() -> None:  # as NTP or a user setting the clock would, mid-step
        monkeypatch.setattr(time, "time_ns", an_hour_ago)
        monkeypatch.setattr(otel_sdk_trace, "time_ns", an_hour_ago)

    with codetape.run("clock", task="survive a clock jump") as run:
        namespace: dict[str, Any] = {"jump_back": jump_back}
        execute("before = 1", namespace)
        execute("jump_back()", namespace)
        execute("after = 2", namespace)
    monkeypatch.undo()

    detail = codetape.Store(home).detail(run.id)
    assert detail.run.ended_at is not None
    assert detail.run.ended_at >= detail.run.started_at
    assert [s.duration_ms >= 0 for s in detail.steps] == [True, True, True]
    assert [s.status for s in detail.steps] == ["ok", "ok", "ok"]
