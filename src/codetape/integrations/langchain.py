"""Record a LangChain or LangGraph agent: ``CodetapeCallbackHandler``.

Give the handler to the graph (or chain) that runs the agent::

    handler = CodetapeCallbackHandler()
    agent.invoke({"messages": [("user", task)]}, config={"callbacks": [handler]})

Each chat-model call inside it (and each plain LLM call) is a model call of the run:
the model's name, the input messages, the output text, the tokens the model reported
(``usage_metadata``, or the ``token_usage`` of the provider's ``llm_output``), the finish
reason, and the error when the call failed. Messages and output are redacted like every
other recorded text. Calls are told apart by LangChain's ``run_id``, so calls running
at the same time (parallel branches, ``batch``) never mix.

**Which run.** Inside an open ``codetape.run()`` or ``@codetape.agent``, the calls go to
that run and the handler opens nothing. Otherwise, when the outermost chain the handler
sees starts (the graph's own ``invoke``, ``stream``, ``ainvoke`` or ``astream``), the
handler opens a run, named after the graph (or ``name=``), with the first user message
as its task; it ends when that chain ends, with the last AI message as its final answer,
or the error the graph raised. While it is open, the run is the current run of
everything the graph runs, so a code action (``@codetape.code_action`` on the
``eval_fn`` of a CodeAct agent) executed by a node is a step of that run, linked to the
model call its code came from.

That rests on how LangChain and LangGraph use ``contextvars``, checked by the tests
(``invoke``, ``stream``, ``ainvoke``, ``astream``, parallel branches, ``batch``): the
handler runs inline (``run_inline``), so a chain's start event reaches it in the
caller's context, where it makes the run current; LangGraph runs each node in a copy of
that context (a thread for a sync node, a task for an async one), so every node sees the
run. LangChain sends an async chain's end event from a copy of the context, where the
run cannot be unset: the handler ends the run there, and an ended run is no longer any
context's current run.

Needs the optional extra: ``pip install 'codetape[langchain]'``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

try:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages
    from langchain_core.outputs import LLMResult
except ImportError as exc:
    raise ImportError(
        "codetape.integrations.langchain needs langchain-core: pip install 'codetape[langchain]'"
    ) from exc

from ..tracer.internal import (
    LlmCallRecorder,
    RunRecorder,
    Usage,
    current_run,
    internal_errors,
    llm_output,
    messages_of,
    usage_of,
)

__all__ = ["CodetapeCallbackHandler"]


class CodetapeCallbackHandler(BaseCallbackHandler):
    """A LangChain callback handler that records model calls, and opens a codetape run
    around the outermost chain or graph it sees when no run is open.

    ``name`` names the runs it opens (default: the graph's name). One handler may serve
    any number of graphs, concurrently. Recording never raises into the agent (unless
    ``CODETAPE_STRICT=1``).

    ``model`` is any LangChain chat model; ``execute`` the ``eval_fn`` of the agent,
    decorated with ``@codetape.code_action``:

    >>> import codetape                                                  # doctest: +SKIP
    >>> from codetape.integrations.langchain import CodetapeCallbackHandler
    >>> agent = create_codeact(model, tools, execute).compile()          # doctest: +SKIP
    >>> agent.invoke({"messages": [("user", "Refund every order over $100")]},
    ...              config={"callbacks": [CodetapeCallbackHandler()]})  # doctest: +SKIP
    >>> codetape.Store().runs()[0].llm_calls                             # doctest: +SKIP
    3
    """

    # Called in the caller's context rather than in a copy on a worker thread: a run
    # made current at the graph's start must be seen by the graph's nodes.
    run_inline = True

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__()
        self.name = name
        self.raise_error = os.environ.get("CODETAPE_STRICT") == "1"
        self._lock = threading.Lock()
        self._calls: dict[UUID, LlmCallRecorder] = {}
        self._runs: dict[UUID, RunRecorder] = {}

    def __repr__(self) -> str:
        return f"<CodetapeCallbackHandler name={self.name!r}>"

    # -- model calls ----------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # LangChain calls this once per message list, each with its own run_id.
        self._start_call(run_id, messages[0] if messages else [], serialized, metadata, kwargs)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start_call(run_id, prompts[0] if prompts else "", serialized, metadata, kwargs)

    def _start_call(
        self,
        run_id: UUID,
        messages: object,
        serialized: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        with internal_errors("starting a LangChain model call"):
            call = LlmCallRecorder(
                _model_name(serialized, metadata or {}, kwargs),
                messages,
                provider=_text((metadata or {}).get("ls_provider")),
            )
            call.__enter__()
            with self._lock:
                self._calls[run_id] = call

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            call = self._calls.pop(run_id, None)
        if call is None:
            return
        try:
            with internal_errors("recording a LangChain model call's output"):
                output, usage, model, reasons = _result_of(response)
                call.succeeded(output, usage=usage, response_model=model, finish_reasons=reasons)
        finally:  # ends the call's span if it is still open
            call.__exit__(None, None, None)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            call = self._calls.pop(run_id, None)
        if call is not None:
            call.__exit__(type(error), error, error.__traceback__)

    # -- the run ----------------------------------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if current_run() is not None:  # the user's run, or the one this graph runs in
            return
        recorder: RunRecorder | None = None
        with internal_errors("opening a run for a LangChain graph"):
            name = self.name or _text(kwargs.get("name")) or _class_name(serialized) or "agent"
            recorder = RunRecorder(name, _task_of(inputs))
        if recorder is None:
            return
        recorder.__enter__()
        with self._lock:
            self._runs[run_id] = recorder

    def on_chain_end(
        self,
        outputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            recorder = self._runs.pop(run_id, None)
        if recorder is not None:
            with internal_errors("reading a LangChain graph's answer"):
                recorder.final_answer = _answer_of(outputs)
            _end_run(recorder, None)

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            recorder = self._runs.pop(run_id, None)
        if recorder is not None:
            _end_run(recorder, error)


def _end_run(recorder: RunRecorder, error: BaseException | None) -> None:
    try:
        recorder.__exit__(type(error) if error else None, error, None)
    except ValueError:
        # An async chain's end event comes from a copy of the context the run was made
        # current in, where it cannot be unset: end it all the same (an ended run is
        # no context's current run).
        recorder.finish(error)


# -- what LangChain hands the handler -------------------------------------------------------


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _class_name(serialized: Mapping[str, Any] | None) -> str | None:
    """The class a serialized runnable names (``id`` ends with it), or its ``name``."""
    if not isinstance(serialized, Mapping):
        return None
    ids = serialized.get("id")
    if isinstance(ids, Sequence) and ids and not isinstance(ids, str):
        return _text(ids[-1])
    return _text(serialized.get("name"))


def _model_name(
    serialized: Mapping[str, Any] | None, metadata: Mapping[str, Any], kwargs: Mapping[str, Any]
) -> str | None:
    """The model asked for: the invocation's ``model`` (or ``model_name``, ``model_id``),
    LangChain's ``ls_model_name``, else the run's name or the model's class."""
    params = kwargs.get("invocation_params")
    params = params if isinstance(params, Mapping) else {}
    for source, key in (
        (params, "model"),
        (params, "model_name"),
        (params, "model_id"),
        (metadata, "ls_model_name"),
    ):
        if (name := _text(source.get(key))) is not None:
            return name
    return _text(kwargs.get("name")) or _class_name(serialized)


def _result_of(response: LLMResult) -> tuple[object, Usage, str | None, list[str] | None]:
    """A call's output (the first generation's message, or its text), tokens, the model
    that answered and why it stopped: from the message, else from ``llm_output``."""
    first = response.generations[0][0] if response.generations and response.generations[0] else None
    message = getattr(first, "message", None)
    output: object = message if message is not None else (first.text if first else "")
    provider_output = response.llm_output if isinstance(response.llm_output, Mapping) else {}
    usage = usage_of(message) if message is not None else Usage()
    if usage == Usage():
        usage = usage_of(provider_output)
    info = (first.generation_info if first else None) or {}
    reason = _text(info.get("finish_reason"))
    model = _text(provider_output.get("model_name")) or _text(provider_output.get("model"))
    return output, usage, model, [reason] if reason else None


def _messages(value: object) -> list[BaseMessage]:
    """LangGraph's ``messages`` in any form it takes (messages, dicts, tuples, text)."""
    if isinstance(value, (str, BaseMessage)):
        value = [value]
    if not isinstance(value, Sequence):
        return []
    try:
        return convert_to_messages(value)
    except (TypeError, ValueError, NotImplementedError):
        return []


def _task_of(inputs: object) -> str | None:
    """The run's task: the first user message of a graph's ``messages``, or the text
    given as ``task``, ``input``, ``question`` or ``query``."""
    if isinstance(inputs, str):
        return inputs
    if not isinstance(inputs, Mapping):
        return None
    for message in messages_of(_messages(inputs.get("messages"))):
        if message["role"] == "user":
            return message["content"]
    return next(
        (v for k in ("task", "input", "question", "query") if (v := _text(inputs.get(k)))),
        None,
    )


def _answer_of(outputs: object) -> str | None:
    """The run's final answer: the graph's last message when the model wrote it, or
    the text given as ``output`` or ``answer``."""
    if isinstance(outputs, str):
        return outputs
    if isinstance(outputs, BaseMessage):
        return llm_output(outputs)
    if not isinstance(outputs, Mapping):
        return None
    messages = _messages(outputs.get("messages"))
    if messages:
        return llm_output(messages[-1]) if isinstance(messages[-1], AIMessage) else None
    return _text(outputs.get("output")) or _text(outputs.get("answer"))
