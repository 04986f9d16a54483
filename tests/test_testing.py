"""codetape.testing: the ``captape`` fixture, ``capture()`` and the synthetic-store builder.

A built store must read back through ``codetape.Store`` exactly as a store the tracer
recorded: the main test records the same runs both ways and compares every field but
ids and times.
"""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import codetape
import codetape.testing
from codetape.schemas import Run, Step
from codetape.store.internal import done_dir, resolve_home
from codetape.testing import (
    CapturedRuns,
    RunSpec,
    StepSpec,
    StoreBuilder,
    ToolCallSpec,
    _templates,
    build_store,
    capture,
    synthetic_runs,
)
from codetape.tracer.internal import record_tool_call, runtime

ORDERS = [{"id": 2, "total": 12.5, "tags": ("late", "big")}, {"id": 1, "total": 3}]
LOOKUP = ToolCallSpec("lookup", {"customer": 7, "table": "orders"}, ORDERS)
NOTIFY = ToolCallSpec("send_email", {"to": "c7@example.com", "body": "2 orders"}, "queued")

SPECS = (
    RunSpec(
        "orders-bot",
        task="refund customer 7",
        steps=(
            StepSpec("orders = lookup(7)\n" + "# padding\n" * 30, "2 orders\n", (LOOKUP,)),
            StepSpec("send_email(...)", "x" * 500, (LOOKUP, NOTIFY), {"sent": True, "n": 2}),
            StepSpec("total / 0", error=ZeroDivisionError("division by zero")),
            StepSpec("pass"),
        ),
        final_answer="refunded " + "y" * 3000,
    ),
    RunSpec(
        "support-bot",
        task=None,
        steps=(StepSpec("print('hi')", "hi\n", variables={"greeting": "hi"}),),
        status="error",
        error=ValueError("the model gave up"),
    ),
    RunSpec("support-bot", task="never ends", steps=(StepSpec("x = 1"),), status="incomplete"),
    RunSpec("empty-bot", task="nothing to do", final_answer="nothing"),
)


def _answer(value: object) -> Any:
    return lambda: value


def _record_step(spec: StepSpec) -> None:
    @codetape.code_action
    def execute(code: str, namespace: dict[str, Any]) -> None:
        for call in spec.tool_calls:
            record_tool_call(call.name, dict(call.arguments), _answer(call.result))
        namespace.update(spec.variables)
        print(spec.stdout, end="")
        if spec.error is not None:
            raise copy.copy(spec.error)

    try:
        execute(spec.code, {})
    except BaseException as exc:
        if spec.error is None or type(exc) is not type(spec.error):
            raise


def record_for_real(spec: RunSpec, captured: CapturedRuns) -> str:
    """Record ``spec`` through the tracer, as an agent would have; returns the run id."""
    assert spec.status != "incomplete", "a run recorded in this process always ends"
    recorder = codetape.run(spec.agent, task=spec.task)
    try:
        with recorder:
            for step in spec.steps:
                _record_step(step)
            recorder.final_answer = spec.final_answer
            if spec.status == "error":
                raise copy.copy(spec.error or RuntimeError("the agent stopped"))
    except BaseException as exc:
        if spec.status != "error" or type(exc) is not type(spec.error or RuntimeError()):
            raise
    return recorder.id


def _run_fields(run: Run) -> dict[str, Any]:
    return run.model_dump(exclude={"id", "started_at", "ended_at"})


# What a step records of its state (the checkpoints its manifests name, random's state)
# depends on the steps before it in its run; a built step's is its template's, recorded
# as the first step of a run of its own. So they are compared for first steps only.
_STATE = {"state_before", "state_after", "random_state"}


def _step_fields(step: Step) -> dict[str, Any]:
    ids_and_times = {"run_id", "span_id", "started_at", "duration_ms"}
    fields = step.model_dump(exclude=ids_and_times | (_STATE if step.index else set()))
    if fields["error"] is not None:  # the template's traceback names other lines
        fields["error"]["traceback"] = bool(fields["error"]["traceback"])
    for call in fields["tool_calls"]:
        del call["call_id"], call["started_at"], call["duration_ms"]
    return fields


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, list[str]]:
    home = tmp_path / "built"
    with StoreBuilder(home, seed=1) as builder:
        ids = builder.add_runs(SPECS)
    return home, ids


def test_a_built_store_reads_back_as_a_recorded_one(
    built: tuple[Path, list[str]], captape: CapturedRuns
) -> None:
    home, ids = built
    store = codetape.Store(home)
    for spec, run_id in zip(SPECS, ids, strict=True):
        if spec.status == "incomplete":
            continue
        real_id = record_for_real(spec, captape)
        real = captape.store
        assert _run_fields(store.run(run_id)) == _run_fields(real.run(real_id))
        built_steps, real_steps = store.steps(run_id), real.steps(real_id)
        assert [_step_fields(s) for s in built_steps] == [_step_fields(s) for s in real_steps]


