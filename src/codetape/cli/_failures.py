"""``codetape failures``: the failing steps of every run, grouped by how they failed.

Someone running hundreds of evaluation runs first needs the few ways they fail; each
group says where to look (its newest failing step) and what to compare it with (a
passing run of the same agent and task).
"""

from __future__ import annotations

from datetime import datetime

import click

from .._format import PREVIEW_CHARS, cut
from ..schemas import FailureGroup
from ..store import Store
from ._app import cli, existing_store, handle_errors, out, print_json, shown, store_place
from ._links import run_link

__all__: list[str] = []


@cli.command()
@click.option("--agent", metavar="NAME", help="Only the failures of this agent's runs.")
@click.option(
    "--limit", default=20, show_default=True, help="How many groups to list (0: all of them)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the FailureGroup models as JSON.")
@click.pass_context
@handle_errors
def failures(ctx: click.Context, agent: str | None, limit: int, as_json: bool) -> None:
    """Failing steps across all runs, grouped by failure signature: the exception type,
    the message with ids, numbers and quoted values masked, and the failing line.

    The groups that failed the most runs come first. Each names its newest failing step
    (`codetape show RUN --step N`) and, when a run of the same agent and task passed,
    the command that compares the two (`codetape diff FAILING PASSING`)."""
    store = existing_store(ctx)
    groups = store.failures(agent=agent)
    shown_groups = groups[:limit] if limit > 0 else groups
    if as_json:
        print_json(shown_groups)
        return
    if not groups:
        _print_none(store, agent, store_place(ctx, store))
        return
    steps = sum(g.steps for g in groups)
    out.print(
        f"[bold]{len(groups)} way{'s' * (len(groups) != 1)} of failing[/], "
        f"{steps} failing step{'s' * (steps != 1)}"
        + (f" of {shown(agent)}" if agent else "")
        + (
            f" [dim](the {len(shown_groups)} that failed the most runs shown; --limit 0 "
            "shows all)[/]"
            if len(shown_groups) < len(groups)
            else ""
        )
    )
    for group in shown_groups:
        out.print()
        _print_group(group)


def _print_none(store: Store, agent: str | None, where: str) -> None:
    """Say why there is nothing to list, and what to do about it."""
    total = store.count_runs()
    if not total:
        out.print(
            f"no runs in {where}: record an agent first "
            "(codetape.run(...), @codetape.code_action, or instrument(agent) for smolagents)",
            soft_wrap=True,
        )
        return
    if agent is not None and agent not in store.agents():
        known = ", ".join(shown(a) for a in store.agents())
        out.print(f"no runs of agent {shown(agent)} [dim](agents: {known})[/]", soft_wrap=True)
        return
    runs = store.count_runs(agent=agent)
    out.print(
        f"[green]no failing steps[/] in {runs} run{'s' * (runs != 1)}"
        + (f" of {shown(agent)}" if agent else "")
    )


def _when(at: datetime) -> str:
    return at.astimezone().strftime("%m-%d %H:%M:%S")


def _print_group(group: FailureGroup) -> None:
    runs = f"{group.runs} run{'s' * (group.runs != 1)}"
    steps = f"{group.steps} step{'s' * (group.steps != 1)}"
    out.print(
        f"[bold red]{shown(group.error_type)}[/]  [bold]{runs}[/], {steps}  "
        f"[dim]signature {shown(group.signature)}[/]"
    )
    rows = [("message", shown(group.message))]
    if group.line:
        rows.append(("line", shown(group.line)))
    seen = _when(group.first_seen)
    if group.last_seen != group.first_seen:
        seen = f"first {seen}, last {_when(group.last_seen)}"
    rows.append(("seen", seen))
    rows.append(("agents", ", ".join(shown(a) for a in group.agents)))
    run = run_link(group.example_run, step=group.example_step)
    said = cut(group.example_message.strip().split("\n", 1)[0], PREVIEW_CHARS)
    rows.append(("newest", f"run {run} step {group.example_step}: {shown(said)}"))
    rows.append(("", f"codetape show {run} --step {group.example_step}"))
    if group.passing_run:
        rows.append(
            (
                "compare",
                f"codetape diff {run} {run_link(group.passing_run)}  "
                "[dim](a run of the same agent and task that passed)[/]",
            )
        )
    else:
        rows.append(("compare", "[dim]no run of the same agent and task has passed[/]"))
    for label, text in rows:
        out.print(f"  [dim]{label:<8}[/] {text}", soft_wrap=True)
