"""Nested agents on the command line: ``codetape runs`` lists a run started by another
run's step (a smolagents managed agent) under its parent, ``codetape show`` says which
tool call started which run and which step started a run, and ``codetape diff`` (and
``diff_runs``) names the runs an aligned pair of steps started. Real smolagents agents,
scripted models; hostile run names printed inert."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import codetape
from codetape.cli import cli
from codetape.integrations.smolagents import instrument
from codetape.schemas import Run, RunDiff
from codetape.store.internal import connect

from .test_nested_runs import boss, pricer

TITLE = "\x1b]0;pwned\x07"
RTL = "\u202egnp.exe"
MARKUP = "[link=http://evil.example]x[/link]"


def invoke(home: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def run_rows(output: str) -> list[list[str]]:
    """The rows of ``codetape runs``, split at runs of two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in output.splitlines()[1:]]


@pytest.fixture
def nested(home: Path) -> dict[str, Run]:
    """Two runs of a boss agent whose step 0 calls its managed agent, the pricer, and a
    run of another agent in between; returns the runs by role."""
    instrument(boss(pricer())).run("How many orders are open?")
    with codetape.run("calm", task="nothing"):
        pass
    instrument(boss(pricer())).run("How many orders are open?")
    runs = codetape.Store().runs()
    bosses = [r for r in runs if r.name == "boss"]
    pricers = [r for r in runs if r.name == "pricer"]
    by_parent = {r.parent_run: r for r in pricers}
    return {
        "boss": bosses[1],
        "pricer": by_parent[bosses[1].id],
        "calm": next(r for r in runs if r.name == "calm"),
        "boss 2": bosses[0],
        "pricer 2": by_parent[bosses[0].id],
    }


def test_runs_lists_a_child_run_under_its_parent(home: Path, nested: dict[str, Run]) -> None:
    rows = run_rows(invoke(home, "runs"))
    ids = [row[0] for row in rows]
    short = {role: run.id[:12] for role, run in nested.items()}
    assert ids == [
        short["boss 2"],
        f"└ {short['pricer 2']}",
        short["calm"],
        short["boss"],
        f"└ {short['pricer']}",
    ]
    assert f"{short['boss']} step 0" in rows[4]  # the parent column
    assert not any(cell.endswith(" step 0") for cell in rows[3])
    # The json is still the Run models, newest first, each naming its parent.
    listed = [Run.model_validate(r) for r in json.loads(invoke(home, "runs", "--json"))]
    assert [r.id for r in listed] == [r.id for r in codetape.Store().runs()]
    child = next(r for r in listed if r.id == nested["pricer"].id)
    assert (child.parent_run, child.parent_step) == (nested["boss"].id, 0)


def test_a_child_whose_parent_is_not_listed_still_names_it(
    home: Path, nested: dict[str, Run]
) -> None:
    rows = run_rows(invoke(home, "runs", "--agent", "pricer"))
    assert [row[0] for row in rows] == [nested["pricer 2"].id[:12], nested["pricer"].id[:12]]
    assert f"{nested['boss'].id[:12]} step 0" in rows[1]


def test_show_says_which_tool_call_started_which_run(home: Path, nested: dict[str, Run]) -> None:
    parent, child = nested["boss"], nested["pricer"]
    for args in (("show", parent.id[:10]), ("show", parent.id[:10], "--step", "0")):
        lines = invoke(home, *args).splitlines()
        tool = next(k for k, line in enumerate(lines) if line.startswith("tool pricer("))
        assert lines[tool + 1].startswith(f"     started run {child.id[:12]} (pricer, ok)  ")
    # The printed command shows the child, which names its parent step and its command.
    command = re.search(r"started run .*  (codetape show \w+)\n", invoke(home, "show", parent.id))
    assert command is not None
    shown = invoke(home, *command[1].split()[1:])
    assert shown.startswith(f"run {child.id}  pricer  ok")
    short = parent.id[:12]
    said = f"started by step 0 of run {short} (boss)  codetape show {short} --step 0"
    assert shown.splitlines()[1] == said
    step = invoke(home, "show", parent.id[:12], "--step", "0")
    assert "count = pricer(task='count the orders')" in step


