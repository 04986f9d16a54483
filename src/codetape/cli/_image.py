"""``codetape image build``: build a sandbox image from a generated Dockerfile, or with no
registry from Debian packages (``--offline``)."""

from __future__ import annotations

import click
from rich.markup import escape

from ..sandbox.internal import (
    OFFLINE_IMAGE,
    BuiltImage,
    build_image,
    build_offline_image,
    dockerfile,
)
from ._app import cli, err, handle_errors, out, print_json

__all__: list[str] = []


@cli.group()
def image() -> None:
    """Build sandbox images."""


@image.command("build")
@click.option(
    "--python",
    "python",
    default="3.12",
    show_default=True,
    metavar="VERSION",
    help="Python version of the default base image python:VERSION-slim.",
)
@click.option(
    "--pip",
    "packages",
    multiple=True,
    metavar="PKG",
    help="A requirement to pip install into the image (repeat for more).",
)
@click.option("--tag", metavar="NAME", help="Image name [default: codetape-sandbox:pyVERSION].")
@click.option(
    "--base",
    metavar="IMAGE",
    help="Base image [default: python:VERSION-slim]; any image with python3 works.",
)
@click.option("--dry-run", is_flag=True, help="Print the Dockerfile and build nothing.")
@click.option(
    "--offline",
    is_flag=True,
    help="Build Debian bookworm + python3 with debootstrap and docker import: no registry "
    f"(needs root and debootstrap) [default tag: {OFFLINE_IMAGE}].",
)
@click.option(
    "--include",
    "include",
    multiple=True,
    metavar="PKG,...",
    help="With --offline: Debian packages to add, such as python3-numpy,python3-pil.",
)
@click.option("--force", is_flag=True, help="With --offline: rebuild an image that exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the tag, id and Dockerfile as JSON.")
@handle_errors
def image_build(
    python: str,
    packages: tuple[str, ...],
    tag: str | None,
    base: str | None,
    dry_run: bool,
    offline: bool,
    include: tuple[str, ...],
    force: bool,
    as_json: bool,
) -> None:
    """Build a sandbox image from a generated Dockerfile (needs a registry for the base
    image unless --base names a local one), or with no registry at all (--offline).

    \b
      codetape image build --pip pandas --pip 'numpy<2'
      codetape image build --base codetape/python:bookworm --tag my-sandbox   # offline
      codetape image build --pip pandas --dry-run                            # the Dockerfile
      codetape image build --offline --include python3-numpy,python3-pil     # no registry
    """
    if offline or include or force:
        _build_offline(tag, include, force, offline, (packages, base, dry_run), as_json)
        return
    if dry_run:
        click.echo(dockerfile(python, packages, base), nl=False)
        return
    built = build_image(
        tag, python, packages, base, on_line=lambda line: err.print(escape(line), style="dim")
    )
    if as_json:
        print_json({"tag": built.tag, "id": built.id, "dockerfile": built.dockerfile})
        return
    _built(built)


def _build_offline(
    tag: str | None,
    include: tuple[str, ...],
    force: bool,
    offline: bool,
    dockerfile_options: tuple[tuple[str, ...], str | None, bool],
    as_json: bool,
) -> None:
    if not offline:
        raise click.UsageError("--include and --force go with --offline")
    if any(dockerfile_options):
        raise click.UsageError(
            "--pip, --base and --dry-run build from a Dockerfile; --offline builds from "
            "Debian packages (--include python3-numpy,...)"
        )
    packages = [p.strip() for item in include for p in item.split(",") if p.strip()]
    built = build_offline_image(
        tag or OFFLINE_IMAGE,
        packages,
        force=force,
        on_line=lambda line: err.print(escape(line), style="dim"),
    )
    if as_json:
        print_json({"tag": built.tag, "id": built.id, "include": list(built.include)})
        return
    _built(built)


def _built(built: BuiltImage) -> None:
    out.print(f"built [bold]{escape(built.tag)}[/] ({built.id[:19]})")
    out.print(
        f"use it: export CODETAPE_IMAGE={escape(built.tag)}  "
        f"or  codetape.Sandbox(image={escape(repr(built.tag))})",
        soft_wrap=True,
    )
