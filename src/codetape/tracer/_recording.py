"""The recording core: runs, steps and tool calls as spans, with values in blobs.

The decorators and the sandbox both record through these three classes, so a step
looks the same in the store however it was executed.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import cloudpickle
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .._format import (
    MESSAGE_CHARS,
    PREVIEW_CHARS,
    STACK_CHARS,
    STATUS_CHARS,
    TEXT_PREVIEW_CHARS,
    cut,
)
from ..sandbox.internal import PICKLE_PROTOCOL
from ..schemas import ErrorInfo, StepStatus
from ..schemas import attributes as A
from ._config import Runtime, runtime
from ._errors import internal_errors
from ._state import Snapshotter, State, preview, type_name

__all__ = [
    "RunRecorder",
    "StepRecorder",
    "ToolCallRecorder",
    "current_run",
    "current_step",
    "format_exception",
    "record_tool_call",
]

T = TypeVar("T")

_run_var: ContextVar[RunRecorder | None] = ContextVar("codetape_run", default=None)
_step_var: ContextVar[StepRecorder | None] = ContextVar("codetape_step", default=None)


def current_run() -> RunRecorder | None:
    return _run_var.get()


def current_step() -> StepRecorder | None:
    return _step_var.get()


_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent) + os.sep


def format_exception(exc: BaseException) -> str:
    """The traceback without codetape's own frames: users debug their code, not ours."""
    te = traceback.TracebackException.from_exception(exc)
    te.stack = traceback.StackSummary.from_list(
        [f for f in te.stack if not f.filename.startswith(_PACKAGE_DIR)]
    )
    return "".join(te.format())


def _exception_event(span: Span, etype: str, message: str, stack: str) -> None:
    """Exception event, ``error.type`` and status by the OTel conventions, from text
    that is already redacted (``Span.record_exception`` would write the raw text)."""
    span.add_event(
        "exception",
        {
            "exception.type": etype,
            "exception.message": cut(message, MESSAGE_CHARS),
            "exception.stacktrace": cut(stack, STACK_CHARS),
        },
    )
    span.set_attribute(A.ERROR_TYPE, etype)
    span.set_attribute(A.ERROR_MESSAGE, cut(message, MESSAGE_CHARS))
    span.set_status(Status(StatusCode.ERROR, cut(message, STATUS_CHARS)))


def _record_exception(span: Span, rt: Runtime, exc: BaseException) -> str:
    """Record ``exc`` on ``span``; returns its redacted traceback."""
    stack = rt.redactor.text(format_exception(exc))
    _exception_event(span, type_name(exc), rt.redactor.text(str(exc)), stack)
    return stack


class RunRecorder:
    """One agent run: the ``invoke_agent`` root span of its own trace.

    Use it through ``codetape.run(...)`` or ``@codetape.agent``. ``final_answer`` may be
    set while the run is open; ``@agent`` sets it to the function's return value.
    """

    def __init__(self, name: str, task: str | None = None, *, replay_of: str | None = None) -> None:
        self.name = name
        self.task = task
        self.replay_of = replay_of
        self.final_answer: object = None
        self.id = ""
        self._steps = itertools.count()
        self._lock = threading.Lock()
        self._rt: Runtime | None = None
        self._span: Span | None = None
        self._token: Any = None
        self.snapshotter: Snapshotter | None = None
        self.last_state: State | None = None

    def next_index(self) -> int:
        with self._lock:
            return next(self._steps)

    def __enter__(self) -> RunRecorder:
        with internal_errors("starting a run"):
            rt = self._rt = runtime()
            attrs: dict[str, Any] = {
                A.GEN_AI_OPERATION_NAME: A.OP_INVOKE_AGENT,
                A.GEN_AI_AGENT_NAME: self.name,
                A.RUN_PID: os.getpid(),
            }
            if self.task is not None:
                attrs[A.RUN_TASK] = rt.redactor.text(str(self.task))
            if self.replay_of is not None:
                attrs[A.RUN_REPLAY_OF] = self.replay_of
            # A run is always the root of its own trace, whatever span is current.
            self._span = rt.tracer.start_span(
                f"{A.SPAN_INVOKE_AGENT} {self.name}",
                context=trace.set_span_in_context(trace.INVALID_SPAN),
                kind=SpanKind.INTERNAL,
                attributes=attrs,
            )
            self.id = f"{self._span.get_span_context().trace_id:032x}"
            self.snapshotter = Snapshotter(rt.blobs, rt.redactor)
        self._token = _run_var.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _run_var.reset(self._token)
        self.finish(exc)

    def finish(self, exc: BaseException | None = None) -> None:
        span, rt = self._span, self._rt
        if span is None or rt is None:
            return
        self._span = None
        try:
            with internal_errors("ending a run"):
                if exc is not None:
                    _record_exception(span, rt, exc)
                    span.set_attribute(A.RUN_STATUS, "error")
                else:
                    span.set_attribute(A.RUN_STATUS, "ok")
                    span.set_status(Status(StatusCode.OK))
                if self.final_answer is not None:
                    answer = self.final_answer
                    text = answer if isinstance(answer, str) else preview(answer, rt.redactor, 2000)
                    text = rt.redactor.text(text)
                    span.set_attribute(A.RUN_FINAL_ANSWER, cut(text, MESSAGE_CHARS))
                    if (digest := _put_text(rt, text)) is not None:
                        span.set_attribute(A.RUN_FINAL_ANSWER_DIGEST, digest)
        finally:
            with internal_errors("ending a run"):
                span.end()
        with internal_errors("ingesting a finished run"):
            rt.ingester.request()

    def __repr__(self) -> str:
        return f"<RunRecorder {self.name!r} id={self.id[:12]}>"


