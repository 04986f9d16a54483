"""``codetape replay``, ``export``, ``import`` and ``pytest``: the replay commands."""

from __future__ import annotations

import difflib
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from .cli import _handle_errors, _print_json, cli, err, out
from .errors import CodetapeError
from .replayer import diff_runs, export_run, import_bundle, replay, replay_run, write_pytest
from .schemas import ReplayReport, RunDiff, StepPair
from .store import Store
from .tracer import configure
from .viewer import url as viewer_url

__all__: list[str] = []

_VERDICT_STYLE = {
    "reproduced": "green",
    "diverged": "red",
    "not_restorable": "yellow",
    "environment_missing": "yellow",
}


def _tools_from(module_name: str) -> list[Any]:
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CodetapeError(f"cannot import the tools module {module_name!r}: {exc}") from None
    return [v for k, v in vars(module).items() if callable(v) and not k.startswith("_")]


def _show(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return escape(text if len(text) <= 400 else text[:400] + "…")


def _print_text_diff(recorded: str, replayed: str) -> None:
    lines = list(
        difflib.unified_diff(
            recorded.splitlines(), replayed.splitlines(), "recorded", "replayed", lineterm="", n=1
        )
    )
    for line in lines[:40]:
        style = "red" if line.startswith("-") else "green" if line.startswith("+") else "dim"
        out.print(f"    [{style}]{escape(line)}[/]", soft_wrap=True)
    if len(lines) > 40:
        out.print(f"    [dim]… {len(lines) - 40} more lines[/]")


def _print_reports(reports: list[ReplayReport]) -> None:
    table = Table(box=None, header_style="bold")
    for column in ("step", "verdict", "differences", "duration", "replay run"):
        table.add_column(column)
    for r in reports:
        style = _VERDICT_STYLE[r.verdict]
        table.add_row(
            str(r.step),
            f"[{style}]{r.verdict}[/]",
            ", ".join(d.field for d in r.differences) or "-",
            f"{r.duration_ms / 1000:.2f}s",
            (r.replay_run_id or "-")[:12],
        )
    out.print(table)
    for r in reports:
        if r.reason:
            out.print(f"\n[bold]step {r.step}[/]: {escape(r.reason)}", soft_wrap=True)
        for note in r.notes:
            out.print(f"[dim]step {r.step}: {escape(note)}[/]", soft_wrap=True)
        if r.differences:
            out.print(f"\n[bold]step {r.step} differs in {len(r.differences)} fields[/]")
            for d in r.differences:
                out.print(f"  [bold]{escape(d.field)}[/]")
                if (
                    d.field in ("stdout", "stderr")
                    and isinstance(d.recorded, str)
                    and isinstance(d.replayed, str)
                ):
                    _print_text_diff(d.recorded, d.replayed)
                    continue
                out.print(f"    [red]- recorded[/] {_show(d.recorded)}", soft_wrap=True)
                out.print(f"    [green]+ replayed[/] {_show(d.replayed)}", soft_wrap=True)


@cli.command("replay")
@click.argument("run_id", metavar="RUN")
@click.option(
    "--step",
    "step_index",
    type=int,
    metavar="N",
    help="The step to replay (default: the run's first failed step).",
)
@click.option("--all", "all_steps", is_flag=True, help="Replay every step of the run.")
@click.option(
    "--code",
    "code_file",
    type=click.File("r"),
    metavar="FILE",
    help="Run this code instead of the recorded code, on the recorded input.",
)
@click.option("--image", metavar="REF", help="Replay in this Docker image instead.")
@click.option(
    "--live-tools",
    is_flag=True,
    help="Call the real tools (from --tools) instead of the recorded answers.",
)
@click.option(
    "--tools",
    "tools_module",
    metavar="MODULE",
    help="Python module whose functions are the live tools.",
)
@click.option("--jobs", default=2, show_default=True, help="Parallel sandboxes for --all.")
@click.option("--json", "as_json", is_flag=True, help="Print the ReplayReport models as JSON.")
@click.pass_context
@_handle_errors
def replay_command(
    ctx: click.Context,
    run_id: str,
    step_index: int | None,
    all_steps: bool,
    code_file: Any,
    image: str | None,
    live_tools: bool,
    tools_module: str | None,
    jobs: int,
    as_json: bool,
) -> None:
    """Re-run recorded steps in an identical sandbox and say whether they reproduced.

    \b
    Exit status: 0 when every step reproduced, 1 when any diverged, 2 when a replay
    could not run (a variable not restorable, the image missing).
    """
    store = Store(ctx.obj.get("home"))
    configure(home=store.home)
    full = store.resolve_run_id(run_id)
    tools = _tools_from(tools_module) if tools_module else []
    options: dict[str, Any] = {"image": image, "live_tools": live_tools, "tools": tools}
    if code_file is not None:
        options["code"] = code_file.read()
    if all_steps:
        with err.status(f"replaying every step of {full[:12]}…"):
            reports = replay_run(full, jobs=jobs, home=store.home, **options)
    else:
        if step_index is None:
            failed = [s.index for s in store.steps(full) if s.status != "ok"]
            if not failed:
                raise CodetapeError(
                    f"run {full[:12]} has no failed step", hint="pass --step N or --all"
                )
            step_index = failed[0]
        with err.status(f"replaying step {step_index} of {full[:12]}…"):
            reports = [replay(full, step_index, home=store.home, **options)]
    if as_json:
        _print_json(reports)
    else:
        _print_reports(reports)
    verdicts = {r.verdict for r in reports}
    if verdicts & {"not_restorable", "environment_missing"}:
        sys.exit(2)
    if "diverged" in verdicts:
        sys.exit(1)


@cli.command("export")
@click.argument("run_id", metavar="RUN")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The bundle file to write.",
)
@click.option(
    "--with-image",
    is_flag=True,
    help="Also carry the run's sandbox images (docker save), to replay anywhere.",
)
@click.pass_context
@_handle_errors
def export_command(ctx: click.Context, run_id: str, output: Path, with_image: bool) -> None:
    """Write a run (spans, blobs, optionally its images) to one file."""
    with err.status("writing the bundle…"):
        info = export_run(run_id, output, with_image=with_image, home=ctx.obj.get("home"))
    size = info.path.stat().st_size
    out.print(
        f"wrote {info.path} ({size / 1e6:.1f} MB): run {info.run_id[:12]}, {info.spans} spans, "
        f"{info.blobs} blobs" + (f", images {', '.join(info.images)}" if info.images else ""),
        soft_wrap=True,
    )