def test_a_child_run_the_store_does_not_have_is_said(home: Path) -> None:
    @codetape.code_action
    def execute(code: str, namespace: dict[str, Any]) -> None:
        exec(code, namespace)

    @codetape.tool
    def helper() -> int:
        with codetape.run("helper"):
            execute("y = 2", {})
        return 1

    with codetape.run("boss"):
        execute("r = helper()", {"helper": helper})
    store = codetape.Store()
    child = next(r for r in store.runs() if r.name == "helper")
    with connect(store.home, read_only=False) as con:  # as if the store never had it
        con.execute("DELETE FROM runs WHERE run_id = ?", [child.id])
    assert f"started run {child.id[:12]} (not in this store)" in invoke(home, "show", "last")


def test_hostile_names_of_parent_and_child_runs_are_inert(home: Path) -> None:
    @codetape.code_action
    def execute(code: str, namespace: dict[str, Any]) -> None:
        exec(code, namespace)

    @codetape.tool
    def helper() -> int:
        with codetape.run(f"child {TITLE}{MARKUP}{RTL}", task=f"sub {MARKUP}"):
            execute("y = 2", {})
        return 1

    with codetape.run(f"parent {MARKUP}{RTL}"):
        execute("r = helper()", {"helper": helper})
    store = codetape.Store()
    child = next(r for r in store.runs() if r.parent_run)
    outputs = [
        invoke(home, "runs"),
        invoke(home, "show", child.id[:12]),
        invoke(home, "show", child.parent_run or ""),
    ]
    for output in outputs:
        assert "\x1b" not in output
        assert "\u202e" not in output
    assert f"child \\x1b]0;pwned\\x07{MARKUP}\\u202egnp.exe" in outputs[0]
    assert f"(parent {MARKUP}\\u202egnp.exe)" in outputs[1]
    assert f"(child \\x1b]0;pwned\\x07{MARKUP}\\u202egnp.exe, ok)" in outputs[2]


def test_diff_names_the_runs_each_pair_of_steps_started(home: Path, nested: dict[str, Run]) -> None:
    a, b = nested["boss"], nested["boss 2"]
    diff = codetape.diff_runs(a.id, b.id)
    assert [(p.child_runs_a, p.child_runs_b) for p in diff.pairs] == [
        ([nested["pricer"].id], [nested["pricer 2"].id]),
        ([], []),
    ]
    assert RunDiff.model_validate_json(invoke(home, "diff", a.id, b.id, "--json")) == diff
    output = invoke(home, "diff", a.id[:12], b.id[:12])
    one, two = nested["pricer"].id[:12], nested["pricer 2"].id[:12]
    assert f"  step a=0 b=0: {one} / {two}  codetape diff {one} {two}\n" in output
    # The printed command compares the two managed agents' runs.
    assert "the runs match step for step" in invoke(home, "diff", one, two)


def test_diff_says_when_only_one_side_started_a_run(home: Path) -> None:
    @codetape.code_action
    def execute(code: str, namespace: dict[str, Any]) -> None:
        exec(code, namespace)

    @codetape.tool
    def helper(start: bool) -> int:
        if start:
            with codetape.run("helper"):
                pass
        return 1

    for start in (True, False):
        with codetape.run("boss"):
            execute(f"r = helper({start})", {"helper": helper})
    bosses = [r for r in codetape.Store().runs() if r.name == "boss"]
    child = next(r for r in codetape.Store().runs() if r.name == "helper")
    output = invoke(home, "diff", bosses[1].id, bosses[0].id)
    assert f"step a=0 b=0: {child.id[:12]} (only a started one)" in output
