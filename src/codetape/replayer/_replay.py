"""Replaying recorded steps: the same image, variables, seeds and tool answers."""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .._format import steps_text
from ..errors import (
    DockerUnavailableError,
    ImageNotFoundError,
    ReplayError,
    SandboxError,
    StepNotFoundError,
)
from ..sandbox.internal import (
    WarmPool,
    docker_host,
    engine_key,
    ensure_image,
    host_fingerprint,
    in_pool,
    removal_in_background,
)
from ..schemas import Difference, Limits, ReplayReport, Step, ToolCall, Verdict
from ..store import Store
from ..store.internal import digest_of, wait_for_background
from ..tracer import Sandbox
from ..tracer.internal import RunRecorder, recording_to
from ._compare import compare_steps, shown
from ._readback import SpoolWindow
from ._rebuild import Plan, Recording, ToolOracle, input_differences, plan, rebuild, restore

__all__ = ["replay", "replay_from", "replay_run"]


def _missing_image_reason(recorded: Step, image: str, host: str | None) -> str:
    spec = recorded.sandbox
    name = f"{spec.image} ({spec.image_id})" if spec.image and image == spec.image_id else image
    how = (
        f"pull it by its repo digest: docker pull {spec.repo_digests[0]}"
        if spec.repo_digests and image == spec.image_id
        else "import a bundle that carries it (codetape export RUN --with-image, then "
        "codetape import FILE), or pass --image to replay in another image"
    )
    if host is not None and engine_key(host) != engine_key(None):
        where = (
            f"neither on the Docker engine at {host} nor on this machine's "
            f"({engine_key(None)}), which would have sent it there"
        )
        return f"the image {name} is {where}: {how} on either"
    return f"the image {name} is not in Docker: {how}"


def _read(store: Store, run_id: str, every_step: bool = False) -> Recording:
    """The run, read on one connection; ``every_step``: with every blob a replay of any
    of its steps needs."""
    with store.session():
        full = store.resolve_run_id(run_id)
        recording = Recording(store, store.run(full), store.steps(full))
        if every_step:
            recording.hold_inputs()
        return recording


def replay(
    run_id: str,
    step: int,
    *,
    code: str | None = None,
    image: str | None = None,
    live_tools: bool = False,
    tools: Iterable[Callable[..., Any]] = (),
    tool_answers: Mapping[int, Any] | None = None,
    docker_host: str | None = None,
    home: str | os.PathLike[str] | None = None,
) -> ReplayReport:
    """Re-run one recorded step and say whether it reproduced.

    The step's input is rebuilt in a fresh sandbox: for a sandboxed step, a container of
    the recorded image id with the recorded limits and hash seed; for an observed step,
    a subprocess running the code the way the recording did (plain ``exec``, the
    executor named with ``@code_action(replay=...)``, or smolagents' interpreter), or
    Docker with ``image=``. The input comes from the latest checkpoint that restores
    every variable, and the recorded steps after it are re-run with their recorded
    seeds and tool answers. Then the step runs with its own recorded seed and every
    tool call answered from the recording, in order, unless ``live_tools`` (then
    ``tools`` are called). ``code`` replaces the recorded code (the "does my fix work"
    loop). ``tool_answers`` replaces recorded answers: ``{0: []}`` answers the step's
    first tool call with an empty list (the other calls still get theirs), to see how
    the code handles an answer the tool never gave. The replay is recorded as a run
    whose ``replay_of`` names the step.

    ``docker_host`` (``unix:///path``, ``tcp://host:2376`` with TLS from docker's usual
    ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``; default ``DOCKER_HOST``) runs the
    sandbox on that Docker engine; an engine that lacks the recorded image is sent it,
    by id, from this machine's engine (``docker save``/``load`` through the API).

    >>> report = codetape.replay("3f2a", 2)            # doctest: +SKIP
    >>> report.verdict, [d.field for d in report.differences]
    ('diverged', ['stdout'])
    """
    store = Store(home)
    return _replay_step(
        store, _read(store, run_id), step, code=code, image=image, live_tools=live_tools,
        tools=tools, tool_answers=tool_answers, docker_host=docker_host,
    )  # fmt: skip


