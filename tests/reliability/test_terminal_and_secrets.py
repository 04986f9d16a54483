"""Terminal and secrets: what an agent wrote never drives the user's terminal, and what
it leaked never reaches the store.

Terminal: a run whose name, task, code, output, tool call and error carry terminal
escape sequences (an OSC 8 hyperlink, an OSC 0 window title, a clear screen), a NUL, a
C1 control, a right-to-left override and rich markup is recorded through the public API,
then printed by the real CLI (``runs``, ``show``, ``diff``, ``replay``, and ``--json``),
in-process and as a real process on a pipe and on a pseudo-terminal.

Secrets: an agent passes an Authorization header, an ``api_key=`` and a ``cookie=`` to a
tool that answers with a ``set-cookie``, prints ``password=...`` and the base64 and hex
of a secret environment value; the run is recorded through the public API (as code the
agent runs itself and in a local sandbox), then every file of the store and the decoded
DuckDB tables are searched for the secrets, as ``tests/test_secrets.py`` does.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import os
import pty
import re
import secrets
import string
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
from hypothesis import given, settings
from hypothesis import strategies as st

import codetape
from codetape.cli import cli
from codetape.sandbox import NoIsolationWarning
from codetape.schemas import ReplayReport, RunDetail, Step
from codetape.testing import capture
from codetape.tracer._redact import Redactor

from ..test_secrets import leaks

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


# -- 16. secrets by name and encoded env secrets never reach the store ------------------
#
# The canaries are random letters and digits, shaped like no known credential, so only
# their names (or, for the env secret, its encodings) can give them away.


@dataclass(frozen=True)
class Named:
    bearer: str  # an Authorization header's credentials, in a tool's headers argument
    api_key: str  # an api_key= keyword argument
    cookie: str  # a cookie= argument
    set_cookie: str  # a set-cookie a tool returns
    password: str  # printed as password=...
    env: str  # the value of SERVICE_TOKEN in the environment

    def fragments(self) -> dict[str, str]:
        secret = self.env.encode()
        basic = base64.b64encode(b"deploy:" + secret).decode()
        return {
            "bearer": self.bearer,
            "api_key": self.api_key,
            "cookie": self.cookie,
            "set-cookie": self.set_cookie,
            "password": self.password,
            "env base64": base64.b64encode(secret).decode(),
            "env base64 url-safe": base64.urlsafe_b64encode(secret).decode(),
            "env hex": secret.hex(),
            # the env secret inside a longer base64 text (a Basic Authorization):
            # any 12 characters of the part that depends on the secret alone
            **{f"env in basic [{i}]": basic[i : i + 12] for i in range(12, len(basic) - 16)},
        }


@pytest.fixture
def named(monkeypatch: pytest.MonkeyPatch) -> Named:
    """Fresh canaries; the env one is set before configure(), whose Redactor reads it."""
    canaries = Named(*(rand(28) for _ in range(6)))
    monkeypatch.setenv("SERVICE_TOKEN", canaries.env)
    return canaries


def rand(n: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


def call_api(url: str, headers: dict[str, str], api_key: str, cookie: str) -> dict[str, Any]:
    """A tool whose answer carries a session cookie (set by the test) and a token count."""
    return {
        "status": 200,
        "set-cookie": f"sid={API_SESSION[0]}; Path=/; HttpOnly",
        "tokens_used": 1234,
    }


API_SESSION = [""]


def leaky_steps(c: Named) -> list[str]:
    secret = c.env.encode()
    return [
        f"config = {{'user': 'deploy', 'password': {c.password!r}, 'max_tokens': 256}}\n"
        "usage = {'tokens_used': 1234, 'prompt_tokens': 1000}\n",
        "reply = call_api('https://api.example.com/v1',"
        f" headers={{'Authorization': 'Bearer {c.bearer}'}},"
        f" api_key={c.api_key!r}, cookie='session={c.cookie}')\n"
        "print(reply)\n"
        "print('password=' + config['password'])\n"
        f"print({base64.b64encode(secret).decode()!r}, {secret.hex()!r})\n"
        f"print({base64.urlsafe_b64encode(secret).decode()!r})\n"
        f"print('Authorization: Basic ' + {base64.b64encode(b'deploy:' + secret).decode()!r})\n"
        "print('Reset your password, then sign in again: the password needs 12 characters.')\n",
    ]


def record_leaky(c: Named, where: str) -> str:
    """The steps run as code actions the agent executes itself, or in a local sandbox."""
    API_SESSION[0] = c.set_cookie
    steps = leaky_steps(c)
    with codetape.run("leaky-api-bot", task="rotate the password of the staging db") as run:
        if where == "observed":
            namespace: dict[str, Any] = {"call_api": codetape.tool(call_api)}
            for code in steps:
                execute(code, namespace)
        else:
            with codetape.Sandbox(backend="local", tools=[call_api]) as sandbox:
                for code in steps:
                    assert sandbox.run(code).status == "ok"
    return run.id


@pytest.mark.parametrize("where", ["observed", "sandboxed"])
def test_secrets_by_name_and_encoded_env_secrets_reach_no_file_of_the_store(
    home: Path, named: Named, where: str
) -> None:
    codetape.configure(home=home, otlp=False)
    record_leaky(named, where)
    assert leaks(home, named.fragments()) == {}


@pytest.mark.parametrize("where", ["observed", "sandboxed"])
def test_markers_say_what_was_hidden_and_the_rest_stays(
    home: Path, named: Named, where: str
) -> None:
    codetape.configure(home=home, otlp=False)
    run_id = record_leaky(named, where)
    store = codetape.Store(home)
    assert store.run(run_id).task == "rotate the password of the staging db"
    first, step = store.steps(run_id)
    [call] = step.tool_calls
    assert call.arguments == {
        "url": "https://api.example.com/v1",
        "headers": {"Authorization": "Bearer [REDACTED:authorization]"},
        "api_key": "[REDACTED:api_key]",
        "cookie": "session=[REDACTED:cookie]",
    }
    assert call.result == {
        "status": 200,
        "set-cookie": "sid=[REDACTED:cookie]; Path=/; HttpOnly",
        "tokens_used": 1234,
    }
    assert "'set-cookie': 'sid=[REDACTED:cookie]; Path=/; HttpOnly'" in step.stdout
    assert "password=[REDACTED:password]\n" in step.stdout
    assert "[REDACTED:env:SERVICE_TOKEN] [REDACTED:env:SERVICE_TOKEN]\n" in step.stdout
    assert "Authorization: Basic [REDACTED:authorization]" in step.stdout
    # prose about passwords, and counts of tokens, are not secrets
    assert "Reset your password, then sign in again: the password needs 12 characters." in (
        step.stdout
    )
    assert "'password': '[REDACTED:password]', 'max_tokens': 256" in first.code
    assert "tokens_used" in first.code
    usage = first.variables_after["usage"]
    assert usage.restorable, usage.reason
    assert "'tokens_used': 1234" in usage.preview
    assert "REDACTED" not in usage.preview
    config = first.variables_after["config"]
    assert not config.restorable
    assert "'password': '[REDACTED:password]'" in config.preview
    assert "'max_tokens': 256" in config.preview


def test_with_redaction_off_the_scan_finds_every_canary(home: Path, named: Named) -> None:
    codetape.configure(home=home, otlp=False, redact=False)
    record_leaky(named, "observed")
    assert set(leaks(home, named.fragments())) == set(named.fragments())


@pytest.mark.parametrize(
    "text",
    [
        "Reset your password, then sign in again: the password needs 12 characters.",
        "Please enter your password: it must have a digit",
        "tokens_used=1234 max_tokens=256 token_count: 3",
        "password = input('Password: ')\nclient = Client(token=token, api_key=key)",
        'headers = {"Authorization": f"Bearer {token}", "Cookie": cookie}',
        'print("password=" + pw, "token: %s" % t, f"api_key={k}")',
        "curl -H 'Authorization: Bearer $API_TOKEN' https://api.example.com",
        "if password == 'x' or secret != y:",
    ],
)
def test_prose_counts_and_code_about_secrets_stay(text: str) -> None:
    assert Redactor({}).text(text) == text


_named_parts = st.one_of(
    st.text(max_size=8),
    st.sampled_from(
        [
            *["password", "Password", "api_key", "x-api-key", "token", "tokens_used"],
            *["Cookie", "set-cookie", "Authorization", "Proxy-Authorization"],
            *[":", "=", ": ", " ", "\n", "\r\n", "'", '"', "\\", '\\"', ";", ",", ")"],
            *["Bearer ", "Basic ", "Path=/", "sid=", "HttpOnly", "$", "{", "%s"],
            *["hunter2", "[REDACTED:jwt]", "[REDACTED:password]", "[REDACTED]"],
        ]
    ),
)


@settings(deadline=None, max_examples=400)
@given(parts=st.lists(_named_parts, max_size=14))
def test_redaction_by_name_is_idempotent_and_the_bytes_check_agrees(parts: list[str]) -> None:
    red = Redactor({})
    raw = "".join(parts)
    once = red.text(raw)
    assert red.text(once) == once
    if once != raw:
        assert red.contains_secret(raw.encode("utf-8", "surrogatepass"))
