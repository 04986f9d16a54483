"""``codetape diff`` and ``ui``: compare runs in the terminal, or serve the web viewer
with Streamlit (on loopback unless told)."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import secrets
import sys
from pathlib import Path

import click
from rich.table import Table

from ..errors import CodetapeError
from ..replayer import diff_runs
from ..schemas import RunDiff, StepPair
from ..store.internal import REMOTE_ENV, resolve_home
from ..store.internal import TOKEN_ENV as REMOTE_TOKEN_ENV
from ..viewer import url
from ..viewer.internal import ALLOW_LOCAL_EXEC_ENV, TOKEN_ENV, command
from ._app import cli, err, handle_errors, out, print_json, remote_store, shown, style_lines
from ._links import run_link, viewer_line, write_viewer_address

__all__ = ["streamlit_command"]

_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def _pair_summary(pair: StepPair) -> str:
    if pair.a is None:
        return "only in b"
    if pair.b is None:
        return "only in a"
    parts = []
    if pair.code_diff:
        parts.append("code")
    if pair.stdout_diff:
        parts.append("stdout")
    if pair.status_a != pair.status_b:
        parts.append(f"status {pair.status_a}→{pair.status_b}")
    elif pair.error_a != pair.error_b:
        parts.append("error")
    for label, names in (
        ("+", pair.variables_added),
        ("-", pair.variables_removed),
        ("~", [c.name for c in pair.variables_changed]),
    ):
        if names:
            parts.append(label + ",".join(names))
    return ", ".join(parts) or "same"


def _print_pairs(diff: RunDiff) -> None:
    table = Table(box=None, header_style="bold")
    for column in ("", "a", "b", "status", "differs in"):
        table.add_column(column)
    for k, pair in enumerate(diff.pairs):
        mark = "[red]▶[/]" if k == diff.first_divergence else ""
        status = f"{pair.status_a or '-'} / {pair.status_b or '-'}"
        style = "" if pair.same else "yellow"
        table.add_row(
            mark,
            str(pair.a if pair.a is not None else "-"),
            str(pair.b if pair.b is not None else "-"),
            shown(status),
            f"[{style}]{shown(_pair_summary(pair))}[/]" if style else "same",
        )
    out.print(table)


def _print_divergence(pair: StepPair) -> None:
    out.print(f"\n[bold]first divergence[/]: step a={pair.a} b={pair.b}")
    for title, lines in (("code", pair.code_diff), ("stdout", pair.stdout_diff)):
        if lines:
            out.print(f"  [bold]{title}[/]")
            style_lines(lines)
    if pair.error_a != pair.error_b:
        for side, error in (("a", pair.error_a), ("b", pair.error_b)):
            said = f"{error.type}: {error.message}" if error else "no error"
            out.print(f"  [bold]error {side}[/] {shown(said)}", soft_wrap=True)
    for change in pair.variables_changed:
        out.print(
            f"  [bold]{shown(change.name)}[/] [red]{shown(change.a.preview)}[/] → "
            f"[green]{shown(change.b.preview)}[/]",
            soft_wrap=True,
        )


def _print_diff(diff: RunDiff) -> None:
    a, b = diff.a, diff.b
    out.print(
        f"[bold]a[/] {run_link(a.id)} {shown(a.name)} {shown(a.status)}   "
        f"[bold]b[/] {run_link(b.id)} {shown(b.name)} {shown(b.status)}"
    )
    _print_pairs(diff)
    if diff.first_divergence is None:
        out.print("[green]the runs match step for step[/]")
    else:
        _print_divergence(diff.pairs[diff.first_divergence])
    _print_child_runs(diff)


def _print_child_runs(diff: RunDiff) -> None:
    """The runs the aligned steps' tool calls started (managed agents), side by side,
    with the command that compares each pair of them."""
    lines = []
    for pair in diff.pairs:
        a, b = pair.child_runs_a, pair.child_runs_b
        for k in range(max(len(a), len(b))):
            steps = f"step a={_side(pair.a)} b={_side(pair.b)}"
            if k < len(a) and k < len(b):
                lines.append(
                    f"  {steps}: {run_link(a[k])} / {run_link(b[k])}  "
                    f"[dim]codetape diff {run_link(a[k])} {run_link(b[k])}[/]"
                )
            else:
                only, side = (a[k], "a") if k < len(a) else (b[k], "b")
                lines.append(f"  {steps}: {run_link(only)} [dim](only {side} started one)[/]")
    if lines:
        out.print("\n[bold]runs started by the steps' tool calls[/] (a / b)")
        for line in lines:
            out.print(line, soft_wrap=True)


def _side(index: int | None) -> str:
    return "-" if index is None else str(index)


@cli.command("diff")
@click.argument("run_a", metavar="A")
@click.argument("run_b", metavar="B")
@click.option("--json", "as_json", is_flag=True, help="Print the RunDiff model as JSON.")
@click.pass_context
@handle_errors
def diff_command(ctx: click.Context, run_a: str, run_b: str, as_json: bool) -> None:
    """Compare two runs (or a run and its replay) step by step, and point at the first
    step where they part."""
    remote = remote_store(ctx)
    if remote is not None:
        diff = remote.diff(run_a, run_b)
    else:
        diff = diff_runs(run_a, run_b, home=ctx.obj.get("home"))
    if as_json:
        print_json(diff)
        return
    _print_diff(diff)
    out.print("\n" + viewer_line(a=diff.a.id, b=diff.b.id), soft_wrap=True)


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


def _linked_base(host: str, port: int) -> str:
    """The address other commands link to: a wildcard bind is reached on loopback."""
    return _base_url("127.0.0.1" if host in ("", "0.0.0.0", "::") else host, port)


def streamlit_command(host: str, port: int) -> list[str]:
    """The command ``codetape ui`` runs: Streamlit behind the viewer's guard (its store,
    token and local-replay permission come from the environment)."""
    return command(host, port)


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
    help="Address to bind. Anything but loopback makes recorded code and output "
    "reachable from other machines. The viewer answers only to loopback names and this one.",
)
@click.option(
    "--allow-local-exec",
    is_flag=True,
    help="Let the replay buttons run steps that replay in a local subprocess, without "
    "isolation (steps not recorded in Docker). Docker replays need only the link's token.",
)
@click.pass_context
@handle_errors
def ui_command(
    ctx: click.Context, ui_home: Path | None, port: int, host: str, allow_local_exec: bool
) -> None:
    """Open the web viewer: runs, steps, a timeline, replay buttons and run diffs.

    The printed link carries a token made for this launch: the replay buttons work
    only in a browser that opened it.

    \b
      codetape ui                      http://127.0.0.1:8501/?token=…
      codetape ui --port 8502 --home runs/.codetape
      codetape ui --allow-local-exec   replay steps recorded without Docker too
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
            f"[yellow]warning:[/] binding {shown(host)}: anyone who can reach it sees the "
            "recorded code, output and variables",
            soft_wrap=True,
        )
    if allow_local_exec:
        err.print(
            "[yellow]warning:[/] --allow-local-exec: the replay buttons run steps not "
            "recorded in Docker in a subprocess of this machine, without isolation",
            soft_wrap=True,
        )
    token = secrets.token_urlsafe(32)
    link = f"{url(base)}?token={token}"
    remote = remote_store(ctx)
    where = remote.url if remote else str(home)
    out.print(f"codetape viewer: {shown(link)}  (store {shown(where)})", soft_wrap=True)
    out.print("[dim]the link's token unlocks the replay buttons; Ctrl+C to stop[/]")
    sys.stdout.flush()
    sys.stderr.flush()
    env = {**os.environ, "CODETAPE_HOME": str(home), TOKEN_ENV: token}
    if remote is not None:
        # The viewer reads through the server (viewer/_data.py); its replays are refused.
        env.update({REMOTE_ENV: remote.url, REMOTE_TOKEN_ENV: remote.token or ""})
    else:
        # The other commands link run ids to this viewer while it runs (exec keeps the pid).
        write_viewer_address(home, _linked_base(host, port), os.getpid())
    env.pop(ALLOW_LOCAL_EXEC_ENV, None)
    if allow_local_exec:
        env[ALLOW_LOCAL_EXEC_ENV] = "1"
    # Streamlit takes this process's place: signals reach the server, and no server is
    # left behind when the command is stopped.
    argv = streamlit_command(host, port)
    os.execve(argv[0], argv, env)