def replay_from(
    run_id: str,
    step: int,
    *,
    code: str | None = None,
    image: str | None = None,
    live_tools: bool = False,
    tools: Iterable[Callable[..., Any]] = (),
    tool_answers: Mapping[int, Any] | None = None,
    docker_host: str | None = None,
    home: str | os.PathLike[str] | None = None,
) -> list[ReplayReport]:
    """Replay step ``step`` (or ``code`` in its place) and then every later recorded step
    in the same sandbox, each compared with the recording: does a fix carry through the
    rest of the trajectory? One report per step run, in order.

    Tool calls are answered from the recording. A call it does not have (the edited
    code asks something new) is answered by the host's ``tools`` only with
    ``live_tools``; otherwise the replay stops there, and that step's report says which
    call had no recorded answer. ``tool_answers`` replaces answers of step ``step``'s
    calls, and ``docker_host`` names the Docker engine, as in :func:`replay`.

    >>> reports = codetape.replay_from("3f2a", 1, code=fixed)      # doctest: +SKIP
    >>> [r.verdict for r in reports]
    ['diverged', 'reproduced', 'reproduced']
    """
    store = Store(home)
    recording = _read(store, run_id)
    if step not in recording.steps:
        raise StepNotFoundError(recording.run.id, step, sorted(recording.steps))
    session = _Session(
        store, recording, step, code, image, live_tools, tools,
        tool_answers=tool_answers, docker_host=docker_host,
    )  # fmt: skip
    return session.run_from()


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
            "an observed step: codetape did not control its hash seed, so the order of "
            "a set of strings may differ"
        )
        here = host_fingerprint()
        if self.backend == "local" and spec.env_fingerprint != here.digest:
            self.notes.append(
                "the environment fingerprint differs from the recording's (Python "
                f"{spec.python} then, {here.python} now, or other packages)"
            )

    def report(self, verdict: Verdict, **fields: Any) -> ReplayReport:
        fields.setdefault("step", self.recorded.index)
        return ReplayReport(
            run_id=self.run_id,
            verdict=verdict,
            duration_ms=(time.monotonic() - self.started) * 1000,
            notes=self.notes,
            backend=self.backend,
            image=self.image,
            **fields,
        )


def _listed(reasons: dict[str, str]) -> str:
    return "; ".join(f"{name}: {why}" for name, why in sorted(reasons.items()))


