"""How ``codetape show`` prints a step: the model's thought and call, the code with its
failing line marked, output, result, tool calls, variables and the error."""

from __future__ import annotations

import json
from collections.abc import Mapping

from rich.cells import cell_len
from rich.syntax import Syntax
from rich.table import Table

from .._format import PREVIEW_CHARS, cut, duration, failing_line, inline_values, visible
from ..schemas import LlmCall, Run, Step
from ._app import out, shown, status_markup
from ._links import run_link
from ._llm import call_summary

__all__ = ["child_run_text", "print_step"]


def print_step(
    step: Step, verbose: bool, calls: list[LlmCall], runs: Mapping[str, Run] | None = None
) -> None:
    """One step; ``verbose`` adds its variables, sandbox and traceback. ``runs``: the
    runs its tool calls started, by id, as far as the store has them."""
    out.print(
        f"[bold]step {step.index}[/] {status_markup(step.status)}  {duration(step.duration_ms)}"
    )
    _print_origin(step, calls)
    _print_code(step)
    if step.stdout:
        out.print("[dim]stdout[/]")
        out.print(shown(step.stdout.rstrip("\n")))
    if step.stderr:
        out.print("[dim]stderr[/]")
        out.print(shown(step.stderr.rstrip("\n")), style="yellow")
    if step.result is not None:
        out.print(f"[dim]result[/] ({shown(step.result_type or '')}) {shown(step.result)}")
    _print_tool_calls(step, runs or {})
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
        _print_inline_values(step)
        if verbose and step.error.traceback:
            out.print(shown(step.error.traceback.rstrip("\n")), style="dim")
    out.print()


def _print_inline_values(step: Step) -> None:
    """Under the error: each name the failing line reads, its type and preview from the
    recorded state, and what a subscripted value does have (``order has keys: id``)."""
    values = inline_values(step)
    if not values:
        return
    out.print("[dim]the failing line reads[/]")
    names = max(cell_len(visible(v.name)) for v in values)
    types = max(cell_len(visible(v.type)) for v in values)
    for value in values:
        name = f"[bold]{shown(value.name)}[/]" + " " * (names - cell_len(visible(value.name)))
        kind = f"[dim]{shown(value.type)}[/]" + " " * (types - cell_len(visible(value.type)))
        out.print(f"  {name}  {kind}  {shown(value.preview)}", soft_wrap=True)
        if value.note:
            indent = " " * (names + types + 6)
            note = f"{shown(value.name)} {shown(value.note)}"
            out.print(f"{indent}[yellow]{note}[/]", soft_wrap=True)


def _print_origin(step: Step, calls: list[LlmCall]) -> None:
    """The model call the step's code came from, and the thought the model wrote."""
    if step.llm_call is not None:
        call = next((c for c in calls if c.span_id == step.llm_call), None)
        if call is None:
            out.print(f"[dim]model call[/] {shown(step.llm_call)} [dim](not in the store)[/]")
        else:
            out.print(f"[dim]model call {call.index}[/]  {call_summary(call)}")
    if step.thought:
        out.print("[dim]thought[/]")
        out.print(shown(step.thought.strip("\n")), style="italic")


def _print_code(step: Step) -> None:
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


def _longest_line(code: str) -> int:
    """How wide code is: piped, a Syntax is as wide as its longest line, not the console."""
    return max((cell_len(line.expandtabs(4)) for line in code.splitlines()), default=1) or 1


def _json(value: object) -> str:
    return shown(cut(json.dumps(value, default=str), PREVIEW_CHARS))


def _print_tool_calls(step: Step, runs: Mapping[str, Run]) -> None:
    for call in step.tool_calls:
        outcome = (
            f"[red]{shown(call.error.type)}: {shown(call.error.message)}[/]"
            if call.error
            else _json(call.result)
        )
        out.print(f"[dim]tool[/] {shown(call.name)}({_json(call.arguments)}) -> {outcome}")
        if call.child_run is not None:
            out.print(f"     [dim]started run[/] {child_run_text(call.child_run, runs)}")


def child_run_text(run_id: str, runs: Mapping[str, Run]) -> str:
    """A run another run's step started: its id, name and status, and the command that
    shows it (or that this store does not have it)."""
    child = runs.get(run_id)
    link = run_link(run_id)
    if child is None:
        return f"{link} [dim](not in this store)[/]"
    return (
        f"{link} ({shown(child.name)}, {status_markup(child.status)})  [dim]codetape show {link}[/]"
    )


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
