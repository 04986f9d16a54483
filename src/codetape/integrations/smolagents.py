"""Record a smolagents ``CodeAgent``: ``instrument(agent)`` and ``uninstrument(agent)``.

``instrument`` records an agent that runs its code actions in its own
``LocalPythonExecutor`` (observed mode): each ``agent.run(task)`` is a run, each code
action a step with the executor's variables before and after, what the code printed,
its result or error, and every call it made to the agent's tools; each call to the
agent's model (``generate``, ``generate_stream``) is a model call of the run, and each
step names the call its code came from. The agent behaves exactly as before: a failing
step is recorded and the agent carries on, as smolagents does.

``instrument(agent, sandbox=sb)`` also runs the code actions in codetape's sandbox
(``CodetapeExecutor``), each ``agent.run`` still one run.

Needs the optional extra: ``pip install 'codetape[smolagents]'``.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

try:
    from smolagents.agent_types import AgentType
    from smolagents.agents import RunResult
    from smolagents.local_python_executor import (
        ExecutionTimeoutError,
        InterpreterError,
        LocalPythonExecutor,
        PythonExecutor,
    )
    from smolagents.memory import FinalAnswerStep
except ImportError as exc:
    raise ImportError(
        "codetape.integrations.smolagents needs smolagents: pip install 'codetape[smolagents]'"
    ) from exc

from ..tracer.internal import (
    LlmCallRecorder,
    RunRecorder,
    State,
    StepRecorder,
    Usage,
    bind_arguments,
    current_run,
    current_tool_call,
    format_exception,
    internal_errors,
    observed_sandbox,
    random_state_blob,
    record_tool_call,
    tool_parameters,
    tool_signature,
    type_name,
    usage_of,
)

if TYPE_CHECKING:  # annotations only: recording never loads the sandbox or the models
    from ..schemas import ErrorInfo, StepStatus
    from ..tracer import Sandbox

__all__ = ["CodetapeExecutor", "instrument", "uninstrument"]

AgentT = TypeVar("AgentT")


# -- observed mode: instrument(agent) over the agent's own LocalPythonExecutor -----------

# The executor's bookkeeping in its state dict, not variables of the agent's code.
_EXECUTOR_KEYS = frozenset({"_print_outputs", "_operations_count"})
# final_answer ends the step rather than doing work; the run records the answer.
_NOT_TOOLS = frozenset({"final_answer"})
_ORIGINAL_RUN = "__codetape_original_run__"
_NO_RUN = object()  # the agent had no ``run`` of its own before instrument()

# Runs opened by instrument(); a run the user opened around agent.run is reused instead.
_own_runs: weakref.WeakSet[RunRecorder] = weakref.WeakSet()
# The executors instrument(agent, sandbox=...) replaced, for uninstrument to give back.
_replaced_executors: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def instrument(agent: AgentT, *, sandbox: Sandbox | None = None) -> AgentT:
    """Record every ``agent.run(task)`` of a smolagents ``CodeAgent``; returns ``agent``.

    Each run is named after ``agent.name`` (or the agent's class) and records the task
    and the final answer; each code action is a step, each call to one of the agent's
    tools an ``execute_tool`` span under its step, and each call to its model a
    ``chat`` span (messages, output, tokens). Inside an open ``codetape.run()`` or
    ``@codetape.agent``, all of it goes to that run instead. Instrumenting twice
    changes nothing; ``uninstrument`` undoes it.

    Without ``sandbox``, the agent must run its code with smolagents'
    ``LocalPythonExecutor`` (the default) or with a codetape executor. With
    ``sandbox``, a ``codetape.Sandbox``, its code actions run there instead
    (``CodetapeExecutor``): the tools stay on the host, and each ``agent.run`` is
    still one run with all its steps.

    ``model`` is any smolagents model, ``get_orders`` a smolagents ``@tool``:

    >>> import codetape                                                  # doctest: +SKIP
    >>> from smolagents import CodeAgent                                 # doctest: +SKIP
    >>> from codetape.integrations.smolagents import instrument          # doctest: +SKIP
    >>> agent = instrument(CodeAgent(tools=[get_orders], model=model))   # doctest: +SKIP
    >>> answer = agent.run("Refund every order over $100")              # doctest: +SKIP
    >>> codetape.Store().runs()[0].final_answer == answer                # doctest: +SKIP
    True
    """
    target: Any = agent
    executor = getattr(target, "python_executor", None)
    if executor is None:
        raise TypeError(
            f"instrument() records a smolagents CodeAgent; {type(agent).__name__} has no "
            "python_executor"
        )
    if sandbox is not None:
        if isinstance(executor, _RecordingExecutor):
            executor = executor._inner
        _replaced_executors.setdefault(target, executor)
        executor = target.python_executor = CodetapeExecutor(sandbox)
    if isinstance(executor, LocalPythonExecutor):
        target.python_executor = _RecordingExecutor(executor, _agent_tools(target))
    elif not isinstance(executor, _RecordingExecutor) and not _records_itself(executor):
        raise TypeError(
            f"instrument() records an agent whose code runs in smolagents' "
            f"LocalPythonExecutor, not {type(executor).__name__}; to record sandboxed "
            "actions, give the agent codetape's executor"
        )
    _record_runs(target)
    for managed in getattr(target, "managed_agents", {}).values():
        # A managed agent's runs are recorded too, each the child of the step (and the
        # tool call) that started it.
        if getattr(managed, "python_executor", None) is not None:
            instrument(managed)
        else:  # a ToolCallingAgent: its runs and model calls, it has no code actions
            _record_runs(managed)
    return agent


def _record_runs(target: Any) -> None:
    """Record each ``target.run`` as a run, and its model's calls."""
    if not hasattr(vars(target).get("run"), _ORIGINAL_RUN):
        original = vars(target).get("run", _NO_RUN)
        recorded = _recorded_run(target, target.run)
        setattr(recorded, _ORIGINAL_RUN, original)
        target.run = recorded
    _record_model(getattr(target, "model", None))


def uninstrument(agent: AgentT) -> AgentT:
    """Stop recording ``agent`` and give it back its own executor and ``run``.

    >>> from codetape.integrations.smolagents import instrument, uninstrument
    >>> agent = uninstrument(instrument(agent))                          # doctest: +SKIP
    """
    target: Any = agent
    executor = getattr(target, "python_executor", None)
    if isinstance(executor, _RecordingExecutor):
        target.python_executor = executor._inner
    replaced = _replaced_executors.pop(target, None)
    if replaced is not None:
        target.python_executor = replaced
    _unrecord_model(getattr(target, "model", None))
    for managed in getattr(target, "managed_agents", {}).values():
        uninstrument(managed)
    original = getattr(vars(target).get("run"), _ORIGINAL_RUN, None)
    if original is _NO_RUN:
        del target.run
    elif original is not None:
        target.run = original
    return agent


def _records_itself(executor: object) -> bool:
    """codetape's own executors (``CodetapeExecutor``) record each step themselves."""
    return type(executor).__module__.startswith("codetape.")


def _agent_tools(agent: Any) -> dict[str, Any]:
    return {**getattr(agent, "tools", {}), **getattr(agent, "managed_agents", {})}


# -- runs ---------------------------------------------------------------------------------


def _recorded_run(agent: Any, run: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(run)

    @functools.wraps(run)
    def recorded(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs).arguments
        except TypeError:
            return run(*args, **kwargs)  # smolagents says what is wrong with the call
        outer = current_run()
        if outer is not None and outer not in _own_runs and current_tool_call() is None:
            return run(*args, **kwargs)  # the user's run records these steps
        task = bound.get("task")
        recorder = RunRecorder(
            getattr(agent, "name", None) or type(agent).__name__,
            task if isinstance(task, str) else None,
        )
        _own_runs.add(recorder)
        if bound.get("stream"):
            return _recorded_stream(recorder, run(*args, **kwargs))
        with recorder:
            result = run(*args, **kwargs)
            recorder.final_answer = _raw(result.output if isinstance(result, RunResult) else result)
        return result

    return recorded


def _raw(answer: Any) -> Any:
    """An answer as the agent's code gave it: smolagents wraps images, audio and text in
    ``AgentType``s whose repr says nothing of them."""
    if isinstance(answer, AgentType):
        with internal_errors("reading an agent's answer"):
            return answer.to_raw()
    return answer


def _recorded_stream(recorder: RunRecorder, steps: Iterator[Any]) -> Iterator[Any]:
    """``agent.run(task, stream=True)``: the run lasts while the caller iterates.

    The agent's generator runs in a context of its own that holds the run, so the
    caller's context never sees it between two ``next()`` calls.
    """
    context = contextvars.copy_context()
    context.run(recorder.__enter__)
    error: BaseException | None = None
    try:
        while True:
            try:
                item = context.run(next, steps)
            except StopIteration:
                return
            if isinstance(item, FinalAnswerStep):
                recorder.final_answer = _raw(item.output)
            yield item
    except BaseException as exc:  # GeneratorExit too: the caller stopped the run
        error = exc
        context.run(getattr(steps, "close", lambda: None))
        raise
    finally:
        context.run(recorder.__exit__, type(error) if error else None, error, None)


# -- model calls --------------------------------------------------------------------------

_MODEL_METHODS = ("generate", "generate_stream")
_ORIGINAL_METHOD = "__codetape_original__"


def _record_model(model: Any) -> None:
    """Record each call of the model's ``generate`` and ``generate_stream`` (instance
    attributes over its methods; ``_unrecord_model`` removes them)."""
    if model is None:
        return
    for name in _MODEL_METHODS:
        method = getattr(model, name, None)
        if method is None or hasattr(method, _ORIGINAL_METHOD):
            continue
        wrapped = (_recorded_stream_call if name == "generate_stream" else _recorded_call)(
            model, method
        )
        setattr(wrapped, _ORIGINAL_METHOD, method)
        setattr(model, name, wrapped)


def _unrecord_model(model: Any) -> None:
    for name in _MODEL_METHODS:
        if model is not None and hasattr(vars(model).get(name), _ORIGINAL_METHOD):
            delattr(model, name)


def _model_id(model: Any) -> str | None:
    model_id = getattr(model, "model_id", None)
    return model_id if isinstance(model_id, str) else type(model).__name__


def _recorded_call(model: Any, generate: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(generate)
    def recorded(messages: Any, *args: Any, **kwargs: Any) -> Any:
        if current_run() is None:  # the agent's model used outside agent.run
            return generate(messages, *args, **kwargs)
        with LlmCallRecorder(_model_id(model), messages) as call:
            output = generate(messages, *args, **kwargs)
            call.succeeded(output)
            return output

    return recorded


def _recorded_stream_call(model: Any, generate_stream: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(generate_stream)
    def recorded(messages: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        if current_run() is None:
            yield from generate_stream(messages, *args, **kwargs)
            return
        with LlmCallRecorder(_model_id(model), messages, streamed=True) as call:
            deltas: list[Any] = []
            try:
                for delta in generate_stream(messages, *args, **kwargs):
                    deltas.append(delta)
                    yield delta
            except GeneratorExit:  # the agent stopped reading: what it read is the output
                call.succeeded(_streamed_text(deltas), usage=_summed_usage(deltas))
                raise
            call.succeeded(_streamed_text(deltas), usage=_summed_usage(deltas))

    return recorded


def _streamed_text(deltas: list[Any]) -> str:
    return "".join(getattr(d, "content", None) or "" for d in deltas)


def _summed_usage(deltas: list[Any]) -> Usage:
    found = [usage_of(d) for d in deltas]
    inputs = [u.input_tokens for u in found if u.input_tokens is not None]
    outputs = [u.output_tokens for u in found if u.output_tokens is not None]
    return Usage(sum(inputs) if inputs else None, sum(outputs) if outputs else None)


# -- steps --------------------------------------------------------------------------------


class _RecordingExecutor:
    """Stands in for the agent's ``LocalPythonExecutor`` and records each code action.

    Everything but the three executor methods is the wrapped executor's, so the agent
    (and its user) can still read and set ``state``, ``static_tools`` and the rest.
    """

    _inner: Any
    _tools: dict[str, inspect.Signature | None]
    _current: _CurrentAction
    _wrapped: tuple[object, dict[str, Any]] | None

    def __init__(self, inner: Any, tools: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_tools", _signatures(tools))
        object.__setattr__(self, "_current", _CurrentAction())
        object.__setattr__(self, "_wrapped", None)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_inner", "_tools", "_current", "_wrapped"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    def __repr__(self) -> str:
        return f"<recorded by codetape: {self._inner!r}>"

    def send_tools(self, tools: dict[str, Any]) -> None:
        with internal_errors("reading the agent's tools"):
            object.__setattr__(self, "_tools", _signatures(tools))
        object.__setattr__(self, "_wrapped", None)
        self._inner.send_tools(tools)

    def _recording_tools(self, tools: object) -> dict[str, Any] | None:
        """The executor's tools, each recording its calls under the action running when
        it is called. One dict for the executor's life: a function the agent's code
        defines keeps the tools it was defined with, and must record in later actions."""
        if not isinstance(tools, dict):
            return None
        if self._wrapped is not None and self._wrapped[0] is tools:
            return self._wrapped[1]
        wrapped: dict[str, Any] | None = None
        with internal_errors("wrapping the agent's tools"):
            wrapped = {
                name: _StepTool(name, tool, self._tools[name], self._current)
                if name in self._tools
                else tool
                for name, tool in tools.items()
            }
            object.__setattr__(self, "_wrapped", (tools, wrapped))
        return wrapped

    def send_variables(self, variables: dict[str, Any]) -> None:
        self._inner.send_variables(variables)

    def __call__(self, code_action: str) -> Any:
        run = current_run()
        if run is None:  # called outside agent.run: not a step of any run
            return self._inner(code_action)
        inner = self._inner
        action: _CodeAction | None = None
        with internal_errors("starting a step"):
            action = _CodeAction(run, code_action, inner)
        if action is None:
            return inner(code_action)
        tools = inner.static_tools
        recorded_tools = self._recording_tools(tools)
        self._current.step = action.step
        try:
            if recorded_tools is not None:
                inner.static_tools = recorded_tools
            try:
                output = inner(code_action)
            finally:
                self._current.step = None
                if recorded_tools is not None:
                    inner.static_tools = tools
        except BaseException as exc:
            action.failed(exc)
            raise
        action.succeeded(output)
        return output


PythonExecutor.register(_RecordingExecutor)


class _CodeAction:
    """One call of the executor, recorded as a step. None of it raises into the agent."""

    def __init__(self, run: RunRecorder, code: str, executor: Any) -> None:
        self.run = run
        self.executor = executor
        self.state = state = executor.state
        self.printed = state.get("_print_outputs")
        self.printed_len = len(str(self.printed)) if self.printed is not None else 0
        imports = list(getattr(executor, "additional_authorized_imports", None) or [])
        self.step = StepRecorder(
            run,
            code,
            mode="observed",
            sandbox=observed_sandbox({"kind": "smolagents", "imports": imports}),
        )
        self.step.random_state = random_state_blob()
        self.before: State | None = None
        with internal_errors("snapshotting the variables before a step"):
            if run.snapshotter is not None:
                self.before = run.snapshotter.snapshot(_Variables(executor), run.last_state)
        self.step.begin(self.before)

    def succeeded(self, output: Any) -> None:
        value = getattr(output, "output", None)
        self.step.finish(
            status="ok",
            stdout=self._stdout(),
            result=value,
            has_result=value is not None,
            after=self._after(),
        )

    def failed(self, exc: BaseException) -> None:
        status: StepStatus = "error"
        error: BaseException | ErrorInfo = exc
        with internal_errors("describing a step's error"):
            status, error = _describe(exc)
        self.step.finish(status=status, stdout=self._stdout(), error=error, after=self._after())

    def _stdout(self) -> str:
        """What this action printed: smolagents gives each call a fresh print buffer;
        should it ever keep one, only what was added since the action began counts."""
        with internal_errors("reading a step's print output"):
            printed = self.state.get("_print_outputs")
            if printed is None:
                return ""
            text = str(printed)
            return text[self.printed_len :] if printed is self.printed else text
        return ""

    def _after(self) -> State | None:
        with internal_errors("snapshotting the variables after a step"):
            if self.run.snapshotter is not None:
                after = self.run.snapshotter.snapshot(
                    _Variables(self.executor), self.before, code=self.step.code, owner=self.executor
                )
                self.run.last_state = after
                return after
        return None


class _Variables(Mapping[str, Any]):
    """The names the agent's code sees: the executor's state, and the functions its
    code defined (smolagents keeps those among its custom tools), read in place: a copy
    would be one more reference to every value, and a value only the executor refers
    to is one a step that never names it cannot have changed."""

    def __init__(self, executor: Any) -> None:
        self._state: dict[str, Any] = executor.state
        custom = getattr(executor, "custom_tools", None)
        self._custom: dict[str, Any] = custom if isinstance(custom, dict) else {}

    def __getitem__(self, key: str) -> Any:
        if key in self._custom:
            return self._custom[key]
        if key in _EXECUTOR_KEYS:
            raise KeyError(key)
        return self._state[key]

    def __iter__(self) -> Iterator[str]:
        custom = self._custom
        names = [k for k in list(self._state) if k not in _EXECUTOR_KEYS and k not in custom]
        return iter(names + list(custom))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _describe(exc: BaseException) -> tuple[StepStatus, ErrorInfo]:
    """The error as the agent's code raised it: smolagents wraps what the code raised
    in ``InterpreterError``s; the message stays the one the agent was shown."""
    from ..schemas import ErrorInfo

    status: StepStatus = "timeout" if isinstance(exc, ExecutionTimeoutError) else "error"
    return status, ErrorInfo(
        type=type_name(_raised_by_code(exc)), message=str(exc), traceback=format_exception(exc)
    )


def _raised_by_code(exc: BaseException) -> BaseException:
    # evaluate_python_code re-raises whatever the code raised as an InterpreterError
    # (implicitly chained); the interpreter's own InterpreterErrors name their cause
    # with ``from``. An InterpreterError with no cause is the interpreter's own verdict.
    if isinstance(exc, InterpreterError) and exc.__cause__ is None and exc.__context__:
        exc = exc.__context__
    while isinstance(exc, InterpreterError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


# -- tool calls -----------------------------------------------------------------------------


def _signatures(tools: Mapping[str, Any]) -> dict[str, inspect.Signature | None]:
    """The tools to record, each with the signature its arguments are bound to."""
    return {name: tool_signature(tool) for name, tool in tools.items() if name not in _NOT_TOOLS}


class _CurrentAction:
    """The action an executor is running, for its tools to record their calls under."""

    step: StepRecorder | None = None


class _StepTool:
    """One of the agent's tools, recording each call under the running action.

    smolagents runs the code in a worker thread (for its timeout), where the caller's
    context, and so ``current_step()``, is not set: the executor says which action
    runs instead, so a call is recorded under the action that made it, whichever thread
    it comes from and whichever action defined the function that made it.
    Attributes are the tool's, so code reading ``tool.name`` still works.
    """

    def __init__(
        self, name: str, tool: Any, signature: inspect.Signature | None, current: _CurrentAction
    ) -> None:
        self._name = name
        self._tool = tool
        self._signature = signature
        self._current = current
        # A tool is not state: code that keeps one in a variable (``f = refund``) keeps
        # this object (inside smolagents' wrapper, which copies this attribute).
        self.__codetape_tool__ = name

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_name", "_tool", "_signature", "_current"):
            raise AttributeError(name)
        return getattr(self._tool, name)

    def __repr__(self) -> str:
        return repr(self._tool)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        arguments: dict[str, Any] = {"args": list(args), **kwargs}
        with internal_errors("binding a tool call's arguments"):
            arguments = bind_arguments(self._tool, args, kwargs, self._signature)
        step = self._current.step
        if step is None:  # outside any recorded action: the agent's business
            return self._tool(*args, **kwargs)
        return record_tool_call(
            self._name,
            arguments,
            lambda: self._tool(*args, **kwargs),
            step=step,
            parameters=tool_parameters(self._tool, self._signature),
        )


# -- sandboxed mode -------------------------------------------------------------------------
# CodetapeExecutor runs each action in codetape.Sandbox; instrument() recognises it and
# then records only the runs, while the sandbox records the steps.
from ._smolagents_executor import CodetapeExecutor  # noqa: E402
