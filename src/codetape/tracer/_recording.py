"""The recording core: runs, steps and tool calls as spans, with values in blobs.

The decorators and the sandbox both record through these three classes, so a step
looks the same in the store however it was executed.

What they record is bounded and honest about time and processes:

- every string attribute is at most ``ATTRIBUTE_CHARS`` long; a longer value (a 40 MB
  task, say) is recorded cut, and its full value goes to a blob named by
  ``codetape.attributes.full.digest``;
- a span ends at its start plus the time a monotonic clock saw pass, so a wall-clock
  jump while it is open cannot make a duration negative;
- a recorder belongs to the process that opened it: a forked child sees no current run
  or step (its first code action is a run of its own, ``codetape.run.forked_from``
  naming the parent's run), and cannot end its parent's spans;
- the recorders that are open can be ended as interrupted (``interrupt_open``), which
  the signal handlers do on SIGTERM and SIGINT.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import pickle
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import cloudpickle
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from .._format import (
    ATTRIBUTE_CHARS,
    MESSAGE_CHARS,
    PREVIEW_CHARS,
    STACK_CHARS,
    STATUS_CHARS,
    TEXT_PREVIEW_CHARS,
    cut,
    error_line,
    thought_of,
)
from ..sandbox.internal import PICKLE_PROTOCOL
from ..schemas import attributes as A
from ._changes import plain
from ._config import Runtime, runtime
from ._errors import internal_errors
from ._signals import install_signal_handlers
from ._spans import start_span
from ._state import (
    Snapshotter,
    State,
    preview,
    release_snapshotter,
    snapshotter_for,
    type_name,
)

if TYPE_CHECKING:  # annotations only: recording never loads the models
    from ..schemas import ErrorInfo, StepStatus

__all__ = [
    "RunRecorder",
    "StepRecorder",
    "ToolCallRecorder",
    "current_run",
    "current_step",
    "current_tool_call",
    "end_span",
    "format_exception",
    "interrupt_open",
    "put_text",
    "record_exception",
    "record_tool_call",
    "step_seed",
]

T = TypeVar("T")

_run_var: ContextVar[RunRecorder | None] = ContextVar("codetape_run", default=None)
_step_var: ContextVar[StepRecorder | None] = ContextVar("codetape_step", default=None)
# The tool call running in this context: a run started inside it is its child.
_tool_var: ContextVar[ToolCallRecorder | None] = ContextVar("codetape_tool_call", default=None)


def current_run() -> RunRecorder | None:
    """The run open in this context, if this process opened it (a forked child's
    inherited run is its parent's, not the child's). A run that has ended is no
    context's current run, even where it could not be unset (LangChain ends an async
    graph's run from a copy of the context the run was made current in)."""
    run = _run_var.get()
    return run if run is not None and run.pid == os.getpid() and not run.ended else None


def current_step() -> StepRecorder | None:
    step = _step_var.get()
    return step if step is not None and step.run.pid == os.getpid() else None


def current_tool_call() -> ToolCallRecorder | None:
    """The tool call running in this context (a managed agent's run starts in one)."""
    call = _tool_var.get()
    if call is None or call.span is None or call.step is None or call.step.run.pid != os.getpid():
        return None
    return call


# The recorders with an open span, for ``interrupt_open``; a forked child has none.
_open: set[RunRecorder | StepRecorder | ToolCallRecorder] = set()
_open_lock = threading.Lock()


def _forget_open_after_fork() -> None:
    global _open_lock
    _open_lock = threading.Lock()
    _open.clear()


os.register_at_fork(after_in_child=_forget_open_after_fork)


def _opened(recorder: RunRecorder | StepRecorder | ToolCallRecorder) -> None:
    with _open_lock:
        _open.add(recorder)


def _closed(recorder: RunRecorder | StepRecorder | ToolCallRecorder) -> None:
    with _open_lock:
        _open.discard(recorder)


def interrupt_open(signal_name: str) -> None:
    """End every open tool call, step and run of this process as interrupted by
    ``signal_name`` (innermost first), so what was running is in the spool."""
    with _open_lock:
        recorders = list(_open)
    for kind in (ToolCallRecorder, StepRecorder, RunRecorder):
        for recorder in recorders:
            if isinstance(recorder, kind):
                recorder.interrupt(signal_name)


