"""``codetape show RUN --follow``: a run's steps printed as they are recorded, like
``tail -f``, until the run ends (or Ctrl+C), with the run recorded by another process
or another thread while the command follows it.

No test waits on a clock: each step is recorded only once the follower has printed
the one before (or, in process, when the follower pauses between reads of the store);
the timeouts only keep a broken follower from hanging the suite.
"""

from __future__ import annotations

import io
import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from click.testing import CliRunner

import codetape
from codetape.cli import _follow, cli
from codetape.schemas import Step

# A guard against a hung follower, not a measure of speed.
HANG_S = 120.0
MARKUP = "[link=http://evil.example]x[/link]"

RECORDER = """
import sys
import codetape

codetape.configure(home=sys.argv[1])


@codetape.code_action
def execute(code: str, namespace: dict) -> None:
    exec(code, namespace)


namespace = {}
with codetape.run("live-bot", task="watch me") as run:
    print(run.id, flush=True)
    for code in ("x = 1", "y = x + 1", "order = {'id': 7}\\nz = order['total']"):
        sys.stdin.readline()  # the test says when
        try:
            execute(code, namespace)
        except KeyError:
            pass
    sys.stdin.readline()
    run.final_answer = "done"
"""


class Lines:
    """A process's stdout lines, read on a thread, waited for one by one."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout
        threading.Thread(target=self._read, args=(stdout,), daemon=True).start()

    def _read(self, stdout: io.TextIOBase) -> None:
        for line in stdout:
            self._queue.put(line.rstrip())
        self._queue.put(None)

    def until(self, start: str) -> str:
        """The first line from here on that starts with ``start``."""
        while True:
            line = self._queue.get(timeout=HANG_S)
            assert line is not None, f"the output ended before {start!r}:\n" + "\n".join(self.seen)
            self.seen.append(line)
            if line.startswith(start):
                return line


@pytest.fixture
def recorder(home: Path, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    script = tmp_path / "record.py"
    script.write_text(RECORDER)
    with subprocess.Popen(
        [sys.executable, str(script), str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        yield process
        process.kill()


def test_steps_recorded_by_another_process_print_as_they_end(
    home: Path, recorder: subprocess.Popen[str]
) -> None:
    assert recorder.stdin is not None
    assert recorder.stdout is not None
    run_id = recorder.stdout.readline().strip()
    with subprocess.Popen(
        [sys.executable, "-m", "codetape", "--home", str(home), "show", run_id[:8], "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as follower:
        try:
            stderr = _follow_the_recording(recorder, follower, run_id)
        finally:
            if follower.poll() is None:  # a failed check: do not wait for the run's end
                follower.kill()
    assert follower.returncode == 0
    assert "following: each step prints once it ends; Ctrl+C stops" in stderr


def _follow_the_recording(
    recorder: subprocess.Popen[str], follower: subprocess.Popen[str], run_id: str
) -> str:
    """Record each step once the follower has printed the one before; its stderr."""
    assert recorder.stdin is not None
    lines = Lines(follower)
    assert lines.until("run ") == f"run {run_id}  live-bot  running  -"
    for step, status in ((0, "ok"), (1, "ok"), (2, "error")):
        recorder.stdin.write("\n")
        recorder.stdin.flush()
        assert lines.until(f"step {step} ").startswith(f"step {step} {status}")
        assert recorder.poll() is None  # printed while the run was still going
    assert lines.until("KeyError") == "KeyError: 'total'"
    assert lines.until("  order") == "  order  dict  {'id': 7}"
    recorder.stdin.write("\n")
    recorder.stdin.flush()
    assert lines.until("run ").startswith(f"run {run_id[:12]} ended ok")
    assert lines.until("final answer") == "final answer done"
    follower.wait(timeout=HANG_S)
    assert follower.stderr is not None
    stderr = follower.stderr.read()
    # Each step once, in order.
    assert [line.split()[1] for line in lines.seen if line.startswith("step ")] == ["0", "1", "2"]
    return stderr


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> None:
    exec(code, namespace)


class Recorder(threading.Thread):
    """Records a run on a thread of its own, one step each time it is told to."""

    def __init__(self, codes: list[str]) -> None:
        super().__init__(daemon=True)
        self.codes = codes
        self.go = threading.Semaphore(0)
        self.done = threading.Semaphore(0)
        self.run_id = ""

    def run(self) -> None:
        namespace: dict[str, Any] = {}
        with codetape.run(f"thread-bot {MARKUP}", task="\x1b]0;pwned\x07") as run:
            self.run_id = run.id
            self.done.release()
            for code in self.codes:
                self.go.acquire()
                execute(code, namespace)
                self.done.release()
            self.go.acquire()
        self.done.release()

    def step(self) -> None:
        """Record the next step (or end the run), and wait until it is recorded."""
        self.go.release()
        assert self.done.acquire(timeout=HANG_S)


def printed_so_far() -> str:
    """What the command running under CliRunner has printed until now."""
    sys.stdout.flush()
    return cast(io.BytesIO, sys.stdout.buffer).getvalue().decode()


def test_steps_recorded_by_a_thread_print_between_two_reads_of_the_store(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(["x = 1", "y = x + 1", "print(x + y)"])
    recorder.start()
    assert recorder.done.acquire(timeout=HANG_S)  # the run is open
    seen: list[str] = []

    def between_reads(seconds: float) -> None:
        assert seconds == _follow.POLL_S
        seen.append(printed_so_far())
        recorder.step()

    monkeypatch.setattr(_follow, "wait", between_reads)
    result = CliRunner().invoke(cli, ["--home", str(home), "show", recorder.run_id, "--follow"])
    assert result.exit_code == 0, result.output
    # Before each step was recorded, the ones before it had been printed, and no other.
    printed = [
        [line.split()[1] for line in s.splitlines() if line.startswith("step ")] for s in seen
    ]
    assert printed == [[], ["0"], ["0", "1"], ["0", "1", "2"]]
    output = result.stdout
    assert output.count("step ") == 3
    assert "stdout\n3\n" in output
    assert f"run {recorder.run_id[:12]} ended ok" in output
    assert f"thread-bot {MARKUP}" in output  # recorded text stays text
    assert "\x1b" not in output
    recorder.join(timeout=HANG_S)


def test_ctrl_c_stops_following_and_leaves_the_run_going(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_follow, "wait", interrupted)
    with codetape.run("bot") as run:
        execute("x = 1", {})
        result = CliRunner().invoke(cli, ["--home", str(home), "show", run.id, "--follow"])
    assert result.exit_code == 130
    assert "step 0 ok" in result.stdout
    assert result.stderr.endswith(f"stopped following run {run.id[:12]} (it was running)\n")
    assert codetape.Store().run(run.id).status == "ok"


def test_an_ended_run_prints_whole_without_waiting(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(seconds: float) -> None:
        raise AssertionError("an ended run needs no second read")

    monkeypatch.setattr(_follow, "wait", never)
    with codetape.run("bot") as run:
        execute("x = 1", {})
        execute("y = 2", {})
        run.final_answer = "3"
    result = CliRunner().invoke(cli, ["--home", str(home), "show", "last", "-f"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # nothing to follow: no note
    assert result.stdout.count("step ") == 2
    assert "final answer 3" in result.stdout
    # --json: each step one line, the Step model.
    lines = CliRunner().invoke(cli, ["--home", str(home), "show", "last", "-f", "--json"])
    steps = [Step.model_validate_json(line) for line in lines.stdout.splitlines()]
    assert [s.code for s in steps] == ["x = 1", "y = 2"]
    assert [json.loads(line)["index"] for line in lines.stdout.splitlines()] == [0, 1]


@pytest.mark.parametrize("other", [("--step", "0"), ("--llm",), ("--call", "0")])
def test_follow_is_not_for_one_step_or_the_model_calls(home: Path, other: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, ["--home", str(home), "show", "last", "--follow", *other])
    assert result.exit_code == 2
    assert "--follow follows the run's steps" in result.output
