"""``codetape show RUN --follow``: a run's steps printed as they are recorded, like
``tail -f``, until the run ends (or Ctrl+C).

It polls the store: each read catches up with what the recording process has spooled,
so a step shows once it has ended (its span is in the spool). ``--json`` prints each
step as one line of JSON (the Step model), for ``jq`` and scripts.
"""

from __future__ import annotations

import sys
import time

import click

from .._format import duration, visible_json
from ..schemas import LlmCall, Run, Step
from ..store import Store
from ._app import err, out, shown, status_markup
from ._header import print_run_header, related_runs
from ._links import run_link, viewer_line
from ._steps import print_step

__all__ = ["POLL_S", "follow", "wait"]

# How often the store is read for new steps while the run is running.
POLL_S = 0.5


def wait(seconds: float) -> None:
    """The pause between two reads of the store (tests replace it)."""
    time.sleep(seconds)


def follow(store: Store, run_id: str, as_json: bool) -> None:
    """Print the run's steps as they are recorded until the run ends; Ctrl+C stops
    following (exit status 130), the run goes on."""
    full = store.resolve_run_id(run_id)
    run = store.run(full)
    if not as_json:
        print_run_header(run, related_runs(store, [], run))
        out.print()
        if run.status == "running":
            err.print("[dim]following: each step prints once it ends; Ctrl+C stops[/]")
    printed: set[int] = set()
    try:
        while True:
            # The status first: a run that had ended has all its steps in the next read.
            run = store.run(full)
            if run.step_count > len(printed):
                _print_new(store, run, printed, as_json)
            if run.status != "running":
                break
            wait(POLL_S)
    except KeyboardInterrupt:
        err.print(f"stopped following run {run_link(full)} (it was {run.status})")
        sys.exit(130)
    if not as_json:
        _print_end(run)


def _print_new(store: Store, run: Run, printed: set[int], as_json: bool) -> None:
    with store.session():
        new = [s for s in store.steps(run.id) if s.index not in printed]
        calls = store.llm_calls(run.id) if any(s.llm_call for s in new) else []
        runs = related_runs(store, new) if not as_json else {}
    for step in new:
        _print(step, calls, runs, as_json)
        printed.add(step.index)


def _print(step: Step, calls: list[LlmCall], runs: dict[str, Run], as_json: bool) -> None:
    if as_json:
        click.echo(visible_json(step.model_dump_json()))
    else:
        print_step(step, verbose=False, calls=calls, runs=runs)
    sys.stdout.flush()


def _print_end(run: Run) -> None:
    """How the run ended: its status, error or final answer, where to look next."""
    out.print(
        f"[bold]run {run_link(run.id)} ended[/] {status_markup(run.status)}  "
        f"{duration(run.duration_ms, '-')}"
    )
    if run.error:
        out.print(f"[red]{shown(run.error.type)}: {shown(run.error.message)}[/]")
    if run.final_answer is not None:
        out.print(f"[dim]final answer[/] {shown(run.final_answer)}")
    out.print(viewer_line(run=run.id), soft_wrap=True)
