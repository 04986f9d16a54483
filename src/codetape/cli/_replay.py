"""``codetape replay``, ``export``, ``import`` and ``pytest``: re-run recorded steps,
carry runs between machines, and freeze a step into a test."""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import importlib
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from .._format import PREVIEW_CHARS, cut, duration, steps_text
from ..errors import CodetapeError
from ..replayer import (
    BundleInfo,
    export_run,
    import_bundle,
    replay,
    replay_from,
    replay_run,
    write_pytest,
)
from ..sandbox.internal import Shipping, shipping_progress
from ..schemas import Difference, ReplayReport
from ..store import Store
from ..store.internal import export_parquet, no_store_error
from ..tracer import configure
from ._app import (
    cli,
    err,
    handle_errors,
    open_store,
    out,
    print_json,
    remote_store,
    shown,
    style_lines,
    verdict_markup,
)
from ._links import run_link
from ._remote import export_remote

__all__: list[str] = []

# How many lines of a differing stdout or stderr are shown.
_DIFF_LINES = 40


def _tools_from(module_name: str) -> list[Any]:
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CodetapeError(f"cannot import the tools module {module_name!r}: {exc}") from None
    return [v for k, v in vars(module).items() if callable(v) and not k.startswith("_")]


def _show(value: Any) -> str:
    return shown(cut(json.dumps(value, default=str, ensure_ascii=False), PREVIEW_CHARS))


def _print_text_diff(recorded: str, replayed: str) -> None:
    lines = list(
        difflib.unified_diff(
            recorded.splitlines(), replayed.splitlines(), "recorded", "replayed", lineterm="", n=1
        )
    )
    style_lines(lines, _DIFF_LINES)
    if len(lines) > _DIFF_LINES:
        out.print(f"    [dim]… {len(lines) - _DIFF_LINES} more lines[/]")


def _print_difference(d: Difference) -> None:
    out.print(f"  [bold]{shown(d.field)}[/]")
    if (
        d.field in ("stdout", "stderr")
        and isinstance(d.recorded, str)
        and isinstance(d.replayed, str)
    ):
        _print_text_diff(d.recorded, d.replayed)
        return
    out.print(f"    [red]- recorded[/] {_show(d.recorded)}", soft_wrap=True)
    out.print(f"    [green]+ replayed[/] {_show(d.replayed)}", soft_wrap=True)


def _print_table(reports: list[ReplayReport], *, durations: bool = True) -> None:
    """One row per report. A replay from a step runs its steps in one sandbox, so it
    has one duration for all of them (``durations=False``: none per row)."""
    columns = ["step", "verdict", "differences", "duration", "replay run"]
    if not durations:
        columns.remove("duration")
    table = Table(box=None, header_style="bold")
    for column in columns:
        table.add_column(column)
    for r in reports:
        row = [
            str(r.step),
            verdict_markup(r.verdict),
            shown(", ".join(d.field for d in r.differences) or "-"),
            duration(r.duration_ms, "-"),
            run_link(r.replay_run_id) if r.replay_run_id else "-",
        ]
        if not durations:
            del row[3]
        table.add_row(*row)
    out.print(table)


def _print_differences(r: ReplayReport, headline: str = "") -> None:
    out.print(f"\n[bold]{headline}step {r.step} differs in {len(r.differences)} fields[/]")
    for d in r.differences:
        _print_difference(d)


def _print_reports(reports: list[ReplayReport]) -> None:
    _print_table(reports)
    for r in reports:
        if r.reason:
            out.print(f"\n[bold]step {r.step}[/]: {shown(r.reason)}", soft_wrap=True)
        for note in r.notes:
            out.print(f"[dim]step {r.step}: {shown(note)}[/]", soft_wrap=True)
        if r.differences:
            _print_differences(r)


