"""``codetape.Sandbox``: runs code actions in a warm, locked-down runner and records
each one as a step, with the agent's tools still running on the host."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import inspect
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import cloudpickle

from ..errors import SandboxError
from ..schemas import ErrorInfo, Limits, StepResult, StepStatus, VariableSnapshot
from ..schemas import attributes as A
from ..store.internal import digest_of
from ..tracer import RunRecorder, StepRecorder, current_run, record_tool_call, runtime
from ..tracer._state import PICKLE_PROTOCOL, PREVIEW_CHARS, Snapshotter, State, Variable
from ._backends import Backend, DockerBackend, LocalBackend
from ._protocol import Channel, ChannelBroken, ChannelClosed, ChannelTimeout

__all__ = ["DEFAULT_IMAGE", "Sandbox", "default_image"]

DEFAULT_IMAGE = "python:3.12-slim"
_STARTUP_TIMEOUT_S = 60.0


def default_image() -> str:
    return os.environ.get("CODETAPE_IMAGE") or DEFAULT_IMAGE


def _cloudpickle_modules() -> list[tuple[str, str]]:
    """cloudpickle's own source, sent to the runner so the image needs only python3."""
    package = Path(inspect.getfile(cloudpickle)).parent
    modules = [("cloudpickle", (package / "__init__.py").read_text())]
    modules.insert(0, ("cloudpickle.cloudpickle", (package / "cloudpickle.py").read_text()))
    return modules