class _Session:
    """One replay: a replay run, one sandbox, the step's input rebuilt in it, then the
    step (and, replaying from it, every later recorded step)."""

    def __init__(
        self,
        store: Store,
        recording: Recording,
        step: int,
        code: str | None,
        image: str | None,
        live_tools: bool,
        tools: Iterable[Callable[..., Any]],
        *,
        every_call_live: bool = False,
        tool_answers: Mapping[int, Any] | None = None,
        docker_host: str | None = None,
    ) -> None:
        recorded = recording.steps.get(step)
        if recorded is None:
            raise StepNotFoundError(recording.run.id, step, sorted(recording.steps))
        self.store, self.recording, self.recorded = store, recording, recorded
        self.attempt = _Attempt(recording.run.id, recorded, code, image)
        self.host = docker_host
        # The name to give a shipped image there: the one asked for, else the recorded.
        self.image_name = image or recorded.sandbox.image
        self.calls = _answered(recorded, tool_answers or {})
        self.attempt.notes.extend(
            f"tool call {i} ({recorded.tool_calls[i].name}) got the answer given, not the "
            "recorded one"
            for i in sorted(tool_answers or {})
        )
        host = {getattr(t, "__name__", ""): t for t in tools} if live_tools else None
        if host is not None and every_call_live:
            absent = sorted({c.name for c in recording.calls} - set(host))
            if absent:
                raise SandboxError(
                    f"live tools asked for, but no host function given for {', '.join(absent)}",
                    hint="pass tools=[...] (CLI: --tools MODULE) with functions of those names",
                )
        self.oracle = ToolOracle(recording.calls, live=host, every_call_live=every_call_live)
        self.oracle.pickles = recording.need
        self.input_differences: list[Difference] = []

    def _sandbox(self) -> Sandbox:
        spec = self.recorded.sandbox
        executor = self.recorded.executor if spec.backend == "observed" else None
        return Sandbox(
            image=self.attempt.image,
            tools=self.oracle.stubs(self._tool_names()),
            backend=self.attempt.backend,
            limits=Limits(**spec.limits) if spec.limits else Limits(),
            hash_seed=spec.hash_seed,
            executor=executor,
        )

    def _tool_names(self) -> set[str]:
        names = {call.name for call in self.recording.calls}
        for step in self.recording.steps.values():
            names.update((step.executor or {}).get("tools", []))
            manifest = self.recording.manifest(step.state_before) or {}
            if manifest.get("format") == 2:
                names.update(manifest.get("tools", {}).values())
        return names

    def _prepare(self, sandbox: Sandbox, chosen: Plan, replay_run_id: str) -> ReplayReport | None:
        """Restore the checkpoint and re-run the steps after it; a report when the
        input cannot be had."""
        errors = restore(sandbox, chosen)
        if errors:
            reason = f"cannot load in the sandbox {_listed(errors)}"
            return self.attempt.report("not_restorable", reason=reason, replay_run_id=replay_run_id)
        target = self.recorded.index
        rerun = chosen.rerun(target)
        if rerun:
            self.attempt.notes.append(
                f"the input was rebuilt by re-running {steps_text(rerun)} on the "
                f"checkpoint of step {chosen.start}'s input"
            )
            self.attempt.notes.extend(rebuild(sandbox, self.recording, chosen, target, self.oracle))
        for name, (a, b) in input_differences(sandbox, self.recorded.variables_before).items():
            self.input_differences.append(
                Difference(field=f"input:{name}", recorded=shown(a), replayed=shown(b))
            )
        return None

    def _run(self, sandbox: Sandbox, step: Step, code: str) -> None:
        self.oracle.answer_for(self.calls if step is self.recorded else step.tool_calls)
        random_state = self.recording.blob(step.random_state)
        sandbox.run(code, random_seed=step.random_seed, random_state=random_state)

    def run_one(self) -> ReplayReport:
        return self._replay([self.recorded])[0]

    def run_from(self) -> list[ReplayReport]:
        first = self.recorded.index
        steps = self.recording.steps
        return self._replay([steps[i] for i in sorted(steps) if i >= first])

    def _replay(self, steps: list[Step]) -> list[ReplayReport]:
        """Rebuild the input of the first of ``steps``, run them in order (stopping at a
        tool call the recording has no answer for), and compare each."""
        chosen = plan(self.recording, self.recorded.index)
        if chosen.start < 0:
            reason = f"cannot restore {_listed(chosen.reasons)}"
            return [self.attempt.report("not_restorable", reason=reason)]
        run = self.recording.run
        replay_of = f"{run.id}:{self.recorded.index}"
        ran: list[tuple[Step, list[str]]] = []
        known = self._known_blobs(steps)
        # The used container is removed off the replay's path (or by the pool's close).
        with (
            recording_to(self.store.home) as rt,
            removal_in_background(),
            docker_host(self.host),
        ):
            window = SpoolWindow(rt.spool)
            try:
                self._ship_image()
                with (
                    RunRecorder(run.name, run.task, replay_of=replay_of) as replay_run_,
                    self._sandbox() as sandbox,
                ):
                    failed = self._prepare(sandbox, chosen, replay_run_.id)
                    if failed is not None:
                        return [failed]
                    for step in steps:
                        code = self.attempt.code if step is self.recorded else step.code
                        self._run(sandbox, step, code)
                        ran.append((step, list(self.oracle.missed)))
                        if self.oracle.missed and len(steps) > 1:
                            break
            except (ImageNotFoundError, DockerUnavailableError) as exc:
                return [self._environment_missing(exc)]
        # Its ingestion starts now, on the ingestion thread (not a second later, when the
        # next replay's read would wait for it); nothing here waits for it.
        wait_for_background(self.store.home, timeout=0)
        # The replay run as the store will hold it: read back from this process's spool
        # (no ingestion on the replay's path), else through the store.
        replayed = window.steps(replay_run_.id, len(ran), known, self.store.home) if ran else []
        if not replayed:
            self.store.refresh()
            replayed = self.store.steps(replay_run_.id)
        return [
            self._compared(step, again, replay_run_.id, missed)
            for (step, missed), again in zip(ran, replayed, strict=False)
        ]

    def _known_blobs(self, steps: list[Step]) -> dict[str, bytes]:
        """The recording's contents a replay of ``steps`` that reproduces records again
        (code, output, states), by digest: this process does not spool a blob twice."""
        known: dict[str, bytes] = {}
        texts = [self.attempt.code]
        for step in steps:
            texts += [step.code, step.stdout, step.stderr]
            if step.error is not None and step.error.traceback:
                texts.append(step.error.traceback)
            for call in step.tool_calls:  # their arguments and answers, as JSON text
                texts += [json.dumps(v, ensure_ascii=False) for v in (call.arguments, call.result)]
            for digest in (step.state_before, step.state_after, step.random_state):
                data = self.recording.blob(digest)
                if digest is not None and data is not None:
                    known[digest] = data
        for text in texts:
            data = text.encode("utf-8", "surrogatepass")
            known[digest_of(data)] = data
        return known

    def _ship_image(self) -> None:
        """On another engine than this machine's, the image is sent there when it lacks
        it; the replay's notes say where it ran."""
        if self.attempt.backend != "docker" or self.host is None:
            return
        if engine_key(self.host) == engine_key(None):
            return
        image = str(self.attempt.image)
        if ensure_image(image, self.host, self.image_name):
            self.attempt.notes.append(
                f"the image {self.image_name or image} was sent to that engine from "
                f"this machine's ({engine_key(None)})"
            )
        self.attempt.notes.append(f"replayed on the Docker engine at {self.host}")

    def _environment_missing(self, exc: Exception) -> ReplayReport:
        if isinstance(exc, ImageNotFoundError):
            reason = _missing_image_reason(self.recorded, str(self.attempt.image), self.host)
        else:
            reason = str(exc)
        return self.attempt.report("environment_missing", reason=reason)

    def _compared(
        self, recorded: Step, replayed: Step, replay_run_id: str, missed: list[str]
    ) -> ReplayReport:
        differences = compare_steps(recorded, replayed)
        reason = None
        if recorded is self.recorded and self.input_differences:
            names = ", ".join(d.field.removeprefix("input:") for d in self.input_differences)
            reason = f"the rebuilt input differs from the recording in {names}"
            differences = [*self.input_differences, *differences]
        if missed:
            reason = f"no recorded answer for {missed[0]}"
        verdict: Verdict = "diverged" if differences or missed else "reproduced"
        report = self.attempt.report(
            verdict,
            step=recorded.index,
            differences=differences,
            replay_run_id=replay_run_id,
            reason=reason,
        )
        if recorded is not self.recorded:  # a later step of replay_from: its own time
            report = report.model_copy(update={"duration_ms": replayed.duration_ms})
        return report