def test_a_built_store_has_every_field(built: tuple[Path, list[str]]) -> None:
    home, ids = built
    store = codetape.Store(home)
    ok, error, incomplete, empty = (store.run(i) for i in ids)
    assert (ok.name, ok.task, ok.status, ok.step_count, ok.failed_steps) == (
        "orders-bot",
        "refund customer 7",
        "ok",
        4,
        1,
    )
    assert ok.final_answer == "refunded " + "y" * 1990 + "…"  # cut as the tracer cuts it
    assert (error.status, error.task) == ("error", None)
    assert error.error is not None
    assert (error.error.type, error.error.message) == ("ValueError", "the model gave up")
    assert (incomplete.status, incomplete.ended_at) == ("incomplete", None)
    assert (empty.step_count, empty.final_answer) == (0, "nothing")
    assert [r.id for r in store.runs()] == ids[::-1]  # newest first: they ran in order
    first, second, failing, plain = store.steps(ok.id)
    assert (first.code, first.stdout) == (SPECS[0].steps[0].code, "2 orders\n")
    assert second.stdout == "x" * 500
    assert [(c.name, c.arguments, c.result) for c in second.tool_calls] == [
        ("lookup", {"customer": 7, "table": "orders"}, [
            {"id": 2, "total": 12.5, "tags": ["late", "big"]},
            {"id": 1, "total": 3},
        ]),
        ("send_email", {"to": "c7@example.com", "body": "2 orders"}, "queued"),
    ]  # fmt: skip
    assert list(second.tool_calls[0].result[0]) == ["id", "total", "tags"]  # order kept
    assert {n: v.preview for n, v in second.variables_after.items()} == {"n": "2", "sent": "True"}
    assert failing.status == "error"
    assert failing.error is not None
    assert (failing.error.type, failing.error.message) == ("ZeroDivisionError", "division by zero")
    assert (plain.status, plain.stdout, plain.tool_calls) == ("ok", "", [])
    assert plain.variables_before == {}  # every step starts from an empty namespace
    assert ok.ended_at is not None
    assert ok.started_at < first.started_at < plain.started_at < ok.ended_at
    assert store.counts()["spans"] == sum(s.span_count for s in SPECS)


def test_a_seed_gives_the_same_store_and_spool_files_hold_runs_per_spool(
    tmp_path: Path,
) -> None:
    specs = synthetic_runs(7, steps=2, seed=3)
    first = build_store(tmp_path / "a", specs=specs, seed=5)
    with StoreBuilder(tmp_path / "b", seed=5, runs_per_spool=3) as builder:
        builder.add_runs(specs)
        stats = builder.ingest()
    assert [r.id for r in first] == [r.id for r in builder.runs]
    assert stats.files == len(list(done_dir(tmp_path / "b").glob("*.jsonl"))) == 3
    a, b = codetape.Store(tmp_path / "a"), codetape.Store(tmp_path / "b")
    assert a.runs() == b.runs()


def test_synthetic_runs_have_every_kind_of_step_and_outcome(tmp_path: Path) -> None:
    built = build_store(tmp_path, runs=200, steps=6, seed=11)
    store = codetape.Store(tmp_path)
    runs = {r.id: r for r in store.runs(limit=200)}
    assert {r.status for r in runs.values()} == {"ok", "error", "incomplete"}
    assert len({r.name for r in runs.values()}) == 4
    assert any(r.failed_steps for r in runs.values())
    assert store.counts()["spans"] == sum(r.spec.span_count for r in built)
    steps = store.steps(built[0].id)
    assert [s.code for s in steps] == [s.code for s in built[0].spec.steps]


