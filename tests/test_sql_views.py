"""The stable views answer what the Store API reads from the same recorded runs, and
every worked query gives the answer a user would work out from those runs by hand."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from smolagents import CodeAgent

import codetape
from codetape.integrations.smolagents import instrument
from codetape.schemas import Run, Step
from codetape.store import EXAMPLE_QUERIES
from codetape.store.internal import VIEW_NAMES
from tests.sql_fixtures import (
    NOTHING_FOUND,
    record_sql_store,
    search,
    search_agent,
    slow_lookup,
)
from tests.trajectory_fixtures import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::codetape.sandbox.NoIsolationWarning")

EXAMPLES = {e.title: e.sql for e in EXAMPLE_QUERIES}


class Recorded:
    """The store's runs and steps as the Store API reads them."""

    def __init__(self, store: codetape.Store) -> None:
        self.store = store
        self.runs: list[Run] = store.runs(limit=1000)
        self.steps: dict[str, list[Step]] = {r.id: store.steps(r.id) for r in self.runs}
        self.agent = {r.id: r.name for r in self.runs}

    def all_steps(self) -> list[Step]:
        return [s for steps in self.steps.values() for s in steps]

    def query(self, title: str) -> list[tuple[Any, ...]]:
        return self.store.sql(EXAMPLES[title]).fetchall()


@pytest.fixture
def recorded(home: Path) -> Recorded:
    record_sql_store(home)
    return Recorded(codetape.Store(home))


def same_instant(a: datetime | None, b: datetime | None) -> bool:
    """The views cut nanoseconds to microseconds, the models round them."""
    assert a is not None
    assert b is not None
    return abs(a - b) <= timedelta(microseconds=1)


def _records(store: codetape.Store, query: str) -> list[dict[str, Any]]:
    relation = store.sql(query)
    return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


def test_runs_view(recorded: Recorded) -> None:
    rows = {r["run_id"]: r for r in _records(recorded.store, "FROM runs")}
    assert len(rows) == len(recorded.runs) == 7
    for run in recorded.runs:
        row = rows[run.id]
        assert (row["agent"], row["task"], row["status"], row["final_answer"]) == (
            run.name,
            run.task,
            run.status,
            run.final_answer,
        )
        assert (row["steps"], row["failed_steps"], row["llm_calls"]) == (
            run.step_count,
            run.failed_steps,
            run.llm_calls,
        )
        assert (row["input_tokens"], row["output_tokens"]) == (
            run.input_tokens,
            run.output_tokens,
        )
        assert row["cost"] == pytest.approx(run.cost)
        assert same_instant(row["started_at"], run.started_at)
        assert same_instant(row["ended_at"], run.ended_at)
        assert row["duration_ms"] > 0


def test_steps_view(recorded: Recorded) -> None:
    rows = {(r["run_id"], r["step"]): r for r in _records(recorded.store, "FROM steps")}
    steps = recorded.all_steps()
    assert len(rows) == len(steps) == 17
    for step in steps:
        row = rows[(step.run_id, step.index)]
        assert row["agent"] == recorded.agent[step.run_id]
        assert (row["span_id"], row["status"], row["code"]) == (
            step.span_id,
            step.status,
            step.code,
        )
        assert row["error_type"] == (step.error.type if step.error else None)
        assert row["error_message"] == (step.error.message if step.error else None)
        assert row["thought_preview"] == step.thought
        assert row["result_preview"] == step.result
        assert row["llm_call"] == step.llm_call
        assert row["sandbox_backend"] == step.sandbox.backend == "observed"
        assert row["python"] == step.sandbox.python
        assert row["variables"] == len(step.variables_after)
        assert same_instant(row["started_at"], step.started_at)
        assert row["duration_ms"] == pytest.approx(step.duration_ms)


def test_tool_calls_view(recorded: Recorded) -> None:
    rows = {r["call_id"]: r for r in _records(recorded.store, "FROM tool_calls")}
    calls = [(s, t) for s in recorded.all_steps() for t in s.tool_calls]
    assert len(rows) == len(calls) == 7
    for step, call in calls:
        row = rows[call.call_id]
        assert (row["run_id"], row["step"], row["tool"]) == (step.run_id, step.index, call.name)
        assert row["agent"] == recorded.agent[step.run_id]
        assert row["error_type"] == (call.error.type if call.error else None)
        assert row["status"] == ("error" if call.error else "ok")
        if call.error is None:
            preview = row["result_preview"]
            assert preview.endswith("…") or json.loads(preview) == call.result
        assert json.loads(row["arguments_preview"]) == call.arguments
        assert row["duration_ms"] == pytest.approx(call.duration_ms)


def test_variables_view(recorded: Recorded) -> None:
    rows = _records(recorded.store, "FROM variables")
    got = {(r["run_id"], r["step"], r["state"], r["name"]): r for r in rows}
    expected = 0
    for step in recorded.all_steps():
        for state, variables in (
            ("before", step.variables_before),
            ("after", step.variables_after),
        ):
            for name, snap in variables.items():
                expected += 1
                row = got[(step.run_id, step.index, state, name)]
                assert row["agent"] == recorded.agent[step.run_id]
                assert (row["type"], row["digest"], row["size"], row["preview"]) == (
                    snap.type,
                    snap.digest,
                    snap.size,
                    snap.preview,
                )
                assert (row["restorable"], row["reason"]) == (snap.restorable, snap.reason)
    assert len(rows) == expected > 0


