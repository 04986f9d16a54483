"""The whole trajectory on the command line: the model's thought and call behind each
step (``show --step``, ``show --llm``), tokens per run (``runs``), and the failures of
an evaluation grouped by how they failed (``failures``), hostile model text inert."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from smolagents import CodeAgent

import codetape
from codetape.cli import cli
from codetape.integrations.smolagents import instrument
from codetape.schemas import FailureGroup, LlmCall, Run
from codetape.testing import capture

from .trajectory_fixtures import (
    REFUND,
    ScriptedModel,
    get_orders,
    make_agent,
    record_evaluation,
    refund,
)

# What a model, a task or a tool may write to take over a terminal: retitle the window
# and hide a link (OSC), clear the screen and blink (CSI), reverse the text (bidi), and
# rich markup that must stay text.
TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"
LINK = "\x1b]8;;http://evil.example\x07here\x1b]8;;\x07"
RTL = "\u202egnp.exe"
MARKUP = "[red]markup[/] [link=http://evil.example]x[/link]"
HOSTILE_THOUGHT = f"Thought: {TITLE}{CLEAR} {MARKUP} {RTL}"


def invoke(home: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the 30 evaluation runs (9, 7 and 5 failing three ways, 9 passing),
    recorded once for the module; the tests only read it."""
    with capture(tmp_path_factory.mktemp("evaluation")) as captured:
        record_evaluation()
    return captured.home


def _runs(home: Path, *args: str) -> list[Run]:
    return [Run.model_validate(r) for r in json.loads(invoke(home, "runs", "--json", *args).output)]


def _groups(home: Path, *args: str) -> list[FailureGroup]:
    result = invoke(home, "failures", "--json", *args)
    assert result.exit_code == 0
    return [FailureGroup.model_validate(g) for g in json.loads(result.output)]


def _first_refund_failure(home: Path) -> Run:
    """The oldest run that asked for the unknown order "B-0000" (its step 0 failed)."""
    return next(r for r in reversed(_runs(home, "--failed")) if r.task == REFUND)


# -- failures ---------------------------------------------------------------------


def test_failures_groups_the_evaluation_into_its_three_ways_of_failing(evaluation: Path) -> None:
    result = invoke(evaluation, "failures")
    assert result.exit_code == 0
    assert result.output.startswith("3 ways of failing, 21 failing steps\n")
    headers = re.findall(r"^(\w+)  (\d+) runs, (\d+) steps", result.output, re.MULTILINE)
    assert headers == [
        ("ValueError", "9", "9"),
        ("KeyError", "7", "7"),
        ("ZeroDivisionError", "5", "5"),
    ]
    # What varies from run to run (the order id, the amounts) is masked in the group...
    assert "no order <str>" in result.output
    assert "result = refund(<str>)" in result.output
    # ...and the newest example keeps it.
    assert "ValueError: no order 'B-0008'" in result.output


def test_failures_point_at_the_newest_example_and_a_passing_run_to_compare(
    evaluation: Path,
) -> None:
    output = invoke(evaluation, "failures").output
    shows = re.findall(r"codetape (show \w+ --step \d+)", output)
    diffs = re.findall(r"codetape (diff \w+ \w+)", output)
    assert len(shows) == len(diffs) == 3
    # The printed commands run as they are: the example step failed the group's way...
    for command, error in zip(shows, ("ValueError", "KeyError", "ZeroDivisionError"), strict=True):
        step = invoke(evaluation, *command.split())
        assert step.exit_code == 0
        assert f"{error}: " in step.output
    # ...and the compare command diffs it against a run of the same task that passed.
    passing = {r.id[:12]: r for r in _runs(evaluation) if not r.failed_steps}
    for command, shown in zip(diffs, shows, strict=True):
        _, failing, passed = command.split()
        assert failing == shown.split()[1]
        assert passed in passing
        diff = invoke(evaluation, *command.split())
        assert diff.exit_code == 0
        assert "first divergence" in diff.output


