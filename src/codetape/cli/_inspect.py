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
    TEXT_PREVIEW_CHARS,
    cut,
    duration,
    failing_line,
    visible,
)
from ..errors import NotFoundError
from ..schemas import LlmCall, Run, RunDetail, Step
from ..store import Store
from ..store.internal import DB_NAME, no_store_error, resolve_home
from ..store.internal import rebuild as rebuild_store
from ..viewer import url as viewer_url
from . import _doctor
from ._app import cli, err, handle_errors, open_store, out, print_json, shown, status_markup

__all__: list[str] = []

_RUN_COLUMNS = ("run", "agent", "status", "steps", "failed", "duration", "started")
_CALL_COLUMNS = ("#", "step", "model", "in", "out", "latency", "finish")


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
    # Tokens only when some run made model calls; cost only when some had a price.
    called = any(run.llm_calls for run in found)
    priced = any(run.cost is not None for run in found)
    columns = (
        *_RUN_COLUMNS,
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
    for run in found:
        table.add_row(
            shown(run.id[:12]),
            shown(run.name),
            status_markup(run.status) + _lost_mark(run),
            str(run.step_count),
            str(run.failed_steps) if run.failed_steps else "",
            duration(run.duration_ms, "-"),
            run.started_at.astimezone().strftime("%m-%d %H:%M:%S"),
            *_usage_cells(run, called, priced),
            shown(cut(run.task, TASK_CHARS)),
        )
    out.print(table)


def _existing_store(ctx: click.Context) -> Store:
    """The store to read, which must exist: a mistyped --home is said, not created."""
    store = open_store(ctx)
    if not store.home.is_dir():
        raise no_store_error(store.home)
    return store


def _usage_cells(run: Run, called: bool, priced: bool) -> tuple[str, ...]:
    """The run's tokens and cost cells, for the columns the list has."""
    tokens = f"{run.input_tokens:,}/{run.output_tokens:,}" if run.llm_calls else ""
    return (*((tokens,) if called else ()), *((_cost(run.cost),) if priced else ()))


def _count(tokens: int | None) -> str:
    return "?" if tokens is None else f"{tokens:,}"


def _cost(cost: float | None) -> str:
    """A cost in the unit of the prices given to ``configure(prices=...)``, as the viewer
    shows it; empty when no price applied."""
    if cost is None:
        return ""
    return f"{cost:,.2f}" if cost >= 1 else f"{cost:.3g}"


def _call_summary(call: LlmCall) -> str:
    """One line: the model, its tokens, latency and cost."""
    model = call.model or call.response_model or "(model unknown)"
    parts = [f"[bold]{shown(model)}[/]"]
    if call.input_tokens is not None or call.output_tokens is not None:
        parts.append(f"{_count(call.input_tokens)} in / {_count(call.output_tokens)} out tokens")
    parts.append(duration(call.duration_ms))
    if call.cost is not None:
        parts.append(f"cost {_cost(call.cost)}")
    if call.error is not None:
        parts.append(f"[red]{shown(call.error.type)}: {shown(call.error.message)}[/]")
    return "  ".join(parts)


def _lost_mark(run: Run) -> str:
    return f" [yellow]({run.lost_records} lost)[/]" if run.lost_records else ""


def _print_lost(run: Run) -> None:
    if run.lost_records:
        records = "record" if run.lost_records == 1 else "records"
        out.print(
            f"[yellow]{run.lost_records} {records} could not be stored[/] "
            "[dim](codetape doctor says which and why)[/]"
        )


def _print_origin(step: Step, calls: list[LlmCall]) -> None:
    """The model call the step's code came from, and the thought the model wrote."""
    if step.llm_call is not None:
        call = next((c for c in calls if c.span_id == step.llm_call), None)
        if call is None:
            out.print(f"[dim]model call[/] {shown(step.llm_call)} [dim](not in the store)[/]")
        else:
            out.print(f"[dim]model call {call.index}[/]  {_call_summary(call)}")
    if step.thought:
        out.print("[dim]thought[/]")
        out.print(shown(step.thought.strip("\n")), style="italic")


def _print_step(step: Step, verbose: bool, calls: list[LlmCall]) -> None:
    out.print(
        f"[bold]step {step.index}[/] {status_markup(step.status)}  {duration(step.duration_ms)}"
    )
    _print_origin(step, calls)
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
@click.option("--json", "as_json", is_flag=True, help="Print the models as JSON.")
@click.pass_context
@handle_errors
def show(
    ctx: click.Context,
    run_id: str,
    step_index: int | None,
    llm: bool,
    call_index: int | None,
    as_json: bool,
) -> None:
    """Show a run and its steps (RUN: a unique prefix of the run id, or "last").

    \b
      codetape show RUN                 the steps, each with the model's thought
      codetape show RUN --step N        one step in full (--json: the Step model)
      codetape show RUN --llm           the model calls (--json: the LlmCall models)
      codetape show RUN --llm --call I  one model call's input messages and output
    """
    if step_index is not None and (llm or call_index is not None):
        raise click.UsageError("--step shows a step, --llm and --call model calls: pick one")
    store = _existing_store(ctx)
    if step_index is not None:
        step = store.step(run_id, step_index)
        if as_json:
            print_json(step)
        else:
            calls = store.llm_calls(step.run_id) if step.llm_call else []
            _print_step(step, verbose=True, calls=calls)
    elif call_index is not None:
        _show_call(store, run_id, call_index, as_json)
    elif llm:
        _show_calls(store, run_id, as_json)
    else:
        _show_run(store.detail(run_id), as_json)


def _print_run_header(run: Run) -> None:
    out.print(
        f"[bold]run {shown(run.id)}[/]  {shown(run.name)}  {status_markup(run.status)}  "
        f"{duration(run.duration_ms, '-')}"
    )
    if run.task:
        out.print(f"[dim]task[/] {shown(run.task)}")
    if run.llm_calls:
        tokens = f"{run.input_tokens:,} in / {run.output_tokens:,} out tokens"
        cost = f", cost {_cost(run.cost)}" if run.cost is not None else ""
        out.print(
            f"[dim]model calls[/] {run.llm_calls}, {tokens}{cost}  "
            f"[dim](codetape show {shown(run.id[:12])} --llm)[/]"
        )


def _show_run(detail: RunDetail, as_json: bool) -> None:
    if as_json:
        print_json(detail)
        return
    run = detail.run
    _print_run_header(run)
    _print_lost(run)
    if run.error:
        out.print(f"[red]{shown(run.error.type)}: {shown(run.error.message)}[/]")
    if run.final_answer is not None:
        out.print(f"[dim]final answer[/] {shown(run.final_answer)}")
    out.print()
    for step in detail.steps:
        _print_step(step, verbose=False, calls=detail.llm_calls)
    out.print(f"[dim]in the viewer (codetape ui):[/] {viewer_url(run=run.id)}", soft_wrap=True)
    if run.failed_steps:
        first = next(s for s in detail.steps if s.status != "ok")
        out.print(
            f"[dim]codetape show {shown(run.id[:12])} --step {first.index}[/]"
            "  (the first failed step)"
        )


def _one_line(text: str) -> str:
    """A text's preview on one line: each run of whitespace (newlines too) as one space."""
    return cut(" ".join(text[: TEXT_PREVIEW_CHARS * 4].split()), TEXT_PREVIEW_CHARS)


def _show_calls(store: Store, run_id: str, as_json: bool) -> None:
    if as_json:
        print_json(store.llm_calls(run_id))
        return
    detail = store.detail(run_id)
    _print_run_header(detail.run)
    out.print()
    if not detail.llm_calls:
        out.print(
            "no model calls recorded in this run [dim](instrument(agent) for smolagents, "
            "@codetape.llm or codetape.record_llm_call record them)[/]",
            soft_wrap=True,
        )
        return
    steps: dict[str, list[int]] = {}
    for step in detail.steps:
        if step.llm_call is not None:
            steps.setdefault(step.llm_call, []).append(step.index)
    priced = any(call.cost is not None for call in detail.llm_calls)
    table = Table(box=None, header_style="bold", expand=out.is_terminal)
    for column in (*_CALL_COLUMNS, *(("cost",) if priced else ()), "output"):
        ratio = 1 if column == "output" else None
        table.add_column(column, no_wrap=True, overflow="ellipsis", ratio=ratio)
    for call in detail.llm_calls:
        said = (
            f"[red]{shown(call.error.type)}: {shown(_one_line(call.error.message))}[/]"
            if call.error is not None
            else shown(_one_line(call.output))
        )
        table.add_row(
            str(call.index),
            ",".join(map(str, steps.get(call.span_id, []))),
            shown(call.model or call.response_model or "?"),
            _count(call.input_tokens),
            _count(call.output_tokens),
            duration(call.duration_ms),
            shown(",".join(call.finish_reasons)),
            *((_cost(call.cost),) if priced else ()),
            said,
        )
    out.print(table)
    out.print(
        f"[dim]codetape show {shown(detail.run.id[:12])} --llm --call I[/]"
        "  (call I's input messages and output in full)"
    )


def _show_call(store: Store, run_id: str, index: int, as_json: bool) -> None:
    with store.session():
        full = store.resolve_run_id(run_id)
        calls = store.llm_calls(full)
        call = next((c for c in calls if c.index == index), None)
        if call is None:
            have = f"calls {calls[0].index}..{calls[-1].index}" if calls else "no model calls"
            raise NotFoundError(
                f"run {full} has no model call {index} (it has {have})",
                hint=f"`codetape show {full[:12]} --llm` lists its model calls",
            )
        if as_json:
            print_json(call)
            return
        produced = [s.index for s in store.steps(full) if s.llm_call == call.span_id]
    _print_call(call, produced)


def _print_call(call: LlmCall, produced: list[int]) -> None:
    run = shown(call.run_id[:12])
    out.print(f"[bold]model call {call.index}[/] of run {run}  {_call_summary(call)}")
    facts = [f"[dim]started[/] {call.started_at.astimezone().strftime('%m-%d %H:%M:%S')}"]
    if call.response_model and call.response_model != call.model:
        facts.append(f"[dim]answered by[/] {shown(call.response_model)}")
    if call.finish_reasons:
        facts.append(f"[dim]finish[/] {shown(', '.join(call.finish_reasons))}")
    if call.streamed:
        facts.append("[dim]streamed[/]")
    out.print("  ".join(facts))
    for index in produced:
        out.print(f"[dim]its code is step {index}:[/] codetape show {run} --step {index}")
    count = len(call.input_messages)
    out.print(f"\n[bold]input[/] [dim]({count} message{'s' * (count != 1)})[/]")
    for message in call.input_messages:
        out.print(f"\n[bold cyan]{shown(message.role)}[/]")
        out.print(shown(message.content.rstrip("\n")))
    out.print("\n[bold]output[/]")
    out.print(shown(call.output.rstrip("\n")) if call.output else "[dim](none)[/]")


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
