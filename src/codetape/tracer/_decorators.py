"""The public decorators: ``@agent``, ``@code_action``, ``@tool`` and ``run()``.

Each works bare and with arguments, on sync and async functions, and binds the
signature once at decoration time. None of them changes what the wrapped function
returns or raises.
"""

from __future__ import annotations

import functools
import inspect
import json
import pickle
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar, cast, overload

from ..sandbox.internal import host_fingerprint
from ..schemas import attributes as A
from ._arguments import bind_arguments, tool_parameters
from ._capture import Captured, capture_output
from ._changes import random_key
from ._config import runtime
from ._errors import internal_errors
from ._reach import plain_executor
from ._recording import (
    RunRecorder,
    StepRecorder,
    ToolCallRecorder,
    current_run,
    record_tool_call,
)
from ._state import State

__all__ = ["agent", "code_action", "observed_sandbox", "run", "tool"]

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

_NAMESPACE_PARAMS = ("namespace", "state", "globals", "locals", "variables")


def run(name: str = "agent", task: str | None = None) -> RunRecorder:
    """Record the code inside a ``with`` block as one agent run.

    >>> import codetape, tempfile
    >>> _ = codetape.configure(home=tempfile.mkdtemp())
    >>> with codetape.run("orders-bot", task="refund late orders") as r:
    ...     r.final_answer = "done"
    >>> codetape.Store().run(r.id).final_answer
    'done'
    """
    return RunRecorder(name, task)