def test_failures_json_is_the_failure_groups(evaluation: Path) -> None:
    groups = _groups(evaluation)
    assert [(g.error_type, g.runs, g.steps) for g in groups] == [
        ("ValueError", 9, 9),
        ("KeyError", 7, 7),
        ("ZeroDivisionError", 5, 5),
    ]
    runs = {r.id: r for r in _runs(evaluation)}
    for group in groups:
        assert group.agents == ["orders_bot"]
        assert group.first_seen < group.last_seen
        example = runs[group.example_run]
        assert example.failed_steps == 1
        assert group.passing_run is not None
        passing = runs[group.passing_run]
        assert (passing.task, passing.failed_steps) == (example.task, 0)
    assert _groups(evaluation, "--limit", "1") == groups[:1]
    assert _groups(evaluation, "--agent", "orders_bot") == groups
    assert _groups(evaluation, "--agent", "someone_else") == []


def test_failures_say_how_many_are_left_out_by_the_limit(evaluation: Path) -> None:
    output = invoke(evaluation, "failures", "--limit", "2").output
    assert "the 2 that failed the most runs shown; --limit 0 shows all" in output
    assert "ZeroDivisionError" not in output


def test_failures_of_an_empty_store_say_what_to_do(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    empty = invoke(home, "failures")
    assert empty.exit_code == 0
    assert f"no runs in {home}: record an agent first" in empty.output
    make_agent([("Thought: done.", "final_answer(1)")]).run(REFUND)
    passing = invoke(home, "failures")
    assert passing.output == "no failing steps in 1 run\n"
    unknown = invoke(home, "failures", "--agent", "someone_else")
    assert unknown.output == "no runs of agent someone_else (agents: orders_bot)\n"
    assert json.loads(invoke(home, "failures", "--json").output) == []


def test_failures_without_a_store_is_an_error_with_a_hint(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "nowhere"), "failures"])
    assert result.exit_code == 3
    assert "no store at" in result.output
    assert "hint:" in result.output
    assert not (tmp_path / "nowhere").exists()


# -- show: the model behind each step ----------------------------------------------


def test_show_step_prints_the_thought_above_the_code_and_its_model_call(
    evaluation: Path,
) -> None:
    run = _first_refund_failure(evaluation)
    output = invoke(evaluation, "show", run.id[:12], "--step", "0").output
    assert "model call 0  scripted-model  200 in / 25 out tokens  " in output
    assert "thought\nThought: refund the order.\n" in output
    assert (
        output.index("model call 0")
        < output.index("Thought: refund the order.")
        < output.index('result = refund("B-0000")')
        < output.index("ValueError: no order 'B-0000'")
    )
    # The next step came from the next call, which saw the error.
    step = invoke(evaluation, "show", run.id[:12], "--step", "1").output
    assert "model call 1  scripted-model  500 in / 29 out tokens" in step
    assert "Thought: it does not exist; give up." in step


def test_show_run_gives_each_step_its_thought_and_the_runs_tokens(evaluation: Path) -> None:
    run = _first_refund_failure(evaluation)
    output = invoke(evaluation, "show", run.id[:12]).output
    assert "model calls 2, 700 in / 54 out tokens" in output
    assert f"(codetape show {run.id[:12]} --llm)" in output
    assert output.index("Thought: refund the order.") < output.index("Thought: it does not")


def test_show_llm_lists_the_runs_model_calls(evaluation: Path) -> None:
    run = _first_refund_failure(evaluation)
    output = invoke(evaluation, "show", run.id[:12], "--llm").output
    rows = [line.split() for line in output.splitlines() if re.match(r"^ \d ", line)]
    # index, the step its code became, model, tokens in and out, latency, output preview
    assert [row[:5] for row in rows] == [
        ["0", "0", "scripted-model", "200", "25"],
        ["1", "1", "scripted-model", "500", "29"],
    ]
    assert 'Thought: refund the order. <code> result = refund("B-0000") </code>' in output
    assert f"codetape show {run.id[:12]} --llm --call I" in output
    calls = [
        LlmCall.model_validate(c)
        for c in json.loads(invoke(evaluation, "show", run.id, "--llm", "--json").output)
    ]
    assert [(c.index, c.model, c.input_tokens, c.output_tokens) for c in calls] == [
        (0, "scripted-model", 200, 25),
        (1, "scripted-model", 500, 29),
    ]
    assert sum(c.input_tokens or 0 for c in calls) == run.input_tokens


