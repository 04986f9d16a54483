"""Model calls: a ``chat {model}`` span per call, by the OpenTelemetry GenAI conventions.

Every integration records through ``LlmCallRecorder``: smolagents' ``generate`` and
``generate_stream``, the LangChain callback handler, ``@codetape.llm`` and
``codetape.record_llm_call``. A call is a child of the run's root span; its input
messages and output go to blobs as redacted JSON and text (the span carries previews
only), its tokens and finish reasons to the GenAI attributes.

The run remembers its latest call, so the next code action records which call its code
came from (``codetape.step.llm_call``) and the text the model wrote around the code
(the step's thought).
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast, overload

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .._format import ATTRIBUTE_CHARS, TEXT_PREVIEW_CHARS, cut
from ..schemas import attributes as A
from ._config import Runtime, runtime
from ._errors import internal_errors
from ._recording import RunRecorder, current_run, end_span, put_text, record_exception
from ._spans import start_span

__all__ = [
    "LlmCallRecorder",
    "Usage",
    "llm",
    "llm_output",
    "messages_of",
    "record_llm_call",
    "usage_of",
]

log = logging.getLogger("codetape")

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Usage:
    """Tokens a model call reported (None when it did not say)."""

    input_tokens: int | None = None
    output_tokens: int | None = None


# -- what frameworks hand us, as text ---------------------------------------------------

# LangChain's message types, by the role names every other framework uses.
_ROLES = {"human": "user", "ai": "assistant", "AIMessageChunk": "assistant"}


def _text_of(content: object) -> str:
    """A message's content as text: a list of parts (OpenAI, Anthropic, smolagents)
    joined, with images and other non-text parts as ``[image]``-style markers."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if type(content) is list or (
        isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray))
    ):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif type(part) is dict or isinstance(part, Mapping):
                kind = str(part.get("type", "part"))
                text = part.get("text")
                parts.append(text if isinstance(text, str) else f"[{kind}]")
            else:
                parts.append(f"[{type(part).__name__}]")
        return "\n".join(parts)
    return str(content)


# Whether a type is a Mapping, by type: the ABC check costs on every field of every
# message of every model call.
_IS_MAPPING: dict[type, bool] = {dict: True}


def _field(obj: object, name: str) -> Any:
    kind = type(obj)
    mapping = _IS_MAPPING.get(kind)
    if mapping is None:
        mapping = isinstance(obj, Mapping)
        if len(_IS_MAPPING) < 256:
            _IS_MAPPING[kind] = mapping
    if mapping:
        return obj.get(name)  # type: ignore[attr-defined]
    return getattr(obj, name, None)


def _role(message: object) -> str:
    role = _field(message, "role") or _field(message, "type") or "user"
    role = getattr(role, "value", role)  # smolagents' MessageRole is an Enum
    return _ROLES.get(str(role), str(role))


def messages_of(messages: object) -> list[dict[str, str]]:
    """The input of a model call as ``[{"role", "content"}]``: a prompt string, or a list
    of message dicts or objects (smolagents ``ChatMessage``, LangChain messages)."""
    if messages is None:
        return []
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if isinstance(messages, Mapping) or not isinstance(messages, Sequence):
        messages = [messages]
    found = []
    for message in messages:
        if isinstance(message, str):
            found.append({"role": "user", "content": message})
        elif type(message) is dict and type(message.get("content")) is str:  # the usual case
            role = message.get("role") or "user"
            found.append({"role": _ROLES.get(role, str(role)), "content": message["content"]})
        else:
            found.append({"role": _role(message), "content": _text_of(_field(message, "content"))})
    return found


def llm_output(output: object) -> str:
    """A model call's output as text: a string, or anything with ``.content`` (or a
    ``"content"`` key): smolagents' and LangChain's messages, most SDKs' responses."""
    if output is None or isinstance(output, str):
        return output or ""
    content = _field(output, "content")
    if content is not None:
        return _text_of(content)
    choices = _field(output, "choices")  # an OpenAI response
    if isinstance(choices, Sequence) and choices:
        return llm_output(_field(choices[0], "message"))
    return str(output)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_of(output: object) -> Usage:
    """Tokens reported with an output: smolagents' ``token_usage``, LangChain's
    ``usage_metadata``, OpenAI's and Anthropic's ``usage``, as objects or dicts."""
    for name in ("token_usage", "usage_metadata", "usage"):
        usage = _field(output, name)
        if usage is None:
            continue
        prompt = _int(_field(usage, "input_tokens"))
        completion = _int(_field(usage, "output_tokens"))
        if prompt is None:
            prompt = _int(_field(usage, "prompt_tokens"))
        if completion is None:
            completion = _int(_field(usage, "completion_tokens"))
        if prompt is not None or completion is not None:
            return Usage(prompt, completion)
    return Usage()


