"""The web viewer: only the user, only from their machine (issue 10, items 11 to 14).

Every server here is the real one, started as a user starts it (``python -m codetape ui``)
on a free port, over a store of real recordings: a run in a local sandbox whose second
step fails, and an observed step that printed 100 MB. Requests go through real clients:
``http.client`` and ``websockets`` with the ``Host`` and ``Origin`` a web page would
send, and Debian's Chromium (Playwright) with a host-resolver rule that plays a DNS
rebinding attack (``attacker.example`` resolving to 127.0.0.1). The token checks also run
through Streamlit's AppTest, on the same store, and against Docker for a step recorded
there.

11. A name that is not loopback (or the ``--host`` given) gets 403 and a short text,
    for pages and websockets alike; a websocket needs the viewer's own ``Origin``.
12. ``.streamlit/config.toml`` files and ``STREAMLIT_*`` variables that turn CORS or
    XSRF protection off are overridden, and ``codetape ui`` says so on stderr.
13. Code runs from the page only in a session opened with the launch's token, and a
    local replay only with ``--allow-local-exec``; otherwise the buttons are disabled
    and say why, and a click forged over the websocket runs nothing.
14. Past a few MB, a text is offered as a download, never rendered in full.

Screenshots go to ``artifacts/browser/security/``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest
import streamlit as st
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.testing.v1 import AppTest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

import codetape
from codetape.sandbox import NoIsolationWarning
from codetape.testing import capture
from codetape.viewer import APP

from .. import browser as shared
from ..browser import CHROMIUM, HAVE_PLAYWRIGHT, START_S, WAIT_MS
from ..conftest import require

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

if HAVE_PLAYWRIGHT:  # else the `browser` fixture skips, or fails under CI=true
    from playwright.sync_api import expect, sync_playwright

pytestmark = pytest.mark.filterwarnings("ignore::codetape.sandbox.NoIsolationWarning")

CHROMIUM_ARGS = [
    *shared.CHROMIUM_ARGS,
    # A DNS rebinding attack, played: the attacker's name resolves to this machine.
    "--host-resolver-rules=MAP attacker.example 127.0.0.1",
]
ARTIFACTS = shared.ARTIFACTS / "security"
TIMEOUT = 60
ATTACKER = "attacker.example"
REFUSED = "codetape viewer: refused."
BIG = 100_000_000
FAILING_STEP = "note = 'x'\nz = [1, 2]\nprint(z[5])"
NOTE_LINK = "the replay buttons need the link `codetape ui` printed"
NOTE_LOCAL = "the viewer replays it only when started with `codetape ui --allow-local-exec`"


def plain(markdown: str) -> str:
    """A note as the browser shows it: its inline code without backticks."""
    return markdown.replace("`", "")


def lookup(city: str) -> dict[str, Any]:
    return {"city": city, "temp": 21}


@dataclass(frozen=True)
class Store:
    home: Path
    sandboxed: str  # a local-sandbox run: step 0 ok, step 1 failed
    chatty: str  # one observed step that printed BIG characters (and a newline)


_CHATTY = f"""
import sys
import codetape

@codetape.code_action
def execute(code, namespace):
    exec(code, namespace)

with codetape.run("chatty", task="a lot of output") as run:
    execute("print('x' * {BIG})", {{}})
