"""``codetape ui``: serve the web viewer with Streamlit, on loopback unless told."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import sys
from pathlib import Path

import click
from rich.markup import escape

from .cli import _handle_errors, cli, err, out
from .errors import CodetapeError
from .store.internal import resolve_home
from .viewer import APP, url

__all__: list[str] = []

_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


def streamlit_command(host: str, port: int) -> list[str]:
    """The command ``codetape ui`` runs (the viewer's store comes from CODETAPE_HOME)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",  # no "Deploy" button: this is a local tool
    ]  # fmt: skip


@cli.command("ui")
@click.option(
    "--home",
    "ui_home",
    type=click.Path(file_okay=False, path_type=Path),
    help="Store directory (default: the one given to codetape, $CODETAPE_HOME, ./.codetape).",
)
@click.option(
    "--port",
    default=8501,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port to serve on.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind. Anything but loopback makes recorded code and output, "
    "and the replay buttons, reachable from other machines.",
)
@click.pass_context
@_handle_errors
def ui_command(ctx: click.Context, ui_home: Path | None, port: int, host: str) -> None:
    """Open the web viewer: runs, steps, a timeline, replay buttons and run diffs.

    \b
      codetape ui                      http://127.0.0.1:8501
      codetape ui --port 8502 --home runs/.codetape
    """
    if importlib.util.find_spec("streamlit") is None:
        raise CodetapeError(
            "the viewer needs Streamlit, which is not installed",
            hint="pip install 'codetape[viewer]'",
        )
    home = resolve_home(ui_home or ctx.obj.get("home"))
    base = _base_url(host, port)
    if not _is_loopback(host):
        err.print(
            f"[yellow]warning:[/] binding {escape(host)}: anyone who can reach it sees the "
            "recorded code, output and variables, and can replay steps on this machine",
            soft_wrap=True,
        )
    out.print(f"codetape viewer: {escape(url(base))}  (store {escape(str(home))})", soft_wrap=True)
    out.print("[dim]Ctrl+C to stop[/]")
    sys.stdout.flush()
    sys.stderr.flush()
    # Streamlit takes this process's place: signals reach the server, and no server is
    # left behind when the command is stopped.
    command = streamlit_command(host, port)
    os.execve(command[0], command, {**os.environ, "CODETAPE_HOME": str(home)})
