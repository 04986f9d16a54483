"""What GenAI-aware backends read as a span's input and output, for its exported copy.

A finished span's own attributes say what it is, and ``texts`` gives the full (redacted)
texts its digests name. From them this builds, per convention, what Phoenix, Langfuse,
MLflow and friends show (docs/otlp.md has the tables):

- **GenAI**, the OpenTelemetry GenAI conventions: a code action is a call of a
  code-interpreter tool (``execute_tool``; its code in ``gen_ai.tool.call.arguments``,
  its outcome in ``gen_ai.tool.call.result``); runs and model calls carry
  ``gen_ai.input.messages`` and ``gen_ai.output.messages``.
- **OpenInference** (Phoenix, Arize): ``openinference.span.kind``, ``input.value`` and
  ``output.value`` with their MIME types, and flattened ``llm.*_messages``.

Every value fits ``limit`` characters (``_fit``): a long text is cut and ends with a
marker that says how much was left out (the store keeps it whole); a JSON value stays
valid JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..schemas import attributes as A
from ._fit import Cuttable, Kept, cut_marked, fit_json

__all__ = ["GENAI", "OPENINFERENCE", "Texts", "convention_attributes"]

GENAI = "genai"
OPENINFERENCE = "openinference"
# At most this many input messages of a model call are exported, the first (the system
# prompt, as a rule) and the latest: OpenInference spends two attributes on each, and
# SDKs and backends cap a span's attributes (128 by default).
MAX_MESSAGES = 32


Texts = Callable[[str], Kept | None]


def _json_values(value: object) -> object:
    """A parsed JSON value with every string ``Cuttable``."""
    if isinstance(value, str):
        return Cuttable(value)
    if isinstance(value, dict):
        return {key: _json_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_values(item) for item in value]
    return value


@dataclass(frozen=True)
class _Span:
    """A finished span's attributes and the kept texts they name."""

    attrs: Mapping[str, Any]
    texts: Texts
    limit: int

    def string(self, key: str) -> str | None:
        value = self.attrs.get(key)
        return value if isinstance(value, str) else None

    def integer(self, key: str) -> int | None:
        value = self.attrs.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def kept(self, digest: str | None) -> Kept | None:
        return self.texts(digest) if digest else None

    def text(self, digest_key: str, preview_key: str | None = None) -> Cuttable | None:
        """The full text a digest attribute names, else the span's preview of it."""
        kept = self.kept(self.string(digest_key))
        if kept is not None:
            return Cuttable(kept.text, kept.length)
        preview = self.string(preview_key) if preview_key else None
        return Cuttable(preview) if preview is not None else None

    def parsed(self, digest: str | None) -> object | None:
        """The JSON value of a text kept whole, else None."""
        kept = self.kept(digest)
        if kept is None or len(kept.text) != kept.length:
            return None
        try:
            value: object = json.loads(kept.text)
        except ValueError:
            return None
        return value

    def value(self, text: str) -> str:
        return cut_marked(text, self.limit)

    def json_value(self, digest_key: str, preview_key: str) -> tuple[str, str] | None:
        """A JSON text (a tool's arguments or result) and its MIME type: valid JSON with
        its strings cut when it can be, else text cut with a marker."""
        parsed = self.parsed(self.string(digest_key))
        if parsed is not None and (fitted := fit_json(_json_values(parsed), self.limit)):
            return fitted, A.MIME_JSON
        text = self.text(digest_key, preview_key)
        if text is None:
            return None
        value = self.value(text)
        if value == text and len(text) == text.length:
            try:
                json.loads(value)
            except ValueError:
                pass
            else:
                return value, A.MIME_JSON
        return value, A.MIME_TEXT


def _io(key: str, mime_key: str, value: tuple[str, str] | None) -> dict[str, Any]:
    """An OpenInference value and its MIME type."""
    return {key: value[0], mime_key: value[1]} if value is not None else {}


def _text_io(span: _Span, key: str, mime_key: str, text: str | None) -> dict[str, Any]:
    return _io(key, mime_key, (span.value(text), A.MIME_TEXT) if text is not None else None)