def _print_from(reports: list[ReplayReport], not_run: list[int]) -> None:
    """A replay from a step onward: one row per step, the reasons, the notes once, the
    first divergence in full, and the steps a stop left unrun."""
    if not reports:
        return
    _print_table(reports, durations=False)
    counts = Counter(r.verdict for r in reports)
    out.print(
        f"{len(reports)} step{'s' if len(reports) > 1 else ''} replayed from step "
        f"{reports[0].step} in {duration(max(r.duration_ms for r in reports))}: "
        + ", ".join(f"{n} {verdict_markup(v)}" for v, n in counts.items())
    )
    for r in reports:
        if r.reason:
            out.print(f"\n[bold]step {r.step}[/]: {shown(r.reason)}", soft_wrap=True)
    for note in dict.fromkeys(n for r in reports for n in r.notes):
        out.print(f"[dim]note: {shown(note)}[/]", soft_wrap=True)
    first = next((r for r in reports if r.differences), None)
    if first is not None:
        _print_differences(first, "first divergence: ")
        later = [r.step for r in reports if r.differences and r is not first]
        if later:
            out.print(
                f"[dim]{steps_text(later)} differ too, in the fields the table lists "
                "(--json shows every difference)[/]"
            )
    if not_run:
        last = reports[-1]
        out.print(
            f"\n[yellow]the replay stopped at step {last.step}: "
            f"{steps_text(not_run)} did not run[/]"
        )
        if (last.reason or "").startswith("no recorded answer"):
            out.print(
                "[dim]hint: --live-tools --tools MODULE answers the calls the recording "
                "has no answer for with the real tools[/]"
            )


def _first_failed_step(store: Store, run_id: str) -> int:
    failed = [s.index for s in store.steps(run_id) if s.status != "ok"]
    if not failed:
        raise CodetapeError(f"run {run_id[:12]} has no failed step", hint="pass --step N or --all")
    return failed[0]


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
    "--from",
    "from_step",
    type=int,
    metavar="N",
    help="Replay step N (or --code in its place), then every later recorded step in the "
    "same sandbox: does a fix carry through the rest of the run?",
)
@click.option(
    "--code",
    "code_file",
    type=click.File("r"),
    metavar="FILE",
    help="Run this code instead of the recorded code, on the recorded input "
    "(with --from: instead of step N's code).",
)
@click.option("--image", metavar="REF", help="Replay in this Docker image instead.")
@click.option(
    "--live-tools",
    is_flag=True,
    help="Call the real tools (from --tools) instead of the recorded answers "
    "(with --from: only for calls the recording has no answer for).",
)
@click.option(
    "--tools",
    "tools_module",
    metavar="MODULE",
    help="Python module whose functions are the live tools.",
)
@click.option(
    "--tool-answer",
    "tool_answers",
    multiple=True,
    metavar="I=JSON|I=@FILE",
    help="Answer the step's tool call I (0 is its first) with this JSON value (or the "
    "JSON in FILE) instead of the recorded answer; the other calls keep theirs. "
    "Repeatable; with --step or --from.",
)
@click.option(
    "--docker-host",
    "docker_hosts",
    multiple=True,
    metavar="URL",
    help="Replay on this Docker engine (unix:///path, tcp://host:2376; default "
    "$DOCKER_HOST), sending it the recorded image when it lacks it. With --all: "
    "repeatable (or a comma list), the steps spread over the engines.",
)
@click.option("--jobs", default=2, show_default=True, help="Parallel sandboxes for --all.")
@click.option("--json", "as_json", is_flag=True, help="Print the ReplayReport models as JSON.")
@click.pass_context
@handle_errors
def replay_command(
    ctx: click.Context,
    run_id: str,
    step_index: int | None,
    all_steps: bool,
    from_step: int | None,
    code_file: Any,
    image: str | None,
    live_tools: bool,
    tools_module: str | None,
    tool_answers: tuple[str, ...],
    docker_hosts: tuple[str, ...],
    jobs: int,
    as_json: bool,
) -> None:
    """Re-run recorded steps in an identical sandbox and say whether they reproduced.

    \b
    codetape replay RUN --step 3               one step (default: the first failed one)
    codetape replay RUN --all                  every step, each from its own input
    codetape replay RUN --from 3 --code F.py   step 3 edited, then the rest of the run
    codetape replay RUN --step 3 --tool-answer 0='[]'
                                               what if its first tool call had
                                               answered an empty list?
    codetape replay RUN --all --docker-host URL1,URL2
                                               every step, spread over two engines

    \b
    Exit status: 0 when every step reproduced, 1 when any diverged, 2 when a replay
    could not run (a variable not restorable, the image missing).
    """
    if sum((step_index is not None, all_steps, from_step is not None)) > 1:
        raise click.UsageError("pass only one of --step, --from and --all", ctx)
    if from_step is not None and live_tools and not tools_module:
        raise click.UsageError("--live-tools needs --tools MODULE: the real tools to call", ctx)
    store = open_store(ctx)
    configure(home=store.home)
    full = store.resolve_run_id(run_id)
    tools = _tools_from(tools_module) if tools_module else []
    options: dict[str, Any] = {"image": image, "live_tools": live_tools, "tools": tools}
    options.update(_engines(ctx, docker_hosts, all_steps))
    if tool_answers:
        if all_steps:
            raise click.UsageError("--tool-answer answers one step's calls: use --step or --from")
        options["tool_answers"] = _parsed_answers(tool_answers)
    if code_file is not None:
        options["code"] = code_file.read()
    if from_step is not None:
        _replay_from(store, full, from_step, options, as_json)
        return
    if all_steps:
        with _shown_status(f"replaying every step of {full[:12]}…"):
            reports = replay_run(full, jobs=jobs, home=store.home, **options)
    else:
        if step_index is None:
            step_index = _first_failed_step(store, full)
        with _shown_status(f"replaying step {step_index} of {full[:12]}…"):
            reports = [replay(full, step_index, home=store.home, **options)]
    _finish(reports, as_json)


