"""The ``codetape`` command: a thin layer that opens the store, calls the library and
prints with rich (for people) or ``--json`` (the pydantic models, for scripts)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from ._doctor import Check, Leftover, clean_containers, run_checks
from ._version import __version__
from .errors import CodetapeError
from .sandbox.internal import build_image
from .sandbox.internal import dockerfile as image_dockerfile
from .schemas import Run, Step
from .store import Store
from .store.internal import resolve_home
from .store.internal import rebuild as rebuild_store
from .store.internal import DB_NAME
from .viewer import url as viewer_url

__all__ = ["main"]

P = ParamSpec("P")
R = TypeVar("R")

out = Console(highlight=False)
# soft_wrap: paths and commands in messages must stay on one line, to copy them whole.
err = Console(stderr=True, highlight=False, soft_wrap=True)

_STATUS_STYLE = {
    "ok": "green",
    "error": "red",
    "incomplete": "yellow",
    "running": "cyan",
    "timeout": "red",
    "oom": "red",
    "killed": "red",
}


def _status(status: str) -> str:
    return f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _print_json(value: BaseModel | Sequence[BaseModel] | Any) -> None:
    if isinstance(value, BaseModel):
        text = value.model_dump_json(indent=2)
    elif isinstance(value, list) and all(isinstance(v, BaseModel) for v in value):
        text = "[" + ",".join(v.model_dump_json(indent=2) for v in value) + "]"
        text = json.dumps(json.loads(text), indent=2)
    else:
        text = json.dumps(value, indent=2, default=str)
    click.echo(text)


def _handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn codetape's errors into one line on stderr and an exit code, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except CodetapeError as exc:
            err.print(f"[red]error:[/] {escape(exc.message)}")
            if exc.hint:
                err.print(f"[dim]hint:[/] {escape(exc.hint)}")
            sys.exit(exc.exit_code)

    return wrapper


def _store(ctx: click.Context) -> Store:
    home: Path | None = ctx.obj.get("home")
    return Store(home)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CODETAPE_HOME",
    help="Store directory (default: $CODETAPE_HOME, else ./.codetape).",
)
@click.version_option(__version__, prog_name="codetape")
@click.pass_context
def cli(ctx: click.Context, home: Path | None) -> None:
    """Record, replay and diff the code actions of code-acting AI agents.

    \b
    Typical use:
      codetape runs --failed        runs that errored, died, or have a failed step
      codetape show RUN             the steps of a run (a unique id prefix is enough)
      codetape show RUN --step 3    one step: code, variables, output, tool calls
      codetape doctor               check the store, Docker, the sandbox image, the browser
    """
    ctx.ensure_object(dict)
    ctx.obj["home"] = home


def _duration(run: Run) -> str:
    ms = run.duration_ms
    if ms is None:
        return "-"
    return f"{ms / 1000:.2f}s" if ms >= 1000 else f"{ms:.0f}ms"


@cli.command()
@click.option("--failed", is_flag=True, help="Only runs that errored, died, or have a failed step.")
@click.option("--agent", metavar="NAME", help="Only runs of this agent.")
@click.option(
    "--status",
    type=click.Choice(["running", "ok", "error", "incomplete"]),
    help="Only runs with this status.",
)
@click.option("--limit", default=50, show_default=True, help="How many runs to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the Run models as JSON.")
@click.pass_context
@_handle_errors
def runs(
    ctx: click.Context,
    failed: bool,
    agent: str | None,
    status: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List recorded runs, newest first."""
    store = _store(ctx)
    found = store.runs(status=status, agent=agent, limit=limit, failed=failed)
    if as_json:
        _print_json(found)
        return
    if not found:
        out.print(f"no runs in {store.home}" + (" match" if failed or agent or status else ""))
        return
    table = Table(box=None, header_style="bold", expand=True)
    for column in ("run", "agent", "status", "steps", "failed", "duration", "started", "task"):
        if column == "task":
            table.add_column(column, no_wrap=True, overflow="ellipsis", ratio=1)
        else:
            table.add_column(column, no_wrap=True, min_width=12 if column == "run" else len(column))
    for run in found:
        table.add_row(
            run.id[:12],
            escape(run.name),
            _status(run.status),
            str(run.step_count),
            str(run.failed_steps) if run.failed_steps else "",
            _duration(run),
            run.started_at.astimezone().strftime("%m-%d %H:%M:%S"),
            escape((run.task or "")[:80]),
        )
    out.print(table)