def _genai_messages(
    span: _Span, messages: list[tuple[str, Cuttable]], finish_reason: str | None = None
) -> str | None:
    """GenAI's ``[{"role", "parts": [{"type": "text", "content"}]}]`` (output messages
    with a ``finish_reason``), fitted."""
    shaped: list[dict[str, object]] = []
    for role, content in messages:
        message: dict[str, object] = {"role": role, "parts": [{"type": "text", "content": content}]}
        if finish_reason is not None:
            message["finish_reason"] = finish_reason
        shaped.append(message)
    return _fit_messages(shaped, span.limit)


def _fit_messages(messages: list[dict[str, object]], limit: int) -> str | None:
    """Messages as JSON within ``limit``: all of them, else (when even cut they do not
    fit) the last one."""
    fitted = fit_json(messages, limit)
    if fitted is None and len(messages) > 1:
        fitted = fit_json(messages[-1:], limit)
    return fitted


class _Kind:
    """One kind of span: its attributes under each convention."""

    def __init__(self, span: _Span) -> None:
        self.span = span

    def genai(self) -> dict[str, Any]:
        return {}

    def openinference(self) -> dict[str, Any]:
        return {}


class _Run(_Kind):
    """``invoke_agent``: the task in, the final answer out."""

    @cached_property
    def task(self) -> Cuttable | None:
        full = self.span.parsed(self.span.string(A.ATTRIBUTES_FULL_DIGEST))
        if isinstance(full, dict) and isinstance(task := full.get(A.RUN_TASK), str):
            return Cuttable(task)
        task = self.span.string(A.RUN_TASK)
        return Cuttable(task) if task is not None else None

    @cached_property
    def answer(self) -> Cuttable | None:
        return self.span.text(A.RUN_FINAL_ANSWER_DIGEST, A.RUN_FINAL_ANSWER)

    def genai(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if self.task is not None and (task := _genai_messages(self.span, [("user", self.task)])):
            attrs[A.GEN_AI_INPUT_MESSAGES] = task
        answer = self.answer
        answered = _genai_messages(self.span, [("assistant", answer)], "stop") if answer else None
        if answered is not None:
            attrs[A.GEN_AI_OUTPUT_MESSAGES] = answered
        return attrs

    def openinference(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {A.OI_SPAN_KIND: A.OI_KIND_AGENT}
        if (name := self.span.string(A.GEN_AI_AGENT_NAME)) is not None:
            attrs[A.OI_AGENT_NAME] = name
        attrs.update(_text_io(self.span, A.OI_INPUT_VALUE, A.OI_INPUT_MIME_TYPE, self.task))
        attrs.update(_text_io(self.span, A.OI_OUTPUT_VALUE, A.OI_OUTPUT_MIME_TYPE, self.answer))
        return attrs


class _Step(_Kind):
    """``execute_code``: a call of the code-interpreter tool, the code in, the outcome
    (status, stdout, stderr, the value returned, the error) out, as JSON."""

    @cached_property
    def code(self) -> Cuttable:
        return self.span.text(A.CODE_DIGEST, A.CODE_PREVIEW) or Cuttable("")

    @cached_property
    def outcome(self) -> str | None:
        span = self.span
        outcome: dict[str, object] = {"status": span.string(A.STEP_STATUS) or "ok"}
        for key, digest_key, preview_key in (
            ("stdout", A.STDOUT_DIGEST, A.STDOUT_PREVIEW),
            ("stderr", A.STDERR_DIGEST, A.STDERR_PREVIEW),
        ):
            if (text := span.text(digest_key, preview_key)) is not None:
                outcome[key] = text
        if (result := span.string(A.RESULT_PREVIEW)) is not None:
            outcome["result"] = Cuttable(result)
            if (result_type := span.string(A.RESULT_TYPE)) is not None:
                outcome["result_type"] = result_type
        if (error_type := span.string(A.ERROR_TYPE)) is not None:
            message = Cuttable(span.string(A.ERROR_MESSAGE) or "")
            outcome["error"] = {"type": error_type, "message": message}
        return fit_json(outcome, span.limit)

    def genai(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            A.GEN_AI_OPERATION_NAME: A.OP_EXECUTE_TOOL,
            A.GEN_AI_TOOL_NAME: A.CODE_TOOL_NAME,
            A.GEN_AI_TOOL_TYPE: A.TOOL_TYPE_EXTENSION,
        }
        if (arguments := fit_json({"code": self.code}, self.span.limit)) is not None:
            attrs[A.GEN_AI_TOOL_CALL_ARGUMENTS] = arguments
        if self.outcome is not None:
            attrs[A.GEN_AI_TOOL_CALL_RESULT] = self.outcome
        return attrs

    def openinference(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {A.OI_SPAN_KIND: A.OI_KIND_TOOL, A.OI_TOOL_NAME: A.CODE_TOOL_NAME}
        attrs.update(_text_io(self.span, A.OI_INPUT_VALUE, A.OI_INPUT_MIME_TYPE, self.code))
        output = (self.outcome, A.MIME_JSON) if self.outcome is not None else None
        attrs.update(_io(A.OI_OUTPUT_VALUE, A.OI_OUTPUT_MIME_TYPE, output))
        return attrs


class _Tool(_Kind):
    """``execute_tool``: the tool's arguments in, its result out, whole (JSON)."""

    @cached_property
    def arguments(self) -> tuple[str, str] | None:
        return self.span.json_value(A.TOOL_ARGUMENTS_DIGEST, A.GEN_AI_TOOL_CALL_ARGUMENTS)

    @cached_property
    def result(self) -> tuple[str, str] | None:
        return self.span.json_value(A.TOOL_RESULT_DIGEST, A.GEN_AI_TOOL_CALL_RESULT)

    def genai(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {A.GEN_AI_TOOL_TYPE: A.TOOL_TYPE_FUNCTION}
        if self.arguments is not None:
            attrs[A.GEN_AI_TOOL_CALL_ARGUMENTS] = self.arguments[0]
        if self.result is not None:
            attrs[A.GEN_AI_TOOL_CALL_RESULT] = self.result[0]
        return attrs

    def openinference(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {A.OI_SPAN_KIND: A.OI_KIND_TOOL}
        if (name := self.span.string(A.GEN_AI_TOOL_NAME)) is not None:
            attrs[A.OI_TOOL_NAME] = name
        attrs.update(_io(A.OI_INPUT_VALUE, A.OI_INPUT_MIME_TYPE, self.arguments))
        attrs.update(_io(A.OI_OUTPUT_VALUE, A.OI_OUTPUT_MIME_TYPE, self.result))
        return attrs


class _Chat(_Kind):
    """``chat``: the input messages in, the model's output out."""

    @cached_property
    def messages(self) -> list[tuple[str, Cuttable]] | None:
        """The input messages, from the blob of ``[{"role", "content.digest"}]`` (or of
        ``[{"role", "content"}]``) and each content's kept text; None when not kept."""
        entries = self.span.parsed(self.span.string(A.LLM_INPUT_DIGEST))
        if not isinstance(entries, list):
            return None
        if len(entries) > MAX_MESSAGES:
            entries = [entries[0], *entries[1 - MAX_MESSAGES :]]
        messages = []
        for entry in entries:
            if not isinstance(entry, dict):
                return None
            content = entry.get("content")
            if isinstance(content, str):
                content = Cuttable(content)
            else:
                digest = entry.get("content.digest")
                kept = self.span.kept(digest if isinstance(digest, str) else None)
                found = f"[in codetape: {digest}]"
                content = Cuttable(kept.text, kept.length) if kept else Cuttable(found)
            messages.append((str(entry.get("role", "user")), content))
        return messages

    @cached_property
    def output(self) -> Cuttable | None:
        return self.span.text(A.LLM_OUTPUT_DIGEST, A.LLM_OUTPUT_PREVIEW)

    def genai(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if self.messages and (messages := _genai_messages(self.span, self.messages)):
            attrs[A.GEN_AI_INPUT_MESSAGES] = messages
        reasons = self.span.attrs.get(A.GEN_AI_RESPONSE_FINISH_REASONS) or [""]
        output = self.output
        if output is not None and (
            out := _genai_messages(self.span, [("assistant", output)], str(reasons[0]))
        ):
            attrs[A.GEN_AI_OUTPUT_MESSAGES] = out
        return attrs

    def openinference(self) -> dict[str, Any]:
        span = self.span
        attrs: dict[str, Any] = {A.OI_SPAN_KIND: A.OI_KIND_LLM}
        model = span.string(A.GEN_AI_RESPONSE_MODEL) or span.string(A.GEN_AI_REQUEST_MODEL)
        if model is not None:
            attrs[A.OI_LLM_MODEL_NAME] = model
        if (provider := span.string(A.GEN_AI_PROVIDER_NAME)) is not None:
            attrs[A.OI_LLM_PROVIDER] = provider
        attrs.update(self._tokens())
        attrs.update(self._input_messages())
        if self.output is not None:
            prefix = f"{A.OI_LLM_OUTPUT_MESSAGES}.0."
            attrs[prefix + A.OI_MESSAGE_ROLE] = "assistant"
            attrs[prefix + A.OI_MESSAGE_CONTENT] = span.value(self.output)
        attrs.update(_text_io(span, A.OI_OUTPUT_VALUE, A.OI_OUTPUT_MIME_TYPE, self.output))
        return attrs

    def _tokens(self) -> dict[str, Any]:
        prompt = self.span.integer(A.GEN_AI_USAGE_INPUT_TOKENS)
        completion = self.span.integer(A.GEN_AI_USAGE_OUTPUT_TOKENS)
        attrs: dict[str, Any] = {}
        if prompt is not None:
            attrs[A.OI_LLM_TOKEN_COUNT_PROMPT] = prompt
        if completion is not None:
            attrs[A.OI_LLM_TOKEN_COUNT_COMPLETION] = completion
        if prompt is not None and completion is not None:
            attrs[A.OI_LLM_TOKEN_COUNT_TOTAL] = prompt + completion
        return attrs

    def _input_messages(self) -> dict[str, Any]:
        """``llm.input_messages.{i}.message.*`` and ``input.value`` (the messages as
        ``[{"role", "content"}]``), fitted alike; the last message's preview when the
        messages were not kept."""
        if not self.messages:
            preview = self.span.string(A.LLM_INPUT_PREVIEW)
            return _text_io(self.span, A.OI_INPUT_VALUE, A.OI_INPUT_MIME_TYPE, preview)
        plain: list[dict[str, object]] = [
            {"role": role, "content": content} for role, content in self.messages
        ]
        fitted = _fit_messages(plain, self.span.limit)
        if fitted is None:
            return {}
        attrs: dict[str, Any] = {A.OI_INPUT_VALUE: fitted, A.OI_INPUT_MIME_TYPE: A.MIME_JSON}
        for i, message in enumerate(json.loads(fitted)):
            prefix = f"{A.OI_LLM_INPUT_MESSAGES}.{i}."
            attrs[prefix + A.OI_MESSAGE_ROLE] = message["role"]
            attrs[prefix + A.OI_MESSAGE_CONTENT] = message["content"]
        return attrs


_KINDS: dict[str, type[_Kind]] = {
    A.OP_INVOKE_AGENT: _Run,
    A.OP_EXECUTE_CODE: _Step,
    A.OP_EXECUTE_TOOL: _Tool,
    A.OP_CHAT: _Chat,
}


def convention_attributes(
    attrs: Mapping[str, Any], texts: Texts, conventions: Collection[str], limit: int
) -> dict[str, Any]:
    """The attributes to add to (or replace on) the exported copy of a span with
    ``attrs``, under each of ``conventions``; none for a span codetape does not write."""
    kind = _KINDS.get(str(attrs.get(A.GEN_AI_OPERATION_NAME)))
    if kind is None:
        return {}
    view = kind(_Span(attrs, texts, limit))
    added: dict[str, Any] = {}
    if GENAI in conventions:
        added.update(view.genai())
    if OPENINFERENCE in conventions:
        added.update(view.openinference())
    return added