@cli.command("import")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
@_handle_errors
def import_command(ctx: click.Context, bundle: Path) -> None:
    """Load a bundle written by `codetape export` into this store (and Docker)."""
    with err.status("importing the bundle…"):
        info = import_bundle(bundle, home=ctx.obj.get("home"))
    out.print(
        f"imported run {info.run_id[:12]}: {info.spans} spans, {info.blobs} blobs"
        + (f", loaded images {', '.join(info.images)}" if info.images else ""),
        soft_wrap=True,
    )


@cli.command("pytest")
@click.argument("run_id", metavar="RUN")
@click.option("--step", "step_index", type=int, required=True, metavar="N")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The test file to write (its bundle is written beside it).",
)
@click.option(
    "--expect-fix",
    is_flag=True,
    help="Assert that the step no longer raises, instead of that it reproduces.",
)
@click.option(
    "--code",
    "code_file",
    type=click.File("r"),
    metavar="FILE",
    help="With --expect-fix: the fixed code to try on the recorded input.",
)
@click.option("--image", metavar="REF", help="With --expect-fix: the image to try.")
@click.option("--with-image", is_flag=True, help="Put the sandbox image in the bundle too.")
@click.pass_context
@_handle_errors
def pytest_command(
    ctx: click.Context,
    run_id: str,
    step_index: int,
    output: Path,
    expect_fix: bool,
    code_file: Any,
    image: str | None,
    with_image: bool,
) -> None:
    """Freeze a recorded step into a pytest file that replays it."""
    path = write_pytest(
        run_id,
        step_index,
        output,
        expect_fix=expect_fix,
        code=code_file.read() if code_file is not None else None,
        image=image,
        with_image=with_image,
        home=ctx.obj.get("home"),
    )
    out.print(
        f"wrote {path} and {path.with_suffix('.codetape').name}; run: pytest {path}", soft_wrap=True
    )


