"""``codetape serve``: a server that owns a store and accepts OTLP/HTTP spans and blobs
from other machines (docs/server.md)."""

from __future__ import annotations

from pathlib import Path

import click

from ..store.internal import resolve_home
from ._app import cli, err, handle_errors

__all__: list[str] = []

_MB = 1024 * 1024


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=4318, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--home",
    "serve_home",
    type=click.Path(file_okay=False, path_type=Path),
    help="The store it writes (default: codetape's --home, $CODETAPE_HOME, ./.codetape).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the bearer token (default: $CODETAPE_TOKEN).",
)
@click.option("--certfile", type=click.Path(path_type=Path), help="TLS certificate (PEM).")
@click.option("--keyfile", type=click.Path(path_type=Path), help="TLS private key (PEM).")
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Accept requests without a token (only on a loopback address).",
)
@click.option(
    "--max-body-mb", default=64, show_default=True, type=int, help="Largest request body."
)
@click.option(
    "--max-decompressed-mb",
    default=128,
    show_default=True,
    type=int,
    help="Largest body once a gzip body is decompressed.",
)
@click.option(
    "--max-attributes",
    default=1000,
    show_default=True,
    type=int,
    help="Most attributes a span (or one of its events) may have.",
)
@click.pass_context
@handle_errors
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    serve_home: Path | None,
    token_file: Path | None,
    certfile: Path | None,
    keyfile: Path | None,
    insecure_no_auth: bool,
    max_body_mb: int,
    max_decompressed_mb: int,
    max_attributes: int,
) -> None:
    """Accept spans (OTLP/HTTP on /v1/traces) and blobs (PUT /v1/blobs/sha256:HEX) from
    other machines into one store.

    Every request needs 'Authorization: Bearer <token>' with the token of
    $CODETAPE_TOKEN or --token-file. See docs/server.md.
    """
    # Imported here: starlette and uvicorn are the "server" extra.
    from ..server import Limits
    from ..server import serve as run

    home = resolve_home(serve_home or ctx.obj.get("home"))
    limits = Limits(
        body_bytes=max_body_mb * _MB,
        decompressed_bytes=max_decompressed_mb * _MB,
        attributes_per_span=max_attributes,
    )
    scheme = "https" if certfile else "http"
    err.print(f"codetape serve: {scheme}://{host}:{port} into {home}")
    run(
        home,
        host,
        port,
        token_file=token_file,
        insecure_no_auth=insecure_no_auth,
        certfile=certfile,
        keyfile=keyfile,
        limits=limits,
    )
