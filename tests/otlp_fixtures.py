"""A scripted agent run for the OTLP export tests, and what each exported span of it
carries under each convention setting, spelled out value by value.

The run: one model call (a system prompt and the task in, a thought and code out), then
three code actions: the first calls a tool and prints, the second returns a value, the
third raises. Its final answer is "12".
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

import codetape
from codetape.schemas import attributes as A
from codetape.tracer.internal import LlmCallRecorder, Usage

SYSTEM = "You are a careful agent. Answer with Python code in <code> tags."
TASK = "double the sum of 1 and 5"
CODE = ["a = add(1, b=5)\nprint('a is', a)", "result = a * 2", "a / 0"]
MODEL_OUTPUT = f"Thought: add first, then double.\n<code>\n{CODE[0]}\n</code>"
ANSWER = "12"


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> Any:
    exec(code, namespace)
    return namespace.get("result")


@codetape.tool
def add(a: int, b: int = 2) -> int:
    return a + b


def record_run() -> str:
    """Record the scripted run; its id."""

    @codetape.agent(name="orders-bot")
    def solve(task: str) -> str:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": task}]
        with LlmCallRecorder("gpt-4o", messages, provider="openai") as call:
            call.succeeded(
                MODEL_OUTPUT,
                usage=Usage(120, 30),
                response_model="gpt-4o-2024-08-06",
                finish_reasons=["stop"],
            )
        ns: dict[str, Any] = {"add": add}
        execute(CODE[0], ns)
        execute(CODE[1], ns)
        with contextlib.suppress(ZeroDivisionError):
            execute(CODE[2], ns)
        return str(ns["result"])

    assert solve(TASK) == ANSWER
    return codetape.Store().runs()[0].id


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _messages(*messages: tuple[str, str], finish_reason: str | None = None) -> str:
    shaped: list[dict[str, Any]] = []
    for role, text in messages:
        message: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": text}]}
        if finish_reason is not None:
            message["finish_reason"] = finish_reason
        shaped.append(message)
    return dumps(shaped)


OUTCOMES = [
    {"status": "ok", "stdout": "a is 6\n"},
    {"status": "ok", "result": "12", "result_type": "int"},
    {"status": "error", "error": {"type": "ZeroDivisionError", "message": "division by zero"}},
]

# What each convention adds to (or sets on) the exported copy of each span: by span
# ("run", "chat", "tool", or "step 0".."step 2").
GENAI: dict[str, dict[str, Any]] = {
    "run": {
        A.GEN_AI_INPUT_MESSAGES: _messages(("user", TASK)),
        A.GEN_AI_OUTPUT_MESSAGES: _messages(("assistant", ANSWER), finish_reason="stop"),
    },
    "chat": {
        A.GEN_AI_INPUT_MESSAGES: _messages(("system", SYSTEM), ("user", TASK)),
        A.GEN_AI_OUTPUT_MESSAGES: _messages(("assistant", MODEL_OUTPUT), finish_reason="stop"),
    },
    "tool": {
        A.GEN_AI_TOOL_TYPE: "function",
        A.GEN_AI_TOOL_CALL_ARGUMENTS: '{"a": 1, "b": 5}',
        A.GEN_AI_TOOL_CALL_RESULT: "6",
    },
    **{
        f"step {i}": {
            A.GEN_AI_OPERATION_NAME: "execute_tool",
            A.GEN_AI_TOOL_NAME: "code_interpreter",
            A.GEN_AI_TOOL_TYPE: "extension",
            A.GEN_AI_TOOL_CALL_ARGUMENTS: dumps({"code": code}),
            A.GEN_AI_TOOL_CALL_RESULT: dumps(outcome),
        }
        for i, (code, outcome) in enumerate(zip(CODE, OUTCOMES, strict=True))
    },
}

OPENINFERENCE: dict[str, dict[str, Any]] = {
    "run": {
        "openinference.span.kind": "AGENT",
        "agent.name": "orders-bot",
        "input.value": TASK,
        "input.mime_type": "text/plain",
        "output.value": ANSWER,
        "output.mime_type": "text/plain",
    },
    "chat": {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o-2024-08-06",
        "llm.provider": "openai",
        "llm.token_count.prompt": 120,
        "llm.token_count.completion": 30,
        "llm.token_count.total": 150,
        "input.value": dumps(
            [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": TASK},
            ]
        ),
        "input.mime_type": "application/json",
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": SYSTEM,
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": TASK,
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": MODEL_OUTPUT,
        "output.value": MODEL_OUTPUT,
        "output.mime_type": "text/plain",
    },
    "tool": {
        "openinference.span.kind": "TOOL",
        "tool.name": "add",
        "input.value": '{"a": 1, "b": 5}',
        "input.mime_type": "application/json",
        "output.value": "6",
        "output.mime_type": "application/json",
    },
    **{
        f"step {i}": {
            "openinference.span.kind": "TOOL",
            "tool.name": "code_interpreter",
            "input.value": code,
            "input.mime_type": "text/plain",
            "output.value": dumps(outcome),
            "output.mime_type": "application/json",
        }
        for i, (code, outcome) in enumerate(zip(CODE, OUTCOMES, strict=True))
    },
}

# Every name a convention may add: none of them is ever in the store.
CONVENTION_NAMES = {
    *(name for added in GENAI.values() for name in added if name != A.GEN_AI_OPERATION_NAME),
    *(name for added in OPENINFERENCE.values() for name in added),
} - {A.GEN_AI_TOOL_NAME, A.GEN_AI_TOOL_CALL_ARGUMENTS, A.GEN_AI_TOOL_CALL_RESULT}


def span_key(name: str, attrs: Mapping[str, Any]) -> str:
    """Which span of the scripted run a span is: "run", "chat", "tool" or "step N"."""
    if name.startswith("invoke_agent"):
        return "run"
    if name.startswith("chat"):
        return "chat"
    if name.startswith("execute_tool"):
        return "tool"
    return f"step {attrs[A.STEP_INDEX]}"


def added(key: str, conventions: tuple[str, ...]) -> dict[str, Any]:
    """What ``conventions`` add to the span ``key`` of the scripted run."""
    adding: dict[str, Any] = {}
    if "genai" in conventions:
        adding.update(GENAI[key])
    if "openinference" in conventions:
        adding.update(OPENINFERENCE[key])
    return adding
