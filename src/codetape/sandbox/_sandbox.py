"""``Sandbox``: runs code actions in a warm, locked-down runner, with the agent's tools
still running on the host, and returns what each did as an ``Outcome``.

It records nothing: ``codetape.Sandbox`` (the tracer's subclass) records each action
as a step of the current run.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import cloudpickle

from ..errors import SandboxError
from ..schemas import ErrorInfo, Limits
from ..schemas import attributes as A
from ._backends import Backend, DockerBackend, LocalBackend, runner_modules, size_bytes
from ._messages import (
    BadMessage,
    CheckpointMessage,
    FinalAnswerMessage,
    ReadyMessage,
    ResultMessage,
    StateMessage,
    StateReply,
    ToolCallMessage,
    check,
)
from ._outcome import Checkpoint, Outcome, Pickled, RawState, RawVariable, RelayedCall
from ._protocol import Channel, ChannelBroken, ChannelClosed, ChannelTimeout
from ._statecodec import make_repr, mask_addresses, qualified_name
from ._values import BadValue, OpaqueValue, decode_value

__all__ = ["DEFAULT_IMAGE", "PICKLE_PROTOCOL", "Sandbox", "default_image", "tool_name"]

DEFAULT_IMAGE = "python:3.12-slim"
# The pickle protocol of recorded values, the same on the host and in the runner, so an
# unchanged value has one digest wherever it was serialized.
PICKLE_PROTOCOL = 4
_STARTUP_TIMEOUT_S = 60.0
# Room in a message from the sandbox beside its stdout and stderr: variable previews,
# types, digests, a final answer, an error's traceback.
MESSAGE_MARGIN = 16 << 20
# Room beside the memory limit for the state's bytes: the files under /tmp (8 MB at most).
STATE_MARGIN = 16 << 20
# The largest final answer the runner sends as its value (its JSON); a larger one comes
# as its repr, marked. Half the message margin: the rest is for previews and tracebacks.
VALUE_BYTES = MESSAGE_MARGIN // 2
# The tool whose answer is the action's final answer: calling it ends the action (in
# the sandbox's own runner; replaying an observed step, it is the tool it was there).
FINAL_ANSWER = "final_answer"
_S = TypeVar("_S", bound="Sandbox")


def default_image() -> str:
    return os.environ.get("CODETAPE_IMAGE") or DEFAULT_IMAGE


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def message_cap(limits: Limits) -> int:
    """The largest message the host reads from a sandbox: its stdout and stderr (each
    capped at ``output_bytes``, and up to six bytes each as escaped JSON) plus a margin."""
    return 2 * 6 * limits.output_bytes + MESSAGE_MARGIN


def state_cap(limits: Limits) -> int:
    """The most bytes of state (pickles, sent as blob frames) the host reads with one
    reply: the runner made them in its memory, so they fit in the memory limit."""
    return size_bytes(limits.memory, "memory") + STATE_MARGIN


def tool_name(tool: Callable[..., Any]) -> str:
    """The name code in the sandbox calls ``tool`` by (a smolagents ``Tool``'s ``name``,
    else ``__name__``)."""
    name = getattr(tool, "name", None) or getattr(tool, "__name__", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise SandboxError(f"tool {tool!r} has no usable name (give it a __name__)")
    return name


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _tool_error(kind: str, message: str) -> dict[str, Any]:
    return {"op": "tool_result", "error": {"type": kind, "message": message}}


def _tool_result(name: str, result: object) -> dict[str, Any]:
    """A tool's answer for the sandbox: pickled here (a recorded answer already is)."""
    if isinstance(result, Pickled):
        return {"op": "tool_result", "pickled": base64.b64encode(result.data).decode("ascii")}
    kind = qualified_name(type(result))
    try:
        data = cloudpickle.dumps(result, protocol=PICKLE_PROTOCOL)
    except Exception as exc:  # pickling raises whatever the value's reducers raise
        return _tool_error(
            "TypeError",
            f"the result of tool {name!r} (a {kind}) cannot be sent into the sandbox: "
            f"{type(exc).__name__}: {exc}",
        )
    return {"op": "tool_result", "pickled": base64.b64encode(data).decode("ascii"), "type": kind}


def _final_result(result: object) -> dict[str, Any]:
    """The final_answer tool's answer for the sandbox, which ends the action with it.
    The host keeps the answer itself; the sandbox gets it pickled (so the step shows it
    as the code would see it) and sends it back only when this is a recorded answer
    (``Pickled``, which the host does not unpickle)."""
    recorded = isinstance(result, Pickled)
    shown = result.shown if isinstance(result, Pickled) else result
    preview = mask_addresses(make_repr().repr(shown))
    reply = _tool_result(FINAL_ANSWER, result)
    reply.pop("error", None)  # an answer that cannot be pickled is still the answer
    kind = reply.get("type") or ("?" if recorded else qualified_name(type(result)))
    reply["final"] = {"send": recorded, "type": kind, "preview": preview}
    return reply