def _response_model(output: object) -> str | None:
    model = _field(output, "model")
    if not isinstance(model, str):
        metadata = _field(output, "response_metadata")
        model = _field(metadata, "model_name") or _field(metadata, "model")
    return model if isinstance(model, str) and model else None


def _finish_reasons(output: object) -> list[str]:
    for source in (output, _field(output, "response_metadata")):
        for name in ("finish_reason", "stop_reason"):
            reason = _field(source, name)
            if isinstance(reason, str) and reason:
                return [reason]
    choices = _field(output, "choices")
    if isinstance(choices, Sequence) and choices:
        reason = _field(choices[0], "finish_reason")
        if isinstance(reason, str):
            return [reason]
    return []


# -- prices -------------------------------------------------------------------------------


def cost_of(rt: Runtime, models: Sequence[str | None], usage: Usage) -> float | None:
    """The call's cost from ``configure(prices=...)``: per million input and output
    tokens, by exact model name first, then by a ``*`` pattern."""
    if not rt.prices or (usage.input_tokens is None and usage.output_tokens is None):
        return None
    for model in models:
        if not model:
            continue
        price = rt.prices.get(model)
        if price is None:
            price = next(
                (p for pattern, p in rt.prices.items() if fnmatch.fnmatchcase(model, pattern)),
                None,
            )
        if price is not None:
            return (
                (usage.input_tokens or 0) * price[0] + (usage.output_tokens or 0) * price[1]
            ) / 1e6
    return None


# -- the recorder ---------------------------------------------------------------------------

# An agent sends its whole conversation with every call: each message but the newest
# was redacted and stored for an earlier call already. Each message's content is a blob
# of its own (so a run's store grows with its conversation, not with its square), and
# the redacted text and blob of the latest messages are kept, per runtime.
_RECENT_LIMIT = 256
_recent: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
_recent_runtime: list[object] = [None]
_ROLES_KNOWN = frozenset({"system", "user", "assistant", "tool", "developer", "function"})


def _stored_message(rt: Runtime, text: str) -> tuple[str, str | None]:
    """A message's content redacted, and the digest of its blob (None if not stored)."""
    if _recent_runtime[0] is not rt:
        _recent.clear()
        _recent_runtime[0] = rt
    found = _recent.get(text)
    if found is None:
        redacted = rt.redactor.text(text)
        found = (redacted, put_text(rt, redacted))
        if len(_recent) >= _RECENT_LIMIT:
            _recent.popitem(last=False)
        _recent[text] = found
    return found


_warned_outside_run = False


def _warn_outside_run() -> None:
    global _warned_outside_run
    if not _warned_outside_run:
        _warned_outside_run = True
        log.warning(
            "codetape: a model call outside any run is not recorded: open a run around the "
            "agent loop (codetape.run(...), @codetape.agent, or instrument(agent)) to "
            "record its model calls with its code actions"
        )