def _task_of(sig: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    try:
        bound = sig.bind_partial(*args, **kwargs)
    except TypeError:
        return None
    for name in ("task", "prompt", "query", "question"):
        if isinstance(bound.arguments.get(name), str):
            return cast(str, bound.arguments[name])
    return next((v for v in bound.arguments.values() if isinstance(v, str)), None)


@overload
def agent(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def agent(*, name: str | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def agent(fn: Callable[P, R] | None = None, /, *, name: str | None = None) -> Any:
    """Record each call of ``fn`` as one agent run (sync or async).

    The task is the argument named ``task``/``prompt``/``query``/``question``, or the
    first ``str`` argument; the return value becomes the run's final answer.

    >>> import codetape
    >>> @codetape.agent(name="orders-bot")
    ... def solve(task: str) -> str:
    ...     return "42"
    """

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        run_name = name or func.__name__
        sig = inspect.signature(func)
        if inspect.iscoroutinefunction(func):
            async_func = cast(Callable[P, Awaitable[Any]], func)

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with RunRecorder(run_name, _task_of(sig, args, kwargs)) as recorder:
                    result = await async_func(*args, **kwargs)
                    recorder.final_answer = result
                    return result

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with RunRecorder(run_name, _task_of(sig, args, kwargs)) as recorder:
                result = func(*args, **kwargs)
                recorder.final_answer = result
                return result

        return wrapper

    return decorate(fn) if fn is not None else decorate


class _Binder:
    """Finds the code and the namespace among a code action's arguments."""

    def __init__(self, func: Callable[..., Any], code: str | None, state: str | None) -> None:
        self.sig = inspect.signature(func)
        params = self.sig.parameters
        for explicit in (code, state):
            if explicit is not None and explicit not in params:
                raise TypeError(f"{func.__qualname__} has no parameter {explicit!r}")
        self.code = code or next(
            (n for n, p in params.items() if p.annotation in (str, "str")), None
        )
        self.state = state or next((n for n in _NAMESPACE_PARAMS if n in params), None)
        # Where the two are when passed by position, for the usual call (no binding).
        positional = [
            n
            for n, p in params.items()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        self._at = tuple(
            positional.index(n) if n in positional else -1 for n in (self.code, self.state)
        )
        self._arity = len(params)
        # Whether the function only runs the code in its namespace (``_reach``): then a
        # step's variables need no second look where its code cannot reach them.
        self.plain = plain_executor(func, self.state)

    def find(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        at_code, at_state = self._at
        if not kwargs and len(args) == self._arity and at_code >= 0 and at_state >= 0:
            code, namespace = args[at_code], args[at_state]
            if isinstance(code, str):
                return code, namespace if isinstance(namespace, dict) else None
        bound = self.sig.bind(*args, **kwargs)
        bound.apply_defaults()
        values = bound.arguments
        code = values.get(self.code) if self.code else None
        if not isinstance(code, str):
            code = next((v for v in values.values() if isinstance(v, str)), "")
        namespace = values.get(self.state) if self.state else None
        return code, namespace if isinstance(namespace, dict) else None


def observed_sandbox(executor: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The identity attributes of a step observed in this process (no image), with how
    its code was executed (``executor``: what a replay runs it with)."""
    fp = host_fingerprint()
    attrs: dict[str, Any] = {
        A.SANDBOX_BACKEND: "observed",
        A.SANDBOX_PYTHON: fp.python,
        A.SANDBOX_PLATFORM: fp.platform,
        A.SANDBOX_ENV_FINGERPRINT: fp.digest,
    }
    if executor is not None:
        attrs[A.STEP_EXECUTOR] = json.dumps(dict(executor), separators=(",", ":"))
    return attrs


# random's state as last stored (or a cheap exact key of it), and its blob: most steps
# draw nothing, so the state is the one stored before the previous step.
_last_random: tuple[object, str, object] | None = None


def random_state_blob() -> str | None:
    """Store ``random``'s state before an observed step, for its replay to start from."""
    global _last_random
    with internal_errors("recording the random state"):
        blobs = runtime().blobs
        key = random_key() if random_key is not None else random.getstate()
        last = _last_random
        if last is not None and last[2] is blobs and last[0] == key:
            return last[1]
        digest = blobs.put(pickle.dumps(random.getstate(), protocol=4))
        _last_random = (key, digest, blobs)
        return digest
    return None


def _replay_executor(
    func: Callable[..., Any], binder: _Binder, replay: str | Callable[..., Any] | None
) -> dict[str, Any]:
    """How a replay runs this code action: plain ``exec`` unless the user named their
    own executor (``replay=``), a function ``fn(code, namespace)``."""
    if replay is None:
        return {"kind": "exec"}
    if callable(replay):
        replay = f"{replay.__module__}:{replay.__qualname__}"
    if ":" not in replay:
        raise TypeError(f"replay={replay!r} of {func.__qualname__}: use 'module:function'")
    return {"kind": "callable", "target": replay, "code": binder.code, "state": binder.state}


class _ObservedStep:
    """The bookkeeping around one observed code action, shared by sync and async."""

    def __init__(
        self,
        func_name: str,
        code: str,
        namespace: dict[str, Any] | None,
        sandbox: Mapping[str, Any],
        plain: bool,
    ) -> None:
        self.namespace = namespace
        self.code = code if plain else None
        self.own_run: RunRecorder | None = None
        run = current_run()
        if run is None:  # a code action outside any run is a run of its own
            run = self.own_run = RunRecorder(func_name).__enter__()
        self.run = run
        self.step = StepRecorder(run, code, mode="observed", sandbox=sandbox)
        self.step.random_state = random_state_blob()
        self.before: State | None = None
        with internal_errors("snapshotting the variables before a step"):
            if namespace is not None and run.snapshotter is not None:
                self.before = run.snapshotter.snapshot(namespace, run.last_state)
        self.step.begin(self.before)

    def finish(self, captured: Captured, result: Any, exc: BaseException | None) -> None:
        after: State | None = None
        with internal_errors("snapshotting the variables after a step"):
            if self.namespace is not None and self.run.snapshotter is not None:
                after = self.run.snapshotter.snapshot(self.namespace, self.before, code=self.code)
                self.run.last_state = after
        self.step.finish(
            status="error" if exc is not None else "ok",
            stdout=captured.stdout,
            stderr=captured.stderr,
            result=result,
            has_result=exc is None and result is not None,
            error=exc,
            after=after,
        )
        if self.own_run is not None:
            self.own_run.__exit__(type(exc) if exc else None, exc, None)


@overload
def code_action(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def code_action(
    *,
    code: str | None = None,
    state: str | None = None,
    replay: str | Callable[..., Any] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def code_action(
    fn: Callable[P, R] | None = None,
    /,
    *,
    code: str | None = None,
    state: str | None = None,
    replay: str | Callable[..., Any] | None = None,
) -> Any:
    """Record each call of ``fn``, the function that executes a snippet, as a step.

    The code is the first ``str`` parameter and the namespace the ``dict`` parameter
    named ``namespace``, ``state``, ``globals``, ``locals`` or ``variables``; name them
    with ``code=`` and ``state=`` when they are called something else. Output is teed
    (you still see it) and exceptions are re-raised unchanged.

    A replay runs the step's code with plain ``exec`` in a fresh namespace rebuilt from
    the recording. When your executor does more (returns a value, wraps the code),
    name a function that does the same for replay: ``replay="mypkg.agent:execute"``
    (or the function itself), called as ``fn(code, namespace)`` with the parameter
    names found above.

    >>> import codetape
    >>> @codetape.code_action
    ... def execute(code: str, namespace: dict) -> object:
    ...     exec(code, namespace)
    ...     return namespace.get("result")
    """

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        binder = _Binder(func, code, state)
        return _observed(func, binder, _replay_executor(func, binder, replay))

    return decorate(fn) if fn is not None else decorate


def _observed(func: Callable[P, R], binder: _Binder, executor: Mapping[str, Any]) -> Callable[P, R]:
    """``func`` with each call recorded as an observed step (sync or async)."""
    func_name = func.__qualname__
    sandbox = observed_sandbox(executor)
    plain = binder.plain
    if inspect.iscoroutinefunction(func):
        async_func = cast(Callable[P, Awaitable[Any]], func)

        @functools.wraps(func)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            snippet, namespace = binder.find(args, kwargs)
            observed = _ObservedStep(func_name, snippet, namespace, sandbox, plain)
            with capture_output() as captured:
                try:
                    result = await async_func(*args, **kwargs)
                except BaseException as exc:
                    observed.finish(captured, None, exc)
                    raise
            observed.finish(captured, result, None)
            return result

        return cast(Callable[P, R], async_wrapper)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        snippet, namespace = binder.find(args, kwargs)
        observed = _ObservedStep(func_name, snippet, namespace, sandbox, plain)
        with capture_output() as captured:
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                observed.finish(captured, None, exc)
                raise
        observed.finish(captured, result, None)
        return result

    return wrapper


def tool(fn: F) -> F:
    """Record each call of ``fn`` made while a code action runs as an ``execute_tool``
    span under that step, with its arguments and result or error.

    >>> import codetape
    >>> @codetape.tool
    ... def get_orders() -> list[dict]:
    ...     return [{"id": 1, "total": 120.0}]
    >>> get_orders()
    [{'id': 1, 'total': 120.0}]
    """
    sig = inspect.signature(fn)
    name = getattr(fn, "__name__", "tool")
    params = tool_parameters(fn, sig)

    def arguments(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        return bind_arguments(fn, args, kwargs, sig)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with ToolCallRecorder(name, arguments(args, kwargs), parameters=params) as recorder:
                result = await fn(*args, **kwargs)
                recorder.succeeded(result)
                return result

        async_wrapper.__codetape_tool__ = name  # type: ignore[attr-defined]
        return cast(F, async_wrapper)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return record_tool_call(
            name, arguments(args, kwargs), lambda: fn(*args, **kwargs), parameters=params
        )

    wrapper.__codetape_tool__ = name  # type: ignore[attr-defined]
    return cast(F, wrapper)