def _answered(recorded: Step, answers: Mapping[int, Any]) -> list[ToolCall]:
    """The step's recorded tool calls with the answers of ``answers`` (by call index)
    in place of the recorded ones."""
    calls = list(recorded.tool_calls)
    for index, answer in answers.items():
        if not isinstance(index, int) or not 0 <= index < len(calls):
            listed = ", ".join(f"{i} ({c.name})" for i, c in enumerate(calls)) or "none"
            raise ReplayError(
                f"step {recorded.index} has no tool call {index!r} to answer",
                hint=f"its tool calls, by index: {listed}",
            )
        calls[index] = calls[index].model_copy(
            update={"result": answer, "result_pickle": None, "error": None}
        )
    return calls


def _replay_step(
    store: Store,
    recording: Recording,
    step: int,
    *,
    code: str | None,
    image: str | None,
    live_tools: bool,
    tools: Iterable[Callable[..., Any]],
    tool_answers: Mapping[int, Any] | None = None,
    docker_host: str | None = None,
) -> ReplayReport:
    session = _Session(
        store, recording, step, code, image, live_tools, tools,
        every_call_live=True, tool_answers=tool_answers, docker_host=docker_host,
    )  # fmt: skip
    return session.run_one()


def replay_run(
    run_id: str,
    *,
    jobs: int = 2,
    docker_hosts: Iterable[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    **options: Any,
) -> list[ReplayReport]:
    """Replay every step of a run, each from its own rebuilt input, ``jobs`` at a time
    in parallel sandboxes. ``options`` are passed to :func:`replay`. Each step still gets
    a fresh container, started ahead while the steps before it ran (containers are
    never reused; those left over are removed before this returns).

    ``docker_hosts`` spreads the steps over several Docker engines, in turn (step k on
    engine k mod n), each engine with containers started ahead of its own and sent the
    recorded image when it lacks it; ``docker_host=`` (one engine) works as for
    :func:`replay`.

    >>> reports = codetape.replay_run("3f2a", jobs=4,
    ...     docker_hosts=["unix:///var/run/docker.sock", "tcp://gpu-box:2376"])  # doctest: +SKIP
    """
    store = Store(home)
    recording = _read(store, run_id, every_step=True)
    options = {"code": None, "image": None, "live_tools": False, "tools": (), **options}
    hosts: list[str | None] = [*(docker_hosts or ())] or [options.pop("docker_host", None)]
    options.pop("docker_host", None)
    indexes = sorted(recording.steps)
    where = {index: hosts[k % len(hosts)] for k, index in enumerate(indexes)}
    workers = max(1, min(jobs, len(indexes)))
    # Each step's sandbox takes a container started (for its image, on its engine) while
    # the one before worked; never more started ahead than that engine has steps left.
    pools: dict[str | None, WarmPool] = {}
    for host in dict.fromkeys(hosts):
        steps_there = sum(1 for h in where.values() if h == host)
        ahead = max(1, min(steps_there, -(-workers // len(hosts))))
        pools[host] = WarmPool(ahead=ahead, budget=max(0, steps_there - ahead))

    def one(index: int) -> ReplayReport:
        # Each worker reads through a Store of its own, sharing the blobs read above.
        own = recording.on(Store(store.home))
        with in_pool(pools[where[index]]):
            return _replay_step(own.store, own, index, docker_host=where[index], **options)

    with contextlib.ExitStack() as closing:
        for pool in pools.values():
            closing.callback(pool.close)
        with ThreadPoolExecutor(max_workers=workers) as executor:
            futures = [executor.submit(contextvars.copy_context().run, one, i) for i in indexes]
            return [f.result() for f in futures]
