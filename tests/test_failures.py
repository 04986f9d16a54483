"""Failures across runs: ``Store.failures`` groups the failing steps of an evaluation
of real smolagents runs by signature (exception type, message with ids masked, failing
line); replays of those runs are not the agent's runs and stay out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import codetape
from codetape.store.internal import normalize_message
from tests.trajectory_fixtures import AVERAGE, REFUND, TOTAL, record_evaluation

pytestmark = pytest.mark.filterwarnings("ignore::codetape.sandbox.NoIsolationWarning")


def test_thirty_runs_failing_three_ways_make_three_groups(home: Path) -> None:
    evaluation = record_evaluation()
    groups = codetape.Store().failures()
    assert [(g.error_type, g.runs, g.steps) for g in groups] == [
        ("ValueError", 9, 9),
        ("KeyError", 7, 7),
        ("ZeroDivisionError", 5, 5),
    ]
    assert {g.error_type: g.runs for g in groups} == evaluation.failing
    unknown = groups[0]
    assert unknown.message == "ValueError: no order <str>"
    assert unknown.line == "result = refund(<str>)"
    assert unknown.agents == ["orders_bot"]
    assert unknown.first_seen <= unknown.last_seen
    store = codetape.Store()
    example = store.run(unknown.example_run)
    assert example.task == REFUND
    assert example.started_at == max(
        r.started_at for r in store.runs(limit=100) if r.task == REFUND and r.failed_steps
    )
    assert store.step(example.id, unknown.example_step).error is not None
    for group, task in zip(groups, (REFUND, TOTAL, AVERAGE), strict=True):
        assert group.passing_run is not None
        passing = store.run(group.passing_run)
        assert (passing.task, passing.status, passing.failed_steps) == (task, "ok", 0)


def test_replays_of_failing_steps_are_not_failures_of_the_agent(home: Path) -> None:
    record_evaluation(failing=(2, 0, 0), passing=(0, 0, 0))
    (group,) = codetape.Store().failures()
    report = codetape.replay(group.example_run, group.example_step)
    assert report.verdict == "reproduced"
    (again,) = codetape.Store().failures()
    assert (again.runs, again.example_run) == (2, group.example_run)
    assert again.passing_run is None  # a replay is no passing run of the agent


def test_an_agent_filter_keeps_its_own_runs(home: Path) -> None:
    record_evaluation(failing=(1, 1, 0), passing=(0, 0, 0))
    assert len(codetape.Store().failures(agent="orders_bot")) == 2
    assert codetape.Store().failures(agent="someone_else") == []


@pytest.mark.parametrize(
    ("message", "normalized"),
    [
        ("no order 'A-1007'", "no order <str>"),
        ('no order "B-0001" in 3 tries', "no order <str> in <n> tries"),
        ("object at 0x7f3a2b1c9d80 is gone", "object at <addr> is gone"),
        ("run 9f8e7d6c-1b2a-4c3d-8e9f-0a1b2c3d4e5f failed", "run <id> failed"),
        ("timeout after 30.5s on job abc123def", "timeout after <n>s on job <id>"),
        ("Code execution failed at line 'x = 1/0' due to: ZeroDivisionError: division by zero",
         "ZeroDivisionError: division by zero"),
        ("first line\nsecond line 42", "first line"),
    ],
)  # fmt: skip
def test_what_varies_between_runs_is_masked(message: str, normalized: str) -> None:
    assert normalize_message(message) == normalized


def test_a_store_of_the_previous_schema_is_migrated_and_its_failures_grouped(
    home: Path,
) -> None:
    import duckdb

    record_evaluation(failing=(2, 1, 0), passing=(1, 0, 0))
    codetape.Store().refresh()
    # The store as the previous version left it: no model-call table, no failure columns.
    con = duckdb.connect(str(home / "codetape.duckdb"))
    con.execute("DROP TABLE llm_calls")
    con.execute("DROP INDEX steps_run_id")  # columns of an indexed table cannot be dropped
    con.execute("ALTER TABLE steps DROP COLUMN error_message")
    con.execute("ALTER TABLE steps DROP COLUMN error_line")
    con.execute("CREATE INDEX steps_run_id ON steps (run_id)")
    con.execute("ALTER TABLE runs DROP COLUMN parent")
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.close()
    groups = codetape.Store().failures()
    assert [(g.error_type, g.runs, g.message, g.line) for g in groups] == [
        ("ValueError", 2, "ValueError: no order <str>", "result = refund(<str>)"),
        ("KeyError", 1, groups[1].message, "total = sum(o[<str>] for o in orders)"),
    ]
    runs = codetape.Store().runs()
    assert len(runs) == 4
    assert all(r.llm_calls == 0 for r in runs)  # the calls before the migration are not summed
