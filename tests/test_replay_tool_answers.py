"""What if a tool had answered differently? ``replay(..., tool_answers={i: answer})``,
``replay_from`` and ``codetape replay --tool-answer``: one recorded answer replaced, the
others still from the recording, on a real smolagents agent's recorded steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import codetape
from codetape.cli import cli
from codetape.errors import ReplayError
from codetape.schemas import ReplayReport
from tests.trajectory_fixtures import make_agent

# Observed steps replay in a local subprocess, which warns that it does not isolate.
pytestmark = pytest.mark.filterwarnings("ignore::codetape.sandbox.NoIsolationWarning")

SCRIPT = [
    ("Thought: list the orders.", "orders = get_orders()\nprint(len(orders), 'orders')"),
    ("Thought: refund the first.", "r = refund(orders[0]['id'])\nprint(r['status'])"),
    ("Thought: done.", "final_answer(r['status'])"),
]


@pytest.fixture
def run_id(home: Path) -> str:
    make_agent(SCRIPT).run("Refund the first order")
    (run,) = codetape.Store().runs()
    return run.id


def fields(report: ReplayReport) -> dict[str, tuple[object, object]]:
    return {d.field: (d.recorded, d.replayed) for d in report.differences}


def test_an_empty_answer_shows_how_the_step_would_have_gone(run_id: str) -> None:
    assert codetape.replay(run_id, 0).verdict == "reproduced"
    report = codetape.replay(run_id, 0, tool_answers={0: []})
    assert report.verdict == "diverged"
    assert fields(report)["stdout"] == ("100 orders\n", "0 orders\n")
    assert "tool call 0 (get_orders) got the answer given, not the recorded one" in report.notes


def test_from_a_step_the_changed_answer_carries_into_later_steps(run_id: str) -> None:
    reports = codetape.replay_from(run_id, 0, tool_answers={0: [{"id": "A-1042", "total": 1.0}]})
    assert [r.verdict for r in reports[:2]] == ["diverged", "diverged"]
    assert fields(reports[0])["stdout"] == ("100 orders\n", "1 orders\n")
    # Step 1 refunds the first order of the answer given: a call the recording lacks.
    assert reports[1].reason == "no recorded answer for refund('A-1042')"


def test_a_call_the_step_did_not_make_is_refused_with_the_calls_it_made(run_id: str) -> None:
    with pytest.raises(ReplayError, match="step 1 has no tool call 3") as raised:
        codetape.replay(run_id, 1, tool_answers={3: {}})
    assert raised.value.hint == "its tool calls, by index: 0 (refund)"


def test_the_cli_takes_answers_inline_and_from_a_file(
    run_id: str, home: Path, tmp_path: Path
) -> None:
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps([{"id": "A-1001", "total": 3.0}] * 3))
    result = CliRunner().invoke(
        cli,
        ["--home", str(home), "replay", run_id[:8], "--step", "0", "--tool-answer",
         f"0=@{answer}", "--json"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # diverged
    (report,) = [ReplayReport.model_validate(r) for r in json.loads(result.stdout)]
    assert fields(report)["stdout"] == ("100 orders\n", "3 orders\n")
    inline = CliRunner().invoke(
        cli, ["--home", str(home), "replay", run_id[:8], "--step", "0", "--tool-answer", "0=[]"]
    )
    assert inline.exit_code == 1, inline.output
    assert "0 orders" in inline.output


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("x=[]", "give I=JSON or I=@FILE"),
        ("0=[nope", "the answer for call 0 is not JSON"),
        ("0=@/nonexistent/answer.json", "cannot read /nonexistent/answer.json"),
    ],
)
def test_the_cli_says_what_is_wrong_with_an_answer(
    run_id: str, home: Path, option: str, message: str
) -> None:
    result = CliRunner().invoke(
        cli, ["--home", str(home), "replay", run_id[:8], "--step", "0", "--tool-answer", option]
    )
    assert result.exit_code == 2
    assert message in result.output