def _finish(reports: list[ReplayReport], as_json: bool) -> None:
    if as_json:
        print_json(reports)
    else:
        _print_reports(reports)
    _exit_for(reports)


def _engines(ctx: click.Context, given: tuple[str, ...], all_steps: bool) -> dict[str, Any]:
    """The --docker-host engines (each option one URL or a comma list of them) as the
    replay's options: ``docker_host`` for one, ``docker_hosts`` (--all only) for more."""
    hosts = [url.strip() for option in given for url in option.split(",") if url.strip()]
    if len(hosts) > 1 and not all_steps:
        raise click.UsageError("several --docker-host engines are for --all: give one", ctx)
    if len(hosts) > 1:
        return {"docker_hosts": hosts}
    return {"docker_host": hosts[0]} if hosts else {}


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


@contextlib.contextmanager
def _shown_status(text: str) -> Iterator[None]:
    """A status line while replays run; an image sent to another engine shows its
    progress there, and a line once it arrived."""

    def report(shipping: Shipping) -> None:
        what = f"the image {shown(shipping.image)} to {shown(shipping.host)}"
        if shipping.done:
            err.print(f"sent {what} ({_megabytes(shipping.sent)})")
            status.update(text)
            return
        about = f" of about {_megabytes(shipping.total)}" if shipping.total else ""
        status.update(f"sending {what}: {_megabytes(shipping.sent)}{about}…")

    with err.status(text) as status, shipping_progress(report):
        yield


