"""``codetape push``: ship a store's history to a ``codetape serve`` by hand, the way
``configure(remote=...)`` ships as it records (docs/server.md)."""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

import click

from ..errors import StoreError
from ..store.internal import REMOTE_ENV, Shipper, ShipStats, live_dir, read_token, resolve_home
from ._app import cli, err, handle_errors, print_json

__all__: list[str] = []


def _line(stats: ShipStats) -> str:
    return (
        f"{stats.spans} spans and {stats.starts} unended starts from {stats.files} spool "
        f"files, {stats.blobs_sent} blobs sent ({stats.blobs_present} already there), "
        f"{stats.bytes_sent / 1e6:.1f} MB"
    )


@cli.command("push")
@click.option(
    "--remote",
    "url",
    metavar="URL",
    envvar=REMOTE_ENV,
    help="The codetape serve to ship to (default: $CODETAPE_REMOTE).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the server's bearer token (default: $CODETAPE_TOKEN).",
)
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    metavar="DATE",
    help="Send every span that started on or after DATE (UTC), sent before or not; "
    "without it, what the server has not acknowledged yet.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was sent as JSON.")
@click.pass_context
@handle_errors
def push_command(
    ctx: click.Context,
    url: str | None,
    token_file: Path | None,
    since: dt.datetime | None,
    as_json: bool,
) -> None:
    """Ship this store's spans and blobs to a codetape serve.

    The same shipping as configure(remote=...): blobs first (those the server lacks,
    in batches), then the spans over OTLP/HTTP, resuming where the last push or shipper to
    that server stopped. A second push sends nothing new; the server keeps one copy of
    a span however often it arrives.

    \b
    Examples:
      codetape push --remote https://codetape.internal:4318
      codetape push --since 2026-11-01 --json
    """
    if not url:
        raise click.UsageError("give the server: --remote URL or $CODETAPE_REMOTE")
    home = resolve_home(ctx.obj.get("home"))
    if not live_dir(home).parent.is_dir():
        raise StoreError(
            f"no store at {home} has anything to push",
            path=home,
            hint="--home (or $CODETAPE_HOME) picks the store; record a run first",
        )
    shipper = Shipper(home, url, read_token(token_file), parallel=Shipper.MOST_PARALLEL)
    since_ns = None
    if since is not None:
        since_ns = int(since.replace(tzinfo=dt.timezone.utc).timestamp() * 1e9)
    shown = [0.0]

    def progress(stats: ShipStats) -> None:
        now = time.monotonic()
        if now - shown[0] > 1.0 and not as_json:
            shown[0] = now
            err.print(f"pushing to {shipper.remote}: " + _line(stats))

    stats = shipper.ship(since_ns=since_ns, progress=progress)
    if as_json:
        print_json(stats.to_dict())
    else:
        err.print(f"pushed to {shipper.remote}: " + _line(stats))
    for refusal in stats.refusals:
        err.print(f"[red]refused:[/] {refusal}", markup=True, highlight=False)
    if stats.refusals:
        sys.exit(1)
