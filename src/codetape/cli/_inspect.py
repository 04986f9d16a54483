"""``codetape runs``, ``show`` and ``doctor``: look at what was recorded, and at what
codetape needs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.cells import cell_len
from rich.syntax import Syntax
from rich.table import Table

from .._format import (
    PREVIEW_CHARS,
    RUN_STATUSES,
    TASK_CHARS,
    cut,
    duration,
    failing_line,
    visible,
)
from ..schemas import Run, Step
from ..store import Store
from ..store.internal import DB_NAME, no_store_error, resolve_home
from ..store.internal import rebuild as rebuild_store
from ..viewer import url as viewer_url
from . import _doctor
from ._app import cli, err, handle_errors, open_store, out, print_json, shown, status_markup

__all__: list[str] = []

_RUN_COLUMNS = ("run", "agent", "status", "steps", "failed", "duration", "started", "task")


@cli.command()
@click.option("--failed", is_flag=True, help="Only runs that errored, died, or have a failed step.")
@click.option("--agent", metavar="NAME", help="Only runs of this agent.")
@click.option(
    "--status",
    type=click.Choice(RUN_STATUSES),
    help="Only runs with this status.",
)
@click.option("--limit", default=50, show_default=True, help="How many runs to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the Run models as JSON.")
@click.pass_context
@handle_errors
def runs(
    ctx: click.Context,
    failed: bool,
    agent: str | None,
    status: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List recorded runs, newest first."""
    store = _existing_store(ctx)
    found = store.runs(status=status, agent=agent, limit=limit, failed=failed)
    if as_json:
        print_json(found)
        return
    if not found:
        where = shown(str(store.home))
        out.print(f"no runs in {where}" + (" match" if failed or agent or status else ""))
        return
    # In a terminal the task takes the room left; piped, every column keeps its length.
    table = Table(box=None, header_style="bold", expand=out.is_terminal)
    for column in _RUN_COLUMNS:
        if column == "task":
            table.add_column(column, no_wrap=True, overflow="ellipsis", ratio=1)
        else:
            table.add_column(column, no_wrap=True, min_width=12 if column == "run" else len(column))
    for run in found:
        table.add_row(
            shown(run.id[:12]),
            shown(run.name),
            status_markup(run.status) + _lost_mark(run),
            str(run.step_count),
            str(run.failed_steps) if run.failed_steps else "",
            duration(run.duration_ms, "-"),
            run.started_at.astimezone().strftime("%m-%d %H:%M:%S"),
            shown(cut(run.task, TASK_CHARS)),
        )
    out.print(table)


def _existing_store(ctx: click.Context) -> Store:
    """The store to read, which must exist: a mistyped --home is said, not created."""
    store = open_store(ctx)
    if not store.home.is_dir():
        raise no_store_error(store.home)
    return store


def _lost_mark(run: Run) -> str:
    return f" [yellow]({run.lost_records} lost)[/]" if run.lost_records else ""


def _print_lost(run: Run) -> None:
    if run.lost_records:
        records = "record" if run.lost_records == 1 else "records"
        out.print(
            f"[yellow]{run.lost_records} {records} could not be stored[/] "
            "[dim](codetape doctor says which and why)[/]"
        )


def _print_step(step: Step, verbose: bool) -> None:
    out.print(
        f"[bold]step {step.index}[/] {status_markup(step.status)}  {duration(step.duration_ms)}"
    )
    error_line = failing_line(step)
    code = visible(step.code)
    out.print(
        Syntax(
            code,
            "python",
            line_numbers=True,
            word_wrap=True,
            highlight_lines={error_line} if error_line else None,
            code_width=None if out.is_terminal else _longest_line(code),
        )
    )
    if step.stdout:
        out.print("[dim]stdout[/]")
        out.print(shown(step.stdout.rstrip("\n")))
    if step.stderr:
        out.print("[dim]stderr[/]")
        out.print(shown(step.stderr.rstrip("\n")), style="yellow")
    if step.result is not None:
        out.print(f"[dim]result[/] ({shown(step.result_type or '')}) {shown(step.result)}")
    _print_tool_calls(step)
    if verbose:
        _print_variables(step)
        spec = step.sandbox
        where = spec.image or "host"
        out.print(
            f"[dim]sandbox[/] {shown(spec.backend)} {shown(where)} "
            f"python {shown(spec.python or '?')} "
            f"{shown(spec.image_id or spec.env_fingerprint or '')}"
        )
    if step.error is not None:
        out.print(f"[red]{shown(step.error.type)}: {shown(step.error.message)}[/]")
        if verbose and step.error.traceback:
            out.print(shown(step.error.traceback.rstrip("\n")), style="dim")
    out.print()


