"""``Sandbox``: runs code actions in a warm, locked-down runner, with the agent's tools
still running on the host, and returns what each did as an ``Outcome``.

It records nothing: ``codetape.Sandbox`` (the tracer's subclass) records each action
as a step of the current run.
"""

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
from typing import Any, TypeVar

import cloudpickle

from ..errors import SandboxError
from ..schemas import ErrorInfo, Limits
from ..schemas import attributes as A
from ._backends import Backend, DockerBackend, LocalBackend
from ._outcome import Checkpoint, Outcome, Pickled, RawState, RawVariable, RelayedCall
from ._protocol import Channel, ChannelBroken, ChannelClosed, ChannelTimeout
from ._statecodec import qualified_name

__all__ = ["DEFAULT_IMAGE", "PICKLE_PROTOCOL", "Sandbox", "default_image", "tool_name"]

DEFAULT_IMAGE = "python:3.12-slim"
# The pickle protocol of recorded values, the same on the host and in the runner, so an
# unchanged value has one digest wherever it was serialized.
PICKLE_PROTOCOL = 4
_STARTUP_TIMEOUT_S = 60.0
_S = TypeVar("_S", bound="Sandbox")


def default_image() -> str:
    return os.environ.get("CODETAPE_IMAGE") or DEFAULT_IMAGE


def _runner_modules() -> list[tuple[str, str]]:
    """cloudpickle's source and codetape's state codec, sent to the runner so the image
    needs only python3."""
    package = Path(inspect.getfile(cloudpickle)).parent
    return [
        ("cloudpickle.cloudpickle", (package / "cloudpickle.py").read_text()),
        ("cloudpickle", (package / "__init__.py").read_text()),
        ("codetape_state", Path(__file__).with_name("_statecodec.py").read_text()),
    ]


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _decode(encoded: object) -> bytes | None:
    return base64.b64decode(encoded) if isinstance(encoded, str) else None


def tool_name(tool: Callable[..., Any]) -> str:
    """The name code in the sandbox calls ``tool`` by (a smolagents ``Tool``'s ``name``,
    else ``__name__``)."""
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


def _json_or_repr(value: object) -> object:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


