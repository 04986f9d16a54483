"""The ``codetape`` group and what every command shares: the consoles, ``--json``
printing, the one error handler, the store and the status colours."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
from click.core import ParameterSource
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from .._format import STATUS_COLORS, VERDICT_COLORS, Color, visible, visible_json
from .._version import __version__
from ..errors import CodetapeError
from ..schemas import Verdict
from ..store import Store
from ..store.internal import REMOTE_ENV, RemoteStore, no_store_error, read_token

__all__ = [
    "cli",
    "err",
    "handle_errors",
    "main",
    "open_store",
    "out",
    "print_json",
    "remote_store",
    "shown",
    "status_markup",
    "style_lines",
    "verdict_markup",
]

P = ParamSpec("P")
R = TypeVar("R")

out = Console(highlight=False, emoji=False)
# soft_wrap: paths and commands in messages must stay on one line, to copy them whole.
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
# The width of ``out`` when it is not a terminal (a pipe, a file): columns and lines are
# not cut or wrapped to a terminal's 80 characters, so a script reads them whole.
UNCUT_WIDTH = 100_000

# How the terminal shows codetape's colour names.
_RICH: dict[Color, str] = {
    "green": "green",
    "red": "red",
    "yellow": "yellow",
    "orange": "dark_orange",
    "purple": "magenta",
    "grey": "grey50",
    "cyan": "cyan",
}


def shown(text: str | None) -> str:
    """Recorded text (names, tasks, code, output, messages) for rich markup: control and
    bidi characters made visible (``_format.visible``), rich markup escaped."""
    return escape(visible(text))


def status_markup(value: str) -> str:
    """A run or step status, coloured."""
    color = STATUS_COLORS.get(value)
    return f"[{_RICH[color] if color else 'white'}]{value}[/]"


def verdict_markup(value: Verdict) -> str:
    """A replay verdict, coloured."""
    return f"[{_RICH[VERDICT_COLORS[value]]}]{value}[/]"


def style_lines(lines: Sequence[str], limit: int = 40) -> None:
    """The first ``limit`` lines of a unified diff, removed red and added green."""
    for line in lines[:limit]:
        style = "red" if line.startswith("-") else "green" if line.startswith("+") else "dim"
        out.print(f"    [{style}]{shown(line)}[/]", soft_wrap=True)


def print_json(value: BaseModel | Sequence[BaseModel] | Any) -> None:
    """Exactly the JSON of ``value``, with control and bidi characters as JSON escapes."""
    if isinstance(value, BaseModel):
        text = value.model_dump_json(indent=2)
    elif isinstance(value, list) and all(isinstance(v, BaseModel) for v in value):
        text = "[" + ",".join(v.model_dump_json(indent=2) for v in value) + "]"
        text = json.dumps(json.loads(text), indent=2)
    else:
        text = json.dumps(value, indent=2, default=str)
    click.echo(visible_json(text))


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn codetape's errors into one line on stderr and an exit code, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except CodetapeError as exc:
            err.print(f"[red]error:[/] {shown(exc.message)}")
            if exc.hint:
                err.print(f"[dim]hint:[/] {shown(exc.hint)}")
            sys.exit(exc.exit_code)

    return wrapper


# The commands that read through ``--remote URL`` (a codetape serve); the others work on
# a local store and refuse a --remote given on their command line.
REMOTE_COMMANDS = frozenset({"runs", "show", "diff", "export", "failures", "sql", "ui"})


def remote_store(ctx: click.Context) -> RemoteStore | None:
    """The server ``--remote`` (or ``$CODETAPE_REMOTE``) names, if any."""
    found: RemoteStore | None = ctx.obj.get("remote")
    return found


def open_store(ctx: click.Context) -> Store:
    home: Path | None = ctx.obj.get("home")
    return remote_store(ctx) or Store(home)


def existing_store(ctx: click.Context) -> Store:
    """The store to read, which must exist: a mistyped --home is said, not created."""
    store = open_store(ctx)
    if remote_store(ctx) is None and not store.home.is_dir():
        raise no_store_error(store.home)
    return store


def store_place(ctx: click.Context, store: Store) -> str:
    """Where the store read is, as a message names it: its folder or its server."""
    remote = remote_store(ctx)
    return shown(remote.url if remote is not None else str(store.home))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CODETAPE_HOME",
    help="Store directory (default: $CODETAPE_HOME, else ./.codetape).",
)
@click.option(
    "--remote",
    metavar="URL",
    envvar=REMOTE_ENV,
    help="Read the history of a codetape serve at URL instead of a local store (runs, "
    "show, diff, export, failures, sql, ui; default: $CODETAPE_REMOTE).",
)
@click.option(
    "--token-file",
    "remote_token_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --remote: file holding the server's bearer token (default: $CODETAPE_TOKEN).",
)
@click.version_option(__version__, prog_name="codetape")
@click.pass_context
def cli(
    ctx: click.Context, home: Path | None, remote: str | None, remote_token_file: Path | None
) -> None:
    """Record, replay and diff the code actions of code-acting AI agents.

    \b
    Typical use:
      codetape runs --failed        runs that errored, died, or have a failed step
      codetape show RUN             the steps of a run (a unique id prefix is enough)
      codetape show RUN --step 3    one step: the model's thought, code, variables, output
      codetape show RUN --llm       the run's model calls (--call I: one in full)
      codetape show last --follow   the steps of a running run as they are recorded
      codetape failures             failing steps of all runs, grouped by how they failed
      codetape sql "SELECT ..."     SQL over the recorded runs (--examples: worked queries)
      codetape doctor               check the store, Docker, the sandbox image, the browser
    """
    ctx.ensure_object(dict)
    ctx.obj["home"] = home
    ctx.obj["remote"] = _remote(ctx, remote, remote_token_file)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out.width = UNCUT_WIDTH


def _remote(ctx: click.Context, url: str | None, token_file: Path | None) -> RemoteStore | None:
    """The ``RemoteStore`` of ``--remote``, for the commands that read through it. Set by
    $CODETAPE_REMOTE alone, the other commands keep to the local store."""
    if not url:
        if token_file is not None:
            raise click.UsageError("--token-file goes with --remote URL")
        return None
    command = ctx.invoked_subcommand
    if command not in REMOTE_COMMANDS:
        if ctx.get_parameter_source("remote") is not ParameterSource.COMMANDLINE:
            return None
        raise click.UsageError(
            f"--remote reads a codetape serve with {', '.join(sorted(REMOTE_COMMANDS))}; "
            f"`codetape {command}` works on a local store: drop --remote"
        )
    try:
        return RemoteStore(url, read_token(token_file))
    except CodetapeError as exc:
        raise click.UsageError(exc.message + (f" ({exc.hint})" if exc.hint else "")) from None


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="codetape")
