"""Run diffs: alignment by code similarity, per-step differences, first divergence."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import codetape
from codetape.cli import cli
from codetape.replayer.internal import align
from codetape.schemas import RunDiff


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (["x=1", "y=2"], ["x=1", "y=2"], [(0, 0), (1, 1)]),
        # An inserted step does not shift the ones after it.
        (
            ["a=1", "b=2", "c=3"],
            ["a=1", "new=0", "b=2", "c=3"],
            [(0, 0), (None, 1), (1, 2), (2, 3)],
        ),
        # A removed step likewise.
        (["a=1", "b=2", "c=3"], ["a=1", "c=3"], [(0, 0), (1, None), (2, 1)]),
        # An edited step pairs with its edit.
        (
            ["orders = get()", "print(o['order_id'])"],
            ["orders = get()", "print(o['id'])"],
            [(0, 0), (1, 1)],
        ),
        # Unrelated code does not pair.
        (["a=1", "import os"], ["a=1", "zzzzzzzzzzzzzzzzzz()"], [(0, 0), (1, None), (None, 1)]),
        ([], ["a=1"], [(None, 0)]),
    ],
)
def test_align(a: list[str], b: list[str], expected: list[tuple[int | None, int | None]]) -> None:
    assert align(a, b) == expected


@codetape.code_action
def _execute(code: str, namespace: dict[str, Any]) -> None:
    exec(compile(code, "<code action>", "exec"), namespace)


def _record(name: str, snippets: list[str]) -> str:
    namespace: dict[str, Any] = {}
    with codetape.run(name, task="diff me") as run:
        for code in snippets:
            with contextlib.suppress(Exception):
                _execute(code, namespace)
    return run.id


FAILING = [
    "orders = [{'id': 'A', 'total': 120}, {'id': 'B', 'total': 5}]",
    "big = [o for o in orders if o['total'] > 100]\nprint(len(big))",
    "ids = [o['order_id'] for o in big]",
    "print('done')",
]
FIXED = [
    "orders = [{'id': 'A', 'total': 120}, {'id': 'B', 'total': 5}]",
    "big = [o for o in orders if o['total'] > 100]\nprint(len(big))",
    "ids = [o['id'] for o in big]",
    "print('done')",
]


def test_failing_and_fixed_runs_part_at_the_edited_step(home: Path) -> None:
    a, b = _record("orders", FAILING), _record("orders", FIXED)
    diff = codetape.diff_runs(a, b)
    assert [(p.a, p.b) for p in diff.pairs] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert [p.same for p in diff.pairs] == [True, True, False, False]
    assert diff.first_divergence == 2
    first = diff.pairs[2]
    assert "-ids = [o['order_id'] for o in big]" in first.code_diff
    assert "+ids = [o['id'] for o in big]" in first.code_diff
    assert (first.status_a, first.status_b) == ("error", "ok")
    assert first.error_a is not None
    assert first.error_a.type == "KeyError"
    assert first.variables_added == ["ids"]
    # The last step: same code and output, but b has a variable a never got.
    assert diff.pairs[3].code_diff == []
    assert diff.pairs[3].variables_added == ["ids"]


def test_identical_runs_have_no_divergence(home: Path) -> None:
    a, b = _record("same", FIXED), _record("same", FIXED)
    diff = codetape.diff_runs(a[:8], b[:8])
    assert diff.first_divergence is None
    assert all(p.same for p in diff.pairs)


def test_changed_variable_value_is_reported_with_previews(home: Path) -> None:
    a = _record("v", ["x = 1", "y = x + 1"])
    b = _record("v", ["x = 2", "y = x + 1"])
    diff = codetape.diff_runs(a, b)
    assert diff.first_divergence == 0
    change = diff.pairs[0].variables_changed[0]
    assert (change.name, change.a.preview, change.b.preview) == ("x", "1", "2")
    # Same code, different value: the second step differs by its variables only.
    second = diff.pairs[1]
    assert second.code_diff == []
    assert [c.name for c in second.variables_changed] == ["x", "y"]


def test_cli_diff_prints_the_first_divergence_and_json_is_the_model(home: Path) -> None:
    a, b = _record("orders", FAILING), _record("orders", FIXED)
    runner = CliRunner()
    result = runner.invoke(cli, ["--home", str(home), "diff", a[:10], b[:10]])
    assert result.exit_code == 0, result.output
    assert "first divergence: step a=2 b=2" in result.output
    assert "order_id" in result.output
    assert f"compare?a={a}&b={b}" in result.output
    as_json = runner.invoke(cli, ["--home", str(home), "diff", a, b, "--json"])
    model = RunDiff.model_validate(json.loads(as_json.output))
    assert model.first_divergence == 2


def test_a_run_against_its_replay_compares_only_the_replayed_step(home: Path) -> None:
    with pytest.warns(codetape.sandbox.NoIsolationWarning):
        report = codetape.replay(_record("orders", FIXED), 1)
    assert report.verdict == "reproduced", report
    assert report.replay_run_id is not None
    diff = codetape.diff_runs(report.run_id, report.replay_run_id)
    assert [(p.a, p.b) for p in diff.pairs] == [(1, 0)]
    assert diff.first_divergence is None
