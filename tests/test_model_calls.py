"""Model calls: ``@codetape.llm``, ``codetape.record_llm_call`` and a smolagents agent's
``generate``/``generate_stream`` under ``instrument(agent)``, each a ``chat {model}``
span with redacted message blobs, tokens and cost; each step linked to the call its
code came from, with its thought; a run started under a caller's span links to it.
Read back through ``codetape.Store``; smolagents is real, driven by scripted models.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from smolagents import CodeAgent, Model
from smolagents.models import ChatMessage, ChatMessageStreamDelta, MessageRole
from smolagents.monitoring import TokenUsage

import codetape
from codetape.integrations.smolagents import instrument, uninstrument
from codetape.schemas import LlmCall, Run, Step
from codetape.schemas import attributes as A
from tests.trajectory_fixtures import ScriptedModel, get_orders, make_agent, refund


@pytest.fixture
def recording(home: Path, strict: None) -> Path:
    return home


def only_run() -> tuple[Run, list[Step], list[LlmCall]]:
    store = codetape.Store()
    runs = store.runs()
    assert len(runs) == 1, runs
    detail = store.detail(runs[0].id)
    return detail.run, detail.steps, detail.llm_calls


def chat_spans(home: Path) -> list[dict[str, Any]]:
    store = codetape.Store(home)
    rows = store._query(
        "SELECT name, attributes FROM spans WHERE starts_with(name, 'chat ') ORDER BY start_ns"
    )
    return [{"name": name, **json.loads(attrs)} for name, attrs in rows]


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> None:
    exec(code, namespace)


# -- @codetape.llm and record_llm_call ------------------------------------------------------


class Reply:
    """A provider SDK's response: content, usage, the model that answered, why it stopped."""

    def __init__(self, content: str, usage: dict[str, int], model: str, finish: str) -> None:
        self.content = content
        self.usage = usage
        self.model = model
        self.finish_reason = finish


ANSWER = "Thought: add the two numbers.\n```py\ntotal = 40 + 2\n```"


@codetape.llm(model="gpt-4o")
def ask(messages: list[dict[str, str]]) -> Reply:
    return Reply(
        ANSWER, {"prompt_tokens": 120, "completion_tokens": 30}, "gpt-4o-2024-08-06", "stop"
    )


def test_a_decorated_model_call_is_a_chat_span_the_next_step_came_from(recording: Path) -> None:
    ns: dict[str, Any] = {}
    messages = [
        {"role": "system", "content": "You write Python."},
        {"role": "user", "content": "Add 40 and 2"},
    ]
    with codetape.run("adder", task="add"):
        reply = ask(messages)
        execute("total = 40 + 2", ns)
    assert reply.content == ANSWER  # the function's own return value, untouched
    run, steps, calls = only_run()
    (call,) = calls
    assert (call.model, call.response_model) == ("gpt-4o", "gpt-4o-2024-08-06")
    assert (call.input_tokens, call.output_tokens, call.finish_reasons) == (120, 30, ["stop"])
    assert [(m.role, m.content) for m in call.input_messages] == [
        ("system", "You write Python."),
        ("user", "Add 40 and 2"),
    ]
    assert call.output == ANSWER
    assert steps[0].llm_call == call.span_id
    assert steps[0].thought == "Thought: add the two numbers."
    assert (run.llm_calls, run.input_tokens, run.output_tokens) == (1, 120, 30)
    (span,) = chat_spans(recording)
    assert span["name"] == "chat gpt-4o"
    assert span[A.GEN_AI_OPERATION_NAME] == "chat"
    assert span[A.GEN_AI_REQUEST_MODEL] == "gpt-4o"
    # Messages are blobs; the span carries previews only.
    assert "You write Python." not in json.dumps(span)
    assert span[A.LLM_INPUT_PREVIEW] == "Add 40 and 2"


def test_async_model_calls_and_plain_strings_are_recorded(recording: Path) -> None:
    @codetape.llm
    async def complete(prompt: str, model: str = "claude-x") -> str:
        await asyncio.sleep(0)
        return "Thought: print it.\n<code>\nprint('hi')\n</code>"

    async def loop() -> None:
        with codetape.run("printer", task="say hi"):
            await complete("Say hi")
            execute("print('hi')", {})

    asyncio.run(loop())
    _, steps, calls = only_run()
    assert [(c.model, c.output, c.input_messages[0].content) for c in calls] == [
        ("claude-x", "Thought: print it.\n<code>\nprint('hi')\n</code>", "Say hi")
    ]
    assert (steps[0].llm_call, steps[0].thought) == (calls[0].span_id, "Thought: print it.")


