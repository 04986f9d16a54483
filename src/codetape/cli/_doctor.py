"""``codetape doctor``: check what codetape depends on, say how to fix what is missing,
and remove the sandbox containers that crashed processes left behind."""

from __future__ import annotations

import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from ..errors import CodetapeError, DockerUnavailableError
from ..sandbox import default_image
from ..sandbox.internal import LABEL, docker_client
from ..store import Store

__all__ = ["Check", "Leftover", "clean_containers", "find_chromium", "find_leftovers", "run_checks"]

OFFLINE_IMAGE = "codetape/python:bookworm"
_CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# An exited container whose process is still alive is that process's to remove (it reads
# the container's OOM flag first); only after this long is it taken as forgotten.
EXITED_GRACE_S = 60.0


@dataclass(frozen=True)
class Check:
    name: str
    status: Literal["ok", "warn", "fail"]
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


@dataclass(frozen=True)
class Leftover:
    """A sandbox container that no live codetape process will remove."""

    id: str
    name: str
    state: str
    run_id: str
    pid: int | None
    reason: str

    def as_dict(self) -> dict[str, str | int | None]:
        return asdict(self)


def find_chromium() -> str | None:
    explicit = os.environ.get("CODETAPE_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    return next((p for p in map(shutil.which, _CHROMIUM) if p), None)


def _check_store(home: Path | None) -> Check:
    store = Store(home)
    if not store.home.is_dir():
        return Check(
            "store", "warn", f"no store at {store.home} yet", "the first recording creates it"
        )
    try:
        counts = store.counts()
    except CodetapeError as exc:
        return Check("store", "fail", exc.message, exc.hint)
    detail = (
        f"{store.home}: {counts['runs']} runs, {counts['steps']} steps, {counts['spans']} spans"
    )
    problems = [
        f"{n} {what}"
        for n, what in (
            (counts["torn_lines"], "torn spool lines (processes killed mid-write)"),
            (counts["bad_lines"], "spool lines could not be stored"),
            (counts["unwritten_records"], "records were not written (no space left on disk)"),
        )
        if n
    ]
    if store.ingest_problem:
        problems.append(f"what is spooled cannot be stored now: {store.ingest_problem}")
    if not problems:
        return Check("store", "ok", detail)
    where = [
        f"{lost['spool']}"
        + (f" at byte {lost['offset']}" if lost["offset"] is not None else "")
        + (f", run {lost['run_id'][:12]}" if lost["run_id"] else "")
        + f": {lost['reason']}"
        for lost in store.lost_records(3)
    ]
    return Check(
        "store",
        "warn",
        detail + "; " + "; ".join(problems) + "".join(f"\n  {w}" for w in where),
        "a line that could not be stored stays in its spool file (spool/live or spool/done); "
        "runs missing records say how many (codetape show RUN)",
    )


def _process_started_at(pid: int) -> float | None:
    """When process ``pid`` started (Unix time, Linux only), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _alive(pid: int, created: float) -> bool:
    """Whether the process that started a container created at ``created`` still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    started = _process_started_at(pid)
    # A process that started after the container was created cannot have created it:
    # the pid was reused. (btime has one-second resolution, hence the slack.)
    return started is None or started <= created + 2


def _finished_ago(client: Any, container_id: str) -> float:
    try:
        finished = client.api.inspect_container(container_id)["State"]["FinishedAt"]
    except Exception:
        return 0.0
    try:
        # Docker gives nanoseconds; fromisoformat takes at most microseconds.
        head, _, frac = finished.rstrip("Z").partition(".")
        when = datetime.fromisoformat(f"{head}.{(frac or '0')[:6]}+00:00")
    except ValueError:
        return 0.0
    return time.time() - when.timestamp()


def find_leftovers(client: Any | None = None) -> list[Leftover]:
    """Sandbox containers of this host that no live process will remove: those whose
    process (the ``codetape.sandbox.pid`` label) is gone, and those that exited more
    than ``EXITED_GRACE_S`` ago. Containers of other hosts are never touched."""
    if client is None:
        client = docker_client()  # the process's shared client: not this function's to close
    host = socket.gethostname()
    found = []
    for summary in client.api.containers(all=True, filters={"label": f"{LABEL}=1"}):
        labels = summary.get("Labels") or {}
        if labels.get(f"{LABEL}.host") != host:
            continue
        state = str(summary.get("State") or "?")
        try:
            pid: int | None = int(labels.get(f"{LABEL}.pid", ""))
        except ValueError:
            pid = None
        created = float(summary.get("Created") or 0)
        if pid is not None and not _alive(pid, created):
            reason = f"its process {pid} is gone"
        elif state in ("exited", "dead") and _finished_ago(client, summary["Id"]) > EXITED_GRACE_S:
            reason = f"{state} and not removed by its process {pid}"
        elif pid is None and state in ("exited", "dead", "created"):
            reason = f"{state}, with no owning process recorded"
        else:
            continue
        names = summary.get("Names") or ["?"]
        found.append(
            Leftover(
                id=summary["Id"][:12],
                name=str(names[0]).lstrip("/"),
                state=state,
                run_id=labels.get(f"{LABEL}.run_id", ""),
                pid=pid,
                reason=reason,
            )
        )
    return found


def clean_containers(client: Any | None = None) -> list[Leftover]:
    """Remove the containers ``find_leftovers`` finds; return those removed.

    >>> for gone in clean_containers():                   # doctest: +SKIP
    ...     print(gone.name, gone.reason)
    """
    if client is None:
        client = docker_client()  # the process's shared client: not this function's to close
    removed = []
    for leftover in find_leftovers(client):
        try:
            client.api.remove_container(leftover.id, force=True)
        except Exception as exc:
            if type(exc).__name__ == "NotFound":  # its process removed it meanwhile
                continue
            raise
        removed.append(leftover)
    return removed


def _check_containers(client: Any) -> Check:
    try:
        leftovers = find_leftovers(client)
    except Exception as exc:  # docker-py raises several unrelated types here
        return Check("sandbox containers", "warn", f"cannot list containers: {exc}")
    if not leftovers:
        return Check("sandbox containers", "ok", "none left behind")
    shown = ", ".join(f"{c.name} ({c.reason})" for c in leftovers[:3])
    more = f" and {len(leftovers) - 3} more" if len(leftovers) > 3 else ""
    return Check(
        "sandbox containers",
        "warn",
        f"{len(leftovers)} left behind by crashed processes: {shown}{more}",
        "codetape doctor --clean removes them",
    )


def _check_docker_and_image() -> list[Check]:
    image = default_image()
    try:
        client = docker_client(timeout=5)  # its own, failing fast, closed below
    except DockerUnavailableError as exc:
        return [
            Check(
                "docker",
                "warn",
                f"no Docker engine reachable ({exc.reason})",
                "install Docker and start it (Debian: apt-get install docker.io && dockerd &); "
                "until then the sandbox can only use backend='local', without isolation",
            ),
            Check("sandbox image", "warn", f"{image}: not checked without Docker"),
        ]
    try:
        return _check_engine(client, image)
    finally:
        client.close()


def _check_engine(client: Any, image: str) -> list[Check]:
    version = client.version().get("Version", "?")
    checks = [Check("docker", "ok", f"engine {version}")]
    try:
        found = client.images.get(image)
    except Exception:
        checks.append(
            Check(
                "sandbox image",
                "warn",
                f"{image} is not in Docker",
                f"docker pull {image} (or `codetape image build` for one with your packages), "
                f"or build one with no registry: scripts/build-offline-image.sh "
                f"{OFFLINE_IMAGE} && export CODETAPE_IMAGE={OFFLINE_IMAGE}",
            )
        )
    else:
        checks.append(Check("sandbox image", "ok", f"{image} ({found.id[:19]})"))
    checks.append(_check_containers(client))
    return checks


def _check_browser() -> Check:
    path = find_chromium()
    if path is None:
        return Check(
            "browser",
            "warn",
            "no Chromium found (used by the viewer's browser tests)",
            "apt-get install chromium, or set CODETAPE_CHROMIUM to its path",
        )
    return Check("browser", "ok", path)


def run_checks(home: Path | None) -> list[Check]:
    return [_check_store(home), *_check_docker_and_image(), _check_browser()]
