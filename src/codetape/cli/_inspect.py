"""``codetape runs``, ``show`` and ``doctor``: look at what was recorded, and at what
codetape needs."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from .._format import RUN_STATUSES, TASK_CHARS, cost, duration
from ..schemas import Run
from ..store import Store
from ..store.internal import DB_NAME, resolve_home
from ..store.internal import rebuild as rebuild_store
from . import _doctor, _follow
from ._app import (
    cli,
    err,
    existing_store,
    handle_errors,
    out,
    print_json,
    shown,
    status_markup,
    store_place,
)
from ._header import print_run_header, related_runs
from ._links import run_link, viewer_line
from ._llm import one_line, show_call, show_calls
from ._steps import print_step

__all__: list[str] = []

_RUN_COLUMNS = ("run", "agent", "status", "steps", "failed", "duration", "started")


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
    store = existing_store(ctx)
    found = store.runs(status=status, agent=agent, limit=limit, failed=failed)
    if as_json:
        print_json(found)
        return
    if not found:
        out.print(
            f"no runs in {store_place(ctx, store)}"
            + (" match" if failed or agent or status else "")
        )
        return
    out.print(_runs_table(found))


def _runs_table(found: list[Run]) -> Table:
    # Tokens only when some run made model calls; cost only when some had a price; the
    # parent only when some run was started by another's step.
    called = any(run.llm_calls for run in found)
    priced = any(run.cost is not None for run in found)
    nested = any(run.parent_run for run in found)
    columns = (
        *_RUN_COLUMNS,
        *(("parent",) if nested else ()),
        *(("tokens in/out",) if called else ()),
        *(("cost",) if priced else ()),
        "task",
    )
    # In a terminal the task takes the room left; piped, every column keeps its length.
    table = Table(box=None, header_style="bold", expand=out.is_terminal)
    for column in columns:
        if column == "task":
            table.add_column(column, no_wrap=True, overflow="ellipsis", ratio=1)
        else:
            table.add_column(column, no_wrap=True, min_width=12 if column == "run" else len(column))
    for run, depth in _as_tree(found):
        table.add_row(
            "  " * (depth - 1) + "└ " * (depth > 0) + run_link(run.id),
            shown(run.name),
            status_markup(run.status) + _lost_mark(run),
            str(run.step_count),
            str(run.failed_steps) if run.failed_steps else "",
            duration(run.duration_ms, "-"),
            run.started_at.astimezone().strftime("%m-%d %H:%M:%S"),
            *((_parent_cell(run),) if nested else ()),
            *_usage_cells(run, called, priced),
            shown(one_line(run.task, TASK_CHARS)),
        )
    return table


def _as_tree(found: list[Run]) -> list[tuple[Run, int]]:
    """The runs in their order, each listed with its depth, and the runs a run's steps
    started right under it, in the order they started."""
    listed = {run.id for run in found}
    children: dict[str, list[Run]] = {}
    for run in found:
        if run.parent_run in listed:
            children.setdefault(run.parent_run, []).append(run)
    ordered: list[tuple[Run, int]] = []
    placed: set[str] = set()

    def place(run: Run, depth: int) -> None:
        if run.id in placed:
            return
        placed.add(run.id)
        ordered.append((run, depth))
        for child in sorted(children.get(run.id, []), key=lambda r: r.started_at):
            place(child, depth + 1)

    for run in found:
        if run.parent_run not in listed:
            place(run, 0)
    for run in found:  # parents that are each other's children: listed, not lost
        place(run, 0)
    return ordered


def _parent_cell(run: Run) -> str:
    if run.parent_run is None:
        return ""
    step = f" step {run.parent_step}" if run.parent_step is not None else ""
    return run_link(run.parent_run, step=run.parent_step) + step


def _usage_cells(run: Run, called: bool, priced: bool) -> tuple[str, ...]:
    """The run's tokens and cost cells, for the columns the list has."""
    tokens = f"{run.input_tokens:,}/{run.output_tokens:,}" if run.llm_calls else ""
    return (*((tokens,) if called else ()), *((cost(run.cost),) if priced else ()))