def _print_step(step: Step, verbose: bool) -> None:
    head = f"[bold]step {step.index}[/] {_status(step.status)}  {step.duration_ms:.1f}ms"
    out.print(head)
    error_line = _error_line(step)
    out.print(
        Syntax(
            step.code,
            "python",
            line_numbers=True,
            word_wrap=True,
            highlight_lines={error_line} if error_line else None,
        )
    )
    if step.stdout:
        out.print("[dim]stdout[/]")
        out.print(escape(step.stdout.rstrip("\n")))
    if step.stderr:
        out.print("[dim]stderr[/]")
        out.print(escape(step.stderr.rstrip("\n")), style="yellow")
    if step.result is not None:
        out.print(f"[dim]result[/] ({escape(step.result_type or '')}) {escape(step.result)}")
    for call in step.tool_calls:
        outcome = (
            f"[red]{escape(call.error.type)}: {escape(call.error.message)}[/]"
            if call.error
            else escape(json.dumps(call.result, default=str)[:200])
        )
        args = escape(json.dumps(call.arguments, default=str)[:200])
        out.print(f"[dim]tool[/] {escape(call.name)}({args}) -> {outcome}")
    if verbose:
        _print_variables(step)
        spec = step.sandbox
        where = spec.image or "host"
        out.print(
            f"[dim]sandbox[/] {escape(spec.backend)} {escape(where)} "
            f"python {escape(spec.python or '?')} "
            f"{escape(spec.image_id or spec.env_fingerprint or '')}"
        )
    if step.error is not None:
        out.print(f"[red]{escape(step.error.type)}: {escape(step.error.message)}[/]")
        if verbose and step.error.traceback:
            out.print(escape(step.error.traceback.rstrip("\n")), style="dim")
    out.print()


def _error_line(step: Step) -> int | None:
    """The line of the snippet the traceback points at (frames of ``<string>``-like code)."""
    if step.error is None or not step.error.traceback:
        return None
    line = None
    for text in step.error.traceback.splitlines():
        text = text.strip()
        if text.startswith('File "<') and ", line " in text:
            try:
                line = int(text.split(", line ")[1].split(",")[0])
            except ValueError:
                continue
    return line


def _print_variables(step: Step) -> None:
    before, after = step.variables_before, step.variables_after
    names = sorted(set(before) | set(after))
    if not names:
        return
    table = Table(box=None, header_style="bold", title="variables", title_justify="left")
    for column in ("", "name", "type", "size", "value"):
        table.add_column(column)
    for name in names:
        old, new = before.get(name), after.get(name)
        mark = (
            "+"
            if old is None
            else "-"
            if new is None
            else "~"
            if old.digest != new.digest or old.preview != new.preview
            else ""
        )
        snap = new or old
        assert snap is not None
        value = escape(snap.preview)
        if not snap.restorable:
            value += f" [yellow](not restorable: {escape(snap.reason or '')})[/]"
        table.add_row(mark, escape(name), escape(snap.type), f"{snap.size:,}", value)
    out.print(table)


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.option("--step", "step_index", type=int, metavar="N", help="Show only step N in full.")
@click.option("--json", "as_json", is_flag=True, help="Print the models as JSON.")
@click.pass_context
@_handle_errors
def show(ctx: click.Context, run_id: str, step_index: int | None, as_json: bool) -> None:
    """Show a run and its steps (RUN: a unique prefix of the run id, or "last")."""
    store = _store(ctx)
    if step_index is not None:
        step = store.step(run_id, step_index)
        if as_json:
            _print_json(step)
        else:
            _print_step(step, verbose=True)
        return
    detail = store.detail(run_id)
    if as_json:
        _print_json(detail)
        return
    run = detail.run
    out.print(f"[bold]run {run.id}[/]  {escape(run.name)}  {_status(run.status)}  {_duration(run)}")
    if run.task:
        out.print(f"[dim]task[/] {escape(run.task)}")
    if run.error:
        out.print(f"[red]{escape(run.error.type)}: {escape(run.error.message)}[/]")
    if run.final_answer is not None:
        out.print(f"[dim]final answer[/] {escape(run.final_answer)}")
    out.print()
    for step in detail.steps:
        _print_step(step, verbose=False)
    out.print(f"[dim]in the viewer (codetape ui):[/] {viewer_url(run=run.id)}", soft_wrap=True)
    if run.failed_steps:
        first = next(s for s in detail.steps if s.status != "ok")
        out.print(
            f"[dim]codetape show {run.id[:12]} --step {first.index}[/]  (the first failed step)"
        )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option(
    "--rebuild",
    is_flag=True,
    help="Rebuild the DuckDB file from the spool logs (the old file is kept beside it).",
)
@click.option(
    "--clean",
    is_flag=True,
    help="Remove sandbox containers left behind by crashed processes on this host.",
)
@click.pass_context
@_handle_errors
def doctor(ctx: click.Context, as_json: bool, rebuild: bool, clean: bool) -> None:
    """Check the store, Docker, the sandbox image and the browser; say how to fix what is
    missing. Exits 1 when a check fails.

    With --clean, first remove the sandbox containers whose process is gone (or that
    exited long ago); with --json, print {"removed": [...], "checks": [...]}."""
    if rebuild:
        home = resolve_home(ctx.obj.get("home"))
        kept, stats = rebuild_store(home)
        if kept is not None:
            err.print(f"kept the old database as {kept}")
        err.print(
            f"rebuilt {home / DB_NAME} from {stats.files} spool files "
            f"({stats.records} records, {stats.torn_lines} torn lines skipped)"
        )
    removed: list[Leftover] = clean_containers() if clean else []
    checks = run_checks(ctx.obj.get("home"))
    if as_json:
        listed = [c.as_dict() for c in checks]
        _print_json(
            {"removed": [r.as_dict() for r in removed], "checks": listed} if clean else listed
        )
    else:
        if clean:
            for gone in removed:
                out.print(
                    f"removed {escape(gone.name)} ({escape(gone.state)}; {escape(gone.reason)}"
                    + (f"; run {escape(gone.run_id[:12])}" if gone.run_id else "")
                    + ")",
                    soft_wrap=True,
                )
            out.print(f"removed {len(removed)} sandbox container{'s' * (len(removed) != 1)}")
        for check in checks:
            _print_check(check)
    if any(c.status == "fail" for c in checks):
        sys.exit(1)


