"""The command line: people's output, --json models, errors as one line and an exit code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import codetape
from codetape._format import (
    RUN_STATUSES,
    STATUS_COLORS,
    STEP_STATUSES,
    VERDICT_COLORS,
    VERDICTS,
    failing_line,
)
from codetape.cli import cli
from codetape.schemas import Run, RunDetail, Step

from .conftest import require

EXAMPLE = Path(__file__).parent.parent / "examples" / "01_decorators.py"
# A step with nothing in it, for the formatting tests.
STEP_FIELDS: dict[str, Any] = {
    "run_id": "r",
    "index": 0,
    "span_id": "s",
    "code": "",
    "stdout": "",
    "stderr": "",
    "result": None,
    "variables_before": {},
    "variables_after": {},
    "tool_calls": [],
    "sandbox": {"backend": "local"},
    "started_at": "2025-01-01T00:00:00Z",
    "duration_ms": 1.0,
}


def invoke(home: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


@pytest.fixture
def orders_run(home: Path) -> str:
    """The orders example recorded into ``home``; returns the run id."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--home", str(home)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "final answer: refunded 2 orders" in result.stdout
    return codetape.Store(home).runs()[0].id


def test_runs_lists_the_recorded_run_for_people(home: Path, orders_run: str) -> None:
    result = invoke(home, "runs")
    assert result.exit_code == 0
    assert orders_run[:12] in result.output
    assert "orders-bot" in result.output


def test_runs_json_is_exactly_the_run_models(home: Path, orders_run: str) -> None:
    result = invoke(home, "runs", "--json")
    runs = [Run.model_validate(r) for r in json.loads(result.output)]
    assert [r.id for r in runs] == [orders_run]
    assert runs[0].step_count == 5
    assert runs[0].failed_steps == 1
    assert runs[0].final_answer == "refunded 2 orders: A-1001, A-1003"


def test_runs_failed_and_agent_filters(home: Path, orders_run: str) -> None:
    with codetape.run("other-bot", task="nothing fails"):
        pass
    failed = json.loads(invoke(home, "runs", "--failed", "--json").output)
    assert [r["id"] for r in failed] == [orders_run]
    other = json.loads(invoke(home, "runs", "--agent", "other-bot", "--json").output)
    assert [r["name"] for r in other] == ["other-bot"]


def test_show_json_has_every_step_with_its_outcome(home: Path, orders_run: str) -> None:
    detail = RunDetail.model_validate_json(invoke(home, "show", orders_run[:8], "--json").output)
    assert detail.run.id == orders_run
    assert [s.index for s in detail.steps] == [0, 1, 2, 3, 4]
    failing = detail.steps[2]
    assert failing.status == "error"
    assert failing.error is not None
    assert failing.error.type == "KeyError"
    assert [c.name for c in detail.steps[3].tool_calls] == ["refund", "refund"]
    assert detail.steps[3].tool_calls[0].arguments == {"order_id": "A-1001"}


def test_show_step_for_people_points_at_the_failing_line(home: Path, orders_run: str) -> None:
    result = invoke(home, "show", "last", "--step", "2")
    assert result.exit_code == 0
    assert "KeyError: 'order_id'" in result.output
    assert "❱ 3" in result.output  # the line the traceback points at is marked
    assert "big" in result.output
    assert "list" in result.output
    step = Step.model_validate_json(invoke(home, "show", "last", "--step", "2", "--json").output)
    assert step.index == 2


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (("show", "ffffffffffff"), "no run 'ffffffffffff'", 4),
        (("show", "last", "--step", "99"), "has no step 99 (it has steps 0..4)", 4),
    ],
)
def test_errors_are_one_clear_line_without_traceback(
    home: Path, orders_run: str, args: tuple[str, ...], message: str, code: int
) -> None:
    result = CliRunner().invoke(cli, ["--home", str(home), *args])
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output


