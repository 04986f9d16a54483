"""What the Chromium tests share: Debian's chromium, how it is started, and
``codetape ui`` served on a free loopback port while a test drives it.

A browser is never downloaded (no ``playwright install``): the ``chromium`` fixture
(tests/conftest.py) skips without Debian's chromium or the playwright package, and fails
under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

try:
    import playwright.sync_api  # noqa: F401  (only whether it is there)
except ImportError:
    HAVE_PLAYWRIGHT = False
else:
    HAVE_PLAYWRIGHT = True

__all__ = [
    "ARTIFACTS",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "HAVE_PLAYWRIGHT",
    "START_S",
    "WAIT_MS",
    "codetape_ui",
    "fresh_shots",
]

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling home, which floods a
# closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser"
# Streamlit reruns asynchronously, and test machines are loaded: be generous.
WAIT_MS = 30_000
START_S = 60


def fresh_shots(folder: Path) -> Path:
    """``folder`` for a test's screenshots, without the last run's."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def codetape_ui(home: Path, log_dir: Path, *options: str) -> Iterator[str]:
    """``codetape ui [options]`` on a free loopback port over ``home``, logging to
    ``log_dir/server.log``: the link it prints (with its token), once the server
    answers. Stopped at the end (terminate, then kill)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
    env["STREAMLIT_SERVER_FILE_WATCHER_TYPE"] = "none"  # nothing to watch: less load
    log_path = log_dir / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "codetape", "ui", "--home", str(home),
             "--port", str(port), "--host", "127.0.0.1", *options],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            assert proc.poll() is None, f"codetape ui exited:\n{log_path.read_text()}"
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as answer,
            ):
                if answer.read().strip() == b"ok":
                    break
            assert time.monotonic() < deadline, f"no answer in {START_S} s:\n{log_path.read_text()}"
            time.sleep(0.25)
        link = re.search(rf"{re.escape(base)}/\?token=\S+", log_path.read_text())
        assert link is not None, log_path.read_text()
        yield link.group(0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