def test_build_store_streams_runs_in_chunks_and_keeps_no_spool(tmp_path: Path) -> None:
    made: list[int] = []

    def specs() -> Iterator[RunSpec]:  # a generator: build_store takes what comes
        for i, spec in enumerate(synthetic_runs(7, steps=2, seed=3)):
            made.append(i)
            yield spec

    seen: list[int] = []
    real_ingest = StoreBuilder.ingest

    def ingest(self: StoreBuilder, wait_s: float = 60.0) -> Any:
        seen.append(len(made))  # how many runs were made when a chunk was ingested
        return real_ingest(self, wait_s)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(StoreBuilder, "ingest", ingest)
        built = build_store(tmp_path / "a", specs=specs(), seed=5, chunk_runs=3)
    assert seen == [3, 6, 7]
    assert not list(done_dir(tmp_path / "a").glob("*.jsonl"))
    whole = build_store(tmp_path / "b", specs=synthetic_runs(7, steps=2, seed=3), seed=5)
    assert [r.id for r in built] == [r.id for r in whole]
    a, b = codetape.Store(tmp_path / "a"), codetape.Store(tmp_path / "b")
    assert a.runs() == b.runs()
    assert [a.steps(r.id) for r in built] == [b.steps(r.id) for r in built]
    assert build_store(tmp_path / "c", runs=4, seed=1, keep_runs=False) == []
    assert codetape.Store(tmp_path / "c").count_runs() == 4
    with pytest.raises(codetape.errors.ConfigError, match="chunk_runs"):
        build_store(tmp_path / "d", chunk_runs=0)


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=400)  # no lone surrogates


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(code=_text, stdout=_text, agent=st.text(min_size=1, max_size=40), answer=_text)
def test_text_round_trips(tmp_path: Path, code: str, stdout: str, agent: str, answer: str) -> None:
    home = tmp_path / uuid.uuid4().hex
    spec = RunSpec(agent, task=code, steps=(StepSpec(code, stdout),), final_answer=answer)
    [built] = build_store(home, specs=[spec])
    store = codetape.Store(home)
    run, [step] = store.run(built.id), store.steps(built.id)
    assert (run.name, run.task, run.final_answer) == (agent, code, answer)
    assert (step.code, step.stdout) == (code, stdout)


def test_a_changed_tracer_fails_the_build_instead_of_diverging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the tracer cut previews at 100 characters and the builder did not know.
    monkeypatch.setattr(_templates, "TEXT_PREVIEW_CHARS", 100)
    monkeypatch.setattr(_templates, "TEMPLATES", _templates.Templates())
    with pytest.raises(AssertionError, match=r"codetape.code.preview"):
        _templates.TEMPLATES.prepare([RunSpec(steps=(StepSpec(),))])


def test_the_public_surface_is_deliberate() -> None:
    exported = list(codetape.testing.__all__)
    assert exported == sorted(exported)
    assert set(exported) == {
        "BuiltRun", "CapturedRuns", "RunSpec", "RunStatus", "StepKind", "StepSpec",
        "StoreBuilder", "ToolCallSpec", "build_store", "captape", "capture", "synthetic_runs",
        "synthetic_step",
    }  # fmt: skip


# -- capture and captape ---------------------------------------------------------------


def test_captape_reads_back_what_the_test_recorded(captape: CapturedRuns) -> None:
    with codetape.run("first-bot", task="one"):
        pass
    with codetape.run("second-bot", task="two") as second:
        _record_step(StepSpec("n = 1", "1\n", variables={"n": 1}))
    assert [r.name for r in captape.runs()] == ["first-bot", "second-bot"]  # oldest first
    [step] = captape.steps(second.id)
    assert (step.stdout, step.variables_after["n"].preview) == ("1\n", "1")
    assert captape.steps() == captape.steps(captape.runs()[-1])
    assert os.environ["CODETAPE_HOME"] == str(captape.home)
    assert codetape.Store().home == captape.home
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in os.environ


def test_capture_puts_the_configuration_back(tmp_path: Path, captape: CapturedRuns) -> None:
    before = codetape.configure(home=tmp_path / "mine", otlp=False, redact=False)
    before.home.rmdir()  # nothing recorded yet: the first recording creates it again
    with capture() as captured:
        assert runtime().home == captured.home
        assert runtime().redactor.enabled
    assert not captured.home.exists()  # a temporary store is removed with the block
    after = runtime()
    assert (after.home, after.otlp, after.redactor.enabled) == (before.home, None, False)
    assert resolve_home() == before.home  # configure(home=...) pinned it for readers
    assert not before.home.exists()  # and is still created only by a first recording
    with codetape.run("bot"):
        pass
    assert codetape.Store(before.home).count_runs() == 1


def test_capture_keeps_readers_following_codetape_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captape: CapturedRuns
) -> None:
    codetape.configure(otlp=False)  # no home: readers follow CODETAPE_HOME
    with capture(tmp_path / "captured"):
        pass
    monkeypatch.setenv("CODETAPE_HOME", str(tmp_path / "elsewhere"))
    assert resolve_home() == tmp_path / "elsewhere"


def test_captape_is_a_pytest_plugin(pytester: pytest.Pytester) -> None:
    assert any(
        e.name == "codetape.testing" and e.value == "codetape.testing"
        for e in entry_points(group="pytest11")
    )
    pytester.makepyfile(
        """
        import codetape

        def test_records(captape):
            with codetape.run("bot", task="t") as run:
                run.final_answer = "42"
            [found] = captape.runs()
            assert (found.id, found.final_answer) == (run.id, "42")
        """
    )
    before = runtime().home
    pytester.runpytest_inprocess("-p", "codetape.testing").assert_outcomes(passed=1)
    assert runtime().home == before
