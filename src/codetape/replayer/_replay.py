"""Replaying recorded steps: the same image, variables, seeds and tool answers."""

from __future__ import annotations

import contextvars
import inspect
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import (
    DockerUnavailableError,
    ImageNotFoundError,
    ReplayToolError,
    SandboxError,
    StepNotFoundError,
)
from ..sandbox.internal import host_fingerprint
from ..schemas import Limits, ReplayReport, Run, Step, ToolCall, Verdict
from ..store import Store
from ..tracer import Sandbox
from ..tracer.internal import RunRecorder, recording_to
from ._compare import compare_steps, normalize_json

__all__ = ["replay", "replay_run"]


def _error_class(type_name: str, message: str) -> type[Exception]:
    """An exception that looks like the recorded one: same type name, same text."""
    import builtins

    base = getattr(builtins, type_name, None)
    if not (isinstance(base, type) and issubclass(base, Exception)):
        base = Exception
    return type(type_name, (base,), {"__str__": lambda self: message})


class _RecordedTools:
    """Answers tool calls from a recording, in order: the replay runs no host tool."""

    def __init__(self, calls: list[ToolCall]) -> None:
        self.calls = calls
        self.next = 0

    def stubs(
        self, names: Iterable[str], all_calls: list[ToolCall]
    ) -> dict[str, Callable[..., Any]]:
        return {name: self._stub(name, all_calls) for name in sorted(set(names))}

    def _stub(self, name: str, all_calls: list[ToolCall]) -> Callable[..., Any]:
        # Parameter names as the recording knew them, so arguments are recorded alike.
        params: dict[str, None] = {}
        for call in all_calls:
            if call.name == name and isinstance(call.arguments, dict):
                params.update(dict.fromkeys(call.arguments))
        oracle = self

        def answer(*args: Any, **kwargs: Any) -> Any:
            i = oracle.next
            oracle.next += 1
            if i >= len(oracle.calls):
                raise ReplayToolError(
                    f"tool call #{i} ({name}) is not in the recording: it recorded "
                    f"{len(oracle.calls)} calls"
                )
            recorded = oracle.calls[i]
            if recorded.name != name:
                raise ReplayToolError(
                    f"tool call #{i} is {name} here but {recorded.name} in the recording"
                )
            if recorded.error is not None:
                raise _error_class(recorded.error.type, recorded.error.message)()
            return normalize_json(recorded.result)

        answer.__name__ = name
        answer.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
                for p in params
            ]
        )
        return answer


def _missing_image_reason(recorded: Step, image: str) -> str:
    spec = recorded.sandbox
    name = f"{spec.image} ({spec.image_id})" if spec.image and image == spec.image_id else image
    how = (
        f"pull it by its repo digest: docker pull {spec.repo_digests[0]}"
        if spec.repo_digests and image == spec.image_id
        else "import a bundle that carries it (codetape export RUN --with-image, then "
        "codetape import FILE), or pass --image to replay in another image"
    )
    return f"the image {name} is not in Docker: {how}"


def replay(
    run_id: str,
    step: int,
    *,
    code: str | None = None,
    image: str | None = None,
    live_tools: bool = False,
    tools: Iterable[Callable[..., Any]] = (),
    home: str | os.PathLike[str] | None = None,
) -> ReplayReport:
    """Re-run one recorded step and say whether it reproduced.

    The step runs in a fresh sandbox: for a sandboxed step, a container of the recorded
    image id with the recorded limits, hash seed and ``random`` seed; for an observed
    step, the local backend (or Docker with ``image=``). Its recorded input variables
    are restored, and every tool call is answered from the recording, in order, unless
    ``live_tools`` (then ``tools`` are called). ``code`` replaces the recorded code (the
    "does my fix work" loop). The replay is recorded as a run whose ``replay_of`` names
    the step.

    >>> report = codetape.replay("3f2a", 2)            # doctest: +SKIP
    >>> report.verdict, [d.field for d in report.differences]
    ('diverged', ['stdout'])
    """
    store = Store(home)
    with store.session():
        full = store.resolve_run_id(run_id)
        recording = _Recording(store.run(full), store.steps(full))
    return _replay_step(
        store, recording, step, code=code, image=image, live_tools=live_tools, tools=tools
    )


class _Recording:
    """A run as recorded, read once for however many of its steps are replayed."""

    def __init__(self, run: Run, steps: list[Step]) -> None:
        self.run = run
        self.steps = {s.index: s for s in steps}
        self.calls = [call for s in steps for call in s.tool_calls]


class _Attempt:
    """Where and how one step is replayed, and the report it ends in."""

    def __init__(self, run_id: str, recorded: Step, code: str | None, image: str | None) -> None:
        self.started = time.monotonic()
        self.run_id = run_id
        self.recorded = recorded
        self.code = code if code is not None else recorded.code
        spec = recorded.sandbox
        self.backend = "docker" if image is not None or spec.backend == "docker" else "local"
        self.image = (image or spec.image_id) if self.backend == "docker" else None
        self.notes: list[str] = []
        if code is not None and code != recorded.code:
            self.notes.append(
                "the code was edited: the replay ran the new code on the recorded input"
            )
        if image is not None and image not in (spec.image, spec.image_id):
            self.notes.append(f"replayed in {image}, recorded in {spec.image or spec.backend}")
        if spec.backend == "observed":
            self._note_observed()

    def _note_observed(self) -> None:
        spec = self.recorded.sandbox
        self.notes.append(
            "an observed step: codetape did not control its hash seed or random state, "
            "so set-order or random-dependent output may differ"
        )
        here = host_fingerprint()
        if self.backend == "local" and spec.env_fingerprint != here.digest:
            self.notes.append(
                "the environment fingerprint differs from the recording's (Python "
                f"{spec.python} then, {here.python} now, or other packages)"
            )

    def report(self, verdict: Verdict, **fields: Any) -> ReplayReport:
        return ReplayReport(
            run_id=self.run_id,
            step=self.recorded.index,
            verdict=verdict,
            duration_ms=(time.monotonic() - self.started) * 1000,
            notes=self.notes,
            backend=self.backend,
            image=self.image,
            **fields,
        )


