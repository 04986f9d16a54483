"""`codetape image build`, `codetape doctor --clean` and the sandboxed orders example."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import codetape
from codetape.cli import cli
from codetape.cli._doctor import EXITED_GRACE_S, find_leftovers

from .conftest import require
from .sandbox_fixtures import TEST_IMAGE as IMAGE

EXAMPLE = Path(__file__).parent.parent / "examples" / "02_sandbox_tools.py"
HOST = socket.gethostname()


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- image build ------------------------------------------------------------------


def test_dry_run_prints_a_dockerfile_with_the_pip_packages() -> None:
    result = invoke(
        "image", "build", "--python", "3.11", "--pip", "pandas", "--pip", "numpy<2", "--dry-run"
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "FROM python:3.11-slim" in lines
    assert 'RUN ["python3", "-m", "pip", "install", "pandas", "numpy<2"]' in lines
    assert not any(line.startswith("USER") for line in lines)  # the sandbox runs as 65534


def test_dry_run_with_a_base_and_no_packages_installs_nothing() -> None:
    result = invoke("image", "build", "--base", "codetape/python:bookworm", "--dry-run")
    assert result.exit_code == 0
    assert "FROM codetape/python:bookworm" in result.stdout.splitlines()
    assert "pip install" not in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--python", "3.x"], "--python '3.x' is not a Python version"),
        (["--pip", "--index-url=http://evil"], "is not a package requirement"),
        (["--pip", "pandas\nRUN rm -rf /"], "is not a package requirement"),
        (["--base", "python:3.12-slim\nRUN rm -rf /"], "is not an image name"),
    ],
)
def test_bad_arguments_are_one_line_errors(args: list[str], message: str) -> None:
    result = invoke("image", "build", *args, "--dry-run")
    assert result.exit_code == 5
    assert result.stdout == ""
    assert message in result.stderr
    assert result.stderr.count("error:") == 1
    assert "Traceback" not in result.stderr


def cli_without_docker(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process pointed at no engine (docker-py leaks the socket of a
    failed connection, which must not surface as a ResourceWarning in this process)."""
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    return subprocess.run(
        [sys.executable, "-m", "codetape", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_image_build_without_docker_is_one_line() -> None:
    result = cli_without_docker("image", "build", "--base", IMAGE, "--tag", "codetape-test/x:y")
    assert result.returncode == 5
    assert result.stderr.startswith("error: no Docker engine answers")
    assert "Traceback" not in result.stderr


@pytest.mark.docker
@pytest.mark.usefixtures("docker_image")
def test_image_build_offline_then_a_sandbox_runs_code_in_it(home: Path, docker_client: Any) -> None:
    client = docker_client
    tag = f"codetape-test-image:{uuid.uuid4().hex[:10]}"
    try:
        result = invoke("image", "build", "--base", IMAGE, "--tag", tag)
        assert result.exit_code == 0, result.output
        assert f"built {tag}" in result.stdout
        assert "Successfully tagged" in result.stderr  # the build's progress, streamed
        image = client.images.get(tag)
        assert image.labels["codetape.image"] == "1"
        assert image.labels["codetape.image.base"] == IMAGE
        with codetape.Sandbox(image=tag) as sb:
            step = sb.run("import os, sys\n(os.getuid(), sys.version_info[0])")
        assert step.status == "ok", step.error
        assert step.result == "(65534, 3)"
        recorded = codetape.Store(home).step(step.run_id, step.index)
        assert recorded.sandbox.image == tag
        assert recorded.sandbox.image_id == image.id
    finally:
        client.images.remove(tag, force=True)


@pytest.mark.docker
def test_a_failed_build_is_one_line_with_a_hint(docker_client: Any) -> None:
    result = invoke(
        "image",
        "build",
        "--base",
        "codetape-test/no-such-base:never",
        "--tag",
        "codetape-test/never:built",
    )
    assert result.exit_code == 5
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: building codetape-test/never:built failed: ")
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr


# -- doctor --clean ---------------------------------------------------------------


class FakeAPI:
    def __init__(self, containers: list[dict[str, Any]], finished: dict[str, str]) -> None:
        self._containers = containers
        self._finished = finished

    def containers(self, all: bool, filters: dict[str, str]) -> list[dict[str, Any]]:
        assert all
        assert filters == {"label": "codetape.sandbox=1"}
        return self._containers

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        return {"State": {"FinishedAt": self._finished[container_id]}}


class FakeClient:
    def __init__(self, containers: list[dict[str, Any]], finished: dict[str, str]) -> None:
        self.api = FakeAPI(containers, finished)


def _summary(name: str, state: str, pid: int | None, host: str = HOST) -> dict[str, Any]:
    labels = {
        "codetape.sandbox": "1",
        "codetape.sandbox.host": host,
        "codetape.sandbox.run_id": f"run-{name}",
    }
    if pid is not None:
        labels["codetape.sandbox.pid"] = str(pid)
    return {
        "Id": f"{name:0<64}",
        "Names": [f"/{name}"],
        "State": state,
        "Labels": labels,
        "Created": int(time.time()),
    }


def test_leftovers_are_only_this_hosts_containers_no_live_process_will_remove() -> None:
    me, dead = os.getpid(), _dead_pid()
    long_ago = time.strftime(
        "%Y-%m-%dT%H:%M:%S.123456789Z", time.gmtime(time.time() - EXITED_GRACE_S - 30)
    )
    just_now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    containers = [
        _summary("dead-running", "running", dead),
        _summary("dead-exited", "exited", dead),
        _summary("live-running", "running", me),
        _summary("live-exited-now", "exited", me),  # its process is reading its OOM flag
        _summary("live-exited-long-ago", "exited", me),
        _summary("other-host", "exited", dead, host="elsewhere"),
        _summary("no-pid-exited", "exited", None),
    ]
    finished = {c["Id"]: just_now for c in containers}
    finished[f"{'live-exited-long-ago':0<64}"] = long_ago
    found = {c.name: c for c in find_leftovers(FakeClient(containers, finished))}
    assert sorted(found) == ["dead-exited", "dead-running", "live-exited-long-ago", "no-pid-exited"]
    assert found["dead-running"].reason == f"its process {dead} is gone"
    assert found["dead-running"].run_id == "run-dead-running"


def test_a_reused_pid_does_not_keep_a_container_alive() -> None:
    # The container is older than the process now holding its pid: the pid was reused.
    container = _summary("reused", "running", os.getpid())
    container["Created"] = int(time.time()) - 10 * 24 * 3600
    require(
        Path("/proc/self/stat").exists(), "/proc", "run on Linux: a pid's start time is read there"
    )
    found = find_leftovers(FakeClient([container], {}))
    assert [c.name for c in found] == ["reused"]


CRASHING_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import codetape
    codetape.configure(home=sys.argv[1], otlp=False)
    with codetape.run("crashes"):
        sb = codetape.Sandbox(image=sys.argv[2]).__enter__()
        sb.run("x = 1")
        print(os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _containers_of(client: Any, pid: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.api.containers(
        all=True, filters={"label": f"codetape.sandbox.pid={pid}"}
    )
    return found


def _orphan_reported(
    client: Any, home: Path, script: Path, tmp_path: Path
) -> tuple[int, dict[str, Any]]:
    """A killed child's container, left behind, and doctor's check of it. Any other
    process's sandbox that starts meanwhile removes such containers (as it should), so
    an orphan gone before doctor looked is made again, a few times at most."""
    for _ in range(3):
        child = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "child-store"), IMAGE],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.returncode == -9, child.stderr
        child_pid = int(child.stdout.split()[0])
        assert len(_containers_of(client, child_pid)) == 1  # left behind
        before = json.loads(invoke("--home", str(home), "doctor", "--json").stdout)
        check: dict[str, Any] = next(c for c in before if c["name"] == "sandbox containers")
        if check["status"] != "ok" or _containers_of(client, child_pid):
            return child_pid, check
    pytest.fail("another process's sandbox removed every orphan before doctor looked")


@pytest.mark.docker
@pytest.mark.usefixtures("docker_image")
def test_doctor_clean_removes_what_a_killed_process_left_and_spares_live_ones(
    home: Path, tmp_path: Path, docker_client: Any
) -> None:
    client = docker_client
    script = tmp_path / "crash.py"
    script.write_text(CRASHING_CHILD)
    # A live process's container, started first: a sandbox that starts removes the
    # containers of processes that are gone, which would leave doctor nothing to clean.
    with codetape.Sandbox(image=IMAGE) as mine:
        assert mine.run("y = 2").status == "ok"
        child_pid, check = _orphan_reported(client, home, script, tmp_path)
        assert check["status"] == "warn"
        assert "codetape doctor --clean" in check["fix"]

        result = invoke("--home", str(home), "doctor", "--clean", "--json")
        report = json.loads(result.stdout)
        removed = [r for r in report["removed"] if r["pid"] == child_pid]
        assert len(removed) == 1
        assert removed[0]["reason"] == f"its process {child_pid} is gone"
        assert _containers_of(client, child_pid) == []
        assert not any(r["pid"] == os.getpid() for r in report["removed"])
        assert len(_containers_of(client, os.getpid())) == 1
        assert mine.run("y + 1").result == "3"  # untouched, still warm
    assert _containers_of(client, os.getpid()) == []


@pytest.mark.docker
@pytest.mark.usefixtures("docker_image")
def test_doctor_clean_for_people_says_what_it_removed(tmp_path: Path, docker_client: Any) -> None:
    client = docker_client
    dead = _dead_pid()
    name = f"codetape-test-{uuid.uuid4().hex[:8]}"
    client.api.create_container(
        IMAGE,
        ["python3", "-c", "pass"],
        name=name,
        network_disabled=True,
        labels={
            "codetape.sandbox": "1",
            "codetape.sandbox.host": HOST,
            "codetape.sandbox.pid": str(dead),
            "codetape.sandbox.run_id": "abcdef123456789",
        },
    )
    try:
        result = invoke("--home", str(tmp_path / "store"), "doctor", "--clean")
        assert f"removed {name} (created; its process {dead} is gone; run abcdef123456)" in (
            result.stdout
        )
        assert "sandbox containers: none left behind" in result.stdout
    finally:
        if client.api.containers(all=True, filters={"name": name}):
            client.api.remove_container(name, force=True)


def test_doctor_clean_without_docker_is_one_line(tmp_path: Path) -> None:
    result = cli_without_docker("--home", str(tmp_path / "store"), "doctor", "--clean")
    assert result.returncode == 5
    assert result.stderr.startswith("error: no Docker engine answers")
    assert result.stdout == ""


# -- examples/02_sandbox_tools.py ---------------------------------------------------


def run_example(home: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    assert "step 2 failed: KeyError: 'order_id'" in result.stdout
    assert "final answer: refunded 2 orders: A-1001, A-1003" in result.stdout
    return result


def check_recorded_run(home: Path, backend: str) -> None:
    detail = codetape.Store(home).detail("last")
    assert detail.run.name == "orders-bot-sandbox"
    assert detail.run.final_answer == "refunded 2 orders: A-1001, A-1003"
    assert [s.status for s in detail.steps] == ["ok", "ok", "error", "ok", "ok"]
    failing = detail.steps[2]
    assert failing.error is not None
    assert failing.error.type == "KeyError"
    assert {s.sandbox.backend for s in detail.steps} == {backend}
    # The tools ran on the host and were recorded from inside the sandbox.
    assert [c.name for c in detail.steps[0].tool_calls] == ["get_orders"]
    refunds = detail.steps[3].tool_calls
    assert [(c.name, c.arguments) for c in refunds] == [
        ("refund", {"order_id": "A-1001"}),
        ("refund", {"order_id": "A-1003"}),
    ]
    assert "threshold" in detail.steps[1].variables_before


def test_example_runs_with_the_local_backend(home: Path) -> None:
    result = run_example(home, "--backend", "local")
    assert "NoIsolationWarning" in result.stderr
    check_recorded_run(home, "local")


def test_example_without_docker_falls_back_to_local_and_says_how_to_get_docker(
    home: Path,
) -> None:
    result = run_example(home, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert "warning: no Docker engine answers" in result.stderr
    assert "NOT isolated" in result.stderr
    assert "apt-get install docker.io" in result.stderr
    assert "scripts/build-offline-image.sh" in result.stderr
    check_recorded_run(home, "local")


@pytest.mark.docker
@pytest.mark.usefixtures("docker_image")
def test_example_runs_with_the_docker_backend(home: Path, docker_client: Any) -> None:
    client = docker_client
    result = run_example(home, "--backend", "docker", env={"CODETAPE_IMAGE": IMAGE})
    assert "<Sandbox docker" in result.stdout
    assert "warning" not in result.stderr
    check_recorded_run(home, "docker")
    step = codetape.Store(home).step("last", 2)
    assert step.sandbox.image == IMAGE
    assert step.sandbox.image_id == client.images.get(IMAGE).id


@pytest.mark.docker
@pytest.mark.usefixtures("docker_image")
def test_example_picks_docker_by_default_when_it_can(home: Path, docker_client: Any) -> None:
    result = run_example(home, env={"CODETAPE_IMAGE": IMAGE})
    assert "<Sandbox docker" in result.stdout
    assert "warning" not in result.stderr
    check_recorded_run(home, "docker")