def test_llm_calls_view(recorded: Recorded) -> None:
    rows = {r["span_id"]: r for r in _records(recorded.store, "FROM llm_calls")}
    total = 0
    for run in recorded.runs:
        for call in recorded.store.llm_calls(run.id, messages=False):
            total += 1
            row = rows[call.span_id]
            assert (row["run_id"], row["call_index"], row["agent"], row["model"]) == (
                run.id,
                call.index,
                run.name,
                call.model,
            )
            assert (row["input_tokens"], row["output_tokens"]) == (
                call.input_tokens,
                call.output_tokens,
            )
            assert row["cost"] == pytest.approx(call.cost)
            assert row["cost"] > 0
            assert row["output_preview"] == call.output[: len(row["output_preview"])]
    assert len(rows) == total == 17


def test_spans_view(recorded: Recorded) -> None:
    spans = _records(recorded.store, "FROM spans")
    assert len(spans) == recorded.store.counts()["spans"]
    agents = [s for s in spans if s["name"].startswith("invoke_agent ")]
    assert sorted(s["trace_id"] for s in agents) == sorted(r.id for r in recorded.runs)
    assert all(s["parent_id"] is not None for s in spans if s not in agents)
    names = recorded.store.sql(
        """SELECT DISTINCT attributes->>'$."gen_ai.operation.name"' FROM spans ORDER BY 1"""
    ).fetchall()
    assert names == [("chat",), ("execute_code",), ("execute_tool",), ("invoke_agent",)]


def test_the_views_are_the_documented_ones(recorded: Recorded) -> None:
    tables = recorded.store.sql(
        "SELECT view_name FROM duckdb_views() WHERE schema_name = 'v1' ORDER BY 1"
    ).fetchall()
    assert sorted(t for (t,) in tables) == sorted(VIEW_NAMES)


# -- the worked queries ----------------------------------------------------------------


def test_every_step_that_raised_keyerror_this_week_by_agent(recorded: Recorded) -> None:
    week_ago = datetime.now(timezone.utc) - timedelta(days=7)
    steps = [
        s
        for s in recorded.all_steps()
        if s.error and s.error.type == "KeyError" and s.started_at >= week_ago
    ]
    by_agent = Counter(recorded.agent[s.run_id] for s in steps)
    assert (
        recorded.query("Every step that raised KeyError this week, by agent")
        == [
            (agent, n, len({s.run_id for s in steps if recorded.agent[s.run_id] == agent}))
            for agent, n in by_agent.most_common()
        ]
        == [("orders_bot", 1, 1)]
    )


def test_runs_where_a_tool_returned_an_empty_list_and_the_next_step_failed(
    recorded: Recorded,
) -> None:
    expected = []
    for run_id, steps in recorded.steps.items():
        for step, following in itertools.pairwise(steps):
            for call in step.tool_calls:
                if call.result == [] and following.status != "ok":
                    expected.append((run_id, step.index, call.name, following.error.type))  # type: ignore[union-attr]
    title = "Runs where a tool returned an empty list and the next step failed"
    assert recorded.query(title) == expected
    assert [(name, error) for _, _, name, error in expected] == [("search", "IndexError")]


def test_steps_whose_code_imports_requests(recorded: Recorded) -> None:
    pattern = re.compile(r"(^|\n)\s*(import|from)\s+requests\b")
    expected = [(s.run_id, s.index) for s in recorded.all_steps() if pattern.search(s.code)]
    rows = recorded.query("Steps whose code imports requests")
    assert [(r[0], r[1]) for r in rows] == expected
    assert [r[3] for r in rows] == ["import requests\npage = requests.get('https://example.com')"]


def test_the_slowest_tool_of_each_agent(recorded: Recorded) -> None:
    durations: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for step in recorded.all_steps():
        for call in step.tool_calls:
            durations[recorded.agent[step.run_id]][call.name].append(call.duration_ms)
    expected = []
    for agent in sorted(durations):
        means = {tool: sum(d) / len(d) for tool, d in durations[agent].items()}
        slowest = max(means, key=lambda tool: means[tool])
        expected.append((agent, slowest, means[slowest]))
    rows = recorded.query("The slowest tool of each agent (mean time per call)")
    assert [(a, t) for a, t, _ in rows] == [(a, t) for a, t, _ in expected]
    assert [ms for *_, ms in rows] == pytest.approx([ms for *_, ms in expected])


def test_tokens_and_cost_per_agent(recorded: Recorded) -> None:
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    for run in recorded.runs:
        total = totals[run.name]
        total[0] += run.llm_calls
        total[1] += run.input_tokens
        total[2] += run.output_tokens
        total[3] += run.cost or 0.0
    rows = recorded.query("Tokens and cost per agent")
    assert [r[:4] for r in rows] == sorted(
        ((a, t[0], t[1], t[2]) for a, t in totals.items()), key=lambda r: (-(r[2] + r[3]), r[0])
    )
    assert [r[4] for r in rows] == pytest.approx([totals[r[0]][3] for r in rows])


