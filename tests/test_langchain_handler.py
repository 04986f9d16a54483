"""``codetape.integrations.langchain.CodetapeCallbackHandler``: a LangGraph CodeAct loop
(a model node, a code node whose ``eval_fn`` is a ``@codetape.code_action``, looping
until the model writes no code), driven offline by scripted LangChain chat models and
read back through ``codetape.Store``. LangGraph and LangChain are real: the contexts
the nodes run in are LangGraph's own (threads, tasks), in every way a graph is run.
"""

from __future__ import annotations

import asyncio
import re
import runpy
import secrets
import string
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, FakeListLLM, GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph

import codetape
from codetape.integrations.langchain import CodetapeCallbackHandler
from codetape.schemas import LlmCall, Run, Step
from codetape.tracer.internal import current_run

SYSTEM = "You are a CodeAct agent: answer with Python in a ```python block, or plainly."
TASK = "Refund every order over $100"
ORDERS = [{"id": "A-1", "total": 250.0}, {"id": "A-2", "total": 40.0}]

LIST = "I'll look at the orders first.\n```python\norders = get_orders()\nprint(len(orders))\n```"
PICK = (
    "Now the ones over $100.\n```python\nbig = [o['id'] for o in orders if o['total'] > 100]\n"
    "print(big)\n```\nThat gives the refunds."
)
DONE = "Refunded A-1."
SCRIPT = [LIST, PICK, DONE]


