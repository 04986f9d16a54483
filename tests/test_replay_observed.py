"""Observed steps replay the way they ran: a ``@code_action`` with its own executor
(``replay=``), and errors named alike when recorded in the agent's process and replayed
in a subprocess. Real subprocesses, a real store; no Docker needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import codetape

pytestmark = pytest.mark.filterwarnings("ignore::codetape.sandbox.NoIsolationWarning")


class QuotaExceeded(Exception):
    """An error of the agent's own module, raised by one of its tools."""


@codetape.tool
def reserve(item: str, qty: int) -> dict[str, Any]:
    if qty > 10:
        raise QuotaExceeded(f"{item}: at most 10")
    return {"item": item, "qty": qty}


def run_snippet(code: str, namespace: dict[str, Any]) -> object:
    """An executor that does more than exec: it returns the ``answer`` the code set."""
    exec(code, namespace)
    return namespace.get("answer")


@codetape.code_action(replay=run_snippet)
def execute_with_answer(code: str, namespace: dict[str, Any]) -> object:
    return run_snippet(code, namespace)


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> None:
    exec(code, namespace)


def test_a_code_action_replays_with_the_executor_it_names(home: Path) -> None:
    namespace: dict[str, Any] = {"reserve": reserve}
    with codetape.run("answers") as run:
        execute_with_answer("got = reserve('fig', 2)\nanswer = got['qty'] * 21", namespace)
        execute_with_answer("answer = answer + 1", namespace)
    steps = codetape.Store(home).steps(run.id)
    assert [s.result for s in steps] == ["42", "43"]
    assert steps[0].executor == {
        "kind": "callable",
        "target": f"{__name__}:run_snippet",
        "code": "code",
        "state": "namespace",
    }

    reports = [codetape.replay(run.id, i) for i in (0, 1)]

    assert [r.verdict for r in reports] == ["reproduced", "reproduced"], reports
    replayed = codetape.Store(home).step(reports[1].replay_run_id or "", 0)
    assert replayed.result == "43"  # the named executor's return value, as recorded


def test_an_error_class_of_the_agents_module_is_named_alike_when_replayed(home: Path) -> None:
    namespace: dict[str, Any] = {"reserve": reserve}
    with codetape.run("quota") as run, pytest.raises(QuotaExceeded):
        execute("reserve('fig', 99)", namespace)
    [step] = codetape.Store(home).steps(run.id)
    assert step.error is not None
    assert step.error.type == f"{__name__}.QuotaExceeded"
    assert step.tool_calls[0].error is not None
    assert step.tool_calls[0].error.type == f"{__name__}.QuotaExceeded"

    report = codetape.replay(run.id, 0)

    assert report.verdict == "reproduced", report.model_dump_json(indent=2)


def test_a_positional_tool_argument_replays_as_recorded(home: Path) -> None:
    @codetape.tool
    def price(*items: str) -> float:
        return 1.5 * len(items)

    namespace: dict[str, Any] = {"price": price}
    with codetape.run("positional") as run:
        execute("total = price('pear', 'fig')\nprint(total)", namespace)
    [step] = codetape.Store(home).steps(run.id)
    assert step.tool_calls[0].arguments == {"items": ["pear", "fig"]}

    report = codetape.replay(run.id, 0)

    assert report.verdict == "reproduced", report.model_dump_json(indent=2)


def test_a_run_compared_with_its_replay_from_a_step_pairs_every_replayed_step(
    home: Path,
) -> None:
    namespace: dict[str, Any] = {"reserve": reserve}
    with codetape.run("three") as run:
        execute("a = reserve('fig', 1)['qty']\nprint(a)", namespace)
        execute("b = a + 1\nprint(b)", namespace)
        execute("c = b * 2\nprint(c)", namespace)

    reports = codetape.replay_from(run.id, 1)

    assert [(r.step, r.verdict) for r in reports] == [(1, "reproduced"), (2, "reproduced")]
    replay_run = reports[0].replay_run_id
    assert replay_run is not None
    assert {r.replay_run_id for r in reports} == {replay_run}
    diff = codetape.diff_runs(run.id, replay_run)
    assert [(p.a, p.b) for p in diff.pairs] == [(1, 0), (2, 1)]
    assert diff.first_divergence is None
