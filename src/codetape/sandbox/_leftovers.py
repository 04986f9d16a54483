"""Sandbox containers that no live codetape process will remove, and removing them.

Each container carries labels with the host and the pid of the process that started it
(``codetape.sandbox.host``, ``codetape.sandbox.pid``). A container whose process is gone
is a leftover: ``codetape doctor --clean`` removes those (and those that exited long
ago), and each new sandbox removes those of processes that are gone before it starts, so
a killed recorder's containers do not outlive the next one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ._backends import LABEL, docker_client

__all__ = ["EXITED_GRACE_S", "Leftover", "clean_containers", "find_leftovers", "remove_orphans"]

# An exited container whose process is still alive is that process's to remove (it reads
# the container's OOM flag first); only after this long is it taken as forgotten.
EXITED_GRACE_S = 60.0


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


def _zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


def _alive(pid: int, created: float) -> bool:
    """Whether the process that started a container created at ``created`` still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    if _zombie(pid):
        return False  # killed, and not yet reaped by its parent
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


def remove_orphans(client: Any) -> int:
    """Remove this host's sandbox containers whose process is gone (a recorder killed
    with its sandbox open); how many were removed. Never raises: a sandbox starts
    whether or not this worked."""
    removed = 0
    with contextlib.suppress(Exception):  # docker-py raises many unrelated types here
        for leftover in find_leftovers(client):
            if leftover.pid is None or not leftover.reason.endswith("is gone"):
                continue
            removed += _remove(client, leftover.id)
    return removed


def _remove(client: Any, container_id: str, attempts: int = 3) -> int:
    """Force-remove a container; 1 when it is gone. A removal can collide with the one
    Docker starts itself when the dying runner's container exits (``--rm``): then try
    again, briefly, rather than leave it for the next sandbox."""
    for attempt in range(attempts):
        try:
            client.api.remove_container(container_id, force=True)
            return 1
        except Exception as exc:  # docker-py raises many unrelated types here
            if "No such container" in str(exc):
                return 1
            if attempt + 1 < attempts:
                time.sleep(0.5)
    return 0