def test_show_call_prints_its_messages_and_output_in_full(evaluation: Path) -> None:
    run = _first_refund_failure(evaluation)
    output = invoke(evaluation, "show", run.id[:12], "--llm", "--call", "1").output
    assert f"its code is step 1: codetape show {run.id[:12]} --step 1" in output
    assert "input (5 messages)" in output
    for role in ("system", "user", "assistant", "tool-response"):
        assert f"\n{role}\n" in output
    # The whole system prompt, not a preview, and the error the model was shown.
    assert "Now Begin!" in output
    assert "due to: ValueError: no order 'B-0000'" in output
    assert output.endswith(
        "output\nThought: it does not exist; give up.\n<code>\n"
        "final_answer('no such order')\n</code>\n"
    )
    same = invoke(evaluation, "show", run.id[:12], "--call", "1", "--json").output
    assert LlmCall.model_validate_json(same).output.startswith("Thought: it does not exist")


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (("--call", "7"), "has no model call 7 (it has calls 0..1)", 4),
        (("--step", "0", "--llm"), "--step shows a step, --llm and --call model calls", 2),
    ],
)
def test_show_says_what_is_wrong_with_a_call_asked_for(
    evaluation: Path, args: tuple[str, ...], message: str, code: int
) -> None:
    run = _first_refund_failure(evaluation)
    result = CliRunner().invoke(cli, ["--home", str(evaluation), "show", run.id, *args])
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output


def test_show_llm_shows_finish_reasons_latency_and_failed_calls(home: Path) -> None:
    @codetape.llm
    def ask(prompt: str) -> str:
        raise TimeoutError("the model took too long")

    with codetape.run("own-loop", task="answer"):
        codetape.record_llm_call(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Say hi"}],
            output="hi",
            usage=(1200, 3),
            response_model="gpt-4o-2024-08-06",
            finish_reason="stop",
            duration_ms=1500,
        )
        with pytest.raises(TimeoutError):
            ask("again")
    listed = invoke(home, "show", "last", "--llm").output
    first, second = (line for line in listed.splitlines() if re.match(r"^ \d ", line))
    # the latency the call was backdated by shows in seconds (at least 1.5 s)
    assert re.fullmatch(r" 0 +gpt-4o +1,200 +3 +\d+\.\d s +stop +hi *", first)
    assert "TimeoutError: the model took too long" in second
    call = invoke(home, "show", "last", "--call", "0").output
    assert "answered by gpt-4o-2024-08-06  finish stop" in call
    assert "\nuser\nSay hi\n" in call
    failed = invoke(home, "show", "last", "--call", "1").output
    assert "TimeoutError: the model took too long" in failed


def test_show_llm_of_a_run_without_model_calls_says_how_to_record_them(home: Path) -> None:
    with codetape.run("plain-bot", task="no model here"):
        pass
    output = invoke(home, "show", "last", "--llm").output
    assert "no model calls recorded in this run" in output
    assert "@codetape.llm" in output
    # nor does a list of runs that made no model calls spend a column on tokens
    assert "tokens" not in invoke(home, "runs").output


# -- runs: tokens and cost ----------------------------------------------------------


def test_runs_show_tokens_in_and_out_per_run(evaluation: Path) -> None:
    runs = _runs(evaluation, "--limit", "100")
    assert len(runs) == 30
    assert all(r.llm_calls and r.input_tokens and r.output_tokens for r in runs)
    assert all(r.cost is None for r in runs)  # no prices configured
    output = invoke(evaluation, "runs", "--limit", "100").output
    assert "tokens in/out" in output
    assert "cost" not in output.splitlines()[0]
    for run in runs:
        line = next(line for line in output.splitlines() if run.id[:12] in line)
        assert f" {run.input_tokens:,}/{run.output_tokens:,} " in line