def _longest_line(code: str) -> int:
    """How wide code is: piped, a Syntax is as wide as its longest line, not the console."""
    return max((cell_len(line.expandtabs(4)) for line in code.splitlines()), default=1) or 1


def _json(value: object) -> str:
    return shown(cut(json.dumps(value, default=str), PREVIEW_CHARS))


def _print_tool_calls(step: Step) -> None:
    for call in step.tool_calls:
        outcome = (
            f"[red]{shown(call.error.type)}: {shown(call.error.message)}[/]"
            if call.error
            else _json(call.result)
        )
        out.print(f"[dim]tool[/] {shown(call.name)}({_json(call.arguments)}) -> {outcome}")


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
        value = shown(snap.preview)
        if not snap.restorable:
            value += f" [yellow](not restorable: {shown(snap.reason or '')})[/]"
        table.add_row(mark, shown(name), shown(snap.type), f"{snap.size:,}", value)
    out.print(table)


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.option("--step", "step_index", type=int, metavar="N", help="Show only step N in full.")
@click.option("--json", "as_json", is_flag=True, help="Print the models as JSON.")
@click.pass_context
@handle_errors
def show(ctx: click.Context, run_id: str, step_index: int | None, as_json: bool) -> None:
    """Show a run and its steps (RUN: a unique prefix of the run id, or "last")."""
    store = _existing_store(ctx)
    if step_index is not None:
        step = store.step(run_id, step_index)
        if as_json:
            print_json(step)
        else:
            _print_step(step, verbose=True)
        return
    detail = store.detail(run_id)
    if as_json:
        print_json(detail)
        return
    run = detail.run
    out.print(
        f"[bold]run {shown(run.id)}[/]  {shown(run.name)}  {status_markup(run.status)}  "
        f"{duration(run.duration_ms, '-')}"
    )
    if run.task:
        out.print(f"[dim]task[/] {shown(run.task)}")
    _print_lost(run)
    if run.error:
        out.print(f"[red]{shown(run.error.type)}: {shown(run.error.message)}[/]")
    if run.final_answer is not None:
        out.print(f"[dim]final answer[/] {shown(run.final_answer)}")
    out.print()
    for step in detail.steps:
        _print_step(step, verbose=False)
    out.print(f"[dim]in the viewer (codetape ui):[/] {viewer_url(run=run.id)}", soft_wrap=True)
    if run.failed_steps:
        first = next(s for s in detail.steps if s.status != "ok")
        out.print(
            f"[dim]codetape show {shown(run.id[:12])} --step {first.index}[/]"
            "  (the first failed step)"
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
@handle_errors
def doctor(ctx: click.Context, as_json: bool, rebuild: bool, clean: bool) -> None:
    """Check the store, Docker, the sandbox image and the browser; say how to fix what is
    missing. Exits 1 when a check fails.

    With --clean, first remove the sandbox containers whose process is gone (or that
    exited long ago); with --json, print {"removed": [...], "checks": [...]}."""
    if rebuild:
        _rebuild(ctx.obj.get("home"))
    removed = _doctor.clean_containers() if clean else []
    checks = _doctor.run_checks(ctx.obj.get("home"))
    if as_json:
        listed = [c.as_dict() for c in checks]
        print_json(
            {"removed": [r.as_dict() for r in removed], "checks": listed} if clean else listed
        )
    else:
        if clean:
            _print_removed(removed)
        for check in checks:
            _print_check(check)
    if any(c.status == "fail" for c in checks):
        sys.exit(1)


def _rebuild(given: Path | None) -> None:
    home = resolve_home(given)
    kept, stats = rebuild_store(home)
    if kept is not None:
        err.print(f"kept the old database as {kept}")
    err.print(
        f"rebuilt {home / DB_NAME} from {stats.files} spool files "
        f"({stats.records} records, {stats.torn_lines} torn lines skipped"
        + (f", {stats.bad_lines} lines could not be stored" if stats.bad_lines else "")
        + ")"
    )


def _print_removed(removed: list[_doctor.Leftover]) -> None:
    for gone in removed:
        out.print(
            f"removed {shown(gone.name)} ({shown(gone.state)}; {shown(gone.reason)}"
            + (f"; run {shown(gone.run_id[:12])}" if gone.run_id else "")
            + ")",
            soft_wrap=True,
        )
    out.print(f"removed {len(removed)} sandbox container{'s' * (len(removed) != 1)}")


def _print_check(check: _doctor.Check) -> None:
    mark = {"ok": "[green]ok  [/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}[check.status]
    out.print(f"{mark} [bold]{shown(check.name)}[/]: {shown(check.detail)}", soft_wrap=True)
    if check.fix:
        out.print(f"     [dim]fix:[/] {shown(check.fix)}", soft_wrap=True)
