"""``codetape show RUN --llm`` and ``--call I``: a run's model calls, and one in full;
and the one-line summary of a call that ``show`` prints above a step's code."""

from __future__ import annotations

from rich.table import Table

from .._format import TEXT_PREVIEW_CHARS, cost, cut, duration
from ..errors import NotFoundError
from ..schemas import LlmCall
from ..store import Store
from ._app import out, print_json, shown
from ._header import print_run_header
from ._links import run_link

__all__ = ["call_summary", "count", "one_line", "show_call", "show_calls"]

_CALL_COLUMNS = ("#", "step", "model", "in", "out", "latency", "finish")


def count(tokens: int | None) -> str:
    return "?" if tokens is None else f"{tokens:,}"


def call_summary(call: LlmCall) -> str:
    """One line: the model, its tokens, latency and cost."""
    model = call.model or call.response_model or "(model unknown)"
    parts = [f"[bold]{shown(model)}[/]"]
    if call.input_tokens is not None or call.output_tokens is not None:
        parts.append(f"{count(call.input_tokens)} in / {count(call.output_tokens)} out tokens")
    parts.append(duration(call.duration_ms))
    if call.cost is not None:
        parts.append(f"cost {cost(call.cost)}")
    if call.error is not None:
        parts.append(f"[red]{shown(call.error.type)}: {shown(call.error.message)}[/]")
    return "  ".join(parts)


def one_line(text: str | None, limit: int = TEXT_PREVIEW_CHARS) -> str:
    """A text's preview on one line: each run of whitespace (newlines too) as one space."""
    return cut(" ".join((text or "")[: limit * 4].split()), limit)


def show_calls(store: Store, run_id: str, as_json: bool) -> None:
    """The run's model calls, one row each (``--json``: the LlmCall models)."""
    if as_json:
        print_json(store.llm_calls(run_id))
        return
    detail = store.detail(run_id)
    print_run_header(detail.run)
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
    _print_calls(detail.llm_calls, steps)
    out.print(
        f"[dim]codetape show {run_link(detail.run.id)} --llm --call I[/]"
        "  (call I's input messages and output in full)"
    )


def _print_calls(calls: list[LlmCall], steps: dict[str, list[int]]) -> None:
    priced = any(call.cost is not None for call in calls)
    table = Table(box=None, header_style="bold", expand=out.is_terminal)
    for column in (*_CALL_COLUMNS, *(("cost",) if priced else ()), "output"):
        ratio = 1 if column == "output" else None
        table.add_column(column, no_wrap=True, overflow="ellipsis", ratio=ratio)
    for call in calls:
        said = (
            f"[red]{shown(call.error.type)}: {shown(one_line(call.error.message))}[/]"
            if call.error is not None
            else shown(one_line(call.output))
        )
        table.add_row(
            str(call.index),
            ",".join(map(str, steps.get(call.span_id, []))),
            shown(call.model or call.response_model or "?"),
            count(call.input_tokens),
            count(call.output_tokens),
            duration(call.duration_ms),
            shown(",".join(call.finish_reasons)),
            *((cost(call.cost),) if priced else ()),
            said,
        )
    out.print(table)


def show_call(store: Store, run_id: str, index: int, as_json: bool) -> None:
    """Model call ``index`` of the run in full: its input messages and output."""
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
    run = run_link(call.run_id)
    out.print(f"[bold]model call {call.index}[/] of run {run}  {call_summary(call)}")
    facts = [f"[dim]started[/] {call.started_at.astimezone().strftime('%m-%d %H:%M:%S')}"]
    if call.response_model and call.response_model != call.model:
        facts.append(f"[dim]answered by[/] {shown(call.response_model)}")
    if call.finish_reasons:
        facts.append(f"[dim]finish[/] {shown(', '.join(call.finish_reasons))}")
    if call.streamed:
        facts.append("[dim]streamed[/]")
    out.print("  ".join(facts))
    for index in produced:
        step = run_link(call.run_id, step=index)
        out.print(f"[dim]its code is step {index}:[/] codetape show {step} --step {index}")
    number = len(call.input_messages)
    out.print(f"\n[bold]input[/] [dim]({number} message{'s' * (number != 1)})[/]")
    for message in call.input_messages:
        out.print(f"\n[bold cyan]{shown(message.role)}[/]")
        out.print(shown(message.content.rstrip("\n")))
    out.print("\n[bold]output[/]")
    out.print(shown(call.output.rstrip("\n")) if call.output else "[dim](none)[/]")