def _inputs(store: Store, recorded: Step) -> tuple[dict[str, bytes], dict[str, str]]:
    """The step's recorded input values, and why each missing one cannot be restored."""
    missing: dict[str, str] = {}
    values: dict[str, bytes] = {}
    before = recorded.variables_before
    found = store.blobs_of(snap.digest for snap in before.values() if snap.digest is not None)
    for name, snap in before.items():
        if not snap.restorable or snap.digest is None:
            missing[name] = snap.reason or "its value was not recorded"
        elif snap.digest not in found:
            missing[name] = f"its value ({snap.digest}) is missing from the store"
        else:
            values[name] = found[snap.digest]
    return values, missing


def _tools(
    recording: _Recording, recorded: Step, live_tools: bool, tools: Iterable[Callable[..., Any]]
) -> list[Callable[..., Any]]:
    """The replay's tools, each named as its tool: the host's own with ``live_tools``,
    else stubs answering from the recording."""
    all_calls = recording.calls
    if not live_tools:
        stubs = _RecordedTools(recorded.tool_calls).stubs({c.name for c in all_calls}, all_calls)
        return list(stubs.values())
    host_tools = {getattr(t, "__name__", ""): t for t in tools}
    absent = sorted({c.name for c in all_calls} - set(host_tools))
    if absent:
        raise SandboxError(
            f"live tools asked for, but no host function given for {', '.join(absent)}",
            hint="pass tools=[...] (CLI: --tools MODULE) with functions of those names",
        )
    return list(host_tools.values())


def _listed(reasons: dict[str, str]) -> str:
    return "; ".join(f"{name}: {why}" for name, why in sorted(reasons.items()))


def _run_replay(
    attempt: _Attempt, run: Run, values: dict[str, bytes], tools: list[Callable[..., Any]]
) -> str | ReplayReport:
    """Run the step in a fresh sandbox, recorded as a replay run; returns that run's
    id, or the report when the step could not run."""
    spec = attempt.recorded.sandbox
    with (
        RunRecorder(
            run.name, run.task, replay_of=f"{attempt.run_id}:{attempt.recorded.index}"
        ) as replay_run_,
        Sandbox(
            image=attempt.image,
            tools=tools,
            backend=attempt.backend,
            limits=Limits(**spec.limits) if spec.limits else Limits(),
            hash_seed=spec.hash_seed,
        ) as sandbox,
    ):
        errors = sandbox.send_pickled(values)
        if errors:
            return attempt.report(
                "not_restorable",
                reason=f"cannot load in the sandbox {_listed(errors)}",
                replay_run_id=replay_run_.id,
            )
        sandbox.run(attempt.code, random_seed=attempt.recorded.random_seed)
    return replay_run_.id


def _replay_step(
    store: Store,
    recording: _Recording,
    step: int,
    *,
    code: str | None,
    image: str | None,
    live_tools: bool,
    tools: Iterable[Callable[..., Any]],
) -> ReplayReport:
    recorded = recording.steps.get(step)
    if recorded is None:
        raise StepNotFoundError(recording.run.id, step, sorted(recording.steps))
    attempt = _Attempt(recording.run.id, recorded, code, image)
    values, missing = _inputs(store, recorded)
    if missing:
        return attempt.report("not_restorable", reason=f"cannot restore {_listed(missing)}")
    host_tools = _tools(recording, recorded, live_tools, tools)
    with recording_to(store.home):
        try:
            ran = _run_replay(attempt, recording.run, values, host_tools)
        except ImageNotFoundError:
            reason = _missing_image_reason(recorded, str(attempt.image))
            return attempt.report("environment_missing", reason=reason)
        except DockerUnavailableError as exc:
            return attempt.report("environment_missing", reason=str(exc))
    if isinstance(ran, ReplayReport):
        return ran
    store.refresh()  # the replay run, so it can be read back as recorded
    differences = compare_steps(recorded, store.step(ran, 0))
    return attempt.report(
        "diverged" if differences else "reproduced", differences=differences, replay_run_id=ran
    )


def replay_run(
    run_id: str, *, jobs: int = 2, home: str | os.PathLike[str] | None = None, **options: Any
) -> list[ReplayReport]:
    """Replay every step of a run, each from its own recorded input, ``jobs`` at a time
    in parallel sandboxes. ``options`` are passed to :func:`replay`."""
    store = Store(home)
    with store.session():
        full = store.resolve_run_id(run_id)
        recording = _Recording(store.run(full), store.steps(full))
    options = {"code": None, "image": None, "live_tools": False, "tools": (), **options}

    def one(index: int) -> ReplayReport:
        # Each worker reads back its own replay run: a Store of its own.
        return _replay_step(Store(store.home), recording, index, **options)

    indexes = sorted(recording.steps)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(contextvars.copy_context().run, one, i) for i in indexes]
        return [f.result() for f in futures]