def test_a_model_call_that_raises_is_recorded_and_the_error_reaches_the_caller(
    recording: Path,
) -> None:
    @codetape.llm(model="flaky")
    def call(messages: list[dict[str, str]]) -> str:
        raise TimeoutError("the provider did not answer in 30s")

    with codetape.run("bot"), pytest.raises(TimeoutError):
        call([{"role": "user", "content": "hi"}])
    _, _, calls = only_run()
    assert calls[0].error is not None
    assert (calls[0].error.type, calls[0].error.message) == (
        "TimeoutError",
        "the provider did not answer in 30s",
    )


def test_record_llm_call_backdates_the_call_and_prices_make_a_cost(recording: Path) -> None:
    codetape.configure(
        home=recording,
        otlp=False,
        prices={"gpt-4o*": (2.5, 10.0), "mini": {"input": 0.15, "output": 0.6}},
    )
    with codetape.run("bot"):
        codetape.record_llm_call(
            model="gpt-4o",
            messages="first",
            output="one",
            usage=(1_000_000, 100_000),
            duration_ms=250,
        )
        codetape.record_llm_call(
            model="mini",
            messages="second",
            output="two",
            usage={"input_tokens": 2_000_000, "output_tokens": 0},
        )
        codetape.record_llm_call(model="unpriced", messages="third", output="three")
    run, _, calls = only_run()
    assert [c.cost for c in calls] == [pytest.approx(3.5), pytest.approx(0.3), None]
    assert run.cost == pytest.approx(3.8)
    assert (run.input_tokens, run.output_tokens) == (3_000_000, 100_000)
    assert calls[0].duration_ms >= 250
    assert [c.index for c in calls] == [0, 1, 2]


def test_bad_prices_are_refused_with_what_to_give(home: Path) -> None:
    with pytest.raises(codetape.errors.ConfigError, match=r"per million tokens"):
        codetape.configure(home=home, otlp=False, prices={"gpt-4o": "cheap"})  # type: ignore[dict-item]


def test_a_model_call_outside_any_run_says_once_how_to_record_it(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from codetape.tracer import _llm

    _llm._warned_outside_run = False
    ask([{"role": "user", "content": "hi"}])
    ask([{"role": "user", "content": "again"}])
    warnings = [r.getMessage() for r in caplog.records if "outside any run" in r.getMessage()]
    assert len(warnings) == 1
    assert "codetape.run(" in warnings[0]
    assert codetape.Store().runs() == []


def _canary() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))