def test_the_most_common_errors(recorded: Recorded) -> None:
    failed = [s for s in recorded.all_steps() if s.status != "ok"]
    counts = Counter(s.error.type for s in failed if s.error)
    rows = recorded.query("The most common errors")
    assert {r[0]: r[1] for r in rows} == counts
    assert sum(r[1] for r in rows) == len(failed) == 5
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)


def test_how_often_each_agents_runs_fail_per_task(recorded: Recorded) -> None:
    groups: dict[tuple[str, str | None], list[Run]] = defaultdict(list)
    for run in recorded.runs:
        groups[(run.name, run.task)].append(run)
    rows = recorded.query("How often each agent's runs fail, per task")
    got = {(a, t): (n, failing, pct) for a, t, n, failing, pct in rows}
    for key, runs in groups.items():
        failing = sum(1 for r in runs if r.status != "ok" or r.failed_steps)
        assert got[key] == (len(runs), failing, round(100 * failing / len(runs), 1))
    assert got[("orders_bot", "Refund the order")] == (2, 1, 50.0)


def test_runs_that_recovered(recorded: Recorded) -> None:
    expected = {r.id for r in recorded.runs if r.status == "ok" and r.failed_steps}
    rows = recorded.query("Runs that recovered: a step failed, the run still ended ok")
    assert {r[0] for r in rows} == expected
    assert len(expected) == 5


def test_tool_calls_that_raised(recorded: Recorded) -> None:
    expected = [
        (s.run_id, s.index, t.name, t.error.type)
        for s in recorded.all_steps()
        for t in s.tool_calls
        if t.error
    ]
    rows = recorded.query("Tool calls that raised, with their arguments")
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == expected
    assert [r[3] for r in rows] == ['{"order_id": "B-0000"}']


def test_the_largest_variable_of_each_run(recorded: Recorded) -> None:
    rows = {r[0]: r for r in recorded.query("The largest variable of each run")}
    for run_id, steps in recorded.steps.items():
        variables = [v for s in steps for v in s.variables_after.values()]
        if not variables:
            assert run_id not in rows
            continue
        biggest = max(v.size for v in variables)
        _, name, kind, size = rows[run_id]
        assert size == biggest
        assert (name, kind) in {(v.name, v.type) for v in variables if v.size == biggest}


def test_the_ten_longest_steps(recorded: Recorded) -> None:
    steps = sorted(recorded.all_steps(), key=lambda s: -s.duration_ms)[:10]
    rows = recorded.query("The ten longest steps")
    assert [(r[0], r[1]) for r in rows] == [(s.run_id, s.index) for s in steps]
    assert [r[5] for r in rows] == [s.code for s in steps]


@pytest.mark.docker
def test_steps_run_in_a_sandbox_by_image(home: Path, docker_image: str) -> None:
    codetape.configure(home=home, otlp=False)
    script = [
        ("Thought: search.", 'hits = search("orders of A")'),
        ("Thought: it failed.", "first = hits[5]"),
        ("Thought: done.", "final_answer(hits[0])"),
    ]
    with codetape.Sandbox(image=docker_image) as sandbox:
        instrument(
            CodeAgent(
                tools=[search, slow_lookup],
                model=ScriptedModel(script),
                name="search_bot",
                verbosity_level=-1,
            ),
            sandbox=sandbox,
        ).run("Search in a sandbox")
    search_agent(NOTHING_FOUND[2:]).run("Answer on the host")
    store = codetape.Store(home)
    sandboxed = [
        s for r in store.runs() for s in store.steps(r.id) if s.sandbox.backend != "observed"
    ]
    assert [s.sandbox.backend for s in sandboxed] == ["docker"] * 3
    (image_id,) = {s.sandbox.image_id for s in sandboxed}
    assert image_id
    rows = store.sql(EXAMPLES["Steps run in a sandbox, by image"]).fetchall()
    assert rows == [(sandboxed[0].sandbox.image, image_id, 3, 1)]
    steps = _records(store, "FROM steps WHERE sandbox_backend = 'docker' ORDER BY step")
    assert [s["code"] for s in steps] == [code for _, code in script]
    assert [s["error_type"] for s in steps] == [None, "IndexError", None]
    calls = store.sql(
        "SELECT step, tool, result_preview FROM tool_calls WHERE run_id = ? ORDER BY started_at",
        [steps[0]["run_id"]],
    ).fetchall()
    assert [(step, tool) for step, tool, _ in calls] == [
        (s.index, t.name) for s in sandboxed for t in s.tool_calls
    ]
    assert calls[0] == (0, "search", '["A-1001 (orders of A)"]')


def test_every_worked_query_is_tested_here() -> None:
    source = Path(__file__).read_text()
    for example in EXAMPLE_QUERIES:
        assert f'"{example.title}"' in source
