"""``codetape.integrations.smolagents.instrument``: a real smolagents ``CodeAgent``, with
its own ``LocalPythonExecutor``, driven by a scripted model and read back through
``codetape.Store``. Nothing of smolagents is mocked.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from smolagents import CodeAgent, Model, ToolCallingAgent, tool
from smolagents.local_python_executor import CodeOutput, PythonExecutor
from smolagents.memory import ActionStep
from smolagents.models import ChatMessage, MessageRole

import codetape
from codetape.integrations.smolagents import instrument, uninstrument
from codetape.schemas import Run, Step
from codetape.tracer import _state

ORDERS = [
    {"id": "A-1001", "customer": "ada", "total": 250.0},
    {"id": "A-1002", "customer": "grace", "total": 40.0},
    {"id": "A-1003", "customer": "linus", "total": 120.5},
    {"id": "A-1004", "customer": "barbara", "total": 99.99},
]
TASK = "Refund every order over $100"

# The code actions the scripted model writes, in order. The third one uses a key the
# orders do not have; the fourth fixes it, calling refund from inside a loop.
GET = 'orders = get_orders()\nprint(f"{len(orders)} orders")'
PICK = "big = [o for o in orders if o['total'] > 100]\nprint([o['id'] for o in big])\nlen(big)"
WRONG = "print('refunding')\nrefunded = [refund(o['order_id']) for o in big]"
FIX = "refunded = []\nfor o in big:\n    refunded.append(refund(o['id']))\nprint(len(refunded))"
ANSWER = "final_answer('refunded ' + ', '.join(r['order_id'] for r in refunded))"
SCRIPT = [GET, PICK, WRONG, FIX, ANSWER]
FINAL = "refunded A-1001, A-1003"


@tool  # type: ignore[untyped-decorator]
def get_orders() -> list[dict[str, Any]]:
    """All open orders."""
    return [dict(o) for o in ORDERS]


@tool  # type: ignore[untyped-decorator]
def refund(order_id: str) -> dict[str, Any]:
    """Refund one order.

    Args:
        order_id: the order's id, such as "A-1001"
    """
    order = next((o for o in ORDERS if o["id"] == order_id), None)
    if order is None:
        raise ValueError(f"no order {order_id!r}")
    return {"order_id": order_id, "amount": order["total"], "status": "refunded"}


@tool  # type: ignore[untyped-decorator]
def slow_report() -> str:
    """A report that takes longer than the executor allows."""
    time.sleep(1.5)
    return "late"


class ScriptedModel(Model):  # type: ignore[misc]
    """Stands in for an LLM: replies with the next canned code action, and keeps what
    it was shown so tests can check what the agent saw."""

    def __init__(self, script: list[str]) -> None:
        super().__init__(model_id="scripted")
        self.script = list(script)
        self.seen: list[str] = []

    def generate(self, messages: list[Any], stop_sequences: Any = None, **kwargs: Any) -> Any:
        self.seen.append(str(messages[-1].content))
        code = self.script.pop(0)
        return ChatMessage(
            role=MessageRole.ASSISTANT, content=f"Thought: next.\n<code>\n{code}\n</code>"
        )


def make_agent(script: list[str] = SCRIPT, **kwargs: Any) -> Any:
    kwargs.setdefault("tools", [get_orders, refund])
    return CodeAgent(model=ScriptedModel(script), verbosity_level=-1, **kwargs)


@pytest.fixture
def recording(home: Path, strict: None) -> Path:
    """A fresh store, with recording errors raised rather than logged."""
    return home


def only_run() -> tuple[Run, list[Step]]:
    store = codetape.Store()
    runs = store.runs()
    assert len(runs) == 1, runs
    return runs[0], store.steps(runs[0].id)


# -- runs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "recorded_as"), [(None, "CodeAgent"), ("orders_bot", "orders_bot")]
)
def test_a_run_records_the_task_and_final_answer(
    recording: Path, name: str | None, recorded_as: str
) -> None:
    agent = instrument(make_agent(name=name))
    assert agent.run(TASK) == FINAL
    run, _ = only_run()
    assert (run.name, run.task, run.status, run.final_answer) == (recorded_as, TASK, "ok", FINAL)
    assert (run.step_count, run.failed_steps) == (5, 1)


def test_each_agent_run_is_its_own_run(recording: Path) -> None:
    agent = instrument(make_agent(script=[GET, "final_answer(len(orders))"] * 2))
    assert agent.run("first") == 4
    assert agent.run("second") == 4
    runs = codetape.Store().runs()
    assert sorted(r.task or "" for r in runs) == ["first", "second"]
    for run in runs:
        assert [s.index for s in codetape.Store().steps(run.id)] == [0, 1]


def test_a_streamed_run_lasts_while_the_caller_iterates(recording: Path) -> None:
    agent = instrument(make_agent())
    events = list(agent.run(TASK, stream=True))
    assert events[-1].output == FINAL
    run, steps = only_run()
    assert (run.task, run.status, run.final_answer) == (TASK, "ok", FINAL)
    assert [s.code for s in steps] == SCRIPT
    assert codetape.tracer.internal.current_run() is None


def test_inside_a_run_the_user_opened_the_steps_go_to_that_run(recording: Path) -> None:
    agent = instrument(make_agent())
    with codetape.run("evaluation", task="suite") as outer:
        agent.run(TASK)
    run, steps = only_run()
    assert (run.id, run.name, run.task) == (outer.id, "evaluation", "suite")
    assert [s.code for s in steps] == SCRIPT


def test_a_run_that_raises_is_recorded_as_an_error(recording: Path) -> None:
    class BrokenModel(ScriptedModel):
        def generate(self, messages: list[Any], stop_sequences: Any = None, **kwargs: Any) -> Any:
            raise ConnectionError("model endpoint down")

    agent = instrument(CodeAgent(tools=[], model=BrokenModel([]), verbosity_level=-1))
    with pytest.raises(Exception, match="model endpoint down"):
        agent.run(TASK)
    run, steps = only_run()
    assert run.status == "error"
    assert steps == []


# -- steps ----------------------------------------------------------------------------------


def test_steps_hold_the_code_the_model_wrote_in_order(recording: Path) -> None:
    instrument(make_agent()).run(TASK)
    _, steps = only_run()
    assert [s.index for s in steps] == [0, 1, 2, 3, 4]
    assert [s.code for s in steps] == SCRIPT
    assert {s.sandbox.backend for s in steps} == {"observed"}


def test_variables_before_and_after_each_step(recording: Path) -> None:
    instrument(make_agent()).run(TASK)
    _, steps = only_run()
    assert "orders" not in steps[0].variables_before
    orders = steps[0].variables_after["orders"]
    assert orders.type == "list"
    assert "A-1001" in orders.preview
    assert orders.restorable
    assert steps[1].variables_before["orders"].digest == orders.digest
    assert "big" in steps[1].variables_after
    assert "refunded" not in steps[2].variables_after  # the failing step assigned nothing
    assert "A-1003" in steps[3].variables_after["refunded"].preview
    for step in steps:  # the executor's own bookkeeping is not the agent's state
        for snapshot in (step.variables_before, step.variables_after):
            assert not {"_print_outputs", "_operations_count", "__name__"} & set(snapshot)


def test_stdout_is_what_each_step_printed(recording: Path) -> None:
    instrument(make_agent()).run(TASK)
    _, steps = only_run()
    assert [s.stdout for s in steps] == [
        "4 orders\n",
        "['A-1001', 'A-1003']\n",
        "refunding\n",  # printed before the step failed
        "2\n",
        "",
    ]


def test_result_is_the_last_value_and_the_final_step_holds_the_answer(recording: Path) -> None:
    instrument(make_agent()).run(TASK)
    _, steps = only_run()
    assert (steps[1].result, steps[1].result_type) == ("2", "int")
    assert steps[2].result is None
    assert steps[4].status == "ok"
    assert steps[4].result == repr(FINAL)


def test_a_failing_step_is_an_error_and_the_agent_carries_on(recording: Path) -> None:
    agent = instrument(make_agent())
    assert agent.run(TASK) == FINAL
    _, steps = only_run()
    assert [s.status for s in steps] == ["ok", "ok", "error", "ok", "ok"]
    error = steps[2].error
    assert error is not None
    assert error.type == "KeyError"
    assert "order_id" in error.message
    assert error.traceback is not None
    assert "KeyError: 'order_id'" in error.traceback
    # smolagents saw the failure as before: in its memory and in the next prompt.
    actions = [s for s in agent.memory.steps if isinstance(s, ActionStep)]
    assert "KeyError" in str(actions[2].error)
    assert "KeyError" in agent.model.seen[3]


def test_a_step_that_times_out_is_recorded_as_a_timeout(recording: Path) -> None:
    agent = instrument(
        make_agent(
            script=["report = slow_report()", "final_answer('gave up')"],
            tools=[slow_report],
            executor_kwargs={"timeout_seconds": 1},
        )
    )
    assert agent.run(TASK) == "gave up"
    _, steps = only_run()
    assert steps[0].status == "timeout"
    assert steps[0].error is not None
    assert steps[0].error.type.endswith("ExecutionTimeoutError")


# -- tool calls -----------------------------------------------------------------------------


def test_tool_calls_are_recorded_under_their_step(recording: Path) -> None:
    instrument(make_agent()).run(TASK)
    _, steps = only_run()
    assert [[c.name for c in s.tool_calls] for s in steps] == [
        ["get_orders"],
        [],
        [],  # the KeyError struck before refund was called
        ["refund", "refund"],  # from inside the loop, in call order
        [],  # final_answer ends the step; the run holds the answer
    ]
    (get,) = steps[0].tool_calls
    assert (get.arguments, get.result, get.error) == ({}, ORDERS, None)
    assert [c.arguments for c in steps[3].tool_calls] == [
        {"order_id": "A-1001"},
        {"order_id": "A-1003"},
    ]
    assert steps[3].tool_calls[1].result == {
        "order_id": "A-1003",
        "amount": 120.5,
        "status": "refunded",
    }


def test_tool_arguments_are_bound_by_name_however_they_are_passed(recording: Path) -> None:
    calls = (
        "a = refund('A-1001')\nb = refund(order_id='A-1003')\nc = refund({'order_id': 'A-1004'})\n"
        "undo = refund\nd = undo('A-1002')"
    )
    instrument(make_agent(script=[calls, "final_answer(a['status'])"])).run(TASK)
    _, steps = only_run()
    assert [c.arguments for c in steps[0].tool_calls] == [
        {"order_id": "A-1001"},
        {"order_id": "A-1003"},
        {"order_id": "A-1004"},
        {"order_id": "A-1002"},
    ]
    # A tool kept in a variable is still a tool, not state.
    assert set(steps[0].variables_after) == {"a", "b", "c", "d"}


def test_a_tool_that_raises_is_recorded_with_its_error(recording: Path) -> None:
    script = ["r = refund('A-9999')", "final_answer('no refund')"]
    agent = instrument(make_agent(script=script))
    assert agent.run(TASK) == "no refund"
    _, steps = only_run()
    (call,) = steps[0].tool_calls
    assert call.arguments == {"order_id": "A-9999"}
    assert call.result is None
    assert call.error is not None
    assert (call.error.type, call.error.message) == ("ValueError", "no order 'A-9999'")
    assert steps[0].status == "error"
    assert steps[0].error is not None
    assert steps[0].error.type == "ValueError"


# -- instrument / uninstrument --------------------------------------------------------------


def test_instrumenting_twice_records_once(recording: Path) -> None:
    agent = make_agent()
    assert instrument(agent) is agent
    assert instrument(agent) is agent
    agent.run(TASK)
    _, steps = only_run()
    assert [s.code for s in steps] == SCRIPT
    assert [len(s.tool_calls) for s in steps] == [1, 0, 0, 2, 0]


def test_uninstrument_stops_recording_and_restores_the_agent(recording: Path) -> None:
    agent = make_agent(script=SCRIPT * 2)
    executor = agent.python_executor
    instrument(agent)
    assert agent.python_executor is not executor
    agent.run(TASK)
    assert uninstrument(agent) is agent
    assert agent.python_executor is executor
    assert "run" not in vars(agent)
    assert agent.run(TASK) == FINAL  # still works, unrecorded
    _, steps = only_run()
    assert len(steps) == 5
    assert uninstrument(agent) is agent  # a second time is harmless


def test_the_executor_still_looks_like_the_agents_own(recording: Path) -> None:
    agent = instrument(make_agent())
    executor = agent.python_executor
    assert isinstance(executor, PythonExecutor)
    executor.timeout_seconds = 7
    assert uninstrument(agent).python_executor.timeout_seconds == 7
    instrument(agent).run(TASK)
    assert agent.python_executor.state["refunded"][0]["order_id"] == "A-1001"


def test_the_agent_behaves_the_same_when_recorded(recording: Path) -> None:
    plain, recorded = make_agent(), instrument(make_agent())
    assert plain.run(TASK) == recorded.run(TASK) == FINAL

    def observations(agent: Any) -> list[tuple[str | None, str | None]]:
        steps = [s for s in agent.memory.steps if isinstance(s, ActionStep)]
        return [(s.observations, str(s.error) if s.error else None) for s in steps]

    assert observations(plain) == observations(recorded)
    assert plain.model.seen == recorded.model.seen


def test_recording_failures_never_break_the_agent(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: Any, namespace: Any, previous: Any = None) -> Any:
        raise RuntimeError("snapshot store is gone")

    monkeypatch.delenv("CODETAPE_STRICT", raising=False)
    monkeypatch.setattr(_state.Snapshotter, "snapshot", broken)
    with caplog.at_level(logging.WARNING, logger="codetape"):
        assert instrument(make_agent()).run(TASK) == FINAL
    assert "recording failed" in caplog.text
    _, steps = only_run()
    assert [s.status for s in steps] == ["ok", "ok", "error", "ok", "ok"]
    assert steps[0].variables_after == {}


def test_the_executor_called_outside_a_run_records_nothing(recording: Path) -> None:
    agent = instrument(make_agent())
    agent.python_executor.send_tools(agent.tools)
    output = agent.python_executor("x = 40 + 2\nx")
    assert isinstance(output, CodeOutput)
    assert output.output == 42
    assert codetape.Store().runs() == []


def test_only_code_agents_with_a_supported_executor(recording: Path) -> None:
    class RemoteExecutor(PythonExecutor):  # type: ignore[misc]
        def send_tools(self, tools: Any) -> None: ...
        def send_variables(self, variables: Any) -> None: ...
        def __call__(self, code_action: str) -> Any: ...

    with pytest.raises(TypeError, match="LocalPythonExecutor, not RemoteExecutor"):
        instrument(make_agent(executor=RemoteExecutor()))
    calling = ToolCallingAgent(tools=[], model=ScriptedModel([]), verbosity_level=-1)
    with pytest.raises(TypeError, match="has no python_executor"):
        instrument(calling)


@pytest.mark.filterwarnings("ignore::codetape.sandbox.NoIsolationWarning")
def test_a_codetape_executor_records_its_own_steps_once(recording: Path) -> None:
    from codetape.integrations.smolagents import CodetapeExecutor

    executor = CodetapeExecutor(codetape.Sandbox(backend="local"))
    agent = instrument(make_agent(script=[GET, "final_answer(len(orders))"], executor=executor))
    try:
        assert agent.run(TASK) == 4
    finally:
        agent.cleanup()
    run, steps = only_run()
    assert (run.task, run.final_answer) == (TASK, "4")
    assert [(s.code, s.sandbox.backend) for s in steps] == [
        (GET, "local"),
        ("final_answer(len(orders))", "local"),
    ]
    assert [c.name for c in steps[0].tool_calls] == ["get_orders"]


def test_without_smolagents_the_import_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in sys.modules if n == "smolagents" or n.startswith("smolagents.")]:
        monkeypatch.setitem(sys.modules, name, None)  # None: "not installed" to import
    monkeypatch.delitem(sys.modules, "codetape.integrations.smolagents")
    with pytest.raises(ImportError, match=r"pip install 'codetape\[smolagents\]'"):
        importlib.import_module("codetape.integrations.smolagents")


def test_public_names() -> None:
    import codetape.integrations.smolagents as integration

    assert integration.__all__ == ["CodetapeExecutor", "instrument", "uninstrument"]