class ScriptedChatModel(BaseChatModel):
    """Stands in for a chat model: answers each call with the next scripted reply (an
    exception is raised), reporting tokens, the model that answered and why it stopped,
    either on the message (``usage_metadata``) or in ``llm_output`` as providers do."""

    model_name: str = "scripted-1"
    replies: list[Any]
    usage_in: Literal["message", "llm_output"] = "message"

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        inputs, outputs = 10 * len(messages), len(str(reply).split())
        if self.usage_in == "llm_output":
            return ChatResult(
                generations=[
                    ChatGeneration(
                        message=AIMessage(content=reply),
                        generation_info={"finish_reason": "length"},
                    )
                ],
                llm_output={
                    "token_usage": {"prompt_tokens": inputs, "completion_tokens": outputs},
                    "model_name": "scripted-1-llm-output",
                },
            )
        message = AIMessage(
            content=reply,
            usage_metadata={
                "input_tokens": inputs,
                "output_tokens": outputs,
                "total_tokens": inputs + outputs,
            },
            response_metadata={"model_name": "scripted-1-2025", "finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


# -- the CodeAct loop, as langgraph-codeact builds it --------------------------------------


@codetape.tool
def get_orders() -> list[dict[str, Any]]:
    return [dict(o) for o in ORDERS]


@codetape.code_action(state="_locals")
def eval_fn(code: str, _locals: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """langgraph-codeact's ``eval_fn``: run the code in ``_locals``, return what it
    printed and the variables it made."""
    before = set(_locals)
    printed: list[str] = []
    _locals["print"] = lambda *args: printed.append(" ".join(map(str, args)))
    try:
        exec(code, _locals)
    except Exception as exc:
        printed.append(f"Error during execution: {exc!r}")
    del _locals["print"]
    return "\n".join(printed), {k: _locals[k] for k in set(_locals) - before}


class CodeActState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    script: str | None
    context: dict[str, Any]


_CODE = re.compile(r"```(?:python|py)?\n(.*?)```", re.DOTALL)


def _reply(response: BaseMessage) -> dict[str, Any]:
    blocks = _CODE.findall(str(response.content))
    return {"messages": [response], "script": "\n".join(blocks) if blocks else None}


def _sandbox(state: CodeActState) -> dict[str, Any]:
    context = {**state.get("context", {}), "get_orders": get_orders}
    output, new_vars = eval_fn(state["script"] or "", context)
    return {
        "messages": [{"role": "user", "content": output or "(no output)"}],
        "context": {**state.get("context", {}), **new_vars},
    }


def _route(state: CodeActState) -> str:
    return "sandbox" if state["script"] else END


def codeact(model: BaseChatModel, *, asynchronous: bool = False) -> CompiledStateGraph[Any]:
    """A CodeAct agent: model → code → model … until the model writes no code. With
    ``asynchronous``, the model node is a coroutine (the code node stays a function,
    which LangGraph runs in a thread)."""

    def call_model(state: CodeActState) -> dict[str, Any]:
        return _reply(model.invoke([SystemMessage(SYSTEM), *state["messages"]]))

    async def acall_model(state: CodeActState) -> dict[str, Any]:
        return _reply(await model.ainvoke([SystemMessage(SYSTEM), *state["messages"]]))

    graph = StateGraph(CodeActState)
    graph.add_node("call_model", acall_model if asynchronous else call_model)
    graph.add_node("sandbox", _sandbox)
    graph.add_edge(START, "call_model")
    graph.add_conditional_edges("call_model", _route, ["sandbox", END])
    graph.add_edge("sandbox", "call_model")
    return graph.compile(name="codeact")


def task_input(task: str = TASK) -> CodeActState:
    return {"messages": [HumanMessage(task)], "script": None, "context": {}}


# -- ways to run a graph: each says which run was current in its caller's context after -----

Runner = Callable[["CompiledStateGraph[Any]", RunnableConfig], object]


def by_invoke(graph: CompiledStateGraph[Any], config: RunnableConfig) -> object:
    graph.invoke(task_input(), config=config)
    return current_run()


def by_stream(graph: CompiledStateGraph[Any], config: RunnableConfig) -> object:
    for _ in graph.stream(task_input(), config=config):
        pass
    return current_run()


def by_ainvoke(graph: CompiledStateGraph[Any], config: RunnableConfig) -> object:
    async def invoke() -> object:
        await graph.ainvoke(task_input(), config=config)
        return current_run()

    return asyncio.run(invoke())


def by_astream(graph: CompiledStateGraph[Any], config: RunnableConfig) -> object:
    async def consume() -> object:
        async for _ in graph.astream(task_input(), config=config):
            pass
        return current_run()

    return asyncio.run(consume())


RUNNERS: dict[str, tuple[Runner, bool]] = {
    "invoke": (by_invoke, False),
    "stream": (by_stream, False),
    "ainvoke": (by_ainvoke, True),
    "astream": (by_astream, True),
}


@pytest.fixture
def recording(home: Path, strict: None) -> Path:
    """A fresh store, with recording errors raised rather than logged."""
    return home


def only_run() -> tuple[Run, list[Step], list[LlmCall]]:
    store = codetape.Store()
    runs = store.runs()
    assert len(runs) == 1, runs
    return runs[0], store.steps(runs[0].id), store.llm_calls(runs[0].id)


# -- one run per graph ---------------------------------------------------------------------


@pytest.mark.parametrize("how", sorted(RUNNERS))
def test_a_codeact_graph_is_one_run_of_its_model_calls_and_code_actions(
    recording: Path, how: str
) -> None:
    run_graph, asynchronous = RUNNERS[how]
    graph = codeact(ScriptedChatModel(replies=list(SCRIPT)), asynchronous=asynchronous)
    # The graph's run ended with it, in every way it ran.
    assert run_graph(graph, {"callbacks": [CodetapeCallbackHandler()]}) is None

    run, steps, calls = only_run()
    assert (run.name, run.task, run.status, run.final_answer) == ("codeact", TASK, "ok", DONE)
    assert [c.output for c in calls] == SCRIPT
    assert [s.code for s in steps] == [
        "orders = get_orders()\nprint(len(orders))\n",
        "big = [o['id'] for o in orders if o['total'] > 100]\nprint(big)\n",
    ]
    # Each step names the model call its code came from, and what the model said around it.
    assert [s.llm_call for s in steps] == [calls[0].span_id, calls[1].span_id]
    assert [s.thought for s in steps] == [
        "I'll look at the orders first.",
        "Now the ones over $100.\n\nThat gives the refunds.",
    ]
    assert [t.name for t in steps[0].tool_calls] == ["get_orders"]
    assert codetape.Store().step(run.id, 1).variables_after["big"].preview == "['A-1']"
    # Tokens: 10 per input message (2, 4, 6 messages), one per output word.
    words = sum(len(reply.split()) for reply in SCRIPT)
    assert (run.llm_calls, run.input_tokens, run.output_tokens) == (3, 120, words)


def test_a_model_call_records_model_messages_tokens_and_finish_reason(recording: Path) -> None:
    graph = codeact(ScriptedChatModel(replies=list(SCRIPT)))
    graph.invoke(task_input(), config={"callbacks": [CodetapeCallbackHandler()]})
    _, _, calls = only_run()
    second = calls[1]
    assert [(m.role, m.content) for m in second.input_messages] == [
        ("system", SYSTEM),
        ("user", TASK),
        ("assistant", LIST),
        ("user", "2"),
    ]
    assert (second.model, second.response_model) == ("scripted-1", "scripted-1-2025")
    assert (second.input_tokens, second.output_tokens) == (40, len(PICK.split()))
    assert second.finish_reasons == ["stop"]
    assert (second.index, second.error, second.streamed) == (1, None, False)


def test_tokens_reported_in_llm_output_are_read_there(recording: Path) -> None:
    model = ScriptedChatModel(replies=[DONE], usage_in="llm_output")
    codeact(model).invoke(task_input(), config={"callbacks": [CodetapeCallbackHandler()]})
    run, _, (call,) = only_run()
    assert (call.input_tokens, call.output_tokens) == (20, 2)
    assert (call.response_model, call.finish_reasons) == ("scripted-1-llm-output", ["length"])
    assert (run.input_tokens, run.output_tokens) == (20, 2)


def test_a_run_is_named_by_the_handler_or_the_graph_with_the_first_user_message_as_task(
    recording: Path,
) -> None:
    graph = StateGraph(CodeActState)
    graph.add_node("echo", lambda state: {"messages": [AIMessage(content="hi")]})
    graph.add_edge(START, "echo")
    compiled = graph.compile()
    # The messages as LangGraph users write them: (role, text) pairs and dicts.
    pairs: Any = {"messages": [("system", "Be brief."), ("user", "say hi")]}
    dicts: Any = {"messages": [{"role": "user", "content": "say hello"}]}
    compiled.invoke(pairs, config={"callbacks": [CodetapeCallbackHandler()]})
    compiled.invoke(dicts, config={"callbacks": [CodetapeCallbackHandler(name="greeter")]})
    runs = codetape.Store().runs()
    assert sorted((r.name, r.task, r.final_answer) for r in runs) == [
        ("LangGraph", "say hi", "hi"),
        ("greeter", "say hello", "hi"),
    ]


# -- runs the user opened, and runs at the same time ----------------------------------------


def test_inside_a_users_run_the_handler_records_into_it_and_opens_nothing(
    recording: Path,
) -> None:
    handler = CodetapeCallbackHandler()
    with codetape.run("support-bot", task="two tickets") as mine:
        codeact(ScriptedChatModel(replies=list(SCRIPT))).invoke(
            task_input(), config={"callbacks": [handler]}
        )
        codeact(ScriptedChatModel(replies=[DONE])).invoke(
            task_input(), config={"callbacks": [handler]}
        )
        assert current_run() is mine
    run, steps, calls = only_run()
    assert (run.id, run.name, run.task, run.final_answer) == (
        mine.id,
        "support-bot",
        "two tickets",
        None,
    )
    assert ([c.output for c in calls], len(steps)) == ([*SCRIPT, DONE], 2)


class PerTaskModel(ScriptedChatModel):
    """Answers each task from its own script, whichever thread asks."""

    scripts: dict[str, list[str]]
    lock: Any = None

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self.lock:
            self.replies = [self.scripts[str(messages[1].content)].pop(0)]
            return super()._generate(messages, stop, run_manager, **kwargs)


def test_graphs_run_at_the_same_time_are_runs_of_their_own(recording: Path) -> None:
    tasks = {
        f"count to {n}": [f"Counting.\n```python\nn = {n}\n```", f"Done: {n}."] for n in range(4)
    }
    model = PerTaskModel(replies=[], scripts=tasks, lock=threading.Lock())
    handler = CodetapeCallbackHandler()
    codeact(model).batch(
        [task_input(task) for task in tasks], config={"callbacks": [handler], "max_concurrency": 4}
    )
    store = codetape.Store()
    runs = store.runs()
    assert sorted(r.task or "" for r in runs) == sorted(tasks)
    for run in runs:
        n = (run.task or "")[-1]
        steps, calls = store.steps(run.id), store.llm_calls(run.id)
        assert [c.output for c in calls] == [f"Counting.\n```python\nn = {n}\n```", f"Done: {n}."]
        assert [(s.code, s.llm_call) for s in steps] == [(f"n = {n}\n", calls[0].span_id)]
        assert run.final_answer == f"Done: {n}."


def test_parallel_branches_calling_the_model_at_once_are_told_apart(recording: Path) -> None:
    """Two nodes of one superstep run in LangGraph's thread pool, each calling a model
    while the other's call is open: each call keeps its own messages and output."""
    both_started = threading.Barrier(2, timeout=10)

    class Waiting(ScriptedChatModel):
        def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
            both_started.wait()
            return super()._generate(messages, *args, **kwargs)

    def branch(name: str) -> Any:
        model = Waiting(model_name=f"model-{name}", replies=[f"answer {name}"])

        def node(state: CodeActState) -> dict[str, Any]:
            return {"messages": [model.invoke(f"question {name}")]}

        return node

    graph = StateGraph(CodeActState)
    for name in ("a", "b"):
        graph.add_node(name, branch(name))
        graph.add_edge(START, name)
    graph.compile().invoke(task_input(), config={"callbacks": [CodetapeCallbackHandler()]})
    _, _, calls = only_run()
    assert sorted((c.model, c.input_messages[0].content, c.output) for c in calls) == [
        ("model-a", "question a", "answer a"),
        ("model-b", "question b", "answer b"),
    ]


# -- errors ----------------------------------------------------------------------------------


def test_a_model_error_is_recorded_on_the_call_and_the_run(recording: Path) -> None:
    model = ScriptedChatModel(replies=[LIST, TimeoutError("the provider did not answer in 30s")])
    with pytest.raises(TimeoutError):
        codeact(model).invoke(task_input(), config={"callbacks": [CodetapeCallbackHandler()]})
    assert current_run() is None
    run, steps, calls = only_run()
    assert run.status == "error"
    assert run.error is not None
    assert run.error.type == "TimeoutError"
    assert calls[0].error is None
    error = calls[1].error
    assert error is not None
    assert (error.type, error.message) == ("TimeoutError", "the provider did not answer in 30s")
    assert len(steps) == 1


def test_an_async_model_error_ends_the_run(recording: Path) -> None:
    model = ScriptedChatModel(replies=[ValueError("bad request")])
    graph = codeact(model, asynchronous=True)

    async def invoke() -> object:
        with pytest.raises(ValueError, match="bad request"):
            await graph.ainvoke(task_input(), config={"callbacks": [CodetapeCallbackHandler()]})
        return current_run()

    assert asyncio.run(invoke()) is None
    run, _, (call,) = only_run()
    assert run.status == "error"
    assert call.error is not None
    assert call.error.type == "ValueError"


# -- other models and chains -----------------------------------------------------------------


def test_a_plain_llm_in_a_chain_is_a_model_call_of_the_chains_run(recording: Path) -> None:
    chain = PromptTemplate.from_template("Translate to French: {text}") | FakeListLLM(
        responses=["bonjour"]
    )
    assert chain.invoke({"text": "hello"}, config={"callbacks": [CodetapeCallbackHandler()]}) == (
        "bonjour"
    )
    run, _, (call,) = only_run()
    assert (run.name, run.final_answer) == ("RunnableSequence", "bonjour")
    assert [(m.role, m.content) for m in call.input_messages] == [
        ("user", "Translate to French: hello")
    ]
    assert (call.output, call.input_tokens) == ("bonjour", None)


def test_a_streamed_reply_is_recorded_whole(recording: Path) -> None:
    model = GenericFakeChatModel(messages=iter(["Streaming this reply word by word."]))

    def call_model(state: CodeActState) -> dict[str, Any]:
        text = "".join(str(chunk.content) for chunk in model.stream(state["messages"]))
        return {"messages": [AIMessage(content=text)]}

    graph = StateGraph(CodeActState)
    graph.add_node("call_model", call_model)
    graph.add_edge(START, "call_model")
    graph.compile().invoke(task_input(), config={"callbacks": [CodetapeCallbackHandler()]})
    run, _, (call,) = only_run()
    assert call.output == run.final_answer == "Streaming this reply word by word."


def test_a_model_called_outside_any_graph_or_run_records_nothing(recording: Path) -> None:
    model = ScriptedChatModel(replies=["hi"])
    assert model.invoke("hello", config={"callbacks": [CodetapeCallbackHandler()]}).content == "hi"
    assert codetape.Store().runs() == []


# -- secrets ----------------------------------------------------------------------------------


def _canary() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))


def test_secrets_in_messages_and_outputs_are_never_at_rest(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary, key = _canary(), "sk-proj-" + _canary()
    monkeypatch.setenv("SHOP_API_TOKEN", canary)
    codetape.configure(home=home, otlp=False)
    leaky = f"Using {canary} and {key}.\n```python\nx = 1\n```"
    graph = codeact(ScriptedChatModel(replies=[leaky, f"Done with {key}."]))
    graph.invoke(
        task_input(f"Call the shop with token {canary} and key {key}"),
        config={"callbacks": [CodetapeCallbackHandler()]},
    )
    run, steps, calls = only_run()
    assert "[REDACTED:env:SHOP_API_TOKEN]" in calls[0].input_messages[1].content
    assert "[REDACTED:openai_key]" in calls[0].output
    assert "[REDACTED" in (steps[0].thought or "")
    assert "[REDACTED" in (run.task or "")
    assert "[REDACTED" in (run.final_answer or "")
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert canary.encode() not in data, path
            assert key.encode() not in data, path


# -- the example ------------------------------------------------------------------------------


def test_the_langgraph_example_records_one_run(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "04_langgraph.py"
    monkeypatch.setattr("sys.argv", [str(example), "--home", str(home)])
    runpy.run_path(str(example), run_name="__main__")
    assert "answer: Only A-1001 is over $100." in capsys.readouterr().out
    run, steps, calls = only_run()
    assert (run.name, run.step_count, run.llm_calls) == ("orders-codeact", 2, 3)
    assert [s.llm_call for s in steps] == [c.span_id for c in calls[:2]]
