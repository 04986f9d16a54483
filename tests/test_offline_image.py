"""``codetape image build --offline``: the registry-free image, from an installed codetape.

The build script ships inside the package (a wheel has no ``scripts/``), and
``scripts/build-offline-image.sh`` runs that same script. A full debootstrap takes a
minute or more, so the Docker test here asks for the image ``.ci/run`` built (with numpy
and PIL) and checks that the command keeps an image that already has what was asked.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import codetape.sandbox
from codetape.cli import cli
from codetape.sandbox.internal import OFFLINE_IMAGE

REPO = Path(__file__).resolve().parent.parent
PACKAGE = Path(codetape.sandbox.__file__).parent


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_the_build_script_ships_inside_the_package() -> None:
    script = PACKAGE / "offline-image.sh"
    assert script.is_file()
    help_text = subprocess.run(
        ["bash", str(script), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--include" in help_text
    # The repository's script is the packaged one, not a copy that could drift.
    wrapper = (REPO / "scripts" / "build-offline-image.sh").read_text()
    assert "src/codetape/sandbox/offline-image.sh" in wrapper


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--include", "python3-numpy"], "--include and --force go with --offline"),
        (["--offline", "--pip", "pandas"], "--offline builds from Debian packages"),
        (["--offline", "--dry-run"], "--offline builds from Debian packages"),
    ],
)
def test_offline_options_that_do_not_go_together_are_refused(args: list[str], says: str) -> None:
    result = invoke("image", "build", *args)
    assert result.exit_code == 2
    assert says in result.output


def test_an_include_that_is_not_a_debian_package_name_is_refused_before_anything_runs() -> None:
    result = invoke("image", "build", "--offline", "--include", "python3-numpy,$(reboot)")
    assert result.exit_code != 0
    assert "'$(reboot)' is not a Debian package name" in result.stderr


def test_the_script_refuses_an_include_that_is_not_a_package_name() -> None:
    result = subprocess.run(
        ["bash", str(PACKAGE / "offline-image.sh"), "--include", "a;b", "x"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "a;b is not a Debian package name" in result.stderr


def test_the_offline_image_is_the_one_the_doctor_names() -> None:
    assert OFFLINE_IMAGE == "codetape/python:bookworm"


@pytest.mark.docker
def test_an_image_that_has_the_packages_asked_for_is_kept(
    scientific_image: str, docker_client: Any
) -> None:
    result = invoke(
        "image",
        "build",
        "--offline",
        "--include",
        "python3-numpy",
        "--include",
        "python3-pil",
        "--tag",
        scientific_image,
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert "already exists with python3,python3-numpy,python3-pil" in result.stderr
    built = json.loads(result.stdout)
    assert built == {
        "tag": scientific_image,
        "id": docker_client.images.get(scientific_image).id,
        "include": ["python3-numpy", "python3-pil"],
    }
