"""Terminal and secrets: what an agent wrote never drives the user's terminal, and what
it leaked never reaches the store.

Terminal: a run whose name, task, code, output, tool call and error carry terminal
escape sequences (an OSC 8 hyperlink, an OSC 0 window title, a clear screen), a NUL, a
C1 control, a right-to-left override and rich markup is recorded through the public API,
then printed by the real CLI (``runs``, ``show``, ``diff``, ``replay``, and ``--json``),
in-process and as a real process on a pipe and on a pseudo-terminal.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import codetape
from codetape.cli import cli
from codetape.sandbox import NoIsolationWarning
from codetape.schemas import ReplayReport, RunDetail, Step
from codetape.testing import capture

pytestmark = pytest.mark.filterwarnings("ignore::codetape.sandbox.NoIsolationWarning")

# -- 15. raw escapes never reach the terminal -----------------------------------------

HOSTILE = (
    "\x1b]8;;https://evil.example/\x1b\\click here\x1b]8;;\x1b\\"  # OSC 8 hyperlink
    " \x1b]0;owned\x07"  # OSC 0: the window title
    " \x1b[2J"  # clear the screen
    " nul\x00"
    " \x9b31m"  # C1 CSI
    " \u202egnp.exe"  # right-to-left override: shows as "exe.png"
    " [bold red]markup[/] [link=https://evil.example]link[/link]"
)
# Python source cannot hold a NUL: the code carries the rest raw, in a comment.
HOSTILE_SOURCE = HOSTILE.replace("\x00", "")
RAW = {"ESC": "\x1b", "BEL": "\x07", "NUL": "\x00", "CSI": "\x9b", "RLO": "\u202e"}
# How each part must show instead: written as escapes, rich markup as typed.
SHOWN = [
    "\\x1b]8;;https://evil.example/\\x1b\\click here\\x1b]8;;\\x1b\\",
    "\\x1b]0;owned\\x07",
    "\\x1b[2J",
    "nul\\x00",
    "\\x9b31m",
    "\\u202egnp.exe",
    "[bold red]markup[/] [link=https://evil.example]link[/link]",
]


def hostile_code(n: int) -> str:
    return (
        f"label = {HOSTILE + str(n)!r}  # {HOSTILE_SOURCE}\n"
        "print(label)\n"
        "answer = lookup(query=label)\n"
    )


@codetape.tool
def lookup(query: str) -> dict[str, str]:
    return {"echo": query}


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> Any:
    exec(code, namespace)
    return namespace.get("result")


@dataclass(frozen=True)
class Hostile:
    home: Path
    run_id: str  # step 0 prints, step 1 raises
    other_id: str  # the same, one character apart


def record_hostile(n: int) -> str:
    namespace: dict[str, Any] = {"lookup": lookup}
    with codetape.run(f"bot {HOSTILE}", task=f"task {HOSTILE}") as run:
        execute(hostile_code(n), namespace)
        with pytest.raises(ValueError, match="owned"):
            execute("raise ValueError(label)", namespace)
    return run.id


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Hostile:
    home = tmp_path_factory.mktemp("hostile") / "store"
    with capture(home):
        first, second = record_hostile(1), record_hostile(2)
    # the recording keeps every character: it is the printing that must not
    step = codetape.Store(home).step(first, 0)
    assert HOSTILE in step.stdout
    assert HOSTILE_SOURCE in step.code
    return Hostile(home, first, second)


def invoke(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


def raw_characters(output: str) -> list[str]:
    return [name for name, char in RAW.items() if char in output]


def missing(output: str) -> list[str]:
    return [text for text in SHOWN if text not in output]


@pytest.mark.parametrize(
    "args",
    [
        ("show", "{run}"),
        ("show", "{run}", "--step", "0"),
        ("show", "{run}", "--step", "1"),
        ("diff", "{run}", "{other}"),
    ],
    ids=["show", "show-step", "show-failed-step", "diff"],
)
def test_recorded_text_is_printed_with_its_escapes_visible(
    hostile: Hostile, args: tuple[str, ...]
) -> None:
    given = [a.format(run=hostile.run_id, other=hostile.other_id) for a in args]
    result = invoke(hostile.home, *given)
    assert result.exit_code == 0, result.output
    assert raw_characters(result.output) == []
    assert missing(result.output) == []


def test_the_list_of_runs_shows_names_and_tasks_with_escapes_visible(hostile: Hostile) -> None:
    result = invoke(hostile.home, "runs")
    assert result.exit_code == 0, result.output
    assert raw_characters(result.output) == []
    # the task is shortened in the list; the name is whole
    assert f"bot {SHOWN[0]}" in result.output
    assert f"task {SHOWN[0]}" in result.output
    assert all(text in result.output for text in SHOWN[1:])


def test_a_replay_that_diverges_shows_both_sides_with_escapes_visible(
    hostile: Hostile, tmp_path: Path
) -> None:
    edited = tmp_path / "edited.py"
    edited.write_text(hostile_code(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoIsolationWarning)
        result = invoke(
            hostile.home, "replay", hostile.run_id, "--step", "0", "--code", str(edited)
        )
    assert result.exit_code == 1, result.output  # diverged: another label
    assert "diverged" in result.output
    assert raw_characters(result.output) == []
    assert missing(result.output) == []
    assert "variable:label" in result.output


@pytest.mark.parametrize(
    "args",
    [("runs", "--json"), ("show", "{run}", "--json"), ("show", "{run}", "--step", "0", "--json")],
    ids=["runs", "show", "show-step"],
)
def test_json_output_is_exact_json_and_escapes_them_itself(
    hostile: Hostile, args: tuple[str, ...]
) -> None:
    result = invoke(hostile.home, *[a.format(run=hostile.run_id) for a in args])
    assert result.exit_code == 0, result.output
    assert raw_characters(result.output) == []
    data = json.loads(result.output)
    if args[0] == "runs":
        assert {r["name"] for r in data} == {f"bot {HOSTILE}"}
    elif "--step" in args:
        assert Step.model_validate(data).stdout == f"{HOSTILE}1\n"
    else:
        detail = RunDetail.model_validate(data)
        assert (detail.run.name, detail.run.task) == (f"bot {HOSTILE}", f"task {HOSTILE}")
        assert detail.steps[1].error is not None
        assert detail.steps[1].error.message == f"{HOSTILE}1"


def test_a_replay_report_as_json_is_exact(hostile: Hostile, tmp_path: Path) -> None:
    edited = tmp_path / "edited.py"
    edited.write_text(hostile_code(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoIsolationWarning)
        args = ("replay", hostile.run_id, "--step", "0", "--code", str(edited), "--json")
        result = invoke(hostile.home, *args)
    assert raw_characters(result.output) == []
    [report] = [ReplayReport.model_validate(r) for r in json.loads(result.output)]
    stdout = next(d for d in report.differences if d.field == "stdout")
    assert (stdout.recorded, stdout.replayed) == (f"{HOSTILE}1\n", f"{HOSTILE}3\n")


# -- a real process, on a pipe and on a terminal --------------------------------------

# Each longer than 80 characters; the task shorter than the list's cut of a task.
LONG_NAME = "nightly-" + "-".join(f"part{i}" for i in range(16))  # 109 characters
LONG_TASK = "reconcile " + " ".join(f"ledger{i}" for i in range(12))  # 107 characters


@pytest.fixture(scope="module")
def long_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("long") / "store"
    with capture(home), codetape.run(LONG_NAME, task=LONG_TASK):
        pass
    return home


def codetape_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    return {**env, "TERM": "xterm-256color"}


def test_piped_output_keeps_long_names_and_tasks_whole(long_run: Path) -> None:
    piped = subprocess.run(
        [sys.executable, "-m", "codetape", "--home", str(long_run), "runs"],
        capture_output=True,
        text=True,
        env=codetape_env(),
        check=True,
    )
    in_process = invoke(long_run, "runs")
    for output in (piped.stdout, in_process.output):
        [row] = [line for line in output.splitlines() if LONG_NAME in line]
        assert LONG_TASK in row
        assert "…" not in output


def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError as exc:  # the other end closed: EIO on Linux
            if exc.errno != errno.EIO:
                raise
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def run_on_a_terminal(*args: str) -> str:
    """``codetape ARGS`` as a real process on a pseudo-terminal 400 columns wide; what
    the terminal received."""
    main, side = pty.openpty()
    try:
        fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 400, 0, 0))
        process = subprocess.Popen(
            [sys.executable, "-m", "codetape", *args],
            stdin=side,
            stdout=side,
            stderr=side,
            env=codetape_env(),
        )
    finally:
        os.close(side)  # only the child holds it now: reading ends when the child does
    try:
        output = read_all(main).decode("utf-8", "replace")
    finally:
        os.close(main)
    assert process.wait() == 0, output
    return output


def test_a_terminal_gets_only_codetapes_own_colours(hostile: Hostile) -> None:
    output = run_on_a_terminal("--home", str(hostile.home), "show", hostile.run_id)
    colours = re.compile(r"\x1b\[[0-9;]*m")
    assert colours.search(output), "a terminal gets rich's colours: this is one"
    plain = colours.sub("", output)
    assert raw_characters(plain) == []
    assert missing(plain) == []
