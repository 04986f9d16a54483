"""``codetape doctor``: check what codetape depends on and say how to fix what is missing."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from .errors import CodetapeError
from .store import Store

__all__ = ["DEFAULT_IMAGE", "Check", "default_image", "find_chromium", "run_checks"]

DEFAULT_IMAGE = "python:3.12-slim"
OFFLINE_IMAGE = "codetape/python:bookworm"
_CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@dataclass(frozen=True)
class Check:
    name: str
    status: Literal["ok", "warn", "fail"]
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def default_image() -> str:
    return os.environ.get("CODETAPE_IMAGE") or DEFAULT_IMAGE


def find_chromium() -> str | None:
    explicit = os.environ.get("CODETAPE_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    return next((p for p in map(shutil.which, _CHROMIUM) if p), None)


def _check_store(home: Path | None) -> Check:
    try:
        store = Store(home)
        counts = store.counts()
    except CodetapeError as exc:
        return Check("store", "fail", exc.message, exc.hint)
    detail = (
        f"{store.home}: {counts['runs']} runs, {counts['steps']} steps, {counts['spans']} spans"
    )
    skipped = counts["torn_lines"] + counts["bad_lines"]
    if skipped:
        return Check(
            "store", "warn",
            detail + f"; {counts['torn_lines']} torn and {counts['bad_lines']} unreadable spool "
            "lines were skipped",
            "torn lines come from processes killed mid-write; nothing else was lost",
        )
    return Check("store", "ok", detail)


def _docker_client() -> object:
    import docker

    client = docker.from_env(timeout=5)
    client.ping()
    return client


def _check_docker_and_image() -> list[Check]:
    image = default_image()
    try:
        client = _docker_client()
    except Exception as exc:  # docker-py raises several unrelated types here
        return [
            Check(
                "docker", "warn", f"no Docker engine reachable ({type(exc).__name__})",
                "install Docker and start it (Debian: apt-get install docker.io && dockerd &); "
                "until then the sandbox can only use backend='local', without isolation",
            ),
            Check("sandbox image", "warn", f"{image}: not checked without Docker"),
        ]
    version = client.version().get("Version", "?")  # type: ignore[attr-defined]
    checks = [Check("docker", "ok", f"engine {version}")]
    try:
        found = client.images.get(image)  # type: ignore[attr-defined]
    except Exception:
        checks.append(
            Check(
                "sandbox image", "warn", f"{image} is not in Docker",
                f"docker pull {image}, or build one with no registry: "
                f"scripts/build-offline-image.sh {OFFLINE_IMAGE} && "
                f"export CODETAPE_IMAGE={OFFLINE_IMAGE}",
            )
        )
    else:
        checks.append(Check("sandbox image", "ok", f"{image} ({found.id[:19]})"))
    return checks


def _check_browser() -> Check:
    path = find_chromium()
    if path is None:
        return Check(
            "browser", "warn", "no Chromium found (used by the viewer's browser tests)",
            "apt-get install chromium, or set CODETAPE_CHROMIUM to its path",
        )
    return Check("browser", "ok", path)


def run_checks(home: Path | None) -> list[Check]:
    return [_check_store(home), *_check_docker_and_image(), _check_browser()]
