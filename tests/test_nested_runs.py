"""Nested agents: a run started by a tool call of another run's step (smolagents'
managed agents) records that step as its parent, and the tool call records the run it
started. Real smolagents agents, scripted models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from smolagents import CodeAgent, ToolCallingAgent
from smolagents.models import ChatMessage, ChatMessageToolCall, ChatMessageToolCallFunction

import codetape
from codetape.integrations.smolagents import instrument, uninstrument
from codetape.schemas import attributes as A
from tests.trajectory_fixtures import ScriptedModel, get_orders, refund


@pytest.fixture
def recording(home: Path, strict: None) -> Path:
    return home


def pricer() -> Any:
    script = [("Thought: count the orders.", "n = len(get_orders())\nfinal_answer(str(n))")]
    return CodeAgent(
        tools=[get_orders],
        model=ScriptedModel(script, model_id="pricer-model"),
        name="pricer",
        description="Counts the open orders.",
        verbosity_level=-1,
    )


def boss(managed: Any) -> Any:
    script = [
        ("Thought: ask the pricer.", "count = pricer(task='count the orders')\nprint(count)"),
        ("Thought: done.", "final_answer(count)"),
    ]
    return CodeAgent(
        tools=[refund],
        model=ScriptedModel(script, model_id="boss-model"),
        managed_agents=[managed],
        name="boss",
        verbosity_level=-1,
    )


def test_a_managed_agents_run_is_the_child_of_the_step_that_called_it(recording: Path) -> None:
    agent = instrument(boss(pricer()))
    assert "100" in agent.run("How many orders are open?")
    store = codetape.Store()
    runs = {r.name: r for r in store.runs()}
    assert set(runs) == {"boss", "pricer"}
    parent, child = runs["boss"], runs["pricer"]
    assert (child.parent_run, child.parent_step) == (parent.id, 0)
    assert (parent.parent_run, parent.parent_step) == (None, None)
    # The child is a run of its own: its steps, its model calls.
    assert [s.code for s in store.steps(child.id)] == [
        "n = len(get_orders())\nfinal_answer(str(n))"
    ]
    assert [c.model for c in store.llm_calls(child.id)] == ["pricer-model"]
    (call,) = store.step(parent.id, 0).tool_calls
    assert (call.name, call.child_run) == ("pricer", child.id)
    # The link, for OTLP backends: the child's root names the tool call's span.
    (row,) = store._query(
        "SELECT attributes FROM spans WHERE trace_id = ? AND parent_id IS NULL", [child.id]
    )
    attrs = json.loads(row[0])
    assert attrs[A.RUN_PARENT] == f"{parent.id}:0"
    (span_id,) = store._query(
        "SELECT span_id FROM spans WHERE trace_id = ? AND starts_with(name, 'execute_tool')",
        [parent.id],
    )[0]
    assert attrs[A.RUN_PARENT_TOOL_CALL] == span_id


def test_under_a_users_run_a_managed_agent_is_still_a_run_of_its_own(recording: Path) -> None:
    agent = instrument(boss(pricer()))
    with codetape.run("evaluation", task="one case") as outer:
        agent.run("How many orders are open?")
    store = codetape.Store()
    runs = {r.name: r for r in store.runs()}
    assert set(runs) == {"evaluation", "pricer"}
    assert runs["pricer"].parent_run == outer.id
    assert [s.index for s in store.steps(outer.id)] == [0, 1]


class CallsPricer:
    """A tool-calling model: calls the managed agent, then gives the final answer."""

    def __init__(self) -> None:
        self.turn = 0

    def __call__(self, messages: list[Any], **kwargs: Any) -> ChatMessage:
        self.turn += 1
        name, arguments = (
            ("pricer", {"task": "count the orders"})
            if self.turn == 1
            else ("final_answer", {"answer": "done"})
        )
        return ChatMessage(
            role="assistant",
            content="",
            tool_calls=[
                ChatMessageToolCall(
                    id=f"call_{self.turn}",
                    type="function",
                    function=ChatMessageToolCallFunction(name=name, arguments=arguments),
                )
            ],
        )


def test_a_code_agent_managed_by_a_tool_calling_agent_is_recorded_too(recording: Path) -> None:
    from smolagents import Model

    class ToolCaller(Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(model_id="caller")
            self.reply = CallsPricer()

        def generate(self, messages: list[Any], **kwargs: Any) -> ChatMessage:
            return self.reply(messages)

    manager = ToolCallingAgent(tools=[], model=ToolCaller(), managed_agents=[pricer()])
    with pytest.raises(TypeError, match="python_executor"):
        instrument(manager)  # a ToolCallingAgent writes no code: not an agent to record
    child = instrument(manager.managed_agents["pricer"])
    manager.run("How many orders?")
    (run,) = codetape.Store().runs()
    assert (run.name, run.step_count) == ("pricer", 1)
    uninstrument(child)


def test_uninstrument_gives_managed_agents_back_their_run(recording: Path) -> None:
    child = pricer()
    agent = uninstrument(instrument(boss(child)))
    assert "run" not in vars(child)
    assert "run" not in vars(agent)


def test_the_managed_agents_example_records_two_linked_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    from codetape._format import inline_values

    example = Path(__file__).parent.parent / "examples" / "05_managed_agents.py"
    home = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, str(example), "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "final answer: 370.50 EUR" in done.stdout
    store = codetape.Store(home)
    runs = {r.name: r for r in store.runs()}
    assert runs["pricer"].parent_run == runs["boss"].id
    failing = store.step(runs["boss"].id, 1)
    (value,) = inline_values(failing)
    assert (value.name, value.type) == ("answer", "str")
    assert "managed agent 'pricer'" in value.preview