def end_span(span: Span, started_ns: int) -> None:
    """End ``span`` at its start plus the monotonic time since ``started_ns``."""
    start = getattr(span, "start_time", None)
    if isinstance(start, int):
        span.end(end_time=start + max(0, time.monotonic_ns() - started_ns))
    else:
        span.end()


def _end_interrupted(span: Span, started_ns: int, status: tuple[str, str], when: str) -> None:
    """End a run's or step's span whose process got a signal (``when``: "SIGTERM
    during the run") and is going."""
    signal_name = when.split()[0]
    with internal_errors("ending an interrupted span"):
        span.set_attribute(*status)
        _exception_event(span, signal_name, f"the process received {when}", "")
    with internal_errors("ending an interrupted span"):
        end_span(span, started_ns)


def _capped(rt: Runtime, attrs: dict[str, Any], full: dict[str, str]) -> dict[str, Any]:
    """``attrs`` with each string longer than ``ATTRIBUTE_CHARS`` cut; the full values of
    the span's cut attributes (``full``, kept by its recorder) go to one blob."""
    for value in attrs.values():
        if (type(value) is str or isinstance(value, str)) and len(value) > ATTRIBUTE_CHARS:
            break
    else:
        return attrs
    long = {k: v for k, v in attrs.items() if isinstance(v, str) and len(v) > ATTRIBUTE_CHARS}
    if not long:
        return attrs
    full.update(long)
    capped = {**attrs, **{k: cut(v, ATTRIBUTE_CHARS) for k, v in long.items()}}
    if (digest := put_text(rt, json.dumps(full, ensure_ascii=False))) is not None:
        capped[A.ATTRIBUTES_FULL_DIGEST] = digest
    return capped


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
    etype = cut(etype, ATTRIBUTE_CHARS)
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


def record_exception(span: Span, rt: Runtime, exc: BaseException) -> str:
    """Record ``exc`` on ``span``; returns its redacted traceback."""
    stack = rt.redactor.text(format_exception(exc))
    _exception_event(span, type_name(exc), rt.redactor.text(str(exc)), stack)
    return stack


def _parent_link(attrs: dict[str, Any], call: ToolCallRecorder | None) -> list[trace.Link]:
    """A run started by a tool call of a step (a managed agent): the step and the call,
    as attributes and as a link to the call's span."""
    if call is None or call.span is None or call.step is None:
        return []
    context = call.span.get_span_context()
    attrs[A.RUN_PARENT] = f"{call.step.run.id}:{call.step.index}"
    attrs[A.RUN_PARENT_TOOL_CALL] = f"{context.span_id:016x}"
    return [trace.Link(context)]


