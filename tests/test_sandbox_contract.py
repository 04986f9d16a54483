"""The contract every sandbox backend keeps (DESIGN.md, "Execution modes"): one test
class, run against the hardened Docker backend and the unisolated local backend.

The docker parameter needs a running Docker engine and the offline sandbox image: it
skips without them, and fails under ``CI=true``. The local parameter always runs, and
expects the ``NoIsolationWarning`` that backend must give.
"""

from __future__ import annotations

import gc
import itertools
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import codetape
from codetape import Limits, Sandbox, StepResult
from codetape.sandbox import NoIsolationWarning, OpaqueValue
from codetape.schemas import VariableSnapshot
from codetape.tracer.internal import current_run

from . import sandbox_fixtures as fx

# Fixtures shared with test_sandbox_hardening.py.
_docker_session = fx._docker_session
docker_api = fx.docker_api
docker_image = fx.docker_image


LIMITS = Limits(timeout_s=20, memory="256m", pids=64, tmpfs="16m", output_bytes=100_000)


# -- host tools ----------------------------------------------------------------------------


class OrderLocked(Exception):
    """A host-side exception type the sandbox has never heard of."""


class Tools:
    """Host functions exposed to the code, counting what reaches the host."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def all(self) -> list[Callable[..., Any]]:
        calls = self.calls

        def add(a: int, b: int = 2) -> int:
            calls.append(("add", (a, b), {}))
            return a + b

        def greet(name: str, *, punct: str = "!") -> str:
            calls.append(("greet", (name,), {"punct": punct}))
            return f"Hello {name}{punct}"

        def lock(order_id: int) -> dict[str, Any]:
            calls.append(("lock", (order_id,), {}))
            raise OrderLocked(f"order {order_id} is locked")

        def check_qty(qty: int) -> int:
            calls.append(("check_qty", (qty,), {}))
            if qty < 0:
                raise ValueError(f"negative quantity: {qty}")
            return qty

        return [add, greet, lock, check_qty]


SandboxFactory = Callable[..., Sandbox]


@pytest.fixture(params=[pytest.param("docker", marks=pytest.mark.docker), "local"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def new_sandbox(
    backend: str, request: pytest.FixtureRequest, home: Path, strict: None
) -> Iterator[SandboxFactory]:
    """Makes sandboxes of the backend under test; closes them all at the end."""
    image = request.getfixturevalue("docker_image") if backend == "docker" else None
    made: list[Sandbox] = []

    def make(tools: Any = (), limits: Limits = LIMITS) -> Sandbox:
        if backend == "local":
            with pytest.warns(NoIsolationWarning):
                sb = Sandbox(backend="local", tools=tools, limits=limits)
        else:
            sb = Sandbox(image=image, tools=tools, limits=limits)
        made.append(sb)
        return sb

    yield make
    for sb in made:
        sb.close()


def ok(result: StepResult) -> StepResult:
    assert result.status == "ok", (result.status, result.error)
    return result


def digests(variables: Mapping[str, VariableSnapshot]) -> dict[str, str | None]:
    return {name: var.digest for name, var in variables.items()}


_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)$', re.M)


class TestSandboxContract:
    # -- state -------------------------------------------------------------------------

    def test_functions_classes_and_closures_persist_between_runs(
        self, new_sandbox: SandboxFactory
    ) -> None:
        with codetape.run("state"), new_sandbox() as sb:
            ok(
                sb.run(
                    "import math\n"
                    "def area(r):\n"
                    "    return math.pi * r * r\n"
                    "class Counter:\n"
                    "    def __init__(self):\n"
                    "        self.n = 0\n"
                    "    def bump(self):\n"
                    "        self.n += 1\n"
                    "        return self.n\n"
                    "def make_adder(k):\n"
                    "    def adder(x):\n"
                    "        return x + k\n"
                    "    return adder\n"
                    "add5 = make_adder(5)\n"
                    "c = Counter()\n"
                    "c.bump()"
                )
            )
            later = ok(sb.run("(round(area(1), 4), c.bump(), add5(10), type(c).__name__)"))
        assert later.result == "(3.1416, 2, 15, 'Counter')"

    def test_functions_classes_and_closures_survive_a_replaced_runner(
        self, new_sandbox: SandboxFactory
    ) -> None:
        """After a timeout the runner is replaced and the last good state restored from
        its pickles: what earlier steps defined still works."""
        quick = Limits(timeout_s=2, memory="256m", pids=64, tmpfs="16m", output_bytes=100_000)
        with codetape.run("restore"), new_sandbox(limits=quick) as sb:
            ok(
                sb.run(
                    "class Counter:\n"
                    "    def __init__(self):\n"
                    "        self.n = 0\n"
                    "    def bump(self):\n"
                    "        self.n += 1\n"
                    "        return self.n\n"
                    "def make_adder(k):\n"
                    "    return lambda x: x + k\n"
                    "add5 = make_adder(5)\n"
                    "c = Counter()\n"
                    "c.bump()"
                )
            )
            stuck = sb.run("while True:\n    pass")
            later = sb.run("(c.bump(), add5(10), Counter().bump(), make_adder(1)(1))")
        assert stuck.status == "timeout"
        assert ok(later).result == "(2, 15, 1, 2)"

    def test_last_expression_is_the_result_like_a_repl(self, new_sandbox: SandboxFactory) -> None:
        with codetape.run("repl") as run, new_sandbox() as sb:
            number = ok(sb.run("x = 20\nx * 2 + 2"))
            text = ok(sb.run("'a' + 'b'"))
            listed = ok(sb.run("[x, {'k': None}]"))
            statement = ok(sb.run("y = x"))
            nothing = ok(sb.run("None"))
            printed = ok(sb.run("print('p')"))
        assert (number.result, number.result_type) == ("42", "int")
        assert (text.result, text.result_type) == ("'ab'", "str")
        assert (listed.result, listed.result_type) == ("[20, {'k': None}]", "list")
        assert statement.result is None
        assert nothing.result is None
        assert printed.result is None
        assert printed.stdout == "p\n"
        recorded = codetape.Store().step(run.id, 0)
        assert (recorded.result, recorded.result_type) == ("42", "int")

    def test_print_goes_to_stdout_and_stderr_to_stderr(self, new_sandbox: SandboxFactory) -> None:
        with codetape.run("streams") as run, new_sandbox() as sb:
            both = ok(
                sb.run(
                    "import sys\n"
                    "print('to out', 1)\n"
                    "print('to err', file=sys.stderr)\n"
                    "sys.stdout.write('more out\\n')\n"
                    "sys.stderr.write('more err\\n')"
                )
            )
            quiet = ok(sb.run("z = 1"))
        assert both.stdout == "to out 1\nmore out\n"
        assert both.stderr == "to err\nmore err\n"
        assert (quiet.stdout, quiet.stderr) == ("", "")
        recorded = codetape.Store().step(run.id, 0)
        assert (recorded.stdout, recorded.stderr) == (both.stdout, both.stderr)

    def test_exception_is_an_error_with_the_users_traceback(
        self, new_sandbox: SandboxFactory
    ) -> None:
        code = "def ratio(a, b):\n    return a / b\n\nvalue = 1\nratio(value, 0)\n"
        with codetape.run("boom") as run, new_sandbox() as sb:
            failed = sb.run(code)
            after = ok(sb.run("value + 1"))  # the sandbox lives on
        assert failed.status == "error"
        assert failed.error is not None
        assert failed.error.type == "ZeroDivisionError"
        assert failed.error.message == "division by zero"
        tb = failed.error.traceback
        assert tb is not None
        frames = [(m["file"], int(m["line"]), m["func"]) for m in _FRAME.finditer(tb)]
        # Exactly the user's two frames, innermost last, at the user's lines.
        assert [(line, func) for _, line, func in frames] == [(5, "<module>"), (2, "ratio")], tb
        assert len({file for file, _, _ in frames}) == 1, tb
        for runner_trace in ("<string>", "_runner", "codetape", "serve", "exec("):
            assert runner_trace not in tb, (runner_trace, tb)
        assert tb.rstrip().endswith("ZeroDivisionError: division by zero")
        assert after.result == "2"
        recorded = codetape.Store().step(run.id, 0)
        assert recorded.status == "error"
        assert recorded.error is not None
        assert (recorded.error.type, recorded.error.message) == (
            "ZeroDivisionError",
            "division by zero",
        )
        assert recorded.error.traceback == tb

    def test_a_syntax_error_points_at_the_users_line_without_runner_frames(
        self, new_sandbox: SandboxFactory
    ) -> None:
        with codetape.run("syntax"), new_sandbox() as sb:
            failed = sb.run("x = 1\ny = (\n")
        assert failed.status == "error"
        assert failed.error is not None
        assert failed.error.type == "SyntaxError"
        tb = failed.error.traceback
        assert tb is not None
        frames = [(m["file"], m["line"]) for m in _FRAME.finditer(tb)]
        assert frames == [], f"the runner's own frames (its parse call) leak: {tb}"
        assert re.search(r'^  File "[^"]+", line 2$', tb, re.M), tb
        assert "ast.py" not in tb, tb
        assert "<string>" not in tb, tb

    def test_final_answer_ends_the_action_with_its_value(self, new_sandbox: SandboxFactory) -> None:
        with codetape.run("answers") as run, new_sandbox() as sb:
            none = sb.run("final_answer(None)")
            not_json = sb.run("final_answer({3})")
            as_json = sb.run("final_answer({'total': [1, 2.5, 'x', None]})\nprint('not reached')")
            plain = sb.run("7")
        assert ok(as_json).has_final_answer
        assert as_json.final_answer == {"total": [1, 2.5, "x", None]}
        assert "not reached" not in as_json.stdout
        assert ok(not_json).has_final_answer
        assert not_json.final_answer == {3}  # a set, not its repr
        assert (not_json.result, not_json.result_type) == ("{3}", "set")
        assert ok(none).has_final_answer
        assert none.final_answer is None
        assert not ok(plain).has_final_answer
        recorded = codetape.Store().run(run.id).final_answer  # the last one given
        assert recorded is not None
        assert "total" in recorded

    # -- tools -------------------------------------------------------------------------

    def test_host_tools_are_callable_by_name_with_positional_and_keyword_args(
        self, new_sandbox: SandboxFactory
    ) -> None:
        tools = Tools()
        with codetape.run("tools"), new_sandbox(tools=tools.all()) as sb:
            called = ok(
                sb.run(
                    "r1 = add(1, 2)\n"
                    "r2 = add(a=3, b=4)\n"
                    "r3 = add(5)\n"
                    "r4 = greet('Ann', punct='?')\n"
                    "(r1, r2, r3, r4)"
                )
            )
        assert called.result == "(3, 7, 7, 'Hello Ann?')"
        assert tools.calls == [
            ("add", (1, 2), {}),
            ("add", (3, 4), {}),
            ("add", (5, 2), {}),
            ("greet", ("Ann",), {"punct": "?"}),
        ]

    def test_a_host_tool_exception_surfaces_inside_by_type_name_and_message(
        self, new_sandbox: SandboxFactory
    ) -> None:
        tools = Tools()
        with codetape.run("tool-errors"), new_sandbox(tools=tools.all()) as sb:
            caught = ok(
                sb.run(
                    "try:\n"
                    "    lock(7)\n"
                    "except Exception as exc:\n"
                    "    custom = (type(exc).__name__, str(exc))\n"
                    "try:\n"
                    "    check_qty(-1)\n"
                    "except ValueError as exc:  # a builtin type stays catchable as itself\n"
                    "    builtin = (type(exc).__name__, str(exc))\n"
                    "(custom, builtin)"
                )
            )
            uncaught = sb.run("lock(8)")
        assert caught.result == (
            "(('OrderLocked', 'order 7 is locked'), ('ValueError', 'negative quantity: -1'))"
        )
        assert uncaught.status == "error"
        assert uncaught.error is not None
        # Qualified as the tool call records it: the same name recorded and replayed.
        assert uncaught.error.type.rsplit(".", 1)[-1] == "OrderLocked"
        assert uncaught.error.type == f"{__name__}.OrderLocked"
        assert "order 8 is locked" in uncaught.error.message

    def test_tool_arguments_without_an_encoding_reach_the_host_as_their_marked_repr(
        self, new_sandbox: SandboxFactory
    ) -> None:
        tools = Tools()
        with codetape.run("tool-args"), new_sandbox(tools=tools.all()) as sb:
            as_object = sb.run(
                "class Order:\n    def __repr__(self):\n        return 'Order(7)'\ngreet(Order())"
            )
            as_complex = sb.run("add(1j, b=1)")  # a tagged type: it arrives as itself
        marked = "[codetape: a __main__.Order, sent as its repr] Order(7)"
        assert ok(as_object).result == repr(f"Hello {marked}!")
        received = tools.calls[0][1][0]
        assert isinstance(received, OpaqueValue)
        assert (received.type_name, received.text) == ("__main__.Order", "Order(7)")
        assert ok(as_complex).result == "(1+1j)"
        assert tools.calls[1] == ("add", (1j, 1), {})

    def test_every_tool_call_is_recorded_with_arguments_by_name(
        self, new_sandbox: SandboxFactory
    ) -> None:
        tools = Tools()
        with codetape.run("tool-records") as run, new_sandbox(tools=tools.all()) as sb:
            ok(
                sb.run(
                    "add(1, 2)\n"
                    "add(a=3, b=4)\n"
                    "greet('Ann', punct='?')\n"
                    "try:\n"
                    "    lock(7)\n"
                    "except Exception:\n"
                    "    pass\n"
                    "'done'"
                )
            )
            ok(sb.run("check_qty(qty=5)"))
        store = codetape.Store()
        first = store.step(run.id, 0).tool_calls
        assert [c.name for c in first] == ["add", "add", "greet", "lock"]
        assert [c.arguments for c in first] == [
            {"a": 1, "b": 2},
            {"a": 3, "b": 4},
            {"name": "Ann", "punct": "?"},
            {"order_id": 7},
        ]
        assert [c.result for c in first[:3]] == [3, 7, "Hello Ann?"]
        assert [c.error for c in first[:3]] == [None, None, None]
        failed = first[3]
        assert failed.result is None
        assert failed.error is not None
        assert failed.error.type.rsplit(".", 1)[-1] == "OrderLocked"
        assert failed.error.message == "order 7 is locked"
        assert len({c.call_id for c in first}) == 4
        second = store.step(run.id, 1).tool_calls
        assert [(c.name, c.arguments, c.result) for c in second] == [("check_qty", {"qty": 5}, 5)]

    # -- variables ---------------------------------------------------------------------

    def test_send_variables_seeds_the_namespace_and_variables_previews_it(
        self, new_sandbox: SandboxFactory
    ) -> None:
        with codetape.run("seed") as run, new_sandbox() as sb:
            sb.send_variables({"orders": [{"id": 1, "qty": 2}, {"id": 2, "qty": 3}], "rate": 1.5})
            seeded = sb.variables
            total = ok(sb.run("sum(o['qty'] for o in orders) * rate"))
        assert set(seeded) == {"orders", "rate"}
        assert seeded["rate"].preview == "1.5"
        assert seeded["rate"].type == "float"
        assert seeded["orders"].type == "list"
        assert "'qty': 3" in seeded["orders"].preview
        assert all(v.restorable and v.digest for v in seeded.values())
        assert total.result == "7.5"
        recorded = codetape.Store().step(run.id, 0)
        assert digests(recorded.variables_before) == digests(seeded)

    def test_variables_before_a_step_are_the_variables_after_the_previous_one(
        self, new_sandbox: SandboxFactory
    ) -> None:
        codes = ["a = 1", "b = a + 1", "d = 4\n1 / 0", "a = 10\ndel b", "c = [a, d]"]
        with codetape.run("chain") as run, new_sandbox() as sb:
            results = [sb.run(code) for code in codes]
        assert [r.status for r in results] == ["ok", "ok", "error", "ok", "ok"]
        steps = codetape.Store().steps(run.id)
        assert [s.index for s in steps] == list(range(len(codes)))
        for previous, step in itertools.pairwise(steps):
            assert digests(step.variables_before) == digests(previous.variables_after), step.index
        after = [set(s.variables_after) for s in steps]
        assert after == [{"a"}, {"a", "b"}, {"a", "b", "d"}, {"a", "d"}, {"a", "c", "d"}]
        assert steps[3].variables_after["a"].digest != steps[2].variables_after["a"].digest
        assert steps[4].variables_after["a"].digest == steps[3].variables_after["a"].digest
        assert digests(results[-1].variables) == digests(steps[-1].variables_after)

    def test_unpicklable_variables_are_recorded_not_restorable_and_the_step_succeeds(
        self, new_sandbox: SandboxFactory
    ) -> None:
        with codetape.run("unpicklable") as run, new_sandbox() as sb:
            made = sb.run(
                "squares = (i * i for i in range(4))\n"
                "log = open('codetape-contract.log', 'w')\n"
                "kept = {'n': 1}"
            )
            used = ok(sb.run("log.write('x')\n(next(squares), next(squares))"))
        assert made.status == "ok", made.error
        for name in ("squares", "log"):
            var = made.variables[name]
            assert var.restorable is False, var
            assert var.digest is None, var
            assert var.reason, var
        assert made.variables["kept"].restorable is True
        assert made.variables["squares"].type == "generator"
        assert used.result == "(0, 1)"
        recorded = codetape.Store().step(run.id, 0)
        assert recorded.status == "ok"
        for name in ("squares", "log"):
            assert recorded.variables_after[name].restorable is False
            assert recorded.variables_after[name].reason
        assert recorded.variables_after["kept"].restorable is True

    # -- recording ---------------------------------------------------------------------

    def test_a_run_call_outside_any_run_is_recorded_as_a_run_of_its_own(
        self, new_sandbox: SandboxFactory
    ) -> None:
        assert current_run() is None
        with new_sandbox() as sb:
            first = ok(sb.run("x = 1"))
            second = ok(sb.run("x + 1"))
        assert first.run_id
        assert second.run_id
        assert first.run_id != second.run_id
        assert (first.index, second.index) == (0, 0)
        assert second.result == "2"
        store = codetape.Store()
        for result, code in ((first, "x = 1"), (second, "x + 1")):
            run = store.run(result.run_id)
            assert run.status == "ok"
            assert run.step_count == 1
            assert store.step(result.run_id, 0).code == code

    def test_the_backend_is_recorded(self, backend: str, new_sandbox: SandboxFactory) -> None:
        with codetape.run("which") as run, new_sandbox() as sb:
            ok(sb.run("1"))
        spec = codetape.Store().step(run.id, 0).sandbox
        assert spec.backend == backend
        assert spec.python

    def test_closing_releases_the_runner_pipes(self, new_sandbox: SandboxFactory) -> None:
        """close() must close the runner's stdin/stdout/stderr, not leave them for the
        garbage collector."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            with codetape.run("pipes"):
                sb = new_sandbox()
                ok(sb.run("1"))
                sb.close()
            del sb
            gc.collect()
        leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert leaked == [], leaked


