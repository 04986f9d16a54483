"""The head of ``codetape show``: a run's facts, the run and step that started it, its
model calls and cost."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from .._format import cost, duration
from ..errors import AmbiguousRunIdError, RunNotFoundError
from ..schemas import Run, Step
from ..store import Store
from ._app import out, shown, status_markup
from ._links import run_link

__all__ = ["print_run_header", "related_runs"]


def print_run_header(run: Run, runs: Mapping[str, Run] | None = None) -> None:
    """The run's id, agent, status and duration; the step that started it (``runs``: the
    runs the store has, by id); its task and model calls."""
    out.print(
        f"[bold]run {run_link(run.id, full=True)}[/]  {shown(run.name)}  "
        f"{status_markup(run.status)}  {duration(run.duration_ms, '-')}"
    )
    if run.parent_run is not None:
        out.print(_parent_line(run.parent_run, run.parent_step, (runs or {}).get(run.parent_run)))
    if run.task:
        out.print(f"[dim]task[/] {shown(run.task)}")
    if run.llm_calls:
        tokens = f"{run.input_tokens:,} in / {run.output_tokens:,} out tokens"
        priced = f", cost {cost(run.cost)}" if run.cost is not None else ""
        out.print(
            f"[dim]model calls[/] {run.llm_calls}, {tokens}{priced}  "
            f"[dim](codetape show {run_link(run.id)} --llm)[/]"
        )


def related_runs(store: Store, steps: list[Step], run: Run | None = None) -> dict[str, Run]:
    """The runs the steps' tool calls started and the run ``run`` was started by, by
    id, as far as the store has them."""
    wanted = {c.child_run for s in steps for c in s.tool_calls if c.child_run is not None}
    if run is not None and run.parent_run is not None:
        wanted.add(run.parent_run)
    found = {}
    with store.session():
        for run_id in sorted(wanted):
            with contextlib.suppress(RunNotFoundError, AmbiguousRunIdError):
                found[run_id] = store.run(run_id)
    # Recorded ids are whole: one that only prefixes another run's id names no run.
    return {run_id: run for run_id, run in found.items() if run.id == run_id}


def _parent_line(parent_run: str, step: int | None, parent: Run | None) -> str:
    """For a run started by another run's step: that step, and how to show it."""
    link = run_link(parent_run, step=step)
    where = f"step {step} of run {link}" if step is not None else f"run {link}"
    if parent is None:
        return f"[dim]started by[/] {where} [dim](not in this store)[/]"
    command = f"codetape show {link}" + (f" --step {step}" if step is not None else "")
    return f"[dim]started by[/] {where} ({shown(parent.name)})  [dim]{command}[/]"