def test_console_script_and_module_both_run(home: Path, orders_run: str) -> None:
    env = {**os.environ, "CODETAPE_HOME": str(home)}
    module = subprocess.run(
        [sys.executable, "-m", "codetape", "runs", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(module.stdout)[0]["id"] == orders_run
    script = shutil.which("codetape", path=str(Path(sys.executable).parent))
    assert script is not None, "the codetape console script is not installed"
    help_text = subprocess.run([script, "--help"], capture_output=True, text=True, check=True)
    for command in ("runs", "show", "doctor"):
        assert command in help_text.stdout


def test_empty_store_says_so(home: Path) -> None:
    result = invoke(home, "runs")
    assert result.exit_code == 0
    assert "no runs" in result.output


@pytest.mark.docker
@pytest.mark.usefixtures("docker_client")
def test_doctor_reports_store_docker_image_and_browser(home: Path, orders_run: str) -> None:
    image = os.environ.get("CODETAPE_IMAGE", "codetape/python:bookworm")
    env = {**os.environ, "CODETAPE_IMAGE": image}
    result = subprocess.run(
        [sys.executable, "-m", "codetape", "--home", str(home), "doctor", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["store"]["status"] == "ok"
    assert "1 runs, 5 steps" in checks["store"]["detail"]
    assert checks["docker"]["status"] == "ok"
    require(
        checks["sandbox image"]["status"] == "ok",
        f"the sandbox image {image}",
        f"scripts/build-offline-image.sh {image}",
    )
    require(checks["browser"]["status"] == "ok", "Chromium", "apt-get install chromium")
    # A runtime older than the fixes for known container escapes fails the doctor.
    failed = [name for name, check in checks.items() if check["status"] == "fail"]
    assert failed in ([], ["container runtime"])
    assert result.returncode == (1 if failed else 0)


@pytest.mark.docker
@pytest.mark.usefixtures("docker_client")
def test_doctor_says_how_to_get_a_missing_image(home: Path) -> None:
    env = {**os.environ, "CODETAPE_IMAGE": "codetape/no-such-image:never"}
    result = subprocess.run(
        [sys.executable, "-m", "codetape", "--home", str(home), "doctor"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "codetape/no-such-image:never is not in Docker" in result.stdout
    assert "codetape image build --offline" in result.stdout


def test_doctor_fails_on_a_corrupt_store(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "codetape.duckdb").write_bytes(b"not a database" * 100)
    result = invoke(home, "doctor")
    assert result.exit_code == 1
    assert "FAIL" in result.output
    assert "codetape.duckdb" in result.output


def test_doctor_rebuild_recovers_a_corrupt_store_from_the_spool(
    home: Path, orders_run: str
) -> None:
    db = home / "codetape.duckdb"
    db.write_bytes(b"not a database" * 100)
    assert invoke(home, "runs").exit_code == 3
    result = invoke(home, "doctor", "--rebuild")
    assert "rebuilt" in result.output
    assert (home / "codetape.duckdb.old-1").read_bytes() == b"not a database" * 100
    runs = json.loads(invoke(home, "runs", "--json").output)
    assert [(r["id"], r["step_count"]) for r in runs] == [(orders_run, 5)]


def test_every_status_and_verdict_has_one_colour() -> None:
    assert set(STATUS_COLORS) == {*RUN_STATUSES, *STEP_STATUSES}
    assert set(VERDICT_COLORS) == set(VERDICTS)


@pytest.mark.parametrize(
    ("frames", "line"),
    [
        (['File "<code action>", line 3, in <module>'], 3),
        (['File "<string>", line 2, in <module>'], 2),  # an observed step run with exec()
        (
            [
                'File "<code action>", line 1, in <module>',
                'File "<code action>", line 5, in helper',
                'File "<frozen importlib._bootstrap>", line 1204, in _gcd_import',
            ],
            5,
        ),
        (['File "/usr/lib/python3.12/json/__init__.py", line 346, in loads'], None),
    ],
)
def test_the_failing_line_is_the_last_frame_of_the_steps_code(
    frames: list[str], line: int | None
) -> None:
    traceback = "Traceback (most recent call last):\n" + "\n".join(f"  {f}" for f in frames)
    step = Step.model_validate(
        {
            **STEP_FIELDS,
            "status": "error",
            "error": {"type": "E", "message": "", "traceback": traceback},
        }
    )
    assert failing_line(step) == line
