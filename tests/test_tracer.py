"""The public recording API: ``codetape.configure/agent/code_action/tool/run/Store``.

Everything here records through the real tracer into a real store directory (the
``home`` fixture) and reads back through ``codetape.Store`` or the DuckDB ``spans`` table.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import keyword
import logging
import random
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import duckdb
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import codetape
from codetape.sandbox.internal import PICKLE_PROTOCOL, state_codec
from codetape.schemas import attributes as A
from codetape.store.internal import BlobStore, digest_of
from codetape.tracer import _errors, _state

ROOT = Path(__file__).resolve().parent.parent
TRACER_DIR = ROOT / "src" / "codetape" / "tracer"


# -- the user's code, as an agent author would write it --------------------------------


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> Any:
    exec(code, namespace)
    return namespace.get("result")


@codetape.code_action
async def aexecute(code: str, namespace: dict[str, Any]) -> Any:
    await asyncio.sleep(0)
    exec(code, namespace)
    await asyncio.sleep(0)
    return namespace.get("result")


@codetape.tool
def add(a: int, b: int = 2) -> int:
    return a + b


class ToolFailed(Exception):
    pass


@codetape.tool
def flaky(order_id: int) -> dict[str, Any]:
    raise ToolFailed(f"order {order_id} is locked")


async def _fetch(n: int) -> list[int]:
    await asyncio.sleep(0)
    return list(range(n))


fetch = codetape.tool(_fetch)  # the call form, on an async function


# -- helpers ---------------------------------------------------------------------------


def only_run(home: Path) -> codetape.schemas.Run:
    runs = codetape.Store(home).runs()
    assert len(runs) == 1, runs
    return runs[0]


def spans(home: Path) -> list[dict[str, Any]]:
    """The DuckDB ``spans`` table, after a reader has ingested the spool."""
    codetape.Store(home).refresh()
    con = duckdb.connect(str(home / "codetape.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT trace_id, span_id, parent_id, name, status, attributes, events FROM spans"
        ).fetchall()
    finally:
        con.close()
    keys = ("trace_id", "span_id", "parent_id", "name", "status", "attributes", "events")
    out = []
    for row in rows:
        rec = dict(zip(keys, row, strict=True))
        rec["attributes"] = json.loads(rec["attributes"]) if rec["attributes"] else {}
        rec["events"] = json.loads(rec["events"]) if rec["events"] else []
        out.append(rec)
    return out


@pytest.fixture
def memory_spans(home: Path) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    codetape.tracer.internal.runtime().provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """internal_errors logs each kind of failure once per process; start from none seen."""
    monkeypatch.setattr(_errors, "_seen", set())


def codetape_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "codetape" and r.levelno == logging.WARNING
    ]


# -- @codetape.agent -------------------------------------------------------------------


def test_agent_bare_sync_records_one_run_with_task_status_and_answer(home: Path) -> None:
    @codetape.agent
    def solve(task: str) -> str:
        return "refunded 3 orders"

    assert solve("refund late orders") == "refunded 3 orders"
    run = only_run(home)
    assert run.name == "solve"
    assert run.task == "refund late orders"
    assert run.status == "ok"
    assert run.final_answer == "refunded 3 orders"
    assert run.error is None
    assert run.step_count == 0
    assert run.ended_at is not None


def test_agent_with_name_async(home: Path) -> None:
    @codetape.agent(name="orders-bot")
    async def solve(question: str, retries: int = 2) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"refunded": [1, 2]}

    assert asyncio.run(solve(retries=1, question="which orders?")) == {"refunded": [1, 2]}
    run = only_run(home)
    assert run.name == "orders-bot"
    assert run.task == "which orders?"
    assert run.status == "ok"
    assert run.final_answer == "{'refunded': [1, 2]}"  # a non-str answer is its repr preview


def test_agent_task_is_first_str_argument(home: Path) -> None:
    @codetape.agent
    def solve(goal: str, budget: int) -> int:
        return budget

    solve("ship the refund", 3)
    assert only_run(home).task == "ship the refund"


def test_agent_task_is_first_str_argument_even_after_other_arguments(home: Path) -> None:
    # "the first ``str`` argument" (agent's docstring): not the first argument if that
    # one is not a str.
    @codetape.agent
    def solve(max_steps: int, goal: str) -> str:
        return "ok"

    solve(5, "ship the refund")
    assert only_run(home).task == "ship the refund"


def test_one_call_is_one_run(home: Path) -> None:
    @codetape.agent
    def solve(task: str) -> str:
        return task.upper()

    solve("a")
    solve("b")
    runs = codetape.Store(home).runs()
    assert sorted((r.task for r in runs), key=str) == ["a", "b"]
    assert len({r.id for r in runs}) == 2


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_agent_error_propagates_the_same_exception_and_is_recorded(
    home: Path, is_async: bool
) -> None:
    boom = RuntimeError("model returned garbage")

    call: Callable[[], object]
    if is_async:

        @codetape.agent(name="solve")
        async def solve_async(task: str) -> str:
            raise boom

        call = lambda: asyncio.run(solve_async("t"))  # noqa: E731
    else:

        @codetape.agent
        def solve(task: str) -> str:
            raise boom

        call = lambda: solve("t")  # noqa: E731

    with pytest.raises(RuntimeError) as info:
        call()
    assert info.value is boom
    run = only_run(home)
    assert run.status == "error"
    assert run.error is not None
    assert run.error.type == "RuntimeError"
    assert "model returned garbage" in run.error.message
    assert run.final_answer is None


def test_run_context_manager(home: Path) -> None:
    with codetape.run("orders-bot", task="refund late orders") as r:
        execute("result = 1 + 1", {})
        r.final_answer = "done"
    assert re.fullmatch(r"[0-9a-f]{32}", r.id)
    run = codetape.Store(home).run(r.id)
    assert (run.id, run.name, run.task, run.status) == (
        r.id,
        "orders-bot",
        "refund late orders",
        "ok",
    )
    assert run.final_answer == "done"
    assert run.step_count == 1
    # A unique prefix finds it too.
    assert codetape.Store(home).run(r.id[:10]).id == r.id


def test_run_context_manager_records_error(home: Path) -> None:
    with pytest.raises(KeyError), codetape.run("orders-bot") as r:
        raise KeyError("order 7")
    run = codetape.Store(home).run(r.id)
    assert run.status == "error"
    assert run.error is not None
    assert run.error.type == "KeyError"


# -- @codetape.code_action -------------------------------------------------------------


def test_code_action_records_code_variables_output_and_result(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ns: dict[str, Any] = {"orders": [1, 2], "name": "ann"}
    code = (
        "orders.append(3)\n"
        "total = sum(orders)\n"
        "print('total is', total)\n"
        "import sys\n"
        "print('careful', file=sys.stderr)\n"
        "result = {'total': total}\n"
    )
    with codetape.run("bot") as r:
        assert execute(code, ns) == {"total": 6}

    # The user still sees the output...
    seen = capsys.readouterr()
    assert "total is 6\n" in seen.out
    assert "careful\n" in seen.err
    # ... and the step recorded it.
    step = codetape.Store(home).step(r.id, 0)
    assert step.index == 0
    assert step.run_id == r.id
    assert step.code == code
    assert step.status == "ok"
    assert step.stdout == "total is 6\n"
    assert step.stderr == "careful\n"
    assert step.result == "{'total': 6}"
    assert step.result_type == "dict"
    assert step.error is None
    assert step.duration_ms > 0

    before, after = step.variables_before, step.variables_after
    assert set(before) == {"orders", "name"}
    assert set(after) == {"orders", "name", "total", "result"}  # no module, no __builtins__
    assert before["orders"].preview == "[1, 2]"
    assert after["orders"].preview == "[1, 2, 3]"
    assert before["orders"].type == after["orders"].type == "list"
    # Mutated: a new digest. Untouched: the same one.
    assert before["orders"].digest != after["orders"].digest
    assert before["name"].digest == after["name"].digest
    assert after["total"].type == "int"
    assert after["total"].preview == "6"
    for snap in after.values():
        assert snap.restorable
        assert snap.digest is not None
        assert snap.size > 0
    # The digest fingerprints the value (plain data: its pickle); the step's checkpoint
    # brings it back.
    assert after["orders"].digest == digest_of(
        cloudpickle.dumps([1, 2, 3], protocol=PICKLE_PROTOCOL)
    )
    store = codetape.Store(home)
    assert checkpoint_values(store, store.step(r.id, 0).state_after)["orders"] == [1, 2, 3]


def test_code_action_observed_sandbox(home: Path) -> None:
    with codetape.run("bot") as r:
        execute("x = 1", {})
    sandbox = codetape.Store(home).step(r.id, 0).sandbox
    assert sandbox.backend == "observed"
    assert sandbox.python == ".".join(map(str, sys.version_info[:3]))
    assert sandbox.platform
    assert sandbox.platform.startswith(sys.platform)
    assert sandbox.env_fingerprint
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", sandbox.env_fingerprint)
    assert sandbox.image is None
    assert sandbox.image_id is None


def test_async_code_action(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def agent() -> Any:
        ns: dict[str, Any] = {"n": 4}
        with codetape.run("async-bot", task="square") as r:
            value = await aexecute("result = n * n\nprint('squared')", ns)
        return r, value

    r, value = asyncio.run(agent())
    assert value == 16
    assert "squared\n" in capsys.readouterr().out
    step = codetape.Store(home).step(r.id, 0)
    assert step.code == "result = n * n\nprint('squared')"
    assert step.stdout == "squared\n"
    assert step.result == "16"
    assert step.variables_before["n"].preview == "4"
    assert step.variables_after["result"].preview == "16"
    assert step.duration_ms > 0


def test_concurrent_async_code_actions_keep_their_own_output(home: Path) -> None:
    async def agent() -> str:
        with codetape.run("async-bot") as r:
            await asyncio.gather(
                aexecute("print('from a')", {}),
                aexecute("print('from b')", {}),
            )
        return r.id

    run_id = asyncio.run(agent())
    steps = codetape.Store(home).steps(run_id)
    assert sorted((s.code, s.stdout) for s in steps) == [
        ("print('from a')", "from a\n"),
        ("print('from b')", "from b\n"),
    ]


@pytest.mark.parametrize("param", ["namespace", "state", "globals", "locals", "variables"])
def test_code_action_finds_the_namespace_parameter(home: Path, param: str) -> None:
    scope: dict[str, Any] = {}
    exec(
        f"def run_code(code: str, {param}: dict):\n    exec(code, {param})\n",
        scope,
    )
    action = codetape.code_action(scope["run_code"])
    ns: dict[str, Any] = {"a": 1}
    with codetape.run("bot") as r:
        action("b = a + 1", ns)
    step = codetape.Store(home).step(r.id, 0)
    assert step.code == "b = a + 1"
    assert set(step.variables_before) == {"a"}
    assert step.variables_after["b"].preview == "2"


def test_code_action_unannotated_uses_first_str_argument(home: Path) -> None:
    @codetape.code_action
    def run_code(timeout, code, namespace):  # type: ignore[no-untyped-def]
        exec(code, namespace)

    with codetape.run("bot") as r:
        run_code(5, "x = 'hi'", {})
    step = codetape.Store(home).step(r.id, 0)
    assert step.code == "x = 'hi'"
    assert step.variables_after["x"].preview == "'hi'"


def test_code_action_explicit_code_and_state(home: Path) -> None:
    @codetape.code_action(code="src", state="env")
    def run_code(
        label: str, src: str, env: dict[str, Any], namespace: dict[str, Any] | None = None
    ) -> None:
        exec(src, env)

    decoy: dict[str, Any] = {"decoy": True}
    with codetape.run("bot") as r:
        run_code("step-1", "y = x * 10", {"x": 3}, namespace=decoy)
    step = codetape.Store(home).step(r.id, 0)
    assert step.code == "y = x * 10"
    assert set(step.variables_before) == {"x"}
    assert step.variables_after["y"].preview == "30"


def test_code_action_explicit_names_must_exist() -> None:
    def run_code(src: str, env: dict[str, Any]) -> None: ...

    with pytest.raises(TypeError, match="env2"):
        codetape.code_action(code="src", state="env2")(run_code)


def test_code_action_error_is_reraised_unchanged_and_recorded(home: Path) -> None:
    boom = ValueError("no such order: 42")
    ns: dict[str, Any] = {"boom": boom, "x": 1}

    @codetape.code_action
    def users_executor(code: str, namespace: dict[str, Any]) -> None:
        exec(code, namespace)

    with codetape.run("bot") as r:
        with pytest.raises(ValueError, match="no such order") as info:
            users_executor("x = 2\nprint('before')\nraise boom", ns)
        assert info.value is boom
        execute("y = x", ns)  # the agent carries on with the next step

    steps = codetape.Store(home).steps(r.id)
    assert [s.status for s in steps] == ["error", "ok"]
    step = steps[0]
    assert step.error is not None
    assert step.error.type == "ValueError"
    assert step.error.message == "no such order: 42"
    tb = step.error.traceback
    assert tb is not None
    assert tb.startswith("Traceback (most recent call last):")
    assert tb.rstrip().endswith("ValueError: no such order: 42")
    # The user's frames are there: their executor and the snippet...
    assert "test_tracer.py" in tb
    assert "in users_executor" in tb
    assert 'File "<string>", line 3' in tb
    # ... codetape's own wrapper frames are not.
    assert str(TRACER_DIR) not in tb
    assert "_decorators.py" not in tb
    assert "in wrapper" not in tb
    # A failed step still records its output and the variables after.
    assert step.stdout == "before\n"
    assert step.variables_after["x"].preview == "2"
    assert step.result is None
    run = codetape.Store(home).run(r.id)
    assert (run.status, run.step_count, run.failed_steps) == ("ok", 2, 1)


def test_async_code_action_error_is_reraised_unchanged(home: Path) -> None:
    boom = ZeroDivisionError("async boom")

    async def agent() -> None:
        with codetape.run("bot"):
            await aexecute("raise boom", {"boom": boom})

    with pytest.raises(ZeroDivisionError) as info:
        asyncio.run(agent())
    assert info.value is boom
    run = only_run(home)
    assert run.status == "error"
    step = codetape.Store(home).step(run.id, 0)
    assert step.error is not None
    assert step.error.type == "ZeroDivisionError"
    assert step.error.message == "async boom"


def test_code_action_outside_a_run_is_a_run_of_its_own(home: Path) -> None:
    assert execute("result = 'alone'", {}) == "alone"
    run = only_run(home)
    assert run.name == execute.__qualname__
    assert run.status == "ok"
    assert run.step_count == 1
    step = codetape.Store(home).step(run.id, 0)
    assert step.code == "result = 'alone'"
    assert step.result == "'alone'"


def test_code_action_outside_a_run_that_raises(home: Path) -> None:
    with pytest.raises(NameError):
        execute("undefined_name + 1", {})
    run = only_run(home)
    assert run.status == "error"
    assert (run.step_count, run.failed_steps) == (1, 1)


def test_steps_are_indexed_in_order(home: Path) -> None:
    ns: dict[str, Any] = {}
    with codetape.run("bot") as r:
        for i in range(3):
            execute(f"v{i} = {i}", ns)
    steps = codetape.Store(home).steps(r.id)
    assert [s.index for s in steps] == [0, 1, 2]
    assert [s.code for s in steps] == ["v0 = 0", "v1 = 1", "v2 = 2"]
    assert set(steps[2].variables_before) == {"v0", "v1"}


@pytest.mark.parametrize("size", ["small", "large"])
def test_variables_before_reflect_changes_made_between_steps(home: Path, size: str) -> None:
    # The agent changes a value in place between two code actions; the second step's
    # "before" must be what its code saw, or a replay restores the wrong input. "large"
    # is over the tracer's 1 MiB reuse threshold (tracer/_state.py REUSE_BYTES).
    memory = ["a", "b"] if size == "small" else list(range(300_000))
    ns: dict[str, Any] = {"memory": memory}
    with codetape.run("bot") as r:
        execute("first = memory[0]", ns)
        ns["memory"][0] = "changed"
        execute("seen = memory[0]", ns)
    step = codetape.Store(home).step(r.id, 1)
    assert step.variables_after["seen"].preview == "'changed'"
    assert step.variables_before["memory"].preview.startswith("['changed', ")
    assert step.variables_before["memory"].digest == digest_of(
        cloudpickle.dumps(memory, protocol=PICKLE_PROTOCOL)
    )


# -- @codetape.tool --------------------------------------------------------------------


def test_tool_calls_inside_a_code_action_are_recorded(home: Path) -> None:
    ns: dict[str, Any] = {"add": add}
    with codetape.run("bot") as r:
        assert execute("result = add(1, b=3) + add(10)", ns) == 16
    step = codetape.Store(home).step(r.id, 0)
    assert [(c.name, c.arguments, c.result, c.error) for c in step.tool_calls] == [
        ("add", {"a": 1, "b": 3}, 4, None),
        ("add", {"a": 10}, 12, None),
    ]
    assert len({c.call_id for c in step.tool_calls}) == 2
    assert all(c.duration_ms >= 0 for c in step.tool_calls)
    # Tools are not state.
    assert "add" not in step.variables_before
    assert "add" not in step.variables_after


def test_tool_error_is_recorded_and_reraised_unchanged(home: Path) -> None:
    seen: list[BaseException] = []

    @codetape.code_action
    def run_code(code: str, namespace: dict[str, Any]) -> None:
        try:
            flaky(order_id=7)
        except ToolFailed as exc:
            seen.append(exc)
            raise

    with codetape.run("bot") as r, pytest.raises(ToolFailed) as info:
        run_code("# calls flaky", {})
    assert info.value is seen[0]
    step = codetape.Store(home).step(r.id, 0)
    assert step.status == "error"
    [call] = step.tool_calls
    assert call.name == "flaky"
    assert call.arguments == {"order_id": 7}
    assert call.result is None
    assert call.error is not None
    assert call.error.type.endswith("ToolFailed")
    assert call.error.message == "order 7 is locked"


def test_tool_error_caught_by_the_code(home: Path) -> None:
    ns: dict[str, Any] = {"flaky": flaky, "ToolFailed": ToolFailed}
    code = "try:\n    flaky(3)\nexcept ToolFailed as e:\n    result = str(e)\n"
    with codetape.run("bot") as r:
        assert execute(code, ns) == "order 3 is locked"
    step = codetape.Store(home).step(r.id, 0)
    assert step.status == "ok"
    [call] = step.tool_calls
    assert call.error is not None
    assert call.error.message == "order 3 is locked"


def test_tool_outside_a_code_action_is_not_recorded_but_works(home: Path) -> None:
    assert add(2, 3) == 5  # outside any run
    with pytest.raises(ToolFailed):
        flaky(1)
    with codetape.run("bot") as r:
        assert add(1) == 3  # inside a run, outside a code action
    assert codetape.Store(home).run(r.id).step_count == 0
    assert [s["name"] for s in spans(home)] == ["invoke_agent bot"]


def test_async_tool_in_async_code_action(home: Path) -> None:
    @codetape.code_action
    async def run_code(code: str, namespace: dict[str, Any]) -> list[int]:
        exec(code, namespace)
        result = namespace["result"] = await fetch(namespace["n"])
        return result

    async def agent() -> str:
        with codetape.run("bot") as r:
            assert await run_code("n = 3", {}) == [0, 1, 2]
        assert await fetch(2) == [0, 1]  # outside: works, not recorded
        return r.id

    run_id = asyncio.run(agent())
    step = codetape.Store(home).step(run_id, 0)
    assert [(c.name, c.arguments, c.result) for c in step.tool_calls] == [
        ("_fetch", {"n": 3}, [0, 1, 2])
    ]
    assert len(spans(home)) == 3


def test_tool_with_unjsonable_arguments_is_recorded_by_repr(home: Path) -> None:
    class Receipt:
        def __repr__(self) -> str:
            return "Receipt(7)"

    @codetape.tool
    def describe(items: set[int], *rest: Any, **options: Any) -> object:
        return Receipt()

    with codetape.run("bot") as r:
        execute("result = describe({1}, 2, 3, flag=True)", {"describe": describe})
    [call] = codetape.Store(home).step(r.id, 0).tool_calls
    # Keyword arguments caught by **options are recorded as the call passed them.
    assert call.arguments == {"items": "{1}", "rest": [2, 3], "flag": True}
    assert call.result == "Receipt(7)"


# -- tracing never breaks the agent ----------------------------------------------------


def test_unserializable_variables_are_recorded_not_restorable(home: Path, tmp_path: Path) -> None:
    handle = (tmp_path / "notes.txt").open("w")
    try:
        ns: dict[str, Any] = {
            "fh": handle,
            "gen": (i for i in range(3)),
            "lock": threading.Lock(),
            "count": 1,
        }
        with codetape.run("bot") as r:
            assert execute("count += 1\nresult = count", ns) == 2
    finally:
        handle.close()
    after = codetape.Store(home).step(r.id, 0).variables_after
    expected_types = {"fh": "_io.TextIOWrapper", "gen": "generator", "lock": "_thread.lock"}
    for name, kind in expected_types.items():
        snap = after[name]
        assert snap.type == kind, snap
        assert snap.restorable is False
        assert snap.digest is None
        assert snap.reason
        assert "serializ" in snap.reason
        assert snap.preview
    assert "notes.txt" in after["fh"].preview
    assert after["gen"].preview.startswith("<generator object")
    assert "lock" in after["lock"].preview
    assert after["count"].restorable is True
    assert after["count"].preview == "2"
    assert after["result"].restorable is True


def test_unrepresentable_variable_does_not_break_the_agent(home: Path) -> None:
    class Weird:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

        def __reduce__(self) -> Any:
            raise RuntimeError("no pickle either")

    with codetape.run("bot") as r:
        assert execute("result = 5", {"w": Weird()}) == 5
    snap = codetape.Store(home).step(r.id, 0).variables_after["w"]
    assert snap.restorable is False
    assert "Weird" in snap.preview


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise OSError("disk full")


def test_snapshot_failure_is_logged_once_and_the_agent_carries_on(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_warnings: None,
) -> None:
    monkeypatch.setattr(_state.Snapshotter, "snapshot", _boom)
    caplog.set_level(logging.WARNING, logger="codetape")

    @codetape.agent
    def solve(task: str) -> int:
        ns: dict[str, Any] = {"x": 1}
        total = 0
        for i in range(5):
            total += execute(f"result = x + {i}", ns)
        return total

    assert solve("sum") == 1 + 2 + 3 + 4 + 5
    warnings = codetape_warnings(caplog)
    # One warning per kind of failure (before and after the step), not one per step.
    assert warnings, "the failure was not logged"
    assert len(warnings) == len(set(warnings)) <= 2, warnings
    assert all("snapshotting" in w for w in warnings)
    # The steps themselves are still recorded, without variables.
    run = only_run(home)
    assert (run.status, run.step_count) == ("ok", 5)
    step = codetape.Store(home).step(run.id, 4)
    assert step.result == "5"
    assert step.variables_after == {}


def test_snapshot_failure_raises_in_strict_mode(
    home: Path, strict: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_state.Snapshotter, "snapshot", _boom)
    with codetape.run("bot"), pytest.raises(OSError, match="disk full"):
        execute("x = 1", {"a": 1})


def test_ingest_failure_is_logged_exactly_once(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_warnings: None,
) -> None:
    # Runs are ingested on a background thread when they end.
    monkeypatch.setattr(codetape.store._ingest, "try_ingest", _boom)
    caplog.set_level(logging.WARNING, logger="codetape")
    for i in range(3):
        with codetape.run("bot"):
            assert execute(f"result = {i}", {}) == i
        assert codetape.tracer.internal.runtime().ingester.flush()
    warnings = codetape_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "ingesting" in warnings[0]
    # Nothing is lost: the next reader ingests the spool.
    assert len(codetape.Store(home).runs()) == 3


def test_blob_store_failure_never_breaks_the_agent(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_warnings: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(BlobStore, "put", _boom)
    caplog.set_level(logging.WARNING, logger="codetape")
    ns: dict[str, Any] = {"add": add, "n": 1}

    @codetape.agent
    def solve(task: str) -> int:
        total = 0
        for _ in range(3):
            total += execute("print('working')\nresult = add(n)", ns)
        return total

    assert solve("add up") == 9
    assert capsys.readouterr().out.count("working\n") == 3
    warnings = codetape_warnings(caplog)
    assert warnings
    assert len(warnings) == len(set(warnings)), Counter(warnings)


def test_blob_store_failure_still_records_the_run_outcome(
    home: Path, monkeypatch: pytest.MonkeyPatch, fresh_warnings: None
) -> None:
    # Blobs are where the big values go; without them the spans (with their previews)
    # can still be written. At the very least the run must end: a run that stays
    # "running" forever looks like a hung agent.
    monkeypatch.setattr(BlobStore, "put", _boom)
    with codetape.run("bot") as r:
        execute("result = 1", {})
        r.final_answer = "one"
    monkeypatch.undo()
    run = codetape.Store(home).run(r.id)
    assert run.status == "ok"
    assert run.ended_at is not None


# -- spans -----------------------------------------------------------------------------


def _record_two_steps_and_a_tool() -> str:
    @codetape.agent(name="orders-bot")
    def solve(task: str) -> str:
        ns: dict[str, Any] = {"add": add}
        execute("a = add(1, 2)", ns)
        execute("result = add(a)", ns)
        return "done"

    solve("add things")
    return codetape.Store().runs()[0].id


def test_spans_in_the_store(home: Path) -> None:
    run_id = _record_two_steps_and_a_tool()
    rows = spans(home)
    assert {s["trace_id"] for s in rows} == {run_id}  # run id = trace id
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in rows:
        by_name.setdefault(s["name"], []).append(s)
    assert sorted(by_name) == ["execute_code", "execute_tool add", "invoke_agent orders-bot"]

    [root] = by_name["invoke_agent orders-bot"]
    assert root["parent_id"] is None
    assert root["status"] == "OK"
    assert root["attributes"][A.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert root["attributes"][A.GEN_AI_AGENT_NAME] == "orders-bot"
    assert root["attributes"][A.RUN_TASK] == "add things"
    assert root["attributes"][A.RUN_STATUS] == "ok"

    steps = sorted(by_name["execute_code"], key=lambda s: s["attributes"][A.STEP_INDEX])
    assert [s["attributes"][A.STEP_INDEX] for s in steps] == [0, 1]
    for step in steps:
        assert step["parent_id"] == root["span_id"]
        attrs = step["attributes"]
        assert attrs[A.GEN_AI_OPERATION_NAME] == "execute_code"
        assert attrs[A.STEP_MODE] == "observed"
        assert attrs[A.SANDBOX_BACKEND] == "observed"
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", attrs[A.CODE_DIGEST])

    tools = by_name["execute_tool add"]
    for t in tools:
        attrs = t["attributes"]
        assert attrs[A.GEN_AI_OPERATION_NAME] == "execute_tool"
        assert attrs[A.GEN_AI_TOOL_NAME] == "add"
        assert re.fullmatch(r"[0-9a-f]{16}", attrs[A.GEN_AI_TOOL_CALL_ID])
        assert attrs[A.TOOL_STATUS] == "ok"
    # Each tool call hangs under the step that made it.
    parent_by_args = {t["attributes"][A.GEN_AI_TOOL_CALL_ARGUMENTS]: t["parent_id"] for t in tools}
    assert parent_by_args == {
        '{"a": 1, "b": 2}': steps[0]["span_id"],
        '{"a": 3}': steps[1]["span_id"],
    }


def test_spans_via_an_in_memory_exporter(home: Path, memory_spans: InMemorySpanExporter) -> None:
    run_id = _record_two_steps_and_a_tool()
    finished: tuple[ReadableSpan, ...] = memory_spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    [root] = [s for s in finished if s.parent is None]
    assert root.name == "invoke_agent orders-bot"
    assert f"{root.context.trace_id:032x}" == run_id
    for s in finished:
        assert s.context.trace_id == root.context.trace_id
        if s.name == "execute_code":
            assert s.parent is not None
            assert s.parent.span_id == root.context.span_id
        elif s.name.startswith("execute_tool"):
            assert s.parent is not None
            assert by_id[s.parent.span_id].name == "execute_code"
            assert s.attributes is not None
            assert s.attributes[A.GEN_AI_TOOL_NAME] == "add"
    assert sorted(s.name for s in finished) == [
        "execute_code",
        "execute_code",
        "execute_tool add",
        "execute_tool add",
        "invoke_agent orders-bot",
    ]


def test_error_spans_follow_the_exception_conventions(
    home: Path, memory_spans: InMemorySpanExporter
) -> None:
    with pytest.raises(ValueError, match="bad input"), codetape.run("bot"):
        execute("raise ValueError('bad input')", {})
    finished = memory_spans.get_finished_spans()
    by_name = {s.name: s for s in finished}
    for name in ("execute_code", "invoke_agent bot"):
        span = by_name[name]
        assert span.status.status_code == StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes[A.ERROR_TYPE] == "ValueError"
        [event] = [e for e in span.events if e.name == "exception"]
        assert event.attributes is not None
        assert event.attributes["exception.type"] == "ValueError"
        assert event.attributes["exception.message"] == "bad input"
        assert "ValueError: bad input" in str(event.attributes["exception.stacktrace"])
    assert by_name["execute_code"].attributes[A.STEP_STATUS] == "error"  # type: ignore[index]


# -- round trip ------------------------------------------------------------------------

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 é漢\n'\"\\"
_names = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True).filter(
    lambda n: not keyword.iskeyword(n) and n not in ("print", "result")
)
_scalars = st.one_of(st.integers(-(10**15), 10**15), st.text(_ALPHABET, max_size=30))
_values = st.one_of(_scalars, st.lists(_scalars, max_size=5))


_example = itertools.count()


# Each example records into and reads from a real store (~0.5 s), so no shrinking: a
# failure is reported as generated rather than after minutes of shrinking.
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    variables=st.dictionaries(_names, _values, min_size=1, max_size=5),
    message=st.text(_ALPHABET, max_size=60),
)
def test_round_trip_keeps_every_field(home: Path, variables: dict[str, Any], message: str) -> None:
    # A store per example: Hypothesis reseeds ``random`` for every example, which makes
    # the run ids repeat (see test_seeding_random_does_not_merge_runs).
    example_home = home.parent / f"example-{next(_example)}"
    codetape.configure(home=example_home, otlp=False)
    names = sorted(variables)
    code = "\n".join(f"{n}_copy = {n}" for n in names) + f"\nprint({message!r})\n"
    ns = dict(variables)
    with codetape.run("roundtrip") as r:
        execute(code, ns)
    store = codetape.Store(example_home)
    step = store.step(r.id, 0)
    assert step.code == code
    assert step.stdout == message + "\n"
    assert step.stderr == ""
    assert set(step.variables_before) == set(names)
    assert set(step.variables_after) == set(names) | {f"{n}_copy" for n in names}
    for name in names:
        value = variables[name]
        expected_digest = digest_of(cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL))
        for snap in (step.variables_before[name], step.variables_after[f"{name}_copy"]):
            assert snap.type == type(value).__name__
            assert snap.preview == repr(value)
            assert snap.restorable
            assert snap.digest == expected_digest
        assert checkpoint_values(store, step.state_before)[name] == value
        assert checkpoint_values(store, step.state_after)[f"{name}_copy"] == value


def checkpoint_values(store: codetape.Store, manifest_digest: str | None) -> dict[str, Any]:
    """The variables a recorded state's checkpoint restores, loaded as a sandbox would."""
    assert manifest_digest is not None
    manifest = json.loads(store.blob(manifest_digest))
    point = manifest["checkpoint"]
    assert manifest["complete"], point
    large = {label: store.blob(key) for label, key in point["large"].items()}
    codec = state_codec.Codec(cloudpickle)
    restored: dict[str, Any] = codec.restore(store.blob(point["digest"]), large, {})["values"]
    return restored