def _print_check(check: Check) -> None:
    mark = {"ok": "[green]ok  [/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}[check.status]
    out.print(f"{mark} [bold]{escape(check.name)}[/]: {escape(check.detail)}", soft_wrap=True)
    if check.fix:
        out.print(f"     [dim]fix:[/] {escape(check.fix)}", soft_wrap=True)


@cli.group()
def image() -> None:
    """Build sandbox images."""


@image.command("build")
@click.option(
    "--python",
    "python",
    default="3.12",
    show_default=True,
    metavar="VERSION",
    help="Python version of the default base image python:VERSION-slim.",
)
@click.option(
    "--pip",
    "packages",
    multiple=True,
    metavar="PKG",
    help="A requirement to pip install into the image (repeat for more).",
)
@click.option("--tag", metavar="NAME", help="Image name [default: codetape-sandbox:pyVERSION].")
@click.option(
    "--base",
    metavar="IMAGE",
    help="Base image [default: python:VERSION-slim]; any image with python3 works.",
)
@click.option("--dry-run", is_flag=True, help="Print the Dockerfile and build nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the tag, id and Dockerfile as JSON.")
@_handle_errors
def image_build(
    python: str,
    packages: tuple[str, ...],
    tag: str | None,
    base: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Build a sandbox image from a generated Dockerfile (needs a registry for the base
    image unless --base names a local one).

    \b
      codetape image build --pip pandas --pip 'numpy<2'
      codetape image build --base codetape/python:bookworm --tag my-sandbox   # offline
      codetape image build --pip pandas --dry-run                            # the Dockerfile
    """
    if dry_run:
        click.echo(image_dockerfile(python, packages, base), nl=False)
        return
    built = build_image(
        tag, python, packages, base, on_line=lambda line: err.print(escape(line), style="dim")
    )
    if as_json:
        _print_json({"tag": built.tag, "id": built.id, "dockerfile": built.dockerfile})
        return
    out.print(f"built [bold]{escape(built.tag)}[/] ({built.id[:19]})")
    out.print(
        f"use it: export CODETAPE_IMAGE={escape(built.tag)}  "
        f"or  codetape.Sandbox(image={escape(repr(built.tag))})",
        soft_wrap=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="codetape")


# The replay and viewer commands live in their own modules; importing them registers them.
from . import _cli_replay, _cli_viewer  # noqa: E402, F401
