"""Sending a sandbox image to another Docker engine, so a step recorded here can be
replayed there.

The image goes by id (the digest a recording holds): ``docker save`` of that id from the
environment's engine (``DOCKER_HOST``, else the default socket) and ``docker load`` on
the other, both through the engines' API, streamed a chunk at a time (never a whole
image in memory), then tagged there as it was recorded. An image id is the digest of the
image's config, which ``save``/``load`` carry unchanged, so the other engine then runs
exactly the recorded image.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ..errors import ImageNotFoundError, SandboxError
from ._backends import docker_client, engine_key

__all__ = ["Shipping", "ensure_image", "shipping_progress"]

_CHUNK = 1 << 20
# Loading hundreds of megabytes can keep an engine silent for minutes after the last
# byte (it unpacks every layer before it answers): longer than the shared client's 30 s.
_LOAD_TIMEOUT_S = 3600


@dataclass(frozen=True)
class Shipping:
    """Where sending an image stands: ``sent`` bytes of about ``total`` (the image's
    size; the archive is a little larger), ``done`` once the other engine has it."""

    image: str
    host: str
    sent: int
    total: int | None
    done: bool = False


_PROGRESS: ContextVar[Callable[[Shipping], None] | None] = ContextVar(
    "codetape_shipping_progress", default=None
)
_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_lock = threading.Lock()


@contextlib.contextmanager
def shipping_progress(report: Callable[[Shipping], None]) -> Iterator[None]:
    """Within this scope (and the threads that copy its context), each image sent to
    another engine calls ``report`` as its bytes go out, and once when it arrived."""
    token = _PROGRESS.set(report)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def _get(client: Any, image: str) -> Any:
    """The engine's image ``image`` (an id or a name), or None when it lacks it."""
    try:
        return client.images.get(image)
    except Exception as exc:  # docker-py: ImageNotFound, or anything the engine says
        if type(exc).__name__ == "ImageNotFound":
            return None
        raise SandboxError(f"cannot inspect the image {image}: {exc}") from exc


def ensure_image(image: str, host: str | None, name: str | None = None) -> bool:
    """Make sure the engine at ``host`` has ``image`` (an image id or a name): when it
    lacks it, send it from the environment's engine and tag it ``name`` (the name the
    recording gave it) there when that name is free. True when this call sent it.
    ``ImageNotFoundError`` when neither engine has it; ``SandboxError`` when sending it
    fails.

    >>> step = codetape.Store().steps("3f2a")[0]                    # doctest: +SKIP
    >>> ensure_image(step.sandbox.image_id, "tcp://gpu:2376", step.sandbox.image)  # doctest: +SKIP
    True
    """
    target = docker_client(host=host)
    if _get(target, image) is not None:
        return False
    if engine_key(host) == engine_key(None):
        raise ImageNotFoundError(image)
    local = _get(docker_client(), image)
    if local is None:
        raise ImageNotFoundError(image)
    image_id = str(local.id)
    sent = False
    with _lock_for(engine_key(host), image_id):
        if _get(target, image_id) is None:  # another thread may have sent it meanwhile
            _send(image_id, host, name or image, int(local.attrs.get("Size") or 0) or None)
            sent = True
    if name and not name.startswith("sha256:") and "@" not in name:
        _tag(target, image_id, name)
    return sent


def _lock_for(engine: str, image_id: str) -> threading.Lock:
    with _locks_lock:
        return _locks.setdefault((engine, image_id), threading.Lock())


def _send(image_id: str, host: str | None, shown: str, total: int | None) -> None:
    """``docker save`` here, ``docker load`` there, chunk by chunk."""
    where = engine_key(host)
    report = _PROGRESS.get()
    source = docker_client(timeout=_LOAD_TIMEOUT_S)
    try:
        target = docker_client(timeout=_LOAD_TIMEOUT_S, host=host)
    except BaseException:
        source.close()
        raise
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for chunk in source.api.get_image(image_id, chunk_size=_CHUNK):
            sent += len(chunk)
            if report is not None:
                report(Shipping(shown, where, sent, total))
            yield chunk

    try:
        errors = [
            str(line.get("error") or line.get("errorDetail") or "")
            for line in target.api.load_image(chunks())
            if isinstance(line, dict) and (line.get("error") or line.get("errorDetail"))
        ]
    except Exception as exc:  # docker-py: APIError, a connection reset, a timeout
        errors = [f"{type(exc).__name__}: {getattr(exc, 'explanation', None) or exc}"]
    finally:
        source.close()
        target.close()
    if errors:
        raise SandboxError(
            f"sending the image {shown} to the Docker engine at {where} failed: {errors[0]}",
            hint="check that engine's free disk space and its log; `docker save` and "
            "`docker load` by hand do the same",
        )
    if _get(docker_client(host=host), image_id) is None:
        raise SandboxError(
            f"the Docker engine at {where} loaded the image {shown} under another id than "
            f"{image_id}",
            hint="its image store names images differently (containerd's image store "
            "does); replay there with --image NAME to use its own id",
        )
    if report is not None:
        report(Shipping(shown, where, sent, total, done=True))


def _tag(client: Any, image_id: str, name: str) -> None:
    """Tag the image ``name`` on that engine unless the name is taken (by another image:
    someone else's tag is never moved)."""
    from docker.utils import parse_repository_tag

    held = _get(client, name)
    if held is not None:
        return
    repository, tag = parse_repository_tag(name)
    client.api.tag(image_id, repository, tag or "latest")