def _caller_link(attrs: dict[str, Any]) -> list[trace.Link]:
    """A link to the span current in the caller (a web request, an OpenInference or
    Logfire span), and its ids in ``attrs``; none when no span is current."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return []
    attrs[A.PARENT_TRACE_ID] = f"{context.trace_id:032x}"
    attrs[A.PARENT_SPAN_ID] = f"{context.span_id:016x}"
    return [trace.Link(context)]


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
        self.pid = os.getpid()
        self._steps = itertools.count()
        self._llm_calls = itertools.count()
        # The run's latest model call: its span id and (redacted) output text.
        self._latest_llm: tuple[str, str] | None = None
        self._lock = threading.Lock()
        self._rt: Runtime | None = None
        self._span: Span | None = None
        self._started_ns = 0
        self._full: dict[str, str] = {}
        self._token: Any = None
        self._ended = False
        self.snapshotter: Snapshotter | None = None
        self.last_state: State | None = None

    def next_index(self) -> int:
        with self._lock:
            return next(self._steps)

    def next_llm_index(self) -> int:
        with self._lock:
            return next(self._llm_calls)

    def note_llm_call(self, span_id: str, output: str) -> None:
        """A model call of this run ended with ``output``: the next code actions came
        from it, until the next call."""
        with self._lock:
            self._latest_llm = (span_id, output)

    @property
    def latest_llm_call(self) -> tuple[str, str] | None:
        return self._latest_llm

    @property
    def span(self) -> Span | None:
        return self._span

    @property
    def ended(self) -> bool:
        """``finish`` has ended the run."""
        return self._ended

    def __enter__(self) -> RunRecorder:
        self.pid = os.getpid()
        install_signal_handlers()
        with internal_errors("starting a run"):
            rt = self._rt = runtime()
            attrs: dict[str, Any] = {
                A.GEN_AI_OPERATION_NAME: A.OP_INVOKE_AGENT,
                A.GEN_AI_AGENT_NAME: self.name,
                A.RUN_PID: self.pid,
            }
            if self.task is not None:
                attrs[A.RUN_TASK] = rt.redactor.text(str(self.task))
            if self.replay_of is not None:
                attrs[A.RUN_REPLAY_OF] = self.replay_of
            inherited = _run_var.get()
            if inherited is not None and inherited.pid != self.pid and inherited.id:
                attrs[A.RUN_FORKED_FROM] = inherited.id
            parent_call = current_tool_call()
            links = _parent_link(attrs, parent_call) or _caller_link(attrs)
            self._started_ns = time.monotonic_ns()
            # A run is always the root of its own trace, whatever span is current (its
            # id is the run's id); the caller's span is a link.
            self._span = start_span(
                rt,
                f"{A.SPAN_INVOKE_AGENT} {cut(self.name, ATTRIBUTE_CHARS)}",
                None,
                _capped(rt, attrs, self._full),
                links=links,
                start_record=True,
            )
            self.id = f"{self._span.get_span_context().trace_id:032x}"
            if parent_call is not None and parent_call.span is not None:
                parent_call.span.set_attribute(A.TOOL_CHILD_RUN, self.id)
            self.snapshotter = snapshotter_for(rt.blobs, rt.redactor)
            _opened(self)
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
        if span is None or rt is None or self.pid != os.getpid():
            return
        self._span = None
        self._ended = True
        _closed(self)
        try:
            with internal_errors("ending a run"):
                if exc is not None:
                    record_exception(span, rt, exc)
                    span.set_attribute(A.RUN_STATUS, "error")
                else:
                    span.set_attribute(A.RUN_STATUS, "ok")
                    span.set_status(Status(StatusCode.OK))
                if self.final_answer is not None:
                    answer = self.final_answer
                    text = answer if isinstance(answer, str) else preview(answer, rt.redactor, 2000)
                    text = rt.redactor.text(text)
                    span.set_attribute(A.RUN_FINAL_ANSWER, cut(text, MESSAGE_CHARS))
                    span.set_attribute(A.RUN_FINAL_ANSWER_TYPE, type_name(answer))
                    if (digest := put_text(rt, text)) is not None:
                        span.set_attribute(A.RUN_FINAL_ANSWER_DIGEST, digest)
        finally:
            with internal_errors("ending a run"):
                end_span(span, self._started_ns)
        # The next run may take its snapshotter: this run's steps have ended with it.
        snapshotter, self.snapshotter = self.snapshotter, None
        if snapshotter is not None:
            release_snapshotter(snapshotter)
        with internal_errors("ingesting a finished run"):
            rt.ingester.request()

    def interrupt(self, signal_name: str) -> None:
        """End the run as incomplete: its process got ``signal_name`` and is going."""
        span, self._span = self._span, None
        if span is not None and self.pid == os.getpid():
            _closed(self)
            status = (A.RUN_STATUS, "incomplete")
            _end_interrupted(span, self._started_ns, status, f"{signal_name} during the run")

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
        self._started_ns = 0
        self._full: dict[str, str] = {}
        self._token: Any = None

    def begin(self, before: State | None) -> None:
        with internal_errors("starting a step"):
            rt = runtime()
            shown, digest = _stored_code(rt, self.code)
            attrs: dict[str, Any] = {
                A.GEN_AI_OPERATION_NAME: A.OP_EXECUTE_CODE,
                A.STEP_INDEX: self.index,
                A.STEP_MODE: self.mode,
                A.CODE_PREVIEW: shown,
                **self._sandbox,
            }
            if digest is not None:
                attrs[A.CODE_DIGEST] = digest
            if before is not None:
                attrs[A.STATE_BEFORE] = before.digest
            if self.random_state is not None:
                attrs[A.STEP_RANDOM_STATE] = self.random_state
            self._model_call(rt, attrs)
            self._started_ns = time.monotonic_ns()
            self._span = start_span(
                rt,
                A.SPAN_EXECUTE_CODE,
                self.run._span,
                _capped(rt, attrs, self._full),
                start_record=True,
            )
            _opened(self)
        self._token = _step_var.set(self)

    def _model_call(self, rt: Runtime, attrs: dict[str, Any]) -> None:
        """The run's latest model call, which the code came from, and the thought."""
        latest = self.run.latest_llm_call
        if latest is None:
            return
        span_id, output = latest
        attrs[A.STEP_LLM_CALL] = span_id
        thought = thought_of(output, self.code)
        if thought:
            attrs[A.STEP_THOUGHT_PREVIEW] = cut(thought, TEXT_PREVIEW_CHARS)
            if (digest := put_text(rt, thought)) is not None:
                attrs[A.STEP_THOUGHT_DIGEST] = digest

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
        if self.run.pid != os.getpid():
            return  # a forked child's copy: the step is its parent's to end
        if self._token is not None:
            _step_var.reset(self._token)
            self._token = None
        span, self._span = self._span, None
        if span is None:
            return
        _closed(self)
        if isinstance(error, KeyboardInterrupt):  # Ctrl-C (SIGINT) stopped the code
            status = "interrupted"
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
                end_span(span, self._started_ns)

    def interrupt(self, signal_name: str) -> None:
        """End the step as interrupted: its process got ``signal_name`` and is going."""
        span, self._span = self._span, None
        if span is not None and self.run.pid == os.getpid():
            _closed(self)
            status = (A.STEP_STATUS, "interrupted")
            _end_interrupted(span, self._started_ns, status, f"{signal_name} while the step ran")

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
                if (digest := put_text(rt, text)) is not None:
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
        span.set_attributes(_capped(rt, attrs, self._full))
        if isinstance(error, BaseException):
            stack = record_exception(span, rt, error)
            message = str(error)
        elif error is not None:
            stack = rt.redactor.text(error.traceback or "")
            message = error.message
            _exception_event(span, error.type, rt.redactor.text(message), stack)
        else:
            return
        if (line := error_line(self.code, stack, message)) is not None:
            span.set_attribute(A.ERROR_LINE, cut(rt.redactor.text(line), TEXT_PREVIEW_CHARS))
        if stack and (digest := put_text(rt, stack)) is not None:
            span.set_attribute(A.ERROR_TRACEBACK_DIGEST, digest)