class _Interrupted(Exception):
    """The runner did not answer a code action: how the step ended, and why."""

    def __init__(self, status: Any, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.status = status
        self.error = error


class Sandbox:
    """A warm sandbox for code actions, with host tools bridged in. Records nothing.

    ``backend="docker"`` (the default) runs a hardened container of ``image`` (default
    ``$CODETAPE_IMAGE`` or ``python:3.12-slim``); ``backend="local"`` runs the same
    runner in a subprocess of this Python, with no isolation, and warns so. Variables
    persist between ``execute`` calls. ``codetape.Sandbox`` is this class plus
    recording: use that one in an agent.

    >>> from codetape.sandbox import Sandbox
    >>> with Sandbox(backend="local") as sb:                  # doctest: +SKIP
    ...     sb.execute("x = 2 * 21\\nx").result
    '42'
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
        executor: Mapping[str, Any] | None = None,
    ) -> None:
        self.limits = limits or Limits()
        # How the runner executes code: as the sandbox does by default, or the way an
        # observed step ran (plain exec, a named function, smolagents), for replay.
        self._executor = dict(executor or {"kind": "runner"})
        self.hash_seed = hash_seed if hash_seed is not None else random.randrange(2**32)
        self.seed = seed if seed is not None else random.randrange(2**32)
        self._tools: dict[str, Callable[..., Any]] = {}
        self._add_tools({tool_name(tool): tool for tool in tools})
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
        # The namespace as of the last good state; its checkpoint restores a new runner.
        self.state: RawState | None = None

    # -- life cycle -------------------------------------------------------------

    def __enter__(self: _S) -> _S:
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

    def _owner(self) -> str:
        """The run id the container is labelled with, so orphans can be found."""
        return ""

    def _ensure_started(self) -> Channel:
        if self._channel is not None:
            return self._channel
        env = {"PYTHONHASHSEED": str(self.hash_seed), "PYTHONDONTWRITEBYTECODE": "1"}
        process = self._backend.start(env, self._owner())
        # Base64 state of up to the whole memory limit, plus room for output.
        channel = Channel(process, max_message=2 * _bytes(self.limits.memory) + (64 << 20))
        self._process, self._channel = process, channel
        try:
            self._ready = self._request(
                channel,
                {
                    "op": "init",
                    "modules": _runner_modules(),
                    "tools": sorted(self._tools),
                    "output_bytes": self.limits.output_bytes,
                    "executor": self._executor,
                    # Files under a container's /tmp are part of its state; the local
                    # backend's /tmp is the host's own.
                    "files_root": "/tmp" if self.backend == "docker" else None,
                },
            )
            if self.state is not None and self.state.checkpoint.data is not None:
                self._restore(channel, self.state)
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

    def _restore(self, channel: Channel, state: RawState) -> RawState:
        checkpoint = state.checkpoint
        assert checkpoint.data is not None
        message = {
            "op": "set_state",
            "data": base64.b64encode(checkpoint.data).decode("ascii"),
            "large": {k: base64.b64encode(v).decode("ascii") for k, v in checkpoint.large.items()},
            "files": base64.b64encode(checkpoint.files_data).decode("ascii")
            if checkpoint.files_data is not None
            else None,
            "tools": state.tools,
        }
        reply = self._request(channel, message)
        return self._take_state(reply.get("state") or {})

    def restore(self, state: RawState) -> RawState:
        """Load a recorded checkpoint (a step's input) into this sandbox's namespace;
        returns the namespace as the sandbox then sees it. The host does not unpickle
        the checkpoint: only the sandbox does."""
        if state.checkpoint.data is None:
            raise SandboxError(f"no checkpoint to restore: {state.checkpoint.reason}")
        return self._restore(self._ensure_started(), state)

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

    # -- tools --------------------------------------------------------------------

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

    def call_tool(
        self, name: str, tool: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        """Call a host tool for the code in the sandbox. Subclasses wrap this (the
        tracer records each call)."""
        return tool(*args, **kwargs)

    def _relay(self, message: dict[str, Any], calls: list[RelayedCall]) -> dict[str, Any]:
        """Answer one tool call from the sandbox with the host tool's result."""
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
        call = RelayedCall(name, args, kwargs)
        calls.append(call)
        started = time.monotonic()
        try:
            call.result = self.call_tool(name, tool, args, kwargs)
        except Exception as exc:
            # Qualified, as the tracer records it: the code in the sandbox raises a class
            # of that name, so the step's error reads the same recorded and replayed.
            call.error = ErrorInfo(type=qualified_name(type(exc)), message=str(exc))
            return {"op": "tool_result", "error": {"type": call.error.type, "message": str(exc)}}
        finally:
            call.duration_ms = (time.monotonic() - started) * 1000
        if isinstance(call.result, Pickled):
            return {"op": "tool_result", "pickled": base64.b64encode(call.result.data).decode()}
        return {"op": "tool_result", "result": _json_or_repr(call.result)}

    # -- identity and state ------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """Where the code runs, as span attributes: the image (or the host's
        fingerprint), Python, platform, limits and hash seed."""
        if self._identity_attrs is not None:
            return self._identity_attrs
        self._ensure_started()
        attrs = dict(self._backend.identity())
        attrs[A.SANDBOX_PYTHON] = self._ready.get("python", "")
        attrs[A.SANDBOX_PLATFORM] = self._ready.get("platform", "")
        attrs[A.SANDBOX_LIMITS] = self.limits.model_dump_json()
        attrs[A.SANDBOX_HASH_SEED] = self.hash_seed
        self._identity_attrs = attrs
        return attrs

    def _take_state(self, raw: Mapping[str, Any]) -> RawState:
        """The runner's snapshot, with its bytes checked against their digests (the
        sandbox is not trusted to name what it sends) and the checkpoint's bytes held
        here for the next restore: the runner sends bytes only when the host lacks them."""
        data = {}
        for digest, encoded in dict(raw.get("data") or {}).items():
            value = _decode(encoded)
            if value is not None and _sha256(value) == digest:
                data[digest] = value
        variables = {}
        for name, var in dict(raw.get("variables") or {}).items():
            digest = var.get("digest")
            variables[str(name)] = RawVariable(
                type=str(var.get("type", "?")),
                preview=str(var.get("preview", "")),
                size=int(var.get("size") or 0),
                digest=digest if isinstance(digest, str) else None,
                data=data.get(digest) if isinstance(digest, str) else None,
                reason=str(var["reason"]) if var.get("reason") else None,
            )
        state = RawState(
            variables,
            modules={str(k): str(v) for k, v in dict(raw.get("modules") or {}).items()},
            tools={str(k): str(v) for k, v in dict(raw.get("tools") or {}).items()},
            checkpoint=self._take_checkpoint(dict(raw.get("checkpoint") or {}), data),
        )
        self.state = state
        return state

    def _take_checkpoint(self, raw: dict[str, Any], data: dict[str, bytes]) -> Checkpoint:
        held = self.state.checkpoint if self.state is not None else Checkpoint(None)
        digest = raw.get("digest") if isinstance(raw.get("digest"), str) else None
        files = dict(raw.get("files") or {})
        checkpoint = Checkpoint(
            digest,
            reason=str(raw["reason"]) if raw.get("reason") else files.get("reason"),
            name=raw.get("name") if isinstance(raw.get("name"), str) else None,
            files=files.get("files") if isinstance(files.get("files"), str) else None,
        )
        body = _decode(raw.get("data"))
        if digest is not None:
            checkpoint.data = (
                body if body is not None else (held.data if held.digest == digest else None)
            )
            if checkpoint.data is None or _sha256(checkpoint.data) != digest:
                checkpoint.digest, checkpoint.data = None, None
                checkpoint.reason = "the sandbox did not send its checkpoint"
        pool = {held.keys[label]: blob for label, blob in held.large.items()}
        pool.update(data)
        for key, encoded in dict(raw.get("blobs") or {}).items():
            value = _decode(encoded)
            if value is not None:
                pool[key] = value
        for label, key in dict(raw.get("large") or {}).items():
            blob = pool.get(key)
            if blob is not None and _sha256(blob) == key:
                checkpoint.large[str(label)], checkpoint.keys[str(label)] = blob, str(key)
            elif checkpoint.digest is not None:
                checkpoint.digest, checkpoint.data = None, None
                checkpoint.reason = f"the sandbox did not send the large value {label}"
        if checkpoint.files is not None:
            body = _decode(files.get("data"))
            checkpoint.files_data = (
                body
                if body is not None
                else (held.files_data if held.files == checkpoint.files else None)
            )
        return checkpoint

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
        """Seed the namespace with already pickled values, one pickle each.

        The host does not unpickle them. Returns, by name, why a value could not be
        loaded inside the sandbox (a module it needs may be missing from the image).
        """
        channel = self._ensure_started()
        encoded = {name: base64.b64encode(data).decode("ascii") for name, data in values.items()}
        reply = self._request(channel, {"op": "set_vars", "vars": encoded})
        self._take_state(reply.get("state") or {})
        return dict(reply.get("errors") or {})

    # -- running code -----------------------------------------------------------

    def execute(
        self, code: str, *, seed: int | None = None, random_state: bytes | None = None
    ) -> Outcome:
        """Run one snippet and say what it did. Never raises for the snippet's own
        errors: see the outcome's ``status`` and ``error``. ``random`` is seeded with
        ``seed`` first, or set to ``random_state`` (a pickled ``random.getstate()``)."""
        channel = self._ensure_started()
        started = time.monotonic()
        outcome = Outcome(status="ok", seed=seed)
        request: dict[str, Any] = {"op": "run", "code": code, "seed": seed}
        if random_state is not None:
            request["random_state"] = base64.b64encode(random_state).decode("ascii")
        try:
            reply = self._exchange(channel, request, outcome.tool_calls)
        except _Interrupted as stopped:
            outcome.status, outcome.error = stopped.status, stopped.error
        else:
            outcome.status = "ok" if reply.get("status") == "ok" else "error"
            if reply.get("error"):
                outcome.error = ErrorInfo(**reply["error"])
            outcome.stdout, outcome.stderr = reply.get("stdout", ""), reply.get("stderr", "")
            outcome.has_result = bool(reply.get("has_result"))
            outcome.result = reply.get("result") if outcome.has_result else None
            outcome.result_type = reply.get("result_type")
            outcome.final_answer = reply.get("final_answer")
            outcome.state = self._take_state(reply.get("state") or {})
        outcome.duration_ms = (time.monotonic() - started) * 1000
        return outcome

    def _exchange(
        self, channel: Channel, message: dict[str, Any], calls: list[RelayedCall]
    ) -> dict[str, Any]:
        """Send the code, answer its tool calls, and return the runner's reply."""
        deadline = time.monotonic() + self.limits.timeout_s
        request = message["id"] = uuid.uuid4().hex
        try:
            channel.send(message)
            while True:
                message = channel.receive(deadline)
                if message.get("op") == "fatal" and message.get("id") == request:
                    raise SandboxError(f"the sandbox runner failed: {message.get('message')}")
                if message.get("op") == "tool_call":
                    tool_started = time.monotonic()
                    channel.send(self._relay(message, calls))
                    deadline += time.monotonic() - tool_started  # host time is not the code's
                elif message.get("id") == request:
                    return message
                # Anything else was written by the code itself: not the runner's reply.
        except ChannelTimeout:
            raise self._timed_out() from None
        except ChannelClosed as closed:
            raise self._died(closed) from None

    def _timed_out(self) -> _Interrupted:
        self._backend.kill(self._process)
        self._replace_runner()
        return _Interrupted(
            "timeout",
            ErrorInfo(
                type="TimeoutError",
                message=f"the code action ran past its {self.limits.timeout_s:g}s limit and "
                "was stopped; the sandbox was replaced and its variables restored from the "
                "last good step",
            ),
        )

    def _died(self, closed: ChannelClosed) -> _Interrupted:
        if isinstance(closed, ChannelBroken):
            # Alive but talking nonsense: code in the sandbox wrote to the channel.
            self._backend.kill(self._process)
            self._replace_runner()
            return _Interrupted(
                "killed",
                ErrorInfo(
                    type="SandboxKilled",
                    message=f"the sandbox broke its protocol ({closed}) and was stopped; "
                    "it was replaced and its variables restored from the last good step",
                ),
            )
        status = self._backend.death_status(self._process)
        self._replace_runner()
        what = "ran out of memory" if status == "oom" else "was killed"
        return _Interrupted(
            status,
            ErrorInfo(
                type="MemoryError" if status == "oom" else "SandboxKilled",
                message=f"the sandbox {what} during this code action (limit "
                f"{self.limits.memory}); it was replaced and its variables restored "
                "from the last good step",
            ),
        )

    def __repr__(self) -> str:
        where = self.image or "host"
        return f"<Sandbox {self.backend} {where}>"