def _final_preview(value: object, sent: str) -> str:
    """The step's preview of a final answer: the sandbox's, or the marker of a value
    that came as its repr."""
    return str(value) if isinstance(value, OpaqueValue) else sent


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
        # Why the last good state could not be restored into a new runner: the next
        # step ends with this error instead of running in an empty namespace unawares.
        self._lost: ErrorInfo | None = None

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
        channel = Channel(
            process, max_message=message_cap(self.limits), max_blobs=state_cap(self.limits)
        )
        self._process, self._channel = process, channel
        try:
            init = self._init_message()
            if self._backend.loaded(process):
                init["modules"] = []  # sent when its container was started ahead
            ready = self._request(channel, init)
            check(ReadyMessage, ready)
        except (ChannelClosed, ChannelTimeout, BadMessage, SandboxError) as exc:
            stderr = self._stderr()
            self.close()
            raise SandboxError(
                f"the {self.backend} sandbox did not start: {type(exc).__name__}"
                + (f": {exc}" if str(exc) else "")
                + (f": {stderr}" if stderr else ""),
                hint="`codetape doctor` checks Docker and the sandbox image",
            ) from None
        self._ready = ready
        if self.state is not None and self.state.checkpoint.data is not None:
            self._restore_or_forget(channel, self.state)
        return self._channel if self._channel is not None else self._ensure_started()

    def _init_message(self) -> dict[str, Any]:
        return {
            "op": "init",
            "modules": runner_modules(),
            "tools": sorted(self._tools),
            "output_bytes": self.limits.output_bytes,
            "max_message": message_cap(self.limits),
            "max_value": VALUE_BYTES,
            "keep_background": self.limits.keep_background,
            "executor": self._executor,
            # Alone in a container, the runner may kill every other process in it;
            # files under a container's /tmp are part of its state (the local
            # backend's /tmp is the host's own).
            "contained": self.backend == "docker",
            "files_root": "/tmp" if self.backend == "docker" else None,
        }

    def _restore_or_forget(self, channel: Channel, state: RawState) -> None:
        """Restore the last good state into a new runner. Code in the sandbox made that
        state, so restoring it can fail (a value whose unpickling raises): then the
        runner is started afresh, empty, and the next step says why."""
        try:
            self._restore(channel, state)
        except (SandboxError, ChannelClosed, ChannelTimeout) as exc:
            self._lost = ErrorInfo(
                type="SandboxError",
                message="the sandbox was replaced after its last step, and its variables "
                f"could not be restored into the new one ({exc}); this step did not run, "
                "and the sandbox goes on with no variables",
            )
            self.state = None
            self._replace_runner()

    def _stderr(self) -> str:
        process = self._process
        if process is None or process.stderr is None or process.poll() is None:
            return ""
        data: bytes = process.stderr.read()
        return data.decode("utf-8", "replace").strip()[-2000:]

    def _request(self, channel: Channel, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request and wait for the runner's reply to it (matched by id: code in
        the sandbox can write to the channel too, and what it writes is ignored). A
        broken channel replaces the runner and is a ``SandboxError``."""
        request = message["id"] = uuid.uuid4().hex
        channel.take_blobs()
        channel.send(message)
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while True:
            try:
                reply = channel.receive(deadline)
            except ChannelBroken as exc:
                self._backend.kill(channel.process)
                self._replace_runner()
                raise SandboxError(f"the sandbox sent {exc}, which codetape refuses") from None
            if reply.get("id") != request:
                continue
            if reply.get("op") == "fatal":
                raise SandboxError(f"the sandbox runner failed: {_text(reply.get('message'))}")
            return reply

    def _state_reply(self, channel: Channel, message: dict[str, Any]) -> StateReply:
        """A request whose reply carries the namespace's state, checked."""
        reply = self._request(channel, message)
        try:
            return check(StateReply, reply)
        except BadMessage as exc:
            self._replace_runner()
            raise SandboxError(f"the sandbox sent {exc}, which codetape refuses") from None

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
        reply = self._state_reply(channel, message)
        return self._take_state(reply.state, channel.take_blobs())

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

    def _relay(self, message: ToolCallMessage, calls: list[RelayedCall]) -> dict[str, Any]:
        """Answer one tool call from the sandbox with the host tool's result, pickled
        (the sandbox unpickles it: the code gets the very types the tool returned)."""
        try:
            args = decode_value(message.args)
            kwargs = decode_value(message.keywords)
        except BadValue as exc:  # refused, not decoded: the code's call raises
            return _tool_error(
                "ValueError",
                f"codetape refused the arguments of tool {message.name[:100]!r}: {exc}",
            )
        tool = self._tools.get(message.name)
        if tool is None:
            shown = message.name[:100]
            return _tool_error("NameError", f"no tool named {shown!r}")
        call = RelayedCall(message.name, args, kwargs)
        calls.append(call)
        started = time.monotonic()
        try:
            call.result = self.call_tool(message.name, tool, args, kwargs)
        except Exception as exc:
            # Qualified, as the tracer records it: the code in the sandbox raises a class
            # of that name, so the step's error reads the same recorded and replayed.
            call.error = ErrorInfo(type=qualified_name(type(exc)), message=str(exc))
            return _tool_error(call.error.type, str(exc))
        finally:
            call.duration_ms = (time.monotonic() - started) * 1000
        if message.name == FINAL_ANSWER and self._executor.get("kind", "runner") == "runner":
            return _final_result(call.result)
        return _tool_result(message.name, call.result)

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

    def _take_state(self, raw: StateMessage, blobs: Mapping[str, bytes]) -> RawState:
        """The runner's snapshot, checked, with the bytes it names taken from the blobs
        that came with it (named by the digest the host computed: the sandbox is not
        trusted to name what it sends), and the checkpoint's bytes held here for the
        next restore: the runner sends bytes only when the host lacks them."""
        data = {d: blobs[d] for d, ref in raw.data.items() if ref == d and d in blobs}
        variables = {
            name: RawVariable(
                type=var.type,
                preview=var.preview,
                size=var.size,
                digest=var.digest,
                data=data.get(var.digest) if var.digest is not None else None,
                reason=var.reason or None,
            )
            for name, var in raw.variables.items()
        }
        state = RawState(
            variables,
            modules=dict(raw.modules),
            tools=dict(raw.tools),
            checkpoint=self._take_checkpoint(raw.checkpoint, blobs),
        )
        self.state = state
        return state

    def _take_checkpoint(self, raw: CheckpointMessage, blobs: Mapping[str, bytes]) -> Checkpoint:
        held = self.state.checkpoint if self.state is not None else Checkpoint(None)
        files = raw.files
        checkpoint = Checkpoint(
            raw.digest,
            reason=raw.reason or (files.reason if files is not None else None),
            name=_text(raw.name),
            files=files.files if files is not None else None,
        )
        if raw.digest is not None:
            body = blobs.get(raw.digest) if raw.data == raw.digest else None
            checkpoint.data = body if body is not None or held.digest != raw.digest else held.data
            if checkpoint.data is None:
                checkpoint.digest = None
                checkpoint.reason = "the sandbox did not send its checkpoint"
        pool = {held.keys[label]: blob for label, blob in held.large.items()}
        pool.update(blobs)
        for label, key in raw.large.items():
            blob = pool.get(key)
            if blob is not None:
                checkpoint.large[label], checkpoint.keys[label] = blob, key
            elif checkpoint.digest is not None:
                checkpoint.digest, checkpoint.data = None, None
                checkpoint.reason = f"the sandbox did not send the large value {label}"
        if checkpoint.files is not None:
            sent = blobs.get(checkpoint.files) if raw.files_data == checkpoint.files else None
            held_files = held.files_data if held.files == checkpoint.files else None
            checkpoint.files_data = sent if sent is not None else held_files
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
        reply = self._state_reply(channel, {"op": "set_vars", "vars": encoded})
        self._take_state(reply.state, channel.take_blobs())
        return dict(reply.errors)

    # -- running code -----------------------------------------------------------

    def execute(
        self, code: str, *, seed: int | None = None, random_state: bytes | None = None
    ) -> Outcome:
        """Run one snippet and say what it did. Never raises for what the code did (its
        own errors, or anything it sends the host): see the outcome's ``status`` and
        ``error``. ``random`` is seeded with ``seed`` first, or set to ``random_state``
        (a pickled ``random.getstate()``)."""
        channel = self._ensure_started()
        started = time.monotonic()
        outcome = Outcome(status="ok", seed=seed)
        request: dict[str, Any] = {"op": "run", "code": code, "seed": seed}
        if random_state is not None:
            request["random_state"] = base64.b64encode(random_state).decode("ascii")
        try:
            if self._lost is not None:
                lost, self._lost = self._lost, None
                raise _Interrupted("error", lost)
            reply = self._exchange(channel, request, outcome.tool_calls)
            self._take_outcome(outcome, reply, channel.take_blobs())
        except _Interrupted as stopped:
            outcome.status, outcome.error = stopped.status, stopped.error
        outcome.duration_ms = (time.monotonic() - started) * 1000
        return outcome

    def _take_outcome(self, outcome: Outcome, raw: dict[str, Any], blobs: dict[str, bytes]) -> None:
        try:
            reply = check(ResultMessage, raw)
        except BadMessage as exc:
            raise self._broken(str(exc)) from None
        outcome.status = reply.status
        if reply.error is not None:
            outcome.error = ErrorInfo(**reply.error.model_dump())
        outcome.stdout, outcome.stderr = reply.stdout, reply.stderr
        outcome.has_result = reply.has_result
        outcome.result = reply.result if reply.has_result else None
        outcome.result_type = reply.result_type
        outcome.state = self._take_state(reply.state, blobs)
        if reply.final_answer is not None:
            self._take_final_answer(outcome, reply.final_answer)

    def _take_final_answer(self, outcome: Outcome, final: FinalAnswerMessage) -> None:
        """The action's final answer, decoded (or, from the final_answer tool, as the
        tool returned it), its type and preview as the step's result. A value codetape
        refuses to decode ends the step as an error that says why."""
        calls = [c for c in outcome.tool_calls if c.name == FINAL_ANSWER and c.error is None]
        if final.tool and not calls:
            raise self._broken("a final answer from a final_answer tool it never called")
        try:
            if final.tool and not isinstance(calls[-1].result, Pickled):
                value = calls[-1].result
            else:
                value = decode_value(final.value)
        except BadValue as exc:
            outcome.status = "error"
            outcome.error = ErrorInfo(
                type="SandboxValueError",
                message=f"codetape refused to decode the code's final answer: the sandbox "
                f"sent {exc}",
            )
            return
        preview = _final_preview(value, final.preview)
        outcome.final_answer = {"value": value, "type": final.type, "preview": preview}
        if not outcome.has_result:
            outcome.has_result, outcome.result, outcome.result_type = True, preview, final.type

    def _exchange(
        self, channel: Channel, message: dict[str, Any], calls: list[RelayedCall]
    ) -> dict[str, Any]:
        """Send the code, answer its tool calls, and return the runner's reply."""
        deadline = time.monotonic() + self.limits.timeout_s
        request = message["id"] = uuid.uuid4().hex
        try:
            channel.take_blobs()
            channel.send(message)
            self._sent()
            while True:
                message = channel.receive(deadline)
                if message.get("op") == "fatal" and message.get("id") == request:
                    raise self._failed(message)
                if message.get("op") == "tool_call":
                    tool_started = time.monotonic()
                    channel.send(self._relay(check(ToolCallMessage, message), calls))
                    deadline += time.monotonic() - tool_started  # host time is not the code's
                elif message.get("id") == request:
                    return message
                # Anything else was written by the code itself: not the runner's reply.
        except BadMessage as exc:
            raise self._broken(str(exc)) from None
        except ChannelTimeout:
            raise self._timed_out() from None
        except ChannelBroken as broken:
            raise self._broken(str(broken)) from None
        except ChannelClosed:
            raise self._died() from None

    def _sent(self) -> None:
        """Called once the code is on its way to the runner, before its reply is awaited:
        work done here (a subclass records the step's start) overlaps the step's run."""

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

    def _broken(self, reason: str) -> _Interrupted:
        """The sandbox sent something that is not the protocol (code in it can write to
        the channel): the step ends as an error that says what, and the runner, whose
        channel can no longer be trusted, is replaced."""
        self._backend.kill(self._process)
        self._replace_runner()
        return _Interrupted(
            "error",
            ErrorInfo(
                type="SandboxProtocolError",
                message=f"the sandbox sent {reason}, which codetape refuses; the step was "
                "stopped, and the sandbox replaced with its variables restored from the "
                "last good step",
            ),
        )

    def _failed(self, fatal: dict[str, Any]) -> _Interrupted:
        """The runner could not carry out the request (code in the sandbox can break
        the runner it shares a process with): the step ends as an error."""
        self._backend.kill(self._process)
        self._replace_runner()
        why = _text(fatal.get("message")) or "no reason given"
        return _Interrupted(
            "error",
            ErrorInfo(
                type="SandboxError",
                message=f"the sandbox runner failed: {why[:2000]}; the sandbox was replaced "
                "and its variables restored from the last good step",
            ),
        )

    def _died(self) -> _Interrupted:
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
