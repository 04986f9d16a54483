"""Where the runner process lives: a Docker container, or a subprocess of this Python.

A backend only starts, stops and identifies the runner's process; speaking to it and
recording what it does is the ``Sandbox``'s job, the same for every backend.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import cloudpickle

from ..errors import DockerUnavailableError, ImageNotFoundError, SandboxError
from ..schemas import Limits, StepStatus
from ..schemas import attributes as A
from ._attach import Attached, attach
from ._pool import current_pool, remover
from ._protocol import frame
from ._runtime import warn_once

__all__ = [
    "LABEL",
    "Backend",
    "DockerBackend",
    "LocalBackend",
    "NoIsolationWarning",
    "current_docker_host",
    "docker_client",
    "docker_host",
    "engine_key",
    "runner_modules",
    "runner_source",
]

LABEL = "codetape.sandbox"
RUNNER = Path(__file__).with_name("_runner.py")


def runner_source() -> str:
    return RUNNER.read_text()


@functools.cache
def runner_modules() -> list[tuple[str, str]]:
    """cloudpickle's source and codetape's state codec, sent to the runner so the image
    needs only python3."""
    package = Path(inspect.getfile(cloudpickle)).parent
    here = Path(__file__).parent
    return [
        ("cloudpickle.cloudpickle", (package / "cloudpickle.py").read_text()),
        ("cloudpickle", (package / "__init__.py").read_text()),
        ("codetape_state", (here / "_statecodec.py").read_text()),
        ("codetape_values", (here / "_encoding.py").read_text()),
    ]


_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgtp])?i?b?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def size_bytes(size: str, what: str) -> int:
    """A size as ``docker run`` reads one (binary units: ``512m``, ``1g``, ``1GiB``,
    ``2t``, or bytes) in bytes; ``what`` names the limit in the error."""
    found = _SIZE.fullmatch(size.strip())
    if found is None:
        raise SandboxError(
            f"Limits.{what} = {size!r} is not a size",
            hint="give a number of bytes with an optional unit, as for docker run: 512m, 1g, 1GiB",
        )
    number, unit = found.groups()
    return int(float(number) * _UNITS[(unit or "").lower()])


class _Loader:
    """Starts a container ahead and sends its runner its modules as soon as it reads
    stdin, on a thread of its own (a container started ahead is not waited for): when
    a sandbox takes the container, the runner has them loaded, or is loading them."""

    def __init__(self, start: Callable[[], Attached]) -> None:
        self._start = start
        self.process: Attached | None = None
        self.error: BaseException | None = None
        self.sent = False
        self._thread = threading.Thread(target=self._send, name="codetape-runner-load", daemon=True)
        self._thread.start()

    def _send(self) -> None:
        try:
            self.process = self._start()
        except BaseException as exc:  # said by wait(), on the taker's thread
            self.error = exc
            return
        with contextlib.suppress(OSError, ValueError):  # the container is gone: not sent
            self.process.stdin.write(frame({"op": "load", "modules": runner_modules()}))
            self.sent = True

    def wait(self, timeout: float = 60.0) -> Attached:
        """The started container, its runner sent its modules (it may still be loading
        them). A container that does not read them in time is killed: its start fails."""
        self._thread.join(timeout)
        if self._thread.is_alive() and self.process is not None:
            self.process.detach()
        self._thread.join()
        if self.error is not None:
            raise self.error
        assert self.process is not None
        self.process.loaded = self.sent
        return self.process


class NoIsolationWarning(UserWarning):
    """Code actions run with backend='local' are not isolated from this machine."""


class Backend(ABC):
    """Starts the runner process and knows how it ended."""

    name: str

    @abstractmethod
    def start(self, env: dict[str, str], run_id: str) -> Any:
        """The runner's process: ``stdin`` the channel writes to, ``stdout`` it reads
        (a pipe, or ``read_some``), ``stderr`` and ``poll()`` as a child process's."""

    @abstractmethod
    def kill(self, process: Any) -> None: ...

    def death_status(self, process: Any) -> StepStatus:
        """Why a runner that vanished mid-step is gone: ``oom`` or ``killed``."""
        return "killed"

    def cleanup(self, process: Any) -> None:
        self.kill(process)

    def loaded(self, process: Any) -> bool:
        """Whether the runner was sent its modules when it started (then ``init`` need
        not carry them)."""
        return False

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Span attributes that say where code ran (image identity or host)."""


_clients: dict[str, Any] = {}
# How long one request to the engine may take: creating or starting a container on a
# loaded engine can be slow (the sandbox waits as long for the runner's first reply).
_STARTUP_WAIT_S = 60
_client_lock = threading.Lock()
_HOST: ContextVar[str | None] = ContextVar("codetape_docker_host", default=None)


def current_docker_host() -> str | None:
    """The Docker engine URL that sandboxes made in this scope use (None: the
    environment's, ``DOCKER_HOST`` or the default socket)."""
    return _HOST.get()


@contextlib.contextmanager
def docker_host(url: str | None) -> Iterator[None]:
    """Within this scope (and the threads that copy its context), Docker sandboxes run
    on the engine at ``url`` (``unix:///path``, ``tcp://host:2376``; TLS from docker's
    usual ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``); None keeps the enclosing scope's
    (at the outermost, the environment's)."""
    token = _HOST.set(url or _HOST.get())
    try:
        yield
    finally:
        _HOST.reset(token)


def engine_key(host: str | None) -> str:
    """One name per engine: ``host``, else what ``DOCKER_HOST`` says, else the default
    socket (so docker_host=None and the same URL given share a client)."""
    return host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def docker_client(timeout: float | None = None, host: str | None = None) -> Any:
    """The process's one Docker client for the engine at ``host`` (None: the
    environment's; making one costs tens of milliseconds; a request waits as long as a
    container may take to start); with ``timeout``, a client of its own that fails
    fast, for the caller to close."""
    if timeout is not None:
        return _new_client(timeout, host)
    key = engine_key(host)
    with _client_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _new_client(_STARTUP_WAIT_S, host)
        return client


def _new_client(timeout: float, host: str | None = None) -> Any:
    try:
        import docker

        # from_env, so TLS comes from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH as for docker.
        environment = {**os.environ, "DOCKER_HOST": host} if host else None
        client = docker.from_env(timeout=timeout, environment=environment)
        client.ping()
    except Exception as exc:  # docker-py raises many unrelated types here
        where = f" at {host}" if host else ""
        raise DockerUnavailableError(f"{type(exc).__name__}: {exc}{where}") from None
    return client


class DockerBackend(Backend):
    """One hardened container per runner: no network, read-only root, no capabilities,
    an unprivileged user, pids/memory/CPU limits, a size-capped /tmp and /dev/shm, an
    empty environment, no mounts, and labels so orphans can be found and removed.

    The container is created, attached to and started through the engine's API (the
    ``docker`` command is not needed, and no process of it relays the bytes:
    ``_attach``). Starting one first removes this host's containers whose process is
    gone, and the first one in a process warns when the engine's runtime has a known
    escape.

    ``host``: the engine's URL (default: the scope's ``docker_host``, else the
    environment's)."""

    name = "docker"

    def __init__(self, image: str, limits: Limits, host: str | None = None) -> None:
        self.image = image
        self.limits = limits
        self.host = host or current_docker_host()
        self.client = docker_client(host=self.host)
        try:
            found = self.client.images.get(image)
        except Exception as exc:
            if type(exc).__name__ == "ImageNotFound":
                raise ImageNotFoundError(image) from None
            raise SandboxError(f"cannot inspect the image {image}: {exc}") from exc
        attrs = found.attrs
        self.image_id: str = attrs["Id"]
        self.repo_digests: list[str] = list(attrs.get("RepoDigests") or [])
        layers = (attrs.get("RootFS") or {}).get("Layers") or []
        self.layers_digest = "sha256:" + hashlib.sha256("\n".join(layers).encode()).hexdigest()
        warn_once(self.client, engine_key(self.host), _caller_level())

    def identity(self) -> dict[str, Any]:
        return {
            A.SANDBOX_BACKEND: self.name,
            A.CONTAINER_IMAGE_NAME: self.image,
            A.CONTAINER_IMAGE_ID: self.image_id,
            A.CONTAINER_IMAGE_REPO_DIGESTS: self.repo_digests,
            A.SANDBOX_LAYERS_DIGEST: self.layers_digest,
        }

    def start(self, env: dict[str, str], run_id: str) -> Attached:
        from ._leftovers import remove_orphans

        pool = current_pool()
        if pool is None:
            remove_orphans(self.client)
            return self._spawn(env, run_id)
        # Started ahead with no run id: the pool cannot know which run takes it. Its
        # runner is sent its modules at once, so it is ready sooner when taken.
        key = (
            engine_key(self.host),
            self.image_id,
            self.limits.model_dump_json(),
            tuple(sorted(env.items())),
        )
        ahead = functools.partial(_Loader, functools.partial(self._spawn, env, ""))
        loader, warm = pool.take(key, ahead, self._discard)
        if not warm:
            remove_orphans(self.client)
        started: Attached = loader.wait()
        return started

    def loaded(self, process: Attached) -> bool:
        return process.loaded

    def _spawn(self, env: dict[str, str], run_id: str) -> Attached:
        """Create the container, attach to it, start it."""
        name = f"codetape-{(run_id or 'norun')[:12]}-{uuid.uuid4().hex[:6]}"
        api = self.client.api
        host_config = self._host_config()
        try:
            api.create_container(
                # By id, not name: the container runs exactly the image the step records.
                self.image_id,
                ["python3", "-s", "-u", "-c", runner_source()],
                name=name,
                stdin_open=True,  # and, not detached: stdin once, stdout and stderr attached
                user="65534:65534",
                working_dir="/tmp",
                environment=env,
                labels={
                    LABEL: "1",
                    f"{LABEL}.run_id": run_id,
                    f"{LABEL}.host": socket.gethostname(),
                    f"{LABEL}.pid": str(os.getpid()),
                },
                host_config=host_config,
                use_config_proxy=False,  # an empty environment: no proxy settings added
            )
            process = Attached(self.client, name, attach(self.client, name))
            try:
                api.start(name)
            except BaseException:
                process.detach()
                raise
        except BaseException as exc:  # Ctrl-C too: no container is left behind
            with contextlib.suppress(Exception):  # not created
                api.remove_container(name, force=True)
            if not isinstance(exc, Exception) or isinstance(
                exc, (SandboxError, DockerUnavailableError)
            ):
                raise
            explanation = getattr(exc, "explanation", None) or exc
            raise SandboxError(
                f"the docker sandbox did not start: {explanation}",
                hint="`codetape doctor` checks Docker and the sandbox image",
            ) from None
        return process

    def _host_config(self) -> dict[str, Any]:
        """The container's hardening and limits (see the class's docstring)."""
        from docker.types import LogConfig

        limits = self.limits
        memory = size_bytes(limits.memory, "memory")
        config: dict[str, Any] = self.client.api.create_host_config(
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={limits.tmpfs},mode=1777"},
            shm_size=size_bytes(limits.shm, "shm"),
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=limits.pids,
            mem_limit=memory,
            memswap_limit=memory,
            nano_cpus=int(limits.cpus * 1e9),
            log_config=LogConfig(type="none"),
            # A tiny init as PID 1 reaps the processes user code leaves behind, so
            # zombies cannot fill the pids limit.
            init=True,
        )
        return config

    def _discard(self, loader: _Loader) -> None:
        """Remove a container started ahead that nobody took."""
        with contextlib.suppress(Exception):  # it did not start: nothing to remove
            self._remove(loader.wait(), in_background=False)

    def kill(self, process: Attached) -> None:
        # This end first: while it is attached and not reading, dockerd can take half
        # a minute to kill a container that is blocked writing to it.
        process.detach()
        with contextlib.suppress(Exception):  # already stopped
            self.client.api.kill(process.name)

    def death_status(self, process: Attached) -> StepStatus:
        process.wait()
        with contextlib.suppress(Exception):  # removed already
            state = self.client.api.inspect_container(process.name)["State"]
            if state.get("OOMKilled"):
                return "oom"
        return "killed"

    def cleanup(self, process: Attached) -> None:
        self._remove(process, in_background=remover() is not None)

    def _remove(self, process: Attached, in_background: bool) -> None:
        # The runner exits as its channel closes; force-remove kills it too: one call.
        process.detach()
        background = remover() if in_background else None
        api, name = self.client.api, process.name
        if background is not None:
            background.submit(lambda: api.remove_container(name, force=True))
            return
        with contextlib.suppress(Exception):  # already gone
            api.remove_container(name, force=True)


_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent) + os.sep


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside codetape: a warning points at the
    user's line however many codetape layers it went through."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