class LlmCallRecorder:
    """One model call: ``with LlmCallRecorder(model, messages) as call:
    call.succeeded(output)``. Outside a run it records nothing (and says so once).

    ``start_ns`` (a ``time.time_ns()``) backdates the span, for calls recorded after
    they happened."""

    def __init__(
        self,
        model: str | None,
        messages: object,
        *,
        run: RunRecorder | None = None,
        streamed: bool = False,
        start_ns: int | None = None,
        provider: str | None = None,
    ) -> None:
        self.model = model
        self.messages = messages
        self.streamed = streamed
        self.provider = provider
        self.run = run or current_run()
        self._start_ns = start_ns
        self._span: Span | None = None
        self._rt: Runtime | None = None
        self._started_ns = 0

    def __enter__(self) -> LlmCallRecorder:
        run = self.run
        parent = run.span if run is not None else None
        if run is None or parent is None:
            _warn_outside_run()
            return self
        with internal_errors("starting a model call"):
            rt = self._rt = runtime()
            attrs = self._input_attributes(rt, run)
            self._started_ns = time.monotonic_ns()
            if self._start_ns is not None:
                self._started_ns -= max(0, time.time_ns() - self._start_ns)
            self._span = start_span(
                rt,
                f"{A.SPAN_CHAT} {cut(self.model or 'model', ATTRIBUTE_CHARS)}",
                parent,
                attrs,
                kind=SpanKind.CLIENT,
                start_time=self._start_ns,
            )
        return self

    def _input_attributes(self, rt: Runtime, run: RunRecorder) -> dict[str, Any]:
        """The call's input: the messages as a blob of ``[{"role", "content.digest"}]``
        (each content a blob of its own), with a preview of the last one."""
        entries, last = [], ""
        for message in messages_of(self.messages):
            role = message["role"]
            last, digest = _stored_message(rt, message["content"])
            entries.append(
                {
                    "role": role if role in _ROLES_KNOWN else rt.redactor.text(role),
                    "content.digest": digest,
                }
            )
        attrs: dict[str, Any] = {
            A.GEN_AI_OPERATION_NAME: A.OP_CHAT,
            A.LLM_INDEX: run.next_llm_index(),
            A.LLM_INPUT_MESSAGES: len(entries),
        }
        if self.model:
            attrs[A.GEN_AI_REQUEST_MODEL] = cut(self.model, ATTRIBUTE_CHARS)
        if self.provider:
            attrs[A.GEN_AI_PROVIDER_NAME] = self.provider
        if self.streamed:
            attrs[A.LLM_STREAMED] = True
        if entries:
            attrs[A.LLM_INPUT_PREVIEW] = cut(last, TEXT_PREVIEW_CHARS)
        if (digest := put_text(rt, json.dumps(entries, separators=(",", ":")))) is not None:
            attrs[A.LLM_INPUT_DIGEST] = digest
        return attrs

    def succeeded(
        self,
        output: object,
        *,
        usage: Usage | None = None,
        response_model: str | None = None,
        finish_reasons: Sequence[str] | None = None,
    ) -> None:
        """Record the call's output (text, or a message object: its tokens, response
        model and finish reason are read from it unless given)."""
        span, rt, self._span = self._span, self._rt, None
        if span is None or rt is None or self.run is None:
            return
        try:
            with internal_errors("recording a model call's output"):
                text = rt.redactor.text(llm_output(output))
                usage = usage if usage is not None else usage_of(output)
                response_model = response_model or _response_model(output)
                reasons = list(finish_reasons or _finish_reasons(output))
                span.set_attributes(self._output_attributes(rt, text, usage, response_model))
                if reasons:
                    span.set_attribute(A.GEN_AI_RESPONSE_FINISH_REASONS, reasons)
                span.set_status(Status(StatusCode.OK))
                span_id = getattr(span, "span_id", None) or span.get_span_context().span_id
                self.run.note_llm_call(f"{span_id:016x}", text)
        finally:
            with internal_errors("ending a model call"):
                end_span(span, self._started_ns)

    def _output_attributes(
        self, rt: Runtime, text: str, usage: Usage, response_model: str | None
    ) -> dict[str, Any]:
        attrs: dict[str, Any] = {A.LLM_OUTPUT_PREVIEW: cut(text, TEXT_PREVIEW_CHARS)}
        if (digest := put_text(rt, text)) is not None:
            attrs[A.LLM_OUTPUT_DIGEST] = digest
        if response_model:
            attrs[A.GEN_AI_RESPONSE_MODEL] = cut(response_model, ATTRIBUTE_CHARS)
        if usage.input_tokens is not None:
            attrs[A.GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
        if usage.output_tokens is not None:
            attrs[A.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
        cost = cost_of(rt, (response_model, self.model), usage)
        if cost is not None:
            attrs[A.LLM_COST] = cost
        return attrs

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span, rt, self._span = self._span, self._rt, None
        if span is None or rt is None:
            return
        try:
            with internal_errors("recording a model call's error"):
                if exc is not None:
                    record_exception(span, rt, exc)
        finally:
            with internal_errors("ending a model call"):
                end_span(span, self._started_ns)


# -- the public API: @codetape.llm and codetape.record_llm_call ---------------------------

_MESSAGE_PARAMS = ("messages", "prompt", "input", "inputs", "query", "question")
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_MODEL_PARAMS = ("model", "model_id", "model_name")


def _usage(usage: object) -> Usage | None:
    if usage is None or isinstance(usage, Usage):
        return usage
    if isinstance(usage, tuple) and len(usage) == 2:
        return Usage(_int(usage[0]), _int(usage[1]))
    return usage_of({"usage": usage})


def record_llm_call(
    *,
    model: str | None,
    messages: object,
    output: object,
    usage: object = None,
    response_model: str | None = None,
    finish_reason: str | None = None,
    duration_ms: float | None = None,
) -> None:
    """Record a model call that already happened, as a model call of the current run.

    ``messages`` is a prompt or a list of messages (dicts or message objects),
    ``output`` the text or a message object; ``usage`` the tokens, as ``(input,
    output)``, a dict or an SDK's usage object. ``duration_ms`` backdates the call's
    start by that much, so its latency shows.

    >>> import codetape
    >>> with codetape.run("bot", task="greet"):                      # doctest: +SKIP
    ...     codetape.record_llm_call(model="gpt-4o", messages="Say hi", output="hi",
    ...                              usage=(3, 1))
    """
    start_ns = None if duration_ms is None else time.time_ns() - int(duration_ms * 1e6)
    with LlmCallRecorder(model, messages, start_ns=start_ns) as call:
        call.succeeded(
            output,
            usage=_usage(usage),
            response_model=response_model,
            finish_reasons=[finish_reason] if finish_reason else None,
        )


class _LlmBinder:
    """Finds the messages and the model among the arguments of a model-calling function."""

    def __init__(self, func: Callable[..., Any], model: str | None) -> None:
        self.sig = inspect.signature(func)
        self.model = model
        params = self.sig.parameters
        self.messages = next((n for n in _MESSAGE_PARAMS if n in params), None)
        self.model_param = next((n for n in _MODEL_PARAMS if n in params), None)
        # The usual call: the messages alone, by position, as the first parameter.
        first = next(iter(params.values()), None)
        self._simple = (
            first is not None
            and first.name == self.messages
            and first.kind in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD)
            and self.model_param is None
            and all(
                p.default is not p.empty or p.kind in _VARIADIC for p in list(params.values())[1:]
            )
        )

    def recorder(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> LlmCallRecorder:
        if self._simple and len(args) == 1 and not kwargs:
            return LlmCallRecorder(self.model, args[0])
        messages: object = None
        model = self.model
        with internal_errors("reading a model call's arguments"):
            binding = self.sig.bind_partial(*args, **kwargs)
            binding.apply_defaults()
            bound = binding.arguments
            if self.messages is not None:
                messages = bound.get(self.messages)
            else:
                messages = next((v for v in bound.values() if isinstance(v, (str, list))), None)
            if model is None and self.model_param is not None:
                found = bound.get(self.model_param)
                model = found if isinstance(found, str) else None
        return LlmCallRecorder(model, messages)


@overload
def llm(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def llm(*, model: str | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def llm(fn: Callable[P, R] | None = None, /, *, model: str | None = None) -> Any:
    """Record each call of ``fn``, a function that calls a model, as a model call of the
    current run (sync or async). It returns the output: a string, or an object with
    ``.content`` (its tokens are read from ``usage``/``token_usage`` when present).

    The messages are the argument named ``messages``/``prompt``/``input``/``query``
    (else the first ``str`` or ``list``); the model is ``model=`` or the argument named
    ``model``/``model_id``.

    >>> import codetape
    >>> @codetape.llm(model="gpt-4o")
    ... def ask(messages: list[dict]) -> str:
    ...     return "Thought: add them.\\n```py\\nx = 1 + 1\\n```"
    """

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        binder = _LlmBinder(func, model)
        if inspect.iscoroutinefunction(func):
            async_func = cast(Callable[P, Awaitable[Any]], func)

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with binder.recorder(args, kwargs) as call:
                    output = await async_func(*args, **kwargs)
                    call.succeeded(output)
                    return output

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with binder.recorder(args, kwargs) as call:
                output = func(*args, **kwargs)
                call.succeeded(output)
                return output

        return wrapper

    return decorate(fn) if fn is not None else decorate