def _parsed_answers(given: tuple[str, ...]) -> dict[int, Any]:
    """``I=JSON`` or ``I=@FILE`` options as ``{call index: answer}``."""
    answers: dict[int, Any] = {}
    for option in given:
        index, sep, value = option.partition("=")
        if not sep or not index.strip().isdigit():
            raise click.BadParameter(
                f"{option!r}: give I=JSON or I=@FILE, I the call's index (0 is the first)",
                param_hint="--tool-answer",
            )
        text = value
        if value.startswith("@"):
            try:
                text = Path(value[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                raise click.BadParameter(
                    f"cannot read {value[1:]}: {exc.strerror}", param_hint="--tool-answer"
                ) from exc
        try:
            answers[int(index)] = json.loads(text)
        except ValueError as exc:
            raise click.BadParameter(
                f"the answer for call {index} is not JSON ({exc})", param_hint="--tool-answer"
            ) from exc
    return answers


def _replay_from(
    store: Store, run_id: str, first: int, options: dict[str, Any], as_json: bool
) -> None:
    with _shown_status(f"replaying {run_id[:12]} from step {first} to its end…"):
        reports = replay_from(run_id, first, home=store.home, **options)
    if as_json:
        print_json(reports)
    else:
        done = {r.step for r in reports}
        later = [s.index for s in store.steps(run_id) if s.index >= first]
        _print_from(reports, [i for i in later if i not in done])
    _exit_for(reports)


def _exit_for(reports: list[ReplayReport]) -> None:
    """0 when every step reproduced, 1 when any diverged, 2 when one could not run."""
    verdicts = {r.verdict for r in reports}
    if verdicts & {"not_restorable", "environment_missing"}:
        sys.exit(2)
    if "diverged" in verdicts:
        sys.exit(1)


@cli.command("export")
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The bundle file to write.",
)
@click.option(
    "--with-image",
    is_flag=True,
    help="Also carry the run's sandbox images (docker save), to replay anywhere.",
)
@click.option(
    "--parquet",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Instead of a bundle: write runs, steps, tool_calls and spans of every run as "
    "Parquet under DIR, one day=YYYY-MM-DD folder per day (docs/parquet.md).",
)
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    metavar="DATE",
    help="With --parquet: only the runs started on or after DATE (a UTC day, YYYY-MM-DD).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="With --parquet: write into a DIR that has files, replacing the day folders "
    "this export covers (all, or those from --since on); older days stay.",
)
@click.pass_context
@handle_errors
def export_command(
    ctx: click.Context,
    run_id: str | None,
    output: Path | None,
    with_image: bool,
    parquet: Path | None,
    since: dt.datetime | None,
    overwrite: bool,
) -> None:
    """Write a run (spans, blobs, optionally its images) to one file, with the runs its
    steps started (managed agents), and theirs; or, with --parquet, the whole history
    as Parquet for DuckDB, pandas, Spark or ClickHouse.

    \b
      codetape export RUN -o failing.codetape       one run, for `codetape import`
      codetape export --parquet archive/            every run, by day
      codetape export --parquet archive/ --since 2026-11-01 --overwrite"""
    if parquet is not None:
        if run_id is not None or output is not None or with_image:
            raise click.UsageError("--parquet exports every run: give no RUN, -o or --with-image")
        _export_parquet(ctx, parquet, since.date() if since else None, overwrite)
        return
    if since is not None or overwrite:
        raise click.UsageError("--since and --overwrite go with --parquet DIR")
    if run_id is None or output is None:
        raise click.UsageError("give a RUN and -o FILE (or --parquet DIR for every run)")
    remote = remote_store(ctx)
    with err.status("writing the bundle…"):
        if remote is not None:
            info = export_remote(remote, run_id, output, with_image=with_image)
        else:
            info = export_run(run_id, output, with_image=with_image, home=ctx.obj.get("home"))
    size = info.path.stat().st_size
    out.print(
        f"wrote {shown(str(info.path))} ({size / 1e6:.1f} MB): run {run_link(info.run_id)}"
        f"{_children(info)}, {info.spans} spans, {info.blobs} blobs"
        + (f", images {shown(', '.join(info.images))}" if info.images else ""),
        soft_wrap=True,
    )


def _export_parquet(
    ctx: click.Context, directory: Path, since: dt.date | None, overwrite: bool
) -> None:
    store = open_store(ctx)
    if not store.home.is_dir():
        raise no_store_error(store.home)
    store.refresh()
    with err.status("writing Parquet…"):
        info = export_parquet(store.home, directory, since=since, overwrite=overwrite)
    counts = ", ".join(f"{n} {table}" for table, n in info.rows.items())
    if not info.days:
        days = "no runs" + (f" since {since}" if since else "")
    elif len(info.days) == 1:
        days = f"1 day ({info.days[0]})"
    else:
        days = f"{len(info.days)} days ({info.days[0]} to {info.days[-1]})"
    out.print(f"wrote {counts} to {shown(str(info.directory))}: {days}", soft_wrap=True)
    if info.removed_days:
        gone = ", ".join(str(day) for day in info.removed_days)
        out.print(f"removed day folders the store no longer has rows for: {gone}")


def _children(info: BundleInfo) -> str:
    """`` (with the runs its steps started: ID, ID)`` when the bundle carries any."""
    if not info.child_runs:
        return ""
    runs = ", ".join(run_link(run_id) for run_id in info.child_runs)
    return f" (with the run{'s' * (len(info.child_runs) > 1)} its steps started: {runs})"


@cli.command("import")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
@handle_errors
def import_command(ctx: click.Context, bundle: Path) -> None:
    """Load a bundle written by `codetape export` into this store (and Docker)."""
    with err.status("importing the bundle…"):
        info = import_bundle(bundle, home=ctx.obj.get("home"))
    out.print(
        f"imported run {run_link(info.run_id)}{_children(info)}: {info.spans} spans, "
        f"{info.blobs} blobs"
        + (f", loaded images {shown(', '.join(info.images))}" if info.images else ""),
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
@handle_errors
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
