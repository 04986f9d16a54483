"""The one home of the Docker fixtures and helpers the tests share.

Tests that need Docker ask for ``docker_client`` (a running engine) and
``docker_image`` (the offline sandbox image, present in that engine), or
``scientific_image`` (that image, when it has numpy and PIL, as ``.ci/run`` builds it):
they skip outside CI, and fail under ``CI=true``, when any is missing. Each is made once per
session. Nothing here pulls an image: no registry is reachable. conftest.py registers
this module as a plugin, so every test module sees these fixtures.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import require

__all__ = [
    "BUILD_IMAGE",
    "START_DOCKER",
    "TEST_IMAGE",
    "build_image",
    "container_gone",
    "containers_of_run",
    "docker_api",
    "docker_client",
    "docker_image",
    "host_pids_in_container",
    "host_process_count",
    "host_processes_with",
    "remove_image",
    "scientific_image",
]

TEST_IMAGE = os.environ.get("CODETAPE_IMAGE", "codetape/python:bookworm")
START_DOCKER = "start dockerd (scripts/start-dockerd.sh, as .ci/run does)"
BUILD_IMAGE = "build it offline: `make image` (scripts/build-offline-image.sh {image})"
SCIENTIFIC_PACKAGES = "python3-numpy,python3-pil"
BUILD_SCIENTIFIC = (
    "build it offline with them: scripts/build-offline-image.sh --include "
    f"{SCIENTIFIC_PACKAGES} {{image}} (as .ci/run does)"
)
RUN_ID_LABEL = "codetape.sandbox.run_id"


@pytest.fixture(scope="session")
def _docker_session() -> Iterator[Any]:
    """A docker-py client, or ``None`` when no engine answers."""
    try:
        import docker

        client = docker.from_env(timeout=60)  # image builds take a while
        client.ping()
    except Exception:  # docker-py raises many unrelated types when there is no engine
        yield None
        return
    yield client
    client.close()


@pytest.fixture(scope="session")
def docker_client(_docker_session: Any) -> Any:
    """A docker-py client to a running engine (skips outside CI, fails under CI)."""
    require(_docker_session is not None, "a running Docker engine", START_DOCKER)
    return _docker_session


@pytest.fixture(scope="session")
def docker_api(docker_client: Any) -> Any:
    """``docker_client``, under the name the sandbox tests use."""
    return docker_client


@pytest.fixture(scope="session")
def docker_image(docker_client: Any) -> str:
    """The sandbox image to test with: ``$CODETAPE_IMAGE`` or the offline
    ``codetape/python:bookworm``; it must already be present (never pulled)."""
    try:
        docker_client.images.get(TEST_IMAGE)
        present = True
    except Exception:
        present = False
    require(present, f"the sandbox image {TEST_IMAGE}", BUILD_IMAGE.format(image=TEST_IMAGE))
    return TEST_IMAGE


@pytest.fixture(scope="session")
def scientific_image(docker_client: Any, docker_image: str) -> str:
    """``docker_image``, which must have numpy and PIL (Debian's python3-numpy and
    python3-pil) for the tests of rich values and of smolagents' executor contract."""
    try:
        docker_client.containers.run(
            docker_image,
            ["python3", "-c", "import numpy, PIL.Image"],
            network_mode="none",
            user="65534:65534",
            remove=True,
        )
        present = True
    except Exception:  # docker-py's ContainerError: the import failed
        present = False
    require(
        present,
        f"numpy and PIL in the sandbox image {docker_image}",
        BUILD_SCIENTIFIC.format(image=docker_image),
    )
    return docker_image


# -- images of the tests' own ------------------------------------------------------------


def build_image(client: Any, base: str, *lines: str) -> str:
    """A distinct image built offline FROM ``base`` (no network step); returns its id."""
    tag = f"codetape-test/{uuid.uuid4().hex[:10]}:1"
    dockerfile = "\n".join([f"FROM {base}", *lines, f"LABEL codetape.test={tag}"]) + "\n"
    built, _ = client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, network_mode="none"
    )
    return str(built.id)


def remove_image(client: Any, image_id: str) -> None:
    """Remove a test image (and only it: the base image shares its layers and stays)."""
    import docker.errors

    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.remove(image_id, force=True)


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