def _tool_name(tool: Callable[..., Any]) -> str:
    name = getattr(tool, "name", None) or getattr(tool, "__name__", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise SandboxError(f"tool {tool!r} has no usable name (give it a __name__)")
    return name


def _bytes(size: str) -> int:
    """Docker's sizes: ``512m`` → bytes."""
    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    size = size.strip().lower()
    if size and size[-1] in units:
        return int(float(size[:-1]) * units[size[-1]])
    return int(size)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _jsonable(value: object) -> object:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


class Sandbox:
    """A warm sandbox for code actions, with host tools bridged in.

    ``backend="docker"`` (the default) runs a hardened container of ``image`` (default
    ``$CODETAPE_IMAGE`` or ``python:3.12-slim``); ``backend="local"`` runs the same
    runner in a subprocess of this Python, with no isolation, and warns so. Variables
    persist between ``run`` calls. Each ``run`` is recorded as a step of the current
    run, or as a run of its own.

    >>> import codetape
    >>> def add(a: int, b: int) -> int:
    ...     return a + b
    >>> with codetape.Sandbox(tools=[add]) as sb:         # doctest: +SKIP
    ...     sb.run("x = add(2, 3)\\nx * 10").result
    '50'
    """

    def __init__(
        self,
        image: str | None = None,
        tools: Iterable[Callable[..., Any]] = (),
        backend: str = "docker",
        limits: Limits | None = None,
        *,
        hash_seed: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.hash_seed = hash_seed if hash_seed is not None else random.randrange(2**32)
        self.seed = seed if seed is not None else random.randrange(2**32)
        self._tools: dict[str, Callable[..., Any]] = {}
        self._add_tools({_tool_name(tool): tool for tool in tools})
        self._backend: Backend
        self.image: str | None
        if backend == "docker":
            self.image = image or default_image()
            self._backend = DockerBackend(self.image, self.limits)
        elif backend == "local":
            self.image = None
            self._backend = LocalBackend(self.limits)
        else:
            raise SandboxError(f"unknown sandbox backend {backend!r}: use 'docker' or 'local'")
        self.backend = backend
        self._process: Any = None
        self._channel: Channel | None = None
        self._ready: dict[str, Any] = {}
        self._identity_attrs: dict[str, Any] | None = None
        self._state: State | None = None
        self._bytes: dict[str, bytes] = {}  # values of the last good state, for restores
        rt = runtime()
        self._snapshotter = Snapshotter(rt.blobs, rt.redactor)

    # -- life cycle -------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        self._ensure_started()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the runner and remove its container."""
        self._replace_runner()

    def _ensure_started(self) -> Channel:
        if self._channel is not None:
            return self._channel
        run = current_run()
        env = {"PYTHONHASHSEED": str(self.hash_seed), "PYTHONDONTWRITEBYTECODE": "1"}
        process = self._backend.start(env, run.id if run else "")
        # Base64 state of up to the whole memory limit, plus room for output.
        channel = Channel(process, max_message=2 * _bytes(self.limits.memory) + (64 << 20))
        self._process, self._channel = process, channel
        try:
            self._ready = self._request(
                channel,
                {
                    "op": "init",
                    "modules": _cloudpickle_modules(),
                    "tools": sorted(self._tools),
                    "output_bytes": self.limits.output_bytes,
                },
            )
            if self._bytes and self._state is not None:
                self._restore()
        except (ChannelClosed, ChannelTimeout) as exc:
            stderr = self._stderr()
            self.close()
            raise SandboxError(
                f"the {self.backend} sandbox did not start: {type(exc).__name__}"
                + (f": {stderr}" if stderr else ""),
                hint="`codetape doctor` checks Docker and the sandbox image",
            ) from None
        return channel

    def _stderr(self) -> str:
        process = self._process
        if process is None or process.stderr is None or process.poll() is None:
            return ""
        data: bytes = process.stderr.read()
        return data.decode("utf-8", "replace").strip()[-2000:]

    def _request(self, channel: Channel, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request and wait for the runner's reply to it (matched by id: code in
        the sandbox can write to the channel too, and what it writes is ignored)."""
        request = message["id"] = uuid.uuid4().hex
        channel.send(message)
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while True:
            reply = channel.receive(deadline)
            if reply.get("id") != request:
                continue
            if reply.get("op") == "fatal":
                raise SandboxError(f"the sandbox runner failed: {reply.get('message')}")
            return reply

    def _restore(self) -> None:
        assert self._channel is not None
        assert self._state is not None
        values = {
            name: base64.b64encode(self._bytes[var.digest]).decode("ascii")
            for name, var in self._state.variables.items()
            if var.digest is not None and var.digest in self._bytes
        }
        self._request(self._channel, {"op": "set_vars", "vars": values})

    def _replace_runner(self) -> None:
        """Kill a runner that timed out or died; the next step starts a new one and
        restores the last good state into it."""
        process, self._process, self._channel = self._process, None, None
        if process is not None:
            self._backend.cleanup(process)
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()

    def _add_tools(self, tools: Mapping[str, Callable[..., Any]]) -> None:
        for name, tool in tools.items():
            if not name.isidentifier():
                raise SandboxError(f"tool name {name!r} is not a valid Python name")
            # A @codetape.tool wrapper would record each call a second time.
            if getattr(tool, "__codetape_tool__", False):
                tool = getattr(tool, "__wrapped__", tool)
            self._tools[name] = tool

    def add_tools(self, tools: Mapping[str, Callable[..., Any]]) -> None:
        """Make more host functions callable inside the sandbox, by the given names."""
        self._add_tools(tools)
        if self._channel is not None:
            self._request(self._channel, {"op": "set_tools", "tools": sorted(self._tools)})

    # -- identity and state ------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        if self._identity_attrs is not None:
            return self._identity_attrs
        attrs = dict(self._backend.identity())
        attrs[A.SANDBOX_PYTHON] = self._ready.get("python", "")
        attrs[A.SANDBOX_PLATFORM] = self._ready.get("platform", "")
        attrs[A.SANDBOX_LIMITS] = self.limits.model_dump_json()
        attrs[A.SANDBOX_HASH_SEED] = self.hash_seed
        self._identity_attrs = attrs
        return attrs

    def _state_from(self, raw: Mapping[str, Mapping[str, Any]]) -> State:
        """Turn the runner's snapshot into a recorded state. Digests of bytes the runner
        sends are recomputed here: the sandbox is not trusted to name what it sends. A
        value it did not send again is one the host already holds, unchanged."""
        rt = runtime()
        previous = self._state.variables if self._state is not None else {}
        known = {var.digest: var for var in previous.values() if var.digest is not None}
        variables: dict[str, Variable] = {}
        kept: dict[str, bytes] = {}
        for name, var in raw.items():
            shown = _cut(rt.redactor.text(str(var.get("preview", ""))), PREVIEW_CHARS)
            kind = str(var.get("type", "?"))
            claimed = var.get("digest")
            if var.get("data") is None and claimed in self._bytes:
                kept[claimed] = self._bytes[claimed]
                old = known.get(claimed)
                if old is not None:  # same bytes: same digest and secret verdict
                    variables[name] = old._replace(preview=shown, type=kind)
                    continue
                data = self._bytes[claimed]
            elif var.get("data") is not None:
                data = base64.b64decode(var["data"])
            else:
                reason = var.get("reason") or "the sandbox did not send this value"
                variables[name] = Variable(
                    kind,
                    None,
                    int(var.get("size") or 0),
                    shown,
                    False,
                    rt.redactor.text(str(reason))[:300],
                )
                continue
            digest = digest_of(data)
            kept[digest] = data
            if rt.redactor.contains_secret(data):
                variables[name] = Variable(
                    kind,
                    None,
                    len(data),
                    shown,
                    False,
                    "holds a secret, so its value was not stored (configure(redact=False) "
                    "stores it)",
                )
            else:
                variables[name] = Variable(kind, rt.blobs.put(data, digest), len(data), shown, True)
        self._bytes = kept
        if self._state is not None and variables == self._state.variables:
            return self._state
        return State(variables, self._snapshotter.manifest(variables))

    @property
    def variables(self) -> dict[str, VariableSnapshot]:
        """The namespace as of the last step (or the seeded variables), as previews."""
        if self._state is None:
            return {}
        return {
            name: VariableSnapshot(name=name, **var._asdict())
            for name, var in self._state.variables.items()
        }

    def send_variables(self, mapping: Mapping[str, Any]) -> None:
        """Seed the namespace with host values (pickled here, unpickled in the sandbox)."""
        pickled = {}
        for name, value in mapping.items():
            if not name.isidentifier():
                raise SandboxError(f"{name!r} is not a valid variable name")
            pickled[name] = cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL)
        errors = self.send_pickled(pickled)
        if errors:
            name, why = next(iter(errors.items()))
            raise SandboxError(f"variable {name!r} could not be loaded in the sandbox: {why}")

    def send_pickled(self, values: Mapping[str, bytes]) -> dict[str, str]:
        """Seed the namespace with already pickled values (a recording's, for replay).

        The host does not unpickle them. Returns, by name, why a value could not be
        loaded inside the sandbox (a module it needs may be missing from the image).
        """
        channel = self._ensure_started()
        for data in values.values():
            self._bytes[digest_of(data)] = data
        encoded = {name: base64.b64encode(data).decode("ascii") for name, data in values.items()}
        reply = self._request(channel, {"op": "set_vars", "vars": encoded})
        self._state = self._state_from(reply["state"])
        return dict(reply.get("errors") or {})

    # -- running code -----------------------------------------------------------

    def run(self, code: str, *, random_seed: int | None = None) -> StepResult:
        """Run one snippet and record it as a step of the current run (or a run of its
        own). Never raises for the snippet's own errors: see ``status`` and ``error``.

        ``random`` is seeded before each step (from the sandbox's ``seed`` and the step
        index unless ``random_seed`` is given) and the seed recorded, for replay."""
        own_run: RunRecorder | None = None
        run = current_run()
        if run is None:
            own_run = run = RunRecorder("sandbox").__enter__()
        try:
            return self._run_step(run, code, random_seed)
        finally:
            if own_run is not None:
                own_run.__exit__(None, None, None)

    def _run_step(self, run: RunRecorder, code: str, random_seed: int | None) -> StepResult:
        channel = self._ensure_started()
        step = StepRecorder(run, code, mode="sandboxed", sandbox=self._identity())
        step_seed = random_seed
        if step_seed is None:
            step_seed = int.from_bytes(
                hashlib.sha256(f"{self.seed}:{step.index}".encode()).digest()[:4], "big"
            )
        step.begin(self._state)
        if step.span is not None:
            step.span.set_attribute(A.STEP_RANDOM_SEED, step_seed)
        started = time.monotonic()
        deadline = started + self.limits.timeout_s
        status: StepStatus = "ok"
        reply: dict[str, Any] = {}
        error: ErrorInfo | None = None
        try:
            request = uuid.uuid4().hex
            channel.send({"op": "run", "id": request, "code": code, "seed": step_seed})
            while True:
                message = channel.receive(deadline)
                if message.get("op") == "fatal" and message.get("id") == request:
                    raise SandboxError(f"the sandbox runner failed: {message.get('message')}")
                if message.get("op") == "tool_call":
                    tool_started = time.monotonic()
                    channel.send(self._call_tool(message, step))
                    deadline += time.monotonic() - tool_started  # host time is not the code's
                    continue
                if message.get("id") == request:
                    reply = message
                    break
                # Anything else was written by the code itself: not the runner's reply.
        except ChannelTimeout:
            status = "timeout"
            error = ErrorInfo(
                type="TimeoutError",
                message=f"the code action ran past its {self.limits.timeout_s:g}s limit and "
                "was stopped; the sandbox was replaced and its variables restored from the "
                "last good step",
            )
            self._backend.kill(self._process)
            self._replace_runner()
        except ChannelClosed as closed:
            if isinstance(closed, ChannelBroken):
                # Alive but talking nonsense: code in the sandbox wrote to the channel.
                self._backend.kill(self._process)
                status = "killed"
                error = ErrorInfo(
                    type="SandboxKilled",
                    message=f"the sandbox broke its protocol ({closed}) and was stopped; "
                    "it was replaced and its variables restored from the last good step",
                )
            else:
                status = self._backend.death_status(self._process)
                what = "ran out of memory" if status == "oom" else "was killed"
                error = ErrorInfo(
                    type="MemoryError" if status == "oom" else "SandboxKilled",
                    message=f"the sandbox {what} during this code action (limit "
                    f"{self.limits.memory}); it was replaced and its variables restored "
                    "from the last good step",
                )
            self._replace_runner()
        if reply:
            status = "ok" if reply.get("status") == "ok" else "error"
            if reply.get("error"):
                error = ErrorInfo(**reply["error"])
            self._state = self._state_from(reply.get("state") or {})
        duration_ms = (time.monotonic() - started) * 1000
        stdout, stderr = reply.get("stdout", ""), reply.get("stderr", "")
        final = reply.get("final_answer")
        step.finish(
            status=status,
            stdout=stdout,
            stderr=stderr,
            has_result=bool(reply.get("has_result")),
            result_preview=reply.get("result"),
            result_type=reply.get("result_type"),
            error=error,
            after=self._state if reply else None,
        )
        if final is not None:
            run.final_answer = final["value"]
        rt = runtime()
        return StepResult(
            run_id=run.id,
            index=step.index,
            status=status,
            stdout=rt.redactor.text(stdout),
            stderr=rt.redactor.text(stderr),
            result=_cut(rt.redactor.text(reply["result"]), PREVIEW_CHARS)
            if reply.get("has_result")
            else None,
            result_type=reply.get("result_type"),
            error=error,
            has_final_answer=final is not None,
            final_answer=final["value"] if final is not None else None,
            variables=self.variables,
            duration_ms=duration_ms,
        )

    def _call_tool(self, message: dict[str, Any], step: StepRecorder) -> dict[str, Any]:
        name = str(message.get("name"))
        tool = self._tools.get(name)
        try:
            payload = json.loads(message.get("payload") or "{}")
            args, kwargs = list(payload.get("args", [])), dict(payload.get("kwargs", {}))
        except (ValueError, AttributeError) as exc:
            return {"op": "tool_result", "error": {"type": "ValueError", "message": str(exc)}}
        if tool is None:
            return {
                "op": "tool_result",
                "error": {"type": "NameError", "message": f"no tool named {name!r}"},
            }
        arguments = _bind(tool, args, kwargs)
        try:
            result = record_tool_call(name, arguments, lambda: tool(*args, **kwargs), step=step)
        except Exception as exc:
            return {"op": "tool_result", "error": {"type": type(exc).__name__, "message": str(exc)}}
        return {"op": "tool_result", "result": _jsonable(result)}

    def __repr__(self) -> str:
        where = self.image or "host"
        return f"<Sandbox {self.backend} {where}>"


def _bind(tool: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments by parameter name, for the record."""
    # A smolagents Tool is called through __call__(*args, **kwargs); its parameters
    # are the keys of its ``inputs``, in order.
    inputs = getattr(tool, "inputs", None)
    if isinstance(inputs, dict) and len(args) <= len(inputs):
        return {**dict(zip(inputs, args, strict=False)), **kwargs}
    try:
        return dict(inspect.signature(tool).bind(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        return {"args": args, **kwargs}