def _lost_mark(run: Run) -> str:
    return f" [yellow]({run.lost_records} lost)[/]" if run.lost_records else ""


def _print_lost(run: Run) -> None:
    if run.lost_records:
        records = "record" if run.lost_records == 1 else "records"
        out.print(
            f"[yellow]{run.lost_records} {records} could not be stored[/] "
            "[dim](codetape doctor says which and why)[/]"
        )


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.option(
    "--step",
    "step_index",
    type=int,
    metavar="N",
    help="Show only step N in full, with the model's thought and the model call it came from.",
)
@click.option(
    "--llm",
    is_flag=True,
    help="List the run's model calls: model, tokens, latency, finish reason, cost, output.",
)
@click.option(
    "--call",
    "call_index",
    type=int,
    metavar="I",
    help="Show model call I (its # in --llm) in full: input messages and output.",
)
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Print the steps as they are recorded, until the run ends (or Ctrl+C); with "
    "--json, each step as one line of JSON.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the models as JSON.")
@click.pass_context
@handle_errors
def show(
    ctx: click.Context,
    run_id: str,
    step_index: int | None,
    llm: bool,
    call_index: int | None,
    follow: bool,
    as_json: bool,
) -> None:
    """Show a run and its steps (RUN: a unique prefix of the run id, or "last").

    \b
      codetape show RUN                 the steps, each with the model's thought
      codetape show RUN --step N        one step in full (--json: the Step model)
      codetape show RUN --llm           the model calls (--json: the LlmCall models)
      codetape show RUN --llm --call I  one model call's input messages and output
      codetape show last --follow       the steps as they are recorded, like tail -f
    """
    if step_index is not None and (llm or call_index is not None):
        raise click.UsageError("--step shows a step, --llm and --call model calls: pick one")
    if follow and (step_index is not None or llm or call_index is not None):
        raise click.UsageError("--follow follows the run's steps: not with --step, --llm, --call")
    store = existing_store(ctx)
    if follow:
        _follow.follow(store, run_id, as_json)
    elif step_index is not None:
        step = store.step(run_id, step_index)
        if as_json:
            print_json(step)
        else:
            calls = store.llm_calls(step.run_id) if step.llm_call else []
            print_step(step, verbose=True, calls=calls, runs=related_runs(store, [step]))
    elif call_index is not None:
        show_call(store, run_id, call_index, as_json)
    elif llm:
        show_calls(store, run_id, as_json)
    else:
        _show_run(store, run_id, as_json)


def _show_run(store: Store, run_id: str, as_json: bool) -> None:
    detail = store.detail(run_id)
    if as_json:
        print_json(detail)
        return
    run = detail.run
    runs = related_runs(store, detail.steps, run)
    print_run_header(run, runs)
    _print_lost(run)
    if run.error:
        out.print(f"[red]{shown(run.error.type)}: {shown(run.error.message)}[/]")
    if run.final_answer is not None:
        out.print(f"[dim]final answer[/] {shown(run.final_answer)}")
    out.print()
    for step in detail.steps:
        print_step(step, verbose=False, calls=detail.llm_calls, runs=runs)
    out.print(viewer_line(run=run.id), soft_wrap=True)
    if run.failed_steps:
        first = next(s for s in detail.steps if s.status != "ok")
        out.print(
            f"[dim]codetape show {run_link(run.id, step=first.index)} --step {first.index}[/]"
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
            + (f"; run {run_link(gone.run_id)}" if gone.run_id else "")
            + ")",
            soft_wrap=True,
        )
    out.print(f"removed {len(removed)} sandbox container{'s' * (len(removed) != 1)}")


def _print_check(check: _doctor.Check) -> None:
    mark = {"ok": "[green]ok  [/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}[check.status]
    out.print(f"{mark} [bold]{shown(check.name)}[/]: {shown(check.detail)}", soft_wrap=True)
    if check.fix:
        out.print(f"     [dim]fix:[/] {shown(check.fix)}", soft_wrap=True)
