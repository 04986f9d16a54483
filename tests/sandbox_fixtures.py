"""Fixtures and helpers shared by the sandbox tests (test_sandbox_hardening.py and
test_sandbox_contract.py).

Tests that need Docker ask for ``docker_image``: it skips outside CI, and fails under
``CI=true``, when the engine or the offline sandbox image is missing. Nothing here pulls
an image: no registry is reachable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from .conftest import require

__all__ = [
    "TEST_IMAGE",
    "container_gone",
    "containers_of_run",
    "docker_api",
    "docker_image",
    "host_pids_in_container",
    "host_process_count",
    "host_processes_with",
]

TEST_IMAGE = os.environ.get("CODETAPE_IMAGE", "codetape/python:bookworm")
START_DOCKER = "start dockerd (scripts/start-dockerd.sh, or `make ci`)"
BUILD_IMAGE = "build it offline: `make image` (scripts/build-offline-image.sh {image})"
RUN_ID_LABEL = "codetape.sandbox.run_id"


def _client() -> Any:
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
    except Exception:  # docker-py raises many unrelated types when there is no engine
        return None
    return client


@pytest.fixture(scope="session")
def _docker_session() -> Any:
    return _client()


@pytest.fixture
def docker_api(_docker_session: Any) -> Any:
    """A docker-py client to a running engine (skips outside CI, fails under CI)."""
    require(_docker_session is not None, "a running Docker engine", START_DOCKER)
    return _docker_session


@pytest.fixture
def docker_image(docker_api: Any) -> str:
    """The sandbox image to test with: ``$CODETAPE_IMAGE`` or the offline
    ``codetape/python:bookworm``; it must already be present (never pulled)."""
    try:
        docker_api.images.get(TEST_IMAGE)
        present = True
    except Exception:
        present = False
    require(present, f"the sandbox image {TEST_IMAGE}", BUILD_IMAGE.format(image=TEST_IMAGE))
    return TEST_IMAGE


# -- looking at containers and host processes --------------------------------------------


def containers_of_run(client: Any, run_id: str, *, running_only: bool = False) -> list[Any]:
    """The codetape sandbox containers labelled with this run id (never anyone else's)."""
    assert run_id, "a run id is needed to tell this test's containers from others'"
    found = client.containers.list(
        all=not running_only, filters={"label": f"{RUN_ID_LABEL}={run_id}"}
    )
    return [c for c in found if c.labels.get(RUN_ID_LABEL) == run_id]


def container_gone(client: Any, container_id: str) -> bool:
    """True when the container no longer exists at all (killed and removed)."""
    import docker.errors

    try:
        client.containers.get(container_id)
    except docker.errors.NotFound:
        return True
    return False


def _host_pids() -> list[str]:
    return [p for p in os.listdir("/proc") if p.isdigit()]


def host_process_count() -> int:
    """Processes on this machine (one /proc entry per process; threads not counted)."""
    return len(_host_pids())


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:  # the process ended while we looked
        return b""


def host_pids_in_container(container_id: str) -> list[int]:
    """Host pids of the processes that live in the container's cgroup."""
    key = container_id.encode()
    return [int(p) for p in _host_pids() if key in _read(f"/proc/{p}/cgroup")]


def host_processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker``."""
    key = marker.encode()
    me = os.getpid()
    return [int(p) for p in _host_pids() if int(p) != me and key in _read(f"/proc/{p}/cmdline")]