_HOST_VARIABLES = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")


class LocalBackend(Backend):
    """The runner in a subprocess of this Python: the same protocol, no isolation."""

    name = "local"

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        warnings.warn(
            "codetape: Sandbox(backend='local') runs code actions in a subprocess of this "
            "Python with no isolation from this machine; use the docker backend for "
            "untrusted code",
            NoIsolationWarning,
            stacklevel=_caller_level(),
        )
        self._dirs: dict[int, str] = {}

    def identity(self) -> dict[str, Any]:
        from ._fingerprint import host_fingerprint

        return {
            A.SANDBOX_BACKEND: self.name,
            A.SANDBOX_ENV_FINGERPRINT: host_fingerprint().digest,
        }

    def start(self, env: dict[str, str], run_id: str) -> subprocess.Popen[bytes]:
        workdir = tempfile.mkdtemp(prefix="codetape-local-")
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": workdir, **env}
        # The same Python as the host's in every way code can see, but its secrets:
        # the modules it can import, its locale and its time zone.
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        for name in _HOST_VARIABLES:
            if name in os.environ:
                full_env[name] = os.environ[name]
        process = subprocess.Popen(
            [sys.executable, "-s", "-u", "-c", runner_source()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=full_env,
            start_new_session=True,
        )
        self._dirs[process.pid] = workdir
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def cleanup(self, process: subprocess.Popen[bytes]) -> None:
        self.kill(process)
        shutil.rmtree(self._dirs.pop(process.pid, ""), ignore_errors=True)