def _pair_summary(pair: StepPair) -> str:
    if pair.a is None:
        return "only in b"
    if pair.b is None:
        return "only in a"
    parts = []
    if pair.code_diff:
        parts.append("code")
    if pair.stdout_diff:
        parts.append("stdout")
    if pair.status_a != pair.status_b:
        parts.append(f"status {pair.status_a}→{pair.status_b}")
    elif pair.error_a != pair.error_b:
        parts.append("error")
    for label, names in (
        ("+", pair.variables_added),
        ("-", pair.variables_removed),
        ("~", [c.name for c in pair.variables_changed]),
    ):
        if names:
            parts.append(label + ",".join(names))
    return ", ".join(parts) or "same"


def _print_diff(diff: RunDiff) -> None:
    a, b = diff.a, diff.b
    out.print(
        f"[bold]a[/] {a.id[:12]} {escape(a.name)} {a.status}   "
        f"[bold]b[/] {b.id[:12]} {escape(b.name)} {b.status}"
    )
    table = Table(box=None, header_style="bold")
    for column in ("", "a", "b", "status", "differs in"):
        table.add_column(column)
    for k, pair in enumerate(diff.pairs):
        mark = "[red]▶[/]" if k == diff.first_divergence else ""
        status = f"{pair.status_a or '-'} / {pair.status_b or '-'}"
        style = "" if pair.same else "yellow"
        table.add_row(
            mark,
            str(pair.a if pair.a is not None else "-"),
            str(pair.b if pair.b is not None else "-"),
            status,
            f"[{style}]{escape(_pair_summary(pair))}[/]" if style else "same",
        )
    out.print(table)
    if diff.first_divergence is None:
        out.print("[green]the runs match step for step[/]")
        return
    pair = diff.pairs[diff.first_divergence]
    out.print(f"\n[bold]first divergence[/]: step a={pair.a} b={pair.b}")
    for title, lines in (("code", pair.code_diff), ("stdout", pair.stdout_diff)):
        if lines:
            out.print(f"  [bold]{title}[/]")
            for line in lines[:40]:
                style = (
                    "red" if line.startswith("-") else "green" if line.startswith("+") else "dim"
                )
                out.print(f"    [{style}]{escape(line)}[/]", soft_wrap=True)
    if pair.error_a != pair.error_b:
        for side, error in (("a", pair.error_a), ("b", pair.error_b)):
            shown = f"{error.type}: {error.message}" if error else "no error"
            out.print(f"  [bold]error {side}[/] {escape(shown)}", soft_wrap=True)
    for change in pair.variables_changed:
        out.print(
            f"  [bold]{escape(change.name)}[/] [red]{escape(change.a.preview)}[/] → "
            f"[green]{escape(change.b.preview)}[/]",
            soft_wrap=True,
        )


@cli.command("diff")
@click.argument("run_a", metavar="A")
@click.argument("run_b", metavar="B")
@click.option("--json", "as_json", is_flag=True, help="Print the RunDiff model as JSON.")
@click.pass_context
@_handle_errors
def diff_command(ctx: click.Context, run_a: str, run_b: str, as_json: bool) -> None:
    """Compare two runs (or a run and its replay) step by step, and point at the first
    step where they part."""
    diff = diff_runs(run_a, run_b, home=ctx.obj.get("home"))
    if as_json:
        _print_json(diff)
        return
    _print_diff(diff)
    out.print(
        f"\n[dim]in the viewer (codetape ui):[/] {viewer_url(a=diff.a.id, b=diff.b.id)}",
        soft_wrap=True,
    )