print(run.id, file=sys.stderr)
"""


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without OTLP or Streamlit settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_EXPORTER_OTLP", "STREAMLIT_", "CODETAPE_UI_"))
    }
    return {**env, **extra}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    home = tmp_path_factory.mktemp("viewer-security") / "store"
    with capture(home), warnings.catch_warnings():
        warnings.simplefilter("ignore", NoIsolationWarning)
        with (
            codetape.run("weather-bot", task="weather") as run,
            codetape.Sandbox(backend="local", tools=[lookup]) as sandbox,
        ):
            assert sandbox.run("w = lookup('paris')\nprint(w['temp'])").status == "ok"
            assert sandbox.run(FAILING_STEP).status == "error"
    # 100 MB of stdout, printed by a process of its own (its copy of the output goes
    # nowhere, not into this test's captured output).
    chatty = subprocess.run(
        [sys.executable, "-c", _CHATTY], env=_clean_env(CODETAPE_HOME=str(home)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True,
    ).stderr.split()[-1]  # fmt: skip
    return Store(home, run.id, chatty)


# -- the real server ----------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    address: str  # where to connect
    port: int
    link: str  # the link codetape ui printed
    token: str
    stderr: Path
    pid: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def errors(self) -> str:
        return self.stderr.read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(
    viewer: Viewer, path: str, host: str | None = None, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], str]:
    """One request to the viewer's address with this ``Host`` (default: its own):
    status, headers (lower-case names) and body."""
    conn = http.client.HTTPConnection(viewer.address, viewer.port, timeout=TIMEOUT)
    try:
        own = f"127.0.0.1:{viewer.port}"
        conn.request(method, path, headers={"Host": own if host is None else host, **headers})
        answer = conn.getresponse()
        body = answer.read().decode("utf-8", "replace")
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, body
    finally:
        conn.close()


@contextlib.contextmanager
def launched(
    home: Path, tmp: Path, *args: str, address: str = "127.0.0.1", **env: str
) -> Iterator[Viewer]:
    """``python -m codetape ui --home HOME --port PORT *args`` run in ``tmp/project``
    with ``tmp/home`` as ``$HOME`` (so the Streamlit config files are the test's), up
    and answering on ``address``; stopped at the end."""
    port = _free_port()
    for folder in ("project", "home"):
        (tmp / folder).mkdir(exist_ok=True)
    out, err = tmp / f"ui-{port}.out", tmp / f"ui-{port}.err"
    environment = _clean_env(HOME=str(tmp / "home"), **env)
    environment["STREAMLIT_SERVER_FILE_WATCHER_TYPE"] = "none"  # nothing to watch: less load
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "codetape", "ui", "--home", str(home), "--port", str(port),
             *args],
            stdout=stdout, stderr=stderr, cwd=tmp / "project", env=environment,
        )  # fmt: skip
    try:
        viewer = _wait_until_up(proc, address, port, out, err)
        yield viewer
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _wait_until_up(
    proc: subprocess.Popen[bytes], address: str, port: int, out: Path, err: Path
) -> Viewer:
    def logs() -> str:
        return f"stdout:\n{out.read_text()}\nstderr:\n{err.read_text()}"

    for _ in range(START_S * 4):
        assert proc.poll() is None, f"codetape ui exited:\n{logs()}"
        link = re.search(r"codetape viewer: (http://\S+)", out.read_text())
        if link is not None:
            token = parse_qs(urlsplit(link.group(1)).query).get("token", [""])[0]
            viewer = Viewer(address, port, link.group(1), token, err, proc.pid)
            with contextlib.suppress(OSError):
                if request(viewer, "/_stcore/health", f"{address}:{port}")[0] == 200:
                    return viewer
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.25)
    raise AssertionError(f"codetape ui did not answer in {START_S} s:\n{logs()}")


@pytest.fixture(scope="module")
def viewer(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewer]:
    """``codetape ui`` as a user starts it: loopback, no --allow-local-exec."""
    with launched(store.home, tmp_path_factory.mktemp("ui")) as up:
        yield up


def websocket(viewer: Viewer, name: str, origin: str | None) -> ClientConnection:
    """A websocket to the viewer's stream, over a connection to its address, sent to
    ``name`` (the ``Host``) from ``origin`` (None: no ``Origin`` header)."""
    sock = socket.create_connection((viewer.address, viewer.port), timeout=TIMEOUT)
    return connect(
        f"ws://{name}/_stcore/stream",
        sock=sock,
        origin=Origin(origin) if origin is not None else None,
        open_timeout=TIMEOUT,
    )


def refused_websocket(viewer: Viewer, name: str, origin: str | None) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as refused, websocket(viewer, name, origin):
        pass
    return refused.value.response.status_code, bytes(refused.value.response.body or b"").decode()


# -- 11. DNS rebinding: only loopback names, only the viewer's own origin ------------


def test_a_request_sent_to_another_name_is_refused(viewer: Viewer, store: Store) -> None:
    port = viewer.port
    for name in (f"{ATTACKER}:{port}", ATTACKER, f"127.0.0.1.{ATTACKER}:{port}",
                 f"localhost.{ATTACKER}:{port}", f"{ATTACKER}:{port}@127.0.0.1", ""):  # fmt: skip
        for path in ("/", f"/run?run={store.sandboxed}", "/_stcore/health", "/_stcore/host-config"):
            status, headers, body = request(viewer, path, host=name)
            assert status == 403, (name, path, status, body[:200])
            assert body.startswith(REFUSED), (name, path)
            assert "loopback address" in body
            assert headers["content-type"] == "text/plain; charset=utf-8"
    # The names of this machine's loopback address are served, on any port (an SSH
    # tunnel moves it).
    for name in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost:9999"):
        status, _, body = request(viewer, "/", host=name)
        assert status == 200, (name, status, body[:200])
        assert "<html" in body.lower()
    assert "ignoring" not in viewer.errors()  # no setting was overridden


def test_a_websocket_needs_a_loopback_name_and_the_viewers_own_origin(viewer: Viewer) -> None:
    port = viewer.port
    rebound = f"{ATTACKER}:{port}"
    status, body = refused_websocket(viewer, rebound, f"http://{rebound}")
    assert (status, body.startswith(REFUSED), "loopback address" in body) == (403, True, True)
    for origin in (f"http://{ATTACKER}", f"http://{rebound}", "null", None,
                   f"http://localhost:{port}", f"ftp://127.0.0.1:{port}"):  # fmt: skip
        status, body = refused_websocket(viewer, f"127.0.0.1:{port}", origin)
        assert status == 403, origin
        assert body.startswith(REFUSED), origin
        assert "from its own pages" in body
    # The viewer's own page connects, and the server speaks to it.
    with websocket(viewer, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}") as ws:
        assert ws.ping().wait(TIMEOUT)
    with websocket(viewer, f"localhost:{port}", f"http://localhost:{port}") as ws:
        assert ws.ping().wait(TIMEOUT)


def test_a_request_from_another_origin_is_refused(viewer: Viewer) -> None:
    """A page elsewhere can still send a request to 127.0.0.1 (its answer hidden from it):
    one that says where it came from is refused before it reaches Streamlit."""
    port = viewer.port
    for method, path in (("PUT", "/_stcore/upload_file/s/f"), ("GET", "/_stcore/health")):
        status, _, body = request(viewer, path, method=method, Origin=f"http://{ATTACKER}")
        assert status == 403, (method, path, body[:200])
        assert body.startswith(REFUSED)
    status, _, _ = request(viewer, "/_stcore/health", Origin=f"http://127.0.0.1:{port}")
    assert status == 200


def test_the_host_given_to_codetape_ui_is_served(store: Store, tmp_path: Path) -> None:
    """``--host NAME`` binds NAME's address and serves NAME too; other names stay out."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        address = ""
    require(bool(address), f"this machine's name ({name}) resolving to an address", "/etc/hosts")
    with launched(store.home, tmp_path, "--host", name, address=address) as up:
        assert f"http://{name}:{up.port}/?token=" in up.link
        for host in (f"{name}:{up.port}", f"{name.upper()}:{up.port}", f"127.0.0.1:{up.port}"):
            status, _, body = request(up, "/", host=host)
            assert status == 200, (host, body[:200])
        status, _, body = request(up, "/", host=f"{ATTACKER}:{up.port}")
        assert (status, body.startswith(REFUSED)) == (403, True)
        with websocket(up, f"{name}:{up.port}", f"http://{name}:{up.port}") as ws:
            assert ws.ping().wait(TIMEOUT)


@pytest.mark.browser
@pytest.mark.slow
def test_a_rebound_name_gets_no_viewer_in_chromium(
    browser: Browser, viewer: Viewer, store: Store
) -> None:
    """The attack as a browser plays it: the attacker's name resolves to 127.0.0.1, and
    its page asks for the viewer's Run page, with its replay buttons."""
    page = browser.new_page()
    page.goto(f"http://{ATTACKER}:{viewer.port}/run?run={store.sandboxed}&step=1")
    expect(page.locator("body")).to_contain_text(REFUSED, timeout=WAIT_MS)
    shot(page, "11-rebound-name")
    assert page.get_by_role("button").count() == 0
    assert page.get_by_text("Replay this step").count() == 0
    # The same page at a loopback name is the viewer.
    page.goto(f"http://localhost:{viewer.port}/run?run={store.sandboxed}&step=1")
    expect(page.get_by_role("heading", name="Run", exact=True)).to_be_visible(timeout=WAIT_MS)
    page.close()


# -- 12. the user's config cannot turn the protections off ----------------------------


def _assert_protected(up: Viewer) -> None:
    """CORS and XSRF protection are on, as a page elsewhere would find them."""
    status, headers, _ = request(up, "/_stcore/health")
    assert status == 200
    # With CORS off, every answer says "Access-Control-Allow-Origin: *": any page may
    # read it.
    assert "access-control-allow-origin" not in headers
    # With XSRF on, the server hands out its token, and an upload without it is refused.
    assert "_streamlit_xsrf=" in headers.get("set-cookie", "")
    status, _, body = request(up, "/_stcore/upload_file/session/file", method="PUT")
    assert (status, "XSRF" in body) == (403, True), body[:200]
    status, body = refused_websocket(up, f"127.0.0.1:{up.port}", f"http://{ATTACKER}")
    assert (status, body.startswith(REFUSED)) == (403, True)


def test_config_files_that_turn_protections_off_are_overridden_and_said(
    store: Store, tmp_path: Path
) -> None:
    user = tmp_path / "home" / ".streamlit" / "config.toml"
    project = tmp_path / "project" / ".streamlit" / "config.toml"
    for path, text in (
        (user, "[server]\nenableCORS = false\n"),
        (project, "[server]\nenableXsrfProtection = false\n[global]\ndevelopmentMode = true\n"),
    ):
        path.parent.mkdir(parents=True)
        path.write_text(text)
    with launched(store.home, tmp_path) as up:
        _assert_protected(up)
        said = [line for line in up.errors().splitlines() if "ignoring" in line]
    assert said == [
        f"codetape ui: ignoring server.enableCORS = false (in {user}): the viewer keeps "
        "CORS protection on",
        f"codetape ui: ignoring server.enableXsrfProtection = false (in {project}): the "
        "viewer keeps XSRF protection on",
        f"codetape ui: ignoring global.developmentMode = true (in {project}): the viewer "
        "keeps CORS protection on",
    ]


def test_environment_variables_that_turn_protections_off_are_overridden_and_said(
    store: Store, tmp_path: Path
) -> None:
    with launched(
        store.home,
        tmp_path,
        STREAMLIT_SERVER_ENABLE_CORS="false",
        STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION="false",
    ) as up:
        _assert_protected(up)
        said = [line for line in up.errors().splitlines() if "ignoring" in line]
    assert said == [
        "codetape ui: ignoring server.enableCORS = 'false' (by $STREAMLIT_SERVER_ENABLE_CORS): "
        "the viewer keeps CORS protection on",
        "codetape ui: ignoring server.enableXsrfProtection = 'false' "
        "(by $STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION): the viewer keeps XSRF protection on",
    ]


# -- 13. running code needs the launch's token (and local code, --allow-local-exec) -----


def test_each_launch_prints_a_link_with_a_token_of_its_own(
    viewer: Viewer, store: Store, tmp_path: Path
) -> None:
    assert viewer.link == f"http://127.0.0.1:{viewer.port}/?token={viewer.token}"
    assert len(viewer.token) >= 32
    with launched(store.home, tmp_path) as other:
        assert other.token != viewer.token
        # The token is never in a process list: only in the link and the environment
        # (which only the user can read). `codetape ui` became the server.
        args = Path(f"/proc/{other.pid}/cmdline").read_bytes()
        assert b"codetape.viewer._server" in args
        assert other.token.encode() not in args


@pytest.mark.browser
@pytest.mark.slow
def test_replay_buttons_need_the_token_and_local_replays_allow_local_exec_in_chromium(
    browser: Browser, viewer: Viewer, store: Store
) -> None:
    page = browser.new_page()
    step = f"{viewer.base}/run?run={store.sandboxed}&step=1"
    # Without the token: the buttons are disabled, and a note says how to get the link.
    page.goto(step)
    failing = step_expander(page, 1)
    expect(failing.get_by_text(plain(NOTE_LINK))).to_be_visible(timeout=WAIT_MS)
    for label in ("Replay this step", "Replay from here", "Edit and replay"):
        expect(failing.get_by_role("button", name=label, exact=True)).to_be_disabled()
    shot(failing, "13-no-token")
    # With it, in a new session: the step replays in a local subprocess, which this
    # viewer was not started to allow.
    page.goto(f"{step}&token={viewer.token}")
    failing = step_expander(page, 1)
    expect(failing.get_by_text(plain(NOTE_LOCAL))).to_be_visible(timeout=WAIT_MS)
    expect(failing.get_by_text(f"codetape replay {store.sandboxed[:12]} --step 1")).to_be_visible()
    for label in ("Replay this step", "Replay from here", "Edit and replay"):
        expect(failing.get_by_role("button", name=label, exact=True)).to_be_disabled()
    shot(failing, "13-token-local-step")
    # A wrong token unlocks nothing.
    page.goto(f"{step}&token={secrets.token_urlsafe(32)}")
    expect(step_expander(page, 1).get_by_text(plain(NOTE_LINK))).to_be_visible(timeout=WAIT_MS)
    page.close()
    assert [r.id for r in codetape.Store(store.home).runs(limit=50) if r.replay_of] == []


def test_a_click_forged_on_a_disabled_button_runs_nothing(viewer: Viewer, store: Store) -> None:
    """A client that skips the page and sends the button's click itself, over the
    viewer's own websocket: the server runs nothing without the token."""
    key = f"replay:{store.sandboxed}:1"
    query = f"run={store.sandboxed}&step=1"
    own = f"127.0.0.1:{viewer.port}"
    with websocket(viewer, own, f"http://{own}") as ws:
        ids = _rerun(ws, query, [])
        button = next(i for i in ids if key in i)
        ids = _rerun(ws, query, [button])
    assert any(key in i for i in ids)  # the page was drawn again, after the click
    assert [r.id for r in codetape.Store(store.home).runs(limit=50) if r.replay_of] == []


def _rerun(ws: ClientConnection, query: str, clicked: list[str]) -> list[str]:
    """What the page sends when it asks for a run (with ``clicked`` buttons triggered),
    then read until the run ends: the ids of the widgets drawn."""
    ask = BackMsg()
    ask.rerun_script.query_string = query
    ask.rerun_script.page_name = "run"
    for widget_id in clicked:
        ask.rerun_script.widget_states.widgets.add(id=widget_id, trigger_value=True)
    ws.send(ask.SerializeToString())
    ids: list[str] = []
    while True:
        answer = ForwardMsg()
        answer.ParseFromString(ws.recv(timeout=TIMEOUT))
        kind = answer.WhichOneof("type")
        if kind == "delta" and answer.delta.WhichOneof("type") == "new_element":
            element = answer.delta.new_element
            part = element.WhichOneof("type")
            drawn = getattr(getattr(element, part), "id", None) if part else None
            if drawn:
                ids.append(str(drawn))
        if kind == "script_finished":
            return ids


# -- 13, through AppTest: the session keeps the token; Docker replays need only it -----


TOKEN = "launch-token"


@pytest.fixture
def served(store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The store, read by the viewer as ``codetape ui`` (token ``TOKEN``) serves it."""
    monkeypatch.setenv("CODETAPE_HOME", str(store.home))
    monkeypatch.setenv("CODETAPE_UI_TOKEN", TOKEN)
    monkeypatch.delenv("CODETAPE_UI_ALLOW_LOCAL_EXEC", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    return store


def open_page(page: str, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(params)
    at.run()
    if page != "runs":
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def buttons(at: AppTest, run: str, step: int) -> dict[str, bool]:
    """The replay buttons of a step: label → disabled."""
    keys = {f"replay:{run}:{step}", f"replay-from:{run}:{step}", f"edit:{run}:{step}"}
    return {b.label: b.disabled for b in at.button if b.key in keys}


def test_a_token_given_once_is_kept_for_the_session(served: Store) -> None:
    at = open_page("runs", token=TOKEN)  # the link codetape ui printed
    at.query_params.clear()
    at.query_params.update({"run": served.sandboxed, "step": "1"})
    at.switch_page("pages/run.py").run()
    # Unlocked: what still stops the replay is that it would run locally.
    assert set(buttons(at, served.sandboxed, 1).values()) == {True}
    assert any(NOTE_LOCAL in c.value for c in at.caption)
    assert not any(NOTE_LINK in c.value for c in at.caption)


def test_local_replays_run_from_the_page_only_with_allow_local_exec(
    served: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "store"
    shutil.copytree(served.home, home)  # the replay adds a run
    monkeypatch.setenv("CODETAPE_HOME", str(home))
    at = open_page("run", run=served.sandboxed, step="1", token=TOKEN)
    assert set(buttons(at, served.sandboxed, 1).values()) == {True}
    notes = [c.value for c in at.caption if NOTE_LOCAL in c.value]
    assert len(notes) == 2  # one per step
    assert f"`codetape replay {served.sandboxed[:12]} --step 1`" in notes[1]

    monkeypatch.setenv("CODETAPE_UI_ALLOW_LOCAL_EXEC", "1")  # codetape ui --allow-local-exec
    at.run()
    assert buttons(at, served.sandboxed, 1) == {
        "Replay this step": False, "Replay from here": False, "Edit and replay": False,
    }  # fmt: skip
    assert not any(NOTE_LOCAL in c.value or NOTE_LINK in c.value for c in at.caption)
    at.button(key=f"replay:{served.sandboxed}:1").click().run()
    assert "Reproduced: the replay matches the recording." in [s.value for s in at.success]
    assert "Replayed with the local backend: no isolation." in [c.value for c in at.caption]


def test_a_viewer_not_started_by_codetape_ui_runs_no_code(
    served: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CODETAPE_UI_TOKEN")
    monkeypatch.setenv("CODETAPE_UI_ALLOW_LOCAL_EXEC", "1")
    at = open_page("run", run=served.sandboxed, step="1", token="")
    assert set(buttons(at, served.sandboxed, 1).values()) == {True}
    assert any("work only in a viewer started with `codetape ui`" in c.value for c in at.caption)


@pytest.fixture
def docker_run(
    docker_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, str]:
    """A store with a run recorded in Docker, served as ``codetape ui`` serves it: its
    home and the run's id."""
    home = tmp_path / "store"
    with (
        capture(home),
        codetape.run("docker-bot", task="sums") as run,
        codetape.Sandbox(image=docker_image) as sandbox,
    ):
        assert sandbox.run("total = sum(range(10))\nprint(total)").status == "ok"
    monkeypatch.setenv("CODETAPE_HOME", str(home))
    monkeypatch.setenv("CODETAPE_UI_TOKEN", TOKEN)
    monkeypatch.delenv("CODETAPE_UI_ALLOW_LOCAL_EXEC", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    return home, run.id


@pytest.mark.docker
def test_docker_replays_need_only_the_token(docker_run: tuple[Path, str]) -> None:
    home, run = docker_run
    at = open_page("run", run=run, step="0")
    assert set(buttons(at, run, 0).values()) == {True}  # no token yet
    at.query_params["token"] = TOKEN
    at.run()
    assert set(buttons(at, run, 0).values()) == {False}
    at.button(key=f"replay:{run}:0").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Reproduced: the replay matches the recording." in [s.value for s in at.success]
    assert "Replayed with the local backend: no isolation." not in [c.value for c in at.caption]
    [replay] = [r for r in codetape.Store(home).runs(limit=10) if r.replay_of]
    assert replay.replay_of == f"{run}:0"


# -- 14. a huge output is a download, not a page ----------------------------------------


def test_a_huge_output_is_offered_as_a_download_not_shown(served: Store) -> None:
    at = open_page("run", run=served.chatty, step="0")
    [shown] = [c.value for c in at.code if c.value.startswith("xxxx")]
    assert len(shown) == 20_000
    assert not [t for t in at.toggle if t.label.startswith("Show all")]
    assert (
        f"Showing the first 20,000 of {BIG + 1:,} characters: too long to show in full here."
        in [c.value for c in at.caption]
    )
    [download] = at.get("download_button")
    assert download.proto.label == f"Download all {BIG + 1:,} characters"


@pytest.mark.browser
@pytest.mark.slow
def test_a_100_mb_output_downloads_and_the_tab_lives_in_chromium(
    browser: Browser, viewer: Viewer, store: Store, tmp_path: Path
) -> None:
    page = browser.new_page(accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("crash", lambda _: errors.append("the tab crashed"))
    page.goto(f"{viewer.base}/run?run={store.chatty}&step=0")
    step = step_expander(page, 0)
    button = step.get_by_role("button", name=f"Download all {BIG + 1:,} characters")
    expect(button).to_be_visible(timeout=WAIT_MS)
    expect(step.get_by_text("Show all")).to_have_count(0)
    shot(step, "14-huge-output")
    with page.expect_download(timeout=WAIT_MS * 4) as asked:
        button.click()
    saved = tmp_path / "stdout.txt"
    asked.value.save_as(saved)
    assert asked.value.suggested_filename == f"stdout-{store.chatty}-0.txt"
    assert saved.stat().st_size == BIG + 1
    with saved.open("rb") as f:
        assert f.read(10) == b"x" * 10
        f.seek(BIG - 2)
        assert f.read() == b"xx\n"
    expect(page.get_by_role("heading", name="Run", exact=True)).to_be_visible()
    assert errors == []
    page.close()


# -- the browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, once for the module, or a skip (a failure under CI)."""
    require(
        HAVE_PLAYWRIGHT,
        "the playwright Python package",
        "pip install -e '.[dev]' (never `playwright install`: Debian's chromium is used)",
    )
    require(CHROMIUM.exists(), "Debian's chromium at /usr/bin/chromium", "apt-get install chromium")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        launched_browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched_browser
        finally:
            launched_browser.close()


def step_expander(page: Page, index: int) -> Locator:
    return page.get_by_test_id("stExpander").filter(
        has=page.locator("summary", has_text=f"Step {index} ·")
    )


def shot(what: Page | Locator, name: str) -> None:
    """A screenshot of a page, or of one element of it (a step, scrolled into view)."""
    what.screenshot(path=ARTIFACTS / f"{name}.png")