def test_runs_and_calls_show_the_cost_when_prices_are_configured(home: Path) -> None:
    codetape.configure(home=home, otlp=False, prices={"scripted-*": (10.0, 100.0)})
    make_agent([("Thought: done.", "final_answer(1)")]).run(REFUND)
    [run] = _runs(home)
    # 200 tokens in at 10 and 15 out at 100 per million
    assert run.cost == pytest.approx(0.0035)
    header, row = invoke(home, "runs").output.splitlines()
    assert header.split()[-3:] == ["in/out", "cost", "task"]
    assert row.split()[-5:] == ["200/15", "0.0035", "Refund", "the", "order"]
    listed = invoke(home, "show", "last", "--llm").output
    assert "model calls 1, 200 in / 15 out tokens, cost 0.0035" in listed
    assert re.search(
        r"^ 0 +0 +scripted-model +200 +15 +\S+ m?s +0\.0035 +Thought: done\.", listed, re.M
    )
    step = invoke(home, "show", "last", "--step", "0").output
    assert "model call 0  scripted-model  200 in / 15 out tokens  " in step
    assert " ms  cost 0.0035\n" in step


# -- hostile model text -------------------------------------------------------------


@pytest.fixture
def hostile_run(home: Path) -> str:
    """A run whose model, task, thought, tool error and messages carry terminal escape
    sequences, bidi controls and rich markup."""
    script = [
        (HOSTILE_THOUGHT, f'result = refund("{CLEAR}{RTL}")'.replace("\x1b", "\\x1b")),
        ("Thought: stop.", "final_answer('no')"),
    ]
    model = ScriptedModel(script, model_id=f"evil{CLEAR}{RTL}")
    agent = CodeAgent(tools=[refund, get_orders], model=model, name="bot", verbosity_level=-1)
    instrument(agent).run(f"Refund {LINK} {TITLE}order")
    return codetape.Store(home).runs()[0].id


# How each text reaches the user: its escapes written out, where they were.
SHOWN_TASK = "Refund \\x1b]8;;http://evil.example\\x07here\\x1b]8;;\\x07 \\x1b]0;pwned\\x07order"
SHOWN_THOUGHT = (
    "Thought: \\x1b]0;pwned\\x07\\x1b[2J [red]markup[/] [link=http://evil.example]x[/link] "
    "\\u202egnp.exe"
)
SHOWN_MODEL = "evil\\x1b[2J\\u202egnp.exe"
SHOWN_ERROR = "ValueError: no order '\\x1b[2J\\u202egnp.exe'"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("runs",), [SHOWN_TASK]),
        (("show", "last"), [SHOWN_TASK, SHOWN_MODEL, SHOWN_THOUGHT, SHOWN_ERROR]),
        (("show", "last", "--step", "0"), [SHOWN_MODEL, SHOWN_THOUGHT, SHOWN_ERROR]),
        (("show", "last", "--llm"), [SHOWN_TASK, SHOWN_MODEL, SHOWN_THOUGHT]),
        (("show", "last", "--llm", "--call", "0"), [SHOWN_MODEL, SHOWN_TASK, SHOWN_THOUGHT]),
        (("show", "last", "--llm", "--call", "1"), [SHOWN_ERROR]),
        (("failures",), [SHOWN_ERROR]),
    ],
)
def test_hostile_model_text_is_printed_inert(
    home: Path, hostile_run: str, args: tuple[str, ...], expected: list[str]
) -> None:
    output = invoke(home, *args).output
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in output
    for text in expected:
        assert text in output


@pytest.mark.parametrize(
    "args",
    [("show", "last", "--llm", "--json"), ("show", "last", "--call", "0", "--json")],
)
def test_hostile_model_text_in_json_is_escaped_and_intact(
    home: Path, hostile_run: str, args: tuple[str, ...]
) -> None:
    output = invoke(home, *args).output
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in output
    found = json.loads(output)
    call = LlmCall.model_validate(found[0] if isinstance(found, list) else found)
    assert call.model == f"evil{CLEAR}{RTL}"
    assert call.output.startswith(HOSTILE_THOUGHT)
    assert any(LINK in m.content for m in call.input_messages)
