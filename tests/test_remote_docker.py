"""Replays on another Docker engine: a second ``dockerd``, started by the test on its own
socket and data root, stands in for a remote host.

It starts without the sandbox image: a replay there sends it (by id, then tagged as
recorded) and reproduces; ``replay_run`` spreads a run's steps over both engines, each
step reproducing; the CLI does the same with ``--docker-host``; and when neither engine
has the image, the replay says so. Recordings are real: a smolagents ``CodeAgent`` with
a scripted model, its code in codetape's Docker sandbox, and an observed plain run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import codetape
from codetape.cli import cli
from codetape.sandbox.internal import engine_key

from .conftest import require
from .replay_corpus import by_name, record_docker, record_plain
from .sandbox_fixtures import build_image, remove_image

pytestmark = pytest.mark.filterwarnings("ignore::codetape.sandbox.NoIsolationWarning")

# A multi-step trajectory whose steps all reproduce: imports, helpers, tools.
TRAJECTORY = "closures_and_lambdas"
# How long a new engine may take to answer (a wait, not an assertion).
_START_S = 90
_FALLBACKS: tuple[tuple[str, ...], ...] = ((), ("--storage-driver=vfs",))


class Engine:
    """A second Docker engine: its URL and a docker-py client to it."""

    def __init__(self, url: str, client: Any) -> None:
        self.url = url
        self.client = client

    def has(self, image: str) -> bool:
        try:
            self.client.images.get(image)
        except Exception:  # docker-py's ImageNotFound
            return False
        return True

    def forget(self, image_id: str | None) -> None:
        """Remove the image (and its tags) from this engine, so the next replay sends it."""
        assert image_id is not None
        remove_image(self.client, image_id)
        assert not self.has(image_id)

    def containers_started(self, since: float, run_id: str | None = None) -> list[str]:
        """Names of the sandbox containers this process started on this engine since
        ``since`` (of replay run ``run_id`` only, when given: a container started ahead
        by a warm pool has no run id)."""
        events = self.client.events(
            since=int(since),
            until=int(time.time()) + 1,
            filters={"type": "container", "event": "start", "label": "codetape.sandbox=1"},
            decode=True,
        )
        return [
            labels.get("name", "")
            for labels in (e["Actor"]["Attributes"] for e in events)
            if labels.get("codetape.sandbox.pid") == str(os.getpid())
            and (run_id is None or labels.get("codetape.sandbox.run_id") == run_id)
        ]


def _start(root: Path, options: tuple[str, ...]) -> tuple[subprocess.Popen[bytes], Any] | None:
    """Start dockerd with ``options``; its process and a client once it answers, None
    when it exited first."""
    import docker

    socket = root / "docker.sock"
    log = (root / "dockerd.log").open("ab")
    process = subprocess.Popen(
        [
            "dockerd",
            "--host",
            f"unix://{socket}",
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "docker.pid"),
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            *options,
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + _START_S
    while time.monotonic() < deadline and process.poll() is None:
        if socket.exists():
            with contextlib.suppress(Exception):  # not answering yet
                return process, docker.DockerClient(base_url=f"unix://{socket}", timeout=60)
        time.sleep(0.3)
    _stop(process)
    return None


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def engine(docker_client: Any, docker_image: str) -> Iterator[Engine]:
    """A second Docker engine on its own socket, data root and exec root, without the
    sandbox image; stopped, and its data root removed, afterwards."""
    require(
        shutil.which("dockerd") is not None and os.geteuid() == 0,
        "dockerd, run as root, to start a second Docker engine",
        "apt-get install -y docker.io and run the tests as root (as .ci/run does)",
    )
    root = Path(tempfile.mkdtemp(prefix="codetape-engine-", dir="/tmp"))
    started = None
    for options in _FALLBACKS:
        started = _start(root, options)
        if started is not None:
            break
    if started is None:
        log = (root / "dockerd.log").read_text(errors="replace")[-2000:]
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"the second Docker engine did not start; its log ends:\n{log}")
    process, client = started
    try:
        yield Engine(f"unix://{root / 'docker.sock'}", client)
    finally:
        client.close()
        _stop(process)
        shutil.rmtree(root, ignore_errors=True)
        assert not root.exists(), f"the second engine's data root {root} was left behind"


_recorded: dict[Path, str] = {}


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("remote-store")


@pytest.fixture
def recorded(
    home: Path, module_home: Path, monkeypatch: pytest.MonkeyPatch, docker_image: str
) -> str:
    """The id of a smolagents run recorded in the Docker sandbox (once per module), in
    the module's store, codetape's for the test (``home`` puts the configuration back)."""
    monkeypatch.setenv("CODETAPE_HOME", str(module_home))
    codetape.configure(home=module_home, otlp=False)
    if module_home not in _recorded:
        _recorded[module_home] = record_docker(by_name(TRAJECTORY), docker_image)
    return _recorded[module_home]


def _steps(run_id: str) -> list[codetape.schemas.Step]:
    return codetape.Store().steps(run_id)


def _described(reports: list[codetape.schemas.ReplayReport]) -> str:
    return "\n".join(
        f"step {r.step}: {r.verdict} {r.reason or ''} {[d.field for d in r.differences]}"
        for r in reports
    )


def test_a_step_replays_on_an_engine_that_lacked_its_image(
    engine: Engine, recorded: str, docker_image: str
) -> None:
    steps = _steps(recorded)
    image_id = steps[0].sandbox.image_id
    assert steps[0].sandbox.backend == "docker"
    assert image_id is not None
    engine.forget(image_id)
    since = time.time() - 1

    report = codetape.replay(recorded, steps[1].index, docker_host=engine.url)

    assert report.verdict == "reproduced", _described([report])
    assert engine.has(image_id), "the recorded image was not sent to the engine"
    assert engine.client.images.get(docker_image).id == image_id, "not tagged as recorded"
    assert any("was sent to that engine" in note for note in report.notes), report.notes
    assert f"replayed on the Docker engine at {engine.url}" in report.notes
    # The replay's container ran there, not on this machine's engine.
    assert report.replay_run_id is not None
    assert engine.containers_started(since, report.replay_run_id)


def test_an_observed_step_replays_in_an_image_sent_by_name(
    engine: Engine, docker_client: Any, docker_image: str, home: Path
) -> None:
    run_id = record_plain(by_name(TRAJECTORY))
    steps = _steps(run_id)
    assert steps[0].sandbox.backend == "observed"
    engine.forget(docker_client.images.get(docker_image).id)
    since = time.time() - 1

    report = codetape.replay(run_id, steps[1].index, image=docker_image, docker_host=engine.url)

    assert report.verdict == "reproduced", _described([report])
    assert report.backend == "docker"
    assert engine.has(docker_image)
    assert report.replay_run_id is not None
    assert engine.containers_started(since, report.replay_run_id)


def test_replay_run_over_two_engines_reproduces_every_step(
    engine: Engine, recorded: str, docker_client: Any
) -> None:
    engine.forget(_steps(recorded)[0].sandbox.image_id)
    here = engine_key(None)  # this machine's engine, by its URL
    since = time.time() - 1

    reports = codetape.replay_run(recorded, jobs=2, docker_hosts=[here, engine.url])

    assert [r.step for r in reports] == [s.index for s in _steps(recorded)]
    assert all(r.verdict == "reproduced" for r in reports), _described(reports)
    there = [r for r in reports if f"replayed on the Docker engine at {engine.url}" in r.notes]
    # Steps alternate between the engines: every second one ran on the second engine.
    assert [r.step for r in there] == [r.step for r in reports[1::2]]
    assert len(engine.containers_started(since)) >= len(there)
    sent = [r for r in reports if any("was sent to that engine" in n for n in r.notes)]
    assert len(sent) == 1, "the image was sent more than once"


def test_the_cli_replays_on_another_engine_with_progress(
    engine: Engine, recorded: str, docker_image: str
) -> None:
    engine.forget(_steps(recorded)[0].sandbox.image_id)
    runner = CliRunner()
    step = _steps(recorded)[0].index

    result = runner.invoke(
        cli, ["replay", recorded, "--step", str(step), "--docker-host", engine.url]
    )

    assert result.exit_code == 0, result.output
    assert f"sent the image {docker_image} to {engine.url}" in result.output
    assert "reproduced" in result.output

    both = f"{engine_key(None)},{engine.url}"
    result = runner.invoke(cli, ["replay", recorded, "--all", "--docker-host", both, "--json"])
    assert result.exit_code == 0, result.output

    result = runner.invoke(cli, ["replay", recorded, "--step", "1", "--docker-host", both])
    assert result.exit_code == 2
    assert "several --docker-host engines are for --all" in result.output


def test_an_image_neither_engine_has_is_environment_missing(
    engine: Engine, docker_client: Any, docker_image: str, home: Path
) -> None:
    image_id = build_image(docker_client, docker_image, "ENV CODETAPE_TEST_REMOTE=1")
    try:
        with codetape.Sandbox(image=image_id) as sandbox, codetape.run("gone"):
            sandbox.run("x = 1")
        run_id = codetape.Store().runs(limit=1)[0].id
    finally:
        remove_image(docker_client, image_id)
    report = codetape.replay(run_id, _steps(run_id)[0].index, docker_host=engine.url)

    assert report.verdict == "environment_missing"
    assert report.reason is not None
    assert f"neither on the Docker engine at {engine.url} nor on this machine's" in report.reason
    assert not engine.has(image_id)