def test_seeding_random_does_not_merge_runs(home: Path) -> None:
    # Code actions run in the agent's process, and data code seeds ``random`` all the
    # time. Run ids (trace ids) must stay unique anyway, or runs overwrite each other.
    saved = random.getstate()
    try:
        ids = []
        for task in ("first", "second", "third"):
            with codetape.run("bot", task=task) as r:
                execute(f"import random\nrandom.seed(42)\nresult = {task!r}", {})
            ids.append(r.id)
    finally:
        random.setstate(saved)
    assert len(set(ids)) == 3, ids
    store = codetape.Store(home)
    assert sorted((run.task for run in store.runs()), key=str) == ["first", "second", "third"]
    for run_id, task in zip(ids, ("first", "second", "third"), strict=True):
        assert store.step(run_id, 0).result == repr(task)


# -- docs ------------------------------------------------------------------------------


def test_semconv_doc_lists_every_attribute() -> None:
    doc = (ROOT / "docs" / "semconv.md").read_text(encoding="utf-8")
    constants = {
        name: value for name, value in vars(A).items() if name.isupper() and isinstance(value, str)
    }
    assert len(constants) > 40  # the module was read, not an empty namespace
    in_code_spans = set(re.findall(r"`([^`]+)`", doc))
    missing = {name: value for name, value in constants.items() if value not in in_code_spans}
    assert not missing, f"docs/semconv.md does not document: {missing}"

    # And the other way: every attribute row in the doc is a real name.
    documented = set(re.findall(r"^\| `([a-z_]+(?:\.[a-z_]+)+)` \|", doc, flags=re.M))
    known = set(constants.values()) | {
        "exception.type",
        "exception.message",
        "exception.stacktrace",
        "service.name",
    }
    assert documented, "no attribute tables found in docs/semconv.md"
    assert documented <= known, f"documented but not defined: {documented - known}"