class StepRecorder:
    """One code action: an ``execute_code`` span under its run.

    ``begin`` opens the span with the code and the variables before; ``finish`` closes
    it with what happened. ``sandbox`` holds the identity attributes of where it ran.
    """

    def __init__(
        self,
        run: RunRecorder,
        code: str,
        *,
        mode: Literal["observed", "sandboxed"],
        sandbox: Mapping[str, Any],
    ) -> None:
        self.run = run
        self.code = code
        self.index = run.next_index()
        self.mode = mode
        self._sandbox = dict(sandbox)
        # Observed steps: the blob of random's state before the step.
        self.random_state: str | None = None
        self._span: Span | None = None
        self._token: Any = None

    def begin(self, before: State | None) -> None:
        with internal_errors("starting a step"):
            rt = runtime()
            code = rt.redactor.text(self.code)
            attrs: dict[str, Any] = {
                A.GEN_AI_OPERATION_NAME: A.OP_EXECUTE_CODE,
                A.STEP_INDEX: self.index,
                A.STEP_MODE: self.mode,
                A.CODE_PREVIEW: cut(code, TEXT_PREVIEW_CHARS),
                **self._sandbox,
            }
            if (digest := _put_text(rt, code)) is not None:
                attrs[A.CODE_DIGEST] = digest
            if before is not None:
                attrs[A.STATE_BEFORE] = before.digest
            if self.random_state is not None:
                attrs[A.STEP_RANDOM_STATE] = self.random_state
            parent = self.run._span or trace.INVALID_SPAN
            self._span = rt.tracer.start_span(
                A.SPAN_EXECUTE_CODE, context=trace.set_span_in_context(parent), attributes=attrs
            )
        self._token = _step_var.set(self)

    @property
    def span(self) -> Span | None:
        return self._span

    def finish(
        self,
        *,
        status: StepStatus,
        stdout: str = "",
        stderr: str = "",
        result: object = None,
        has_result: bool = False,
        result_preview: str | None = None,
        result_type: str | None = None,
        error: BaseException | ErrorInfo | None = None,
        after: State | None = None,
    ) -> None:
        if self._token is not None:
            _step_var.reset(self._token)
            self._token = None
        span, self._span = self._span, None
        if span is None:
            return
        try:
            with internal_errors("ending a step"):
                self._describe(
                    span,
                    status,
                    stdout,
                    stderr,
                    result,
                    has_result,
                    result_preview,
                    result_type,
                    error,
                    after,
                )
        finally:
            with internal_errors("ending a step"):
                span.end()

    def _describe(
        self,
        span: Span,
        status: StepStatus,
        stdout: str,
        stderr: str,
        result: object,
        has_result: bool,
        result_preview: str | None,
        result_type: str | None,
        error: BaseException | ErrorInfo | None,
        after: State | None,
    ) -> None:
        rt = runtime()
        attrs: dict[str, Any] = {A.STEP_STATUS: status}
        for digest_key, preview_key, text in (
            (A.STDOUT_DIGEST, A.STDOUT_PREVIEW, stdout),
            (A.STDERR_DIGEST, A.STDERR_PREVIEW, stderr),
        ):
            if text:
                text = rt.redactor.text(text)
                attrs[preview_key] = cut(text, TEXT_PREVIEW_CHARS)
                if (digest := _put_text(rt, text)) is not None:
                    attrs[digest_key] = digest
        if has_result:
            attrs[A.RESULT_TYPE] = result_type or type_name(result)
            attrs[A.RESULT_PREVIEW] = (
                cut(rt.redactor.text(result_preview), PREVIEW_CHARS)
                if result_preview is not None
                else preview(result, rt.redactor)
            )
        if after is not None:
            attrs[A.STATE_AFTER] = after.digest
            attrs[A.STATE_VARIABLES] = len(after.variables)
        span.set_attributes(attrs)
        if isinstance(error, BaseException):
            stack = _record_exception(span, rt, error)
        elif error is not None:
            stack = rt.redactor.text(error.traceback or "")
            _exception_event(span, error.type, rt.redactor.text(error.message), stack)
        else:
            return
        if stack and (digest := _put_text(rt, stack)) is not None:
            span.set_attribute(A.ERROR_TRACEBACK_DIGEST, digest)