# -- the local backend says that it does not isolate ---------------------------------------


def test_local_backend_warns_and_records_backend_local(home: Path, strict: None) -> None:
    with pytest.warns(NoIsolationWarning, match="isolation"):
        sb = Sandbox(backend="local", limits=LIMITS)
    with codetape.run("local") as run, sb:
        ok(sb.run("1 + 1"))
    spec = codetape.Store().step(run.id, 0).sandbox
    assert spec.backend == "local"
    assert spec.image is None
    assert spec.image_id is None


def test_the_no_isolation_warning_points_at_the_callers_line(home: Path) -> None:
    with pytest.warns(NoIsolationWarning) as caught:
        sb = Sandbox(backend="local", limits=LIMITS)
    sb.close()
    assert [Path(w.filename).name for w in caught] == [Path(__file__).name]


@pytest.mark.docker
def test_a_sandbox_that_cannot_start_marks_its_own_run_failed(
    home: Path, docker_image: str
) -> None:
    """Outside any run, ``run`` records a run of its own: when the container cannot
    start (Docker refuses a 1 MB memory limit), that run is an error, not ``ok``."""
    sb = Sandbox(image=docker_image, limits=Limits(memory="1m"))
    with pytest.raises(codetape.errors.SandboxError, match="did not start"):
        sb.run("x = 1")
    (run,) = codetape.Store().runs()
    assert (run.name, run.status) == ("sandbox", "error")
    error = codetape.Store().run(run.id).error
    assert error is not None
    assert "did not start" in error.message


def test_the_sandbox_alone_executes_and_records_nothing(home: Path) -> None:
    """``codetape.sandbox.Sandbox`` returns an outcome; no run, step or span is stored."""
    with pytest.warns(NoIsolationWarning):
        sb = codetape.sandbox.Sandbox(backend="local", tools=[len], limits=LIMITS)
    with sb:
        outcome = sb.execute("n = len([1, 2, 3])\nprint('hi')\nn * 2", seed=7)
    assert (outcome.status, outcome.stdout, outcome.result) == ("ok", "hi\n", "6")
    assert [(c.name, c.args, c.result) for c in outcome.tool_calls] == [("len", [[1, 2, 3]], 3)]
    assert outcome.state is not None
    assert outcome.state.variables["n"].preview == "3"
    assert codetape.Store().runs() == []
