"""Run ids as terminal hyperlinks (OSC 8) to the viewer's page for the run.

A command links a run id when it knows where a viewer serves the store it reads:

- ``CODETAPE_VIEWER_URL`` (the viewer's base address, ``http://host:port``) when set;
  set empty, no run id is linked;
- else the address ``codetape ui`` wrote into the store directory (``viewer.json``)
  when it started, while that viewer's process is alive.

Only codetape's own links are made: the address is checked (http or https, no spaces,
brackets, quotes or control characters, so it cannot break out of rich's
``[link=...]``), the run id is URL-encoded into it, and the text shown is the id made
visible and escaped. Recorded text never becomes a link: it goes through ``shown``.
The links carry no token: the replay buttons still need the link ``codetape ui``
printed. A terminal without hyperlinks shows the id as text; piped output has none.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import click

from ..store.internal import resolve_home
from ..viewer import url
from ._app import shown

__all__ = [
    "VIEWER_FILE",
    "VIEWER_URL_ENV",
    "run_link",
    "safe_base",
    "viewer_base",
    "viewer_line",
    "write_viewer_address",
]

VIEWER_URL_ENV = "CODETAPE_VIEWER_URL"
# Where ``codetape ui`` says, in the store directory, which viewer serves it.
VIEWER_FILE = "viewer.json"
# What the viewer's process runs (``codetape ui`` becomes it with exec: same pid).
_SERVER = b"codetape.viewer._server"
_BASE = re.compile(r"https?://[A-Za-z0-9.\-]+(?::\d{1,5})?(?:/[A-Za-z0-9._~/%-]*)?")
_CACHE_KEY = "codetape:viewer-base"


def safe_base(text: object) -> str | None:
    """``text`` as a viewer base address when it is one codetape may link to (an http or
    https host name or IPv4 address, a port, a plain path), else None.

    >>> safe_base("http://127.0.0.1:8501/"), safe_base("http://x]evil[/link]")
    ('http://127.0.0.1:8501', None)
    """
    if not isinstance(text, str) or not _BASE.fullmatch(text.strip()):
        return None
    return text.strip().rstrip("/")


def write_viewer_address(home: Path, base: str, pid: int) -> None:
    """Say in ``home`` that the viewer at ``base`` (process ``pid``) serves it; a store
    that cannot be written to just gets no links."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=home, prefix=f".{VIEWER_FILE}.", delete=False, encoding="utf-8"
        ) as handle:
            json.dump({"url": base, "pid": pid}, handle)
        os.replace(handle.name, home / VIEWER_FILE)
    except OSError:
        return


def _serving(pid: object) -> bool:
    """Whether process ``pid`` is alive, and where the system says what it runs (Linux),
    whether it is the viewer's server (not another process given a dead viewer's pid)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass  # alive, another user's
    except (OSError, OverflowError):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not Path("/proc/self").exists():
        return True
    try:
        return _SERVER in cmdline.read_bytes()
    except OSError:
        return False


def viewer_base(home: Path) -> str | None:
    """The base address of the viewer serving the store at ``home``, when known."""
    given = os.environ.get(VIEWER_URL_ENV)
    if given is not None:
        return safe_base(given)
    try:
        said = json.loads((home / VIEWER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(said, dict) or not _serving(said.get("pid")):
        return None
    return safe_base(said.get("url"))


def _current_base() -> str | None:
    """The viewer base for the store of the command being run, looked up once."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    obj = ctx.find_root().ensure_object(dict)
    if _CACHE_KEY not in obj:
        obj[_CACHE_KEY] = viewer_base(resolve_home(obj.get("home")))
    found = obj[_CACHE_KEY]
    return found if isinstance(found, str) else None


def run_link(run_id: str, *, full: bool = False, step: int | None = None) -> str:
    """Rich markup for a run id (its first 12 characters unless ``full``): a hyperlink
    to the viewer's page for the run (at ``step``) when a viewer is known, else text."""
    text = shown(run_id if full else run_id[:12])
    base = _current_base()
    if base is None:
        return text
    return f"[link={url(base, run=run_id, step=step)}]{text}[/link]"


def viewer_line(*, run: str | None = None, a: str | None = None, b: str | None = None) -> str:
    """Markup for the line that gives the viewer's page for a run (or the compare page
    for ``a`` and ``b``): at the known viewer's address, linked, else where ``codetape
    ui`` serves by default."""
    base = _current_base()
    if base is None:
        return f"[dim]in the viewer (codetape ui):[/] {shown(url(run=run, a=a, b=b))}"
    address = url(base, run=run, a=a, b=b)
    return f"[dim]in the viewer:[/] [link={address}]{shown(address)}[/link]"