# The latest code texts stepped through, redacted, previewed and stored, per runtime: an
# agent loop often runs the same code again (a retry, a fixed snippet).
_CODES_LIMIT = 64
_codes: dict[str, tuple[str, str | None]] = {}
_codes_runtime: list[object] = [None]


def _stored_code(rt: Runtime, code: str) -> tuple[str, str | None]:
    """The code's preview (redacted) and the digest of its stored redacted text (an
    export that keeps texts for OTLP gets each one stored again: it keeps the latest)."""
    if rt.kept_texts is not None:
        redacted = rt.redactor.text(code)
        return cut(redacted, TEXT_PREVIEW_CHARS), put_text(rt, redacted)
    if _codes_runtime[0] is not rt:
        _codes.clear()
        _codes_runtime[0] = rt
    found = _codes.get(code)
    if found is None:
        redacted = rt.redactor.text(code)
        found = (cut(redacted, TEXT_PREVIEW_CHARS), put_text(rt, redacted))
        if found[1] is None:
            return found
        if len(_codes) >= _CODES_LIMIT:
            _codes.clear()
        _codes[code] = found
    return found


def put_text(rt: Runtime, text: str) -> str | None:
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
        # Plain data (the standard containers and scalars): the standard pickler writes
        # the same bytes as cloudpickle's, without building one.
        data = (pickle if plain(value) else cloudpickle).dumps(value, protocol=PICKLE_PROTOCOL)
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
        self.step = step or current_step()
        self._span: Span | None = None
        self._rt: Runtime | None = None
        self._started_ns = 0
        self._full: dict[str, str] = {}
        self._token: Any = None

    @property
    def span(self) -> Span | None:
        return self._span

    def __enter__(self) -> ToolCallRecorder:
        parent = self.step.span if self.step is not None else None
        if parent is None:
            return self
        with internal_errors("starting a tool call"):
            rt = self._rt = runtime()
            self._started_ns = time.monotonic_ns()
            self._span = span = start_span(
                rt,
                f"{A.SPAN_EXECUTE_TOOL} {cut(self.name, ATTRIBUTE_CHARS)}",
                parent,
                _capped(
                    rt,
                    {
                        A.GEN_AI_OPERATION_NAME: A.OP_EXECUTE_TOOL,
                        A.GEN_AI_TOOL_NAME: self.name,
                        A.GEN_AI_TOOL_CALL_ID: uuid.uuid4().hex[:16],
                    },
                    self._full,
                ),
            )
            _opened(self)
        if self._span is not None and self._rt is not None:
            with internal_errors("recording tool arguments"):
                args_digest, args_preview = _json_blob(self._rt, dict(self.arguments))
                attrs = {
                    A.GEN_AI_TOOL_CALL_ARGUMENTS: args_preview,
                    A.TOOL_ARGUMENTS_DIGEST: args_digest,
                }
                if self.parameters is not None:
                    attrs[A.TOOL_PARAMETERS] = json.dumps(self.parameters)
                span.set_attributes(_capped(self._rt, attrs, self._full))
        if self._span is not None:
            self._token = _tool_var.set(self)
        return self

    def _take(self) -> tuple[Span | None, Runtime | None]:
        """The open span, now this caller's to end (none in a forked child's copy)."""
        span, rt, self._span = self._span, self._rt, None
        if self._token is not None:
            token, self._token = self._token, None
            with contextlib.suppress(ValueError, RuntimeError):  # ended in another context
                _tool_var.reset(token)
        if span is None or self.step is None or self.step.run.pid != os.getpid():
            return None, None
        _closed(self)
        return span, rt

    def succeeded(self, result: object, pickled: bytes | None = None) -> None:
        """Record the call's answer: ``result`` as JSON, and ``pickled`` (the answer's
        pickle, when the caller has it: a replay hands back the recorded one)."""
        span, rt = self._take()
        if span is None or rt is None:
            return
        try:
            with internal_errors("recording a tool result"):
                span.set_attribute(A.TOOL_STATUS, "ok")
                span.set_status(Status(StatusCode.OK))
                digest, shown = _json_blob(rt, result)
                span.set_attribute(A.TOOL_RESULT_DIGEST, digest)
                span.set_attribute(A.GEN_AI_TOOL_CALL_RESULT, shown)
                observed = self.step is not None and self.step.mode in ("observed", "sandboxed")
                if pickled is not None:
                    span.set_attribute(A.TOOL_RESULT_PICKLE, rt.blobs.put(pickled))
                elif observed and (blob := _pickle_blob(rt, result)) is not None:
                    span.set_attribute(A.TOOL_RESULT_PICKLE, blob)
        finally:
            with internal_errors("recording a tool result"):
                end_span(span, self._started_ns)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span, rt = self._take()
        if span is None or rt is None:
            return
        try:
            with internal_errors("recording a tool error"):
                if exc is not None:
                    span.set_attribute(A.TOOL_STATUS, "error")
                    record_exception(span, rt, exc)
        finally:
            with internal_errors("recording a tool error"):
                end_span(span, self._started_ns)

    def interrupt(self, signal_name: str) -> None:
        """End the call as interrupted: its process got ``signal_name`` and is going."""
        span, _ = self._take()
        if span is None:
            return
        with internal_errors("ending an interrupted tool call"):
            span.set_attribute(A.TOOL_STATUS, "interrupted")
            _exception_event(
                span, signal_name, f"the process received {signal_name} during the call", ""
            )
        with internal_errors("ending an interrupted tool call"):
            end_span(span, self._started_ns)


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


def step_seed(sandbox_seed: int, index: int) -> int:
    """The ``random`` seed of step ``index``: recorded, so a replay draws the same."""
    return int.from_bytes(hashlib.sha256(f"{sandbox_seed}:{index}".encode()).digest()[:4], "big")
