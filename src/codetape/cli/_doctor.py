"""``codetape doctor``: check what codetape depends on, say how to fix what is missing,
and remove the sandbox containers that crashed processes left behind."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import CodetapeError, DockerUnavailableError
from ..sandbox import default_image
from ..sandbox.internal import (
    EXITED_GRACE_S,
    OFFLINE_IMAGE,
    Leftover,
    check_runtime,
    clean_containers,
    docker_client,
    find_leftovers,
)
from ..store import Store

__all__ = [
    "EXITED_GRACE_S",
    "Check",
    "Leftover",
    "clean_containers",
    "find_chromium",
    "find_leftovers",
    "run_checks",
]

_CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@dataclass(frozen=True)
class Check:
    name: str
    status: Literal["ok", "warn", "fail"]
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, str | None]:
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
                "or build one with no registry: codetape image build --offline "
                "[--include python3-numpy,...] && "
                f"export CODETAPE_IMAGE={OFFLINE_IMAGE}",
            )
        )
    else:
        checks.append(Check("sandbox image", "ok", f"{image} ({found.id[:19]})"))
    checks.append(_check_runtime(client))
    checks.append(_check_containers(client))
    return checks


def _check_runtime(client: Any) -> Check:
    """The engine's container runtime, against the fixes for known container escapes."""
    try:
        report = check_runtime(client)
    except Exception as exc:  # docker-py raises several unrelated types here
        return Check("container runtime", "warn", f"cannot ask the engine: {exc}")
    if report.problem is not None:
        return Check("container runtime", "fail", report.problem, report.fix)
    if report.version == "?":
        return Check("container runtime", "ok", f"{report.name} (version not checked)")
    return Check("container runtime", "ok", f"{report.name} {report.version}")


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
