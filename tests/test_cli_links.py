"""Run ids in the CLI's rich output are terminal hyperlinks (OSC 8) to the viewer's page
for the run, when the viewer's address is known (``CODETAPE_VIEWER_URL``, or the
address a running ``codetape ui`` wrote into the store); only codetape's own links,
never anything recorded.

The commands run in a subprocess with ``FORCE_COLOR=1``: rich writes hyperlinks only
to a terminal, and decides that when the console is made.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import codetape
from codetape.cli import cli
from codetape.cli._links import VIEWER_FILE, VIEWER_URL_ENV, safe_base, write_viewer_address

BASE = "http://127.0.0.1:8765"
# OSC 8: ESC ] 8 ; params ; target (ST or BEL) text ESC ] 8 ; ; ST
LINK = re.compile(r"\x1b]8;[^;\x07\x1b]*;([^\x07\x1b]*)(?:\x1b\\|\x07)([^\x1b]*)")
HOSTILE = (
    "[link=http://evil.example]x[/link] \x1b]8;;http://evil.example\x07here\x1b]8;;\x07 "
    "\x1b]0;pwned\x07\u202egnp.exe"
)


def terminal(home: Path, *args: str, viewer: str | None = None) -> str:
    """What ``codetape ARGS`` writes to a terminal (rich believes it is one)."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", VIEWER_URL_ENV)}
    env.update(FORCE_COLOR="1", COLUMNS="250", TERM="xterm-256color")
    if viewer is not None:
        env[VIEWER_URL_ENV] = viewer
    result = subprocess.run(
        [sys.executable, "-m", "codetape", "--home", str(home), *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return result.stdout


def links(output: str) -> list[tuple[str, str]]:
    """Each hyperlink's target and text."""
    return [(target, text) for target, text in LINK.findall(output) if target]


@pytest.fixture
def two_runs(home: Path) -> list[str]:
    """A passing run and one with a hostile name and task whose step failed."""

    @codetape.code_action
    def execute(code: str, namespace: dict[str, Any]) -> None:
        exec(code, namespace)

    with codetape.run("calm", task="nothing"):
        execute("x = 1", {})
    with codetape.run(HOSTILE, task=HOSTILE), pytest.raises(ZeroDivisionError):
        execute("x = 1 / 0", {})
    return [r.id for r in codetape.Store().runs()]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8501", "http://127.0.0.1:8501"),
        ("https://viewer.example/codetape/", "https://viewer.example/codetape"),
        (" http://localhost:8502 ", "http://localhost:8502"),
        ("http://[::1]:8501", None),  # brackets would end rich's [link=...]
        ("http://x]evil[/link]", None),
        ("http://a b", None),
        ("javascript:alert(1)", None),
        ("http://x/\x1b]8;;", None),
        ("file:///etc/passwd", None),
        ("", None),
        (8501, None),
    ],
)
def test_only_a_plain_http_address_is_a_viewer_base(given: object, expected: str | None) -> None:
    assert safe_base(given) == expected


def test_run_ids_link_to_their_run_page_when_the_viewer_url_is_given(
    home: Path, two_runs: list[str]
) -> None:
    hostile, calm = two_runs
    found = links(terminal(home, "runs", viewer=BASE))
    assert found == [
        (f"{BASE}/run?run={hostile}", hostile[:12]),
        (f"{BASE}/run?run={calm}", calm[:12]),
    ]
    shown = terminal(home, "show", hostile[:8], viewer=BASE + "/")
    targets = [target for target, _ in links(shown)]
    assert f"{BASE}/run?run={hostile}" in targets  # the header's id
    assert f"{BASE}/run?run={hostile}&step=0" in targets  # the first failed step's command
    assert all(t.startswith(f"{BASE}/run?run={hostile}") for t in targets)


@pytest.mark.parametrize("command", [("runs",), ("show", "last"), ("failures",)])
def test_recorded_text_never_becomes_a_link(
    home: Path, two_runs: list[str], command: tuple[str, ...]
) -> None:
    output = terminal(home, *command, viewer=BASE)
    assert links(output)
    for target, _ in links(output):
        assert target.startswith(f"{BASE}/run?run="), target
    assert "evil.example" not in "".join(t for t, _ in links(output))
    assert "\x1b]0;" not in output
    assert "\u202e" not in output
    assert "[link=http://evil.example]x[/link]" in output  # the markup, as text


def test_without_a_known_viewer_nothing_is_linked(home: Path, two_runs: list[str]) -> None:
    assert links(terminal(home, "runs")) == []
    assert links(terminal(home, "runs", viewer="")) == []
    assert links(terminal(home, "runs", viewer="http://x]evil")) == []
    output = re.sub(r"\x1b\[[0-9;]*m", "", terminal(home, "show", "last"))
    assert "in the viewer (codetape ui): http://127.0.0.1:8501/run?run=" in output


@pytest.fixture
def viewer_process() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that runs what the viewer's server runs (as its command line says)."""
    with subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", "codetape.viewer._server"],
        stdin=subprocess.PIPE,
    ) as process:
        yield process
        process.kill()


def test_codetape_ui_tells_the_store_where_it_serves(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: started.append(argv))
    for host, port, expected in (
        ("127.0.0.1", "8502", "http://127.0.0.1:8502"),
        ("0.0.0.0", "8503", "http://127.0.0.1:8503"),
    ):
        result = CliRunner().invoke(
            cli, ["--home", str(home), "ui", "--host", host, "--port", port]
        )
        assert result.exit_code == 0, result.output
        said = json.loads((home / VIEWER_FILE).read_text())
        assert said == {"url": expected, "pid": os.getpid()}
    assert len(started) == 2


def test_run_ids_link_to_the_running_viewer_and_stop_when_it_stops(
    home: Path, two_runs: list[str], viewer_process: subprocess.Popen[bytes]
) -> None:
    write_viewer_address(home, "http://127.0.0.1:8599", viewer_process.pid)
    assert {t for t, _ in links(terminal(home, "runs"))} == {
        f"http://127.0.0.1:8599/run?run={run}" for run in two_runs
    }
    # The variable wins over the file; set empty, it turns the links off.
    assert links(terminal(home, "runs", viewer=BASE))[0][0].startswith(BASE)
    assert links(terminal(home, "runs", viewer="")) == []
    viewer_process.kill()
    viewer_process.wait()
    assert links(terminal(home, "runs")) == []


def test_a_live_process_that_is_not_the_viewer_gets_no_links(
    home: Path, two_runs: list[str]
) -> None:
    # A dead viewer's pid given to another process: this one (pytest) is alive.
    write_viewer_address(home, "http://127.0.0.1:8599", os.getpid())
    if Path("/proc/self/cmdline").exists():
        assert links(terminal(home, "runs")) == []


@pytest.mark.parametrize(
    "content",
    [
        '{"url": "http://x]evil[/link]", "pid": PID}',
        '{"url": "http://127.0.0.1:1", "pid": "PID"}',
        '{"url": "http://127.0.0.1:1", "pid": true}',
        '["http://127.0.0.1:1", PID]',
        "not json",
    ],
)
def test_a_damaged_viewer_file_links_nothing(
    home: Path,
    two_runs: list[str],
    viewer_process: subprocess.Popen[bytes],
    content: str,
) -> None:
    (home / VIEWER_FILE).write_text(content.replace("PID", str(viewer_process.pid)))
    assert links(terminal(home, "runs")) == []