def _put_text(rt: Runtime, text: str) -> str | None:
    """Store a value, or None if that failed: the span is still ended and kept, with
    the preview it carries."""
    with internal_errors("storing a value"):
        return rt.blobs.put_text(text)
    return None


def _json_blob(rt: Runtime, value: object) -> tuple[str, str]:
    """Tool arguments and results as redacted JSON (a repr where JSON cannot say it)."""
    text = json.dumps(rt.redactor.value(_jsonable(value)), default=repr, ensure_ascii=False)
    return rt.blobs.put_text(text), cut(text, TEXT_PREVIEW_CHARS)


def _pickle_blob(rt: Runtime, value: object) -> str | None:
    """The answer as the tool returned it, for a replay to hand the code (the code of an
    observed step saw the object itself, not its JSON); None when it cannot be pickled
    or holds a secret."""
    try:
        data = cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL)
    except Exception:
        return None
    if rt.redactor.contains_secret(data):
        return None
    return rt.blobs.put(data)


def _jsonable(value: object) -> object:
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)


class ToolCallRecorder:
    """One tool call made from inside a code action: an ``execute_tool`` span.

    ``with ToolCallRecorder(name, args) as call: call.succeeded(fn(...))``. Outside a
    code action it records nothing: a tool the agent calls directly is the agent's
    business, not a code action's.
    """

    def __init__(
        self,
        name: str,
        arguments: Mapping[str, Any],
        *,
        step: StepRecorder | None = None,
        parameters: list[list[str]] | None = None,
    ) -> None:
        self.name = name
        self.arguments = arguments
        self.parameters = parameters
        self.step = step or _step_var.get()
        self._span: Span | None = None
        self._rt: Runtime | None = None

    def __enter__(self) -> ToolCallRecorder:
        parent = self.step.span if self.step is not None else None
        if parent is None:
            return self
        with internal_errors("starting a tool call"):
            rt = self._rt = runtime()
            self._span = span = rt.tracer.start_span(
                f"{A.SPAN_EXECUTE_TOOL} {self.name}",
                context=trace.set_span_in_context(parent),
                kind=SpanKind.INTERNAL,
                attributes={
                    A.GEN_AI_OPERATION_NAME: A.OP_EXECUTE_TOOL,
                    A.GEN_AI_TOOL_NAME: self.name,
                    A.GEN_AI_TOOL_CALL_ID: uuid.uuid4().hex[:16],
                },
            )
        if self._span is not None and self._rt is not None:
            with internal_errors("recording tool arguments"):
                args_digest, args_preview = _json_blob(self._rt, dict(self.arguments))
                span.set_attribute(A.GEN_AI_TOOL_CALL_ARGUMENTS, args_preview)
                span.set_attribute(A.TOOL_ARGUMENTS_DIGEST, args_digest)
                if self.parameters is not None:
                    span.set_attribute(A.TOOL_PARAMETERS, json.dumps(self.parameters))
        return self

    def succeeded(self, result: object) -> None:
        span, rt, self._span = self._span, self._rt, None
        if span is None or rt is None:
            return
        try:
            with internal_errors("recording a tool result"):
                span.set_attribute(A.TOOL_STATUS, "ok")
                span.set_status(Status(StatusCode.OK))
                digest, shown = _json_blob(rt, result)
                span.set_attribute(A.TOOL_RESULT_DIGEST, digest)
                span.set_attribute(A.GEN_AI_TOOL_CALL_RESULT, shown)
                observed = self.step is not None and self.step.mode == "observed"
                if observed and (pickled := _pickle_blob(rt, result)) is not None:
                    span.set_attribute(A.TOOL_RESULT_PICKLE, pickled)
        finally:
            with internal_errors("recording a tool result"):
                span.end()

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
            with internal_errors("recording a tool error"):
                if exc is not None:
                    span.set_attribute(A.TOOL_STATUS, "error")
                    _record_exception(span, rt, exc)
        finally:
            with internal_errors("recording a tool error"):
                span.end()


def record_tool_call(
    name: str,
    arguments: Mapping[str, Any],
    call: Callable[[], T],
    *,
    step: StepRecorder | None = None,
    parameters: list[list[str]] | None = None,
) -> T:
    """Run ``call`` as the tool ``name``, recorded under the running (or given) step."""
    with ToolCallRecorder(name, arguments, step=step, parameters=parameters) as recorder:
        result = call()
        recorder.succeeded(result)
        return result