def test_secrets_in_messages_and_outputs_are_never_at_rest(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary, key = _canary(), "sk-proj-" + _canary()
    monkeypatch.setenv("SHOP_API_TOKEN", canary)
    codetape.configure(home=home, otlp=False)

    @codetape.llm(model="m")
    def leaky(messages: list[dict[str, str]]) -> str:
        return f"Thought: use {canary} and {key}\n```py\nx = 1\n```"

    with codetape.run("bot"):
        leaky([{"role": "user", "content": f"token {canary}, key {key}"}])
        execute("x = 1", {})
    _, steps, calls = only_run()
    assert "[REDACTED:env:SHOP_API_TOKEN]" in calls[0].input_messages[0].content
    assert "[REDACTED:openai_key]" in calls[0].output
    assert "[REDACTED" in (steps[0].thought or "")
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert canary.encode() not in data, path
            assert key.encode() not in data, path


# -- the caller's trace ---------------------------------------------------------------------


def test_a_run_started_under_a_callers_span_links_to_it_and_stays_its_own_trace(
    recording: Path,
) -> None:
    tracer = TracerProvider().get_tracer("web-app")
    with tracer.start_as_current_span("POST /refund") as request, codetape.run("bot") as run:
        pass
    context = request.get_span_context()
    assert run.id != f"{context.trace_id:032x}"  # a run is a trace of its own
    (row,) = codetape.Store()._query(
        "SELECT attributes FROM spans WHERE trace_id = ? AND parent_id IS NULL", [run.id]
    )
    attrs = json.loads(row[0])
    assert attrs[A.PARENT_TRACE_ID] == f"{context.trace_id:032x}"
    assert attrs[A.PARENT_SPAN_ID] == f"{context.span_id:016x}"


def test_a_run_with_no_current_span_has_no_parent(recording: Path) -> None:
    with codetape.run("bot") as run:
        pass
    (row,) = codetape.Store()._query("SELECT attributes FROM spans WHERE trace_id = ?", [run.id])
    assert A.PARENT_TRACE_ID not in json.loads(row[0])


# -- smolagents: generate and generate_stream ------------------------------------------------


SCRIPT = [
    ("Thought: I need the orders first.", "orders = get_orders()\nprint(len(orders))"),
    ("Thought: refund the first one.", "r = refund(orders[0]['id'])"),
    ("Thought: done.", "final_answer(r['status'])"),
]


def test_an_agent_run_records_each_model_call_and_the_call_each_step_came_from(
    recording: Path,
) -> None:
    agent = make_agent(SCRIPT)
    assert agent.run("Refund the first order") == "refunded"
    run, steps, calls = only_run()
    assert len(calls) == 3
    assert [s.llm_call for s in steps] == [c.span_id for c in calls]
    assert [s.thought for s in steps] == [t for t, _ in SCRIPT]
    assert all(c.model == "scripted-model" for c in calls)
    # What the agent showed the model: its system prompt, the task, then its memory.
    assert calls[0].input_messages[0].role == "system"
    assert "Refund the first order" in calls[0].input_messages[1].content
    assert any("Observation" in m.content for m in calls[2].input_messages)
    assert (run.input_tokens, run.output_tokens) == (
        sum(c.input_tokens or 0 for c in calls),
        sum(len(code) for _, code in SCRIPT),
    )


class StreamingModel(ScriptedModel):
    """Streams its reply in pieces, the usage on the last delta, as providers do."""

    def generate_stream(
        self, messages: list[Any], stop_sequences: Any = None, **kwargs: Any
    ) -> Iterator[Any]:
        thought, code = self.script.pop(0)
        text = f"{thought}\n<code>\n{code}\n</code>"
        for i in range(0, len(text), 7):
            yield ChatMessageStreamDelta(content=text[i : i + 7])
        yield ChatMessageStreamDelta(
            content="", token_usage=TokenUsage(input_tokens=50, output_tokens=9)
        )


def test_a_streaming_agent_records_the_whole_streamed_output(recording: Path) -> None:
    agent = instrument(
        CodeAgent(
            tools=[get_orders, refund],
            model=StreamingModel(SCRIPT),
            stream_outputs=True,
            verbosity_level=-1,
        )
    )
    assert agent.run("Refund the first order") == "refunded"
    run, steps, calls = only_run()
    assert [c.streamed for c in calls] == [True, True, True]
    assert calls[1].output == f"{SCRIPT[1][0]}\n<code>\n{SCRIPT[1][1]}\n</code>"
    assert [s.thought for s in steps] == [t for t, _ in SCRIPT]
    assert (run.input_tokens, run.output_tokens) == (150, 27)


def test_uninstrument_stops_recording_model_calls(recording: Path) -> None:
    agent = uninstrument(make_agent(SCRIPT))
    model = agent.model
    assert "generate" not in vars(model)
    with codetape.run("outer"):
        model.generate([ChatMessage(role=MessageRole.USER, content="hi")])
    _, _, calls = only_run()
    assert calls == []


def test_two_runs_that_diverge_because_the_model_answered_differently(recording: Path) -> None:
    first = make_agent(SCRIPT)
    first.run("Refund the first order")
    other = [
        SCRIPT[0],
        ("Thought: refund the LAST one instead.", "r = refund(orders[0]['id'])"),
        SCRIPT[2],
    ]
    make_agent(other).run("Refund the first order")
    store = codetape.Store()
    b, a = store.runs()
    diff = codetape.diff_runs(a.id, b.id)
    assert diff.first_divergence == 1
    pair = diff.pairs[1]
    assert pair.code_diff == []  # the same code: only the model's answer differs
    assert pair.model_output_differs
    assert "+Thought: refund the LAST one instead." in pair.thought_diff


class ToolCallingStyle(Model):  # type: ignore[misc]
    """A model whose whole answer is code (no thought around it)."""

    def generate(self, messages: list[Any], stop_sequences: Any = None, **kwargs: Any) -> Any:
        return ChatMessage(role=MessageRole.ASSISTANT, content="<code>\nfinal_answer(1)\n</code>")


def test_a_step_whose_model_wrote_only_code_has_no_thought(recording: Path) -> None:
    agent = instrument(
        CodeAgent(tools=[], model=ToolCallingStyle(model_id="bare"), verbosity_level=-1)
    )
    agent.run("one")
    _, steps, calls = only_run()
    assert (steps[0].llm_call, steps[0].thought) == (calls[0].span_id, None)


# -- smolagents in codetape's sandbox ---------------------------------------------------------


@pytest.mark.docker
def test_instrument_with_a_sandbox_records_one_run_of_sandboxed_steps_and_model_calls(
    recording: Path, docker_image: str
) -> None:
    with codetape.Sandbox(image=docker_image) as sandbox:
        agent = instrument(
            CodeAgent(tools=[get_orders, refund], model=ScriptedModel(SCRIPT), verbosity_level=-1),
            sandbox=sandbox,
        )
        assert agent.run("Refund the first order") == "refunded"
    run, steps, calls = only_run()
    assert (run.name, run.task, run.status, run.final_answer) == (
        "CodeAgent",
        "Refund the first order",
        "ok",
        "refunded",
    )
    assert [s.sandbox.backend for s in steps] == ["docker"] * 3
    assert [s.code for s in steps] == [code for _, code in SCRIPT]
    assert [s.llm_call for s in steps] == [c.span_id for c in calls]
    assert [t.name for t in steps[1].tool_calls] == ["refund"]  # run on the host
    assert steps[0].stdout == "100\n"
    agent = uninstrument(agent)
    assert type(agent.python_executor).__name__ == "LocalPythonExecutor"


def test_a_run_with_an_unpriced_model_has_no_cost_rather_than_a_partial_one(
    recording: Path,
) -> None:
    codetape.configure(home=recording, otlp=False, prices={"cheap": (1.0, 1.0)})
    with codetape.run("bot"):
        codetape.record_llm_call(model="cheap", messages="a", output="b", usage=(10, 10))
        codetape.record_llm_call(model="unknown", messages="c", output="d", usage=(10, 10))
    run, _, calls = only_run()
    assert [c.cost for c in calls] == [pytest.approx(2e-5), None]
    assert run.cost is None


def test_model_calls_can_be_listed_without_their_messages_and_read_one_by_one(
    recording: Path,
) -> None:
    make_agent(SCRIPT).run("Refund the first order")
    store = codetape.Store()
    (run,) = store.runs()
    listed = store.llm_calls(run.id, messages=False)
    assert [c.input_messages for c in listed] == [[], [], []]
    assert [c.output for c in listed] == [c.output for c in store.llm_calls(run.id)]
    step = store.step(run.id, 1)
    assert step.llm_call is not None
    one = store.llm_call(run.id, step.llm_call)
    assert (one.index, one.span_id) == (1, step.llm_call)
    assert one.input_messages[0].role == "system"
    with pytest.raises(codetape.errors.NotFoundError, match="has no model call 'nope'"):
        store.llm_call(run.id, "nope")


@pytest.mark.docker
def test_the_executor_alone_says_once_how_to_make_each_agent_run_one_run(
    recording: Path, docker_image: str, caplog: pytest.LogCaptureFixture
) -> None:
    from codetape.integrations import _smolagents_executor
    from codetape.integrations.smolagents import CodetapeExecutor

    _smolagents_executor._said = False
    with codetape.Sandbox(image=docker_image) as sandbox:
        agent = CodeAgent(
            tools=[get_orders, refund],
            model=ScriptedModel(SCRIPT),
            executor=CodetapeExecutor(sandbox),
            verbosity_level=-1,
        )
        assert agent.run("Refund the first order") == "refunded"
    said = [r.getMessage() for r in caplog.records if "CodetapeExecutor" in r.getMessage()]
    assert len(said) == 1
    assert "instrument(agent, sandbox=sb)" in said[0]
    assert len(codetape.Store().runs()) == 3  # what it warned about: one run per action
