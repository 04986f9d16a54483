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
    SandboxError,
    StepNotFoundError,
)
from ..sandbox.internal import host_fingerprint
from ..schemas import Limits, ReplayReport, Run, Step, ToolCall
from ..store import Store
from ..tracer import Sandbox
from ..tracer.internal import RunRecorder, recording_to
from ._compare import compare_steps, normalize_json

__all__ = ["ReplayToolError", "replay", "replay_run"]


class ReplayToolError(Exception):
    """A replayed step called a tool the recording has no answer for."""


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


def _not_run(
    run_id: str, step: int, verdict: str, reason: str, started: float, **extra: Any
) -> ReplayReport:
    return ReplayReport(
        run_id=run_id,
        step=step,
        verdict=verdict,
        reason=reason,
        duration_ms=(time.monotonic() - started) * 1000,
        **extra,
    )


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
    started = time.monotonic()
    run = recording.run
    full = run.id
    recorded = recording.steps.get(step)
    if recorded is None:
        raise StepNotFoundError(full, step, sorted(recording.steps))
    spec = recorded.sandbox
    notes: list[str] = []
    if code is not None and code != recorded.code:
        notes.append("the code was edited: the replay ran the new code on the recorded input")

    backend = "docker" if image is not None or spec.backend == "docker" else "local"
    image_ref = image or spec.image_id if backend == "docker" else None
    if image is not None and image not in (spec.image, spec.image_id):
        notes.append(f"replayed in {image}, recorded in {spec.image or spec.backend}")
    if spec.backend == "observed":
        notes.append(
            "an observed step: codetape did not control its hash seed or random state, "
            "so set-order or random-dependent output may differ"
        )
        if backend == "local" and spec.env_fingerprint != host_fingerprint().digest:
            notes.append(
                "the environment fingerprint differs from the recording's (Python "
                f"{spec.python} then, {host_fingerprint().python} now, or other packages)"
            )

    missing: dict[str, str] = {}
    values: dict[str, bytes] = {}
    found = store.blobs_of(
        snap.digest for snap in recorded.variables_before.values() if snap.digest is not None
    )
    for name, snap in recorded.variables_before.items():
        if not snap.restorable or snap.digest is None:
            missing[name] = snap.reason or "its value was not recorded"
        elif snap.digest not in found:
            missing[name] = f"its value ({snap.digest}) is missing from the store"
        else:
            values[name] = found[snap.digest]
    if missing:
        listed = "; ".join(f"{name}: {why}" for name, why in sorted(missing.items()))
        return _not_run(
            full, step, "not_restorable", f"cannot restore {listed}", started, notes=notes
        )

    all_calls = recording.calls
    if live_tools:
        host_tools = {getattr(t, "__name__", ""): t for t in tools}
        absent = sorted({c.name for c in all_calls} - set(host_tools))
        if absent:
            raise SandboxError(
                f"live tools asked for, but no host function given for {', '.join(absent)}",
                hint="pass tools=[...] (CLI: --tools MODULE) with functions of those names",
            )
        stubs: dict[str, Callable[..., Any]] = host_tools
    else:
        stubs = _RecordedTools(recorded.tool_calls).stubs({c.name for c in all_calls}, all_calls)

    limits = Limits(**spec.limits) if spec.limits else Limits()
    with recording_to(store.home):
        try:
            with (
                RunRecorder(run.name, run.task, replay_of=f"{full}:{step}") as replay_run_,
                Sandbox(
                    image=image_ref,
                    tools=list(stubs.values()),  # each named as its tool
                    backend=backend,
                    limits=limits,
                    hash_seed=spec.hash_seed,
                ) as sandbox,
            ):
                errors = sandbox.send_pickled(values)
                if errors:
                    listed = "; ".join(f"{n}: {why}" for n, why in sorted(errors.items()))
                    return _not_run(
                        full,
                        step,
                        "not_restorable",
                        f"cannot load in the sandbox {listed}",
                        started,
                        notes=notes,
                        replay_run_id=replay_run_.id,
                        backend=backend,
                        image=image_ref,
                    )
                sandbox.run(
                    code if code is not None else recorded.code,
                    random_seed=recorded.random_seed,
                )
        except ImageNotFoundError:
            return _not_run(
                full,
                step,
                "environment_missing",
                _missing_image_reason(recorded, str(image_ref)),
                started,
                notes=notes,
                backend=backend,
                image=image_ref,
            )
        except (DockerUnavailableError, SandboxError) as exc:
            return _not_run(
                full,
                step,
                "environment_missing",
                str(exc),
                started,
                notes=notes,
                backend=backend,
                image=image_ref,
            )
    store.refresh()  # the replay run, so it can be read back as recorded
    replayed = store.step(replay_run_.id, 0)
    differences = compare_steps(recorded, replayed)
    return ReplayReport(
        run_id=full,
        step=step,
        verdict="diverged" if differences else "reproduced",
        differences=differences,
        replay_run_id=replay_run_.id,
        duration_ms=(time.monotonic() - started) * 1000,
        notes=notes,
        backend=backend,
        image=image_ref,
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
