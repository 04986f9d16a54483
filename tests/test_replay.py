"""Replay (DESIGN.md, "Replay"): a recorded step re-runs in a fresh sandbox of the recorded
image, from the recorded variables, seeds and tool answers, and is compared with its
recording.

Recordings are made once per module in real Docker sandboxes and shared; each replay is
its own run, so the tests stay independent of each other. A test that changes a
recording (the tampered tool answer) changes a copy of the store. Every test here needs
a running Docker engine and the offline sandbox image (``$CODETAPE_IMAGE`` or
``codetape/python:bookworm``): it skips without them, and fails under ``CI=true``.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

import codetape
from codetape.cli import cli
from codetape.sandbox import NoIsolationWarning
from codetape.sandbox.internal import removal_in_background
from codetape.schemas import ReplayReport, Step
from codetape.schemas import attributes as A
from codetape.store.internal import BlobStore
from codetape.testing import capture

from .sandbox_fixtures import build_image, remove_image

pytestmark = pytest.mark.docker


@dataclass
class Recording:
    home: Path
    run_id: str
    steps: list[Step]
    calls: list[tuple[str, Any]] = field(default_factory=list)


# Host tools. Each real call is counted, so a test can prove a replay called none.
TOOL_CALLS: list[tuple[str, Any]] = []


def lookup(key: str) -> int:
    TOOL_CALLS.append(("lookup", key))
    if key == "missing":
        raise KeyError(key)
    return len(key) * 10


def price(item: str, qty: int = 1) -> float:
    TOOL_CALLS.append(("price", (item, qty)))
    return round(1.25 * len(item) * qty, 2)


def fetch(symbol: str) -> float:
    TOOL_CALLS.append(("fetch", symbol))
    return 12.5


def record(
    path: Path,
    name: str,
    snippets: list[str],
    *,
    image: str,
    tools: list[Callable[..., Any]] = (),  # type: ignore[assignment]
) -> Recording:
    with capture(path):
        TOOL_CALLS.clear()
        with codetape.run(name) as run, codetape.Sandbox(image=image, tools=tools) as sb:
            for snippet in snippets:
                sb.run(snippet)
        calls = list(TOOL_CALLS)
    steps = codetape.Store(path).steps(run.id)
    assert len(steps) == len(snippets)
    return Recording(path, run.id, steps, calls)


# The determinism corpus: what a replay must reproduce exactly.
CORPUS = [
    # 0: arithmetic, big ints and floats
    "x = 2 ** 61 - 1\ny = x % 97 + 3 * 7\nprint(x, y, 7 / 3, divmod(x, 1000))\ny",
    # 1: string-keyed set and dict, iterated in the step that builds them
    "fruits = {'apple', 'pear', 'fig', 'kiwi', 'plum', 'quince', 'lime', 'date'}\n"
    "lengths = {f: len(f) for f in fruits}\n"
    "print(list(fruits))\nprint(list(lengths.items()))\n"
    "','.join(fruits)",
    # 2: the dict built in step 1, iterated in a later step
    "order = []\nfor name, n in lengths.items():\n    order.append(name)\n    print(name, n)\n"
    "order",
    # 3: random draws
    "import random\ndraws = [random.random() for _ in range(3)]\n"
    "pick = random.choice(order)\nrandom.shuffle(order)\n"
    "print(draws, pick, random.randint(1, 10**9), order)",
    # 4: functions, classes and closures defined here, used in later steps
    "def square(n):\n    return n * n\n\n"
    "class Account:\n"
    "    def __init__(self, owner, balance=0):\n"
    "        self.owner, self.balance = owner, balance\n"
    "    def deposit(self, amount):\n"
    "        self.balance += amount\n"
    "        return self.balance\n"
    "    def __repr__(self):\n"
    "        return f'Account({self.owner!r}, {self.balance})'\n\n"
    "def make_counter(start):\n"
    "    count = start\n"
    "    def bump(step=1):\n"
    "        nonlocal count\n"
    "        count += step\n"
    "        return count\n"
    "    return bump\n\n"
    "counter = make_counter(10)",
    # 5: ...used here
    "acct = Account('ada', square(12))\nacct.deposit(counter(5))\n"
    "print(acct, counter(), square(9))\nacct",
    # 6: host tool calls inside loops and branches, one of which raises
    "total = 0\n"
    "for item in ['apple', 'fig', 'kiwi', 'missing']:\n"
    "    if item == 'missing':\n"
    "        try:\n"
    "            lookup(item)\n"
    "        except KeyError as exc:\n"
    "            print('no such key', exc)\n"
    "    elif len(item) > 3:\n"
    "        total += lookup(item)\n"
    "    else:\n"
    "        total += price(item, qty=2)\n"
    "print('total', total)\ntotal",
    # 7: a step that raises, after printing
    "print('dividing', total)\nratio = total / (len(order) - len(order))",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, docker_image: str) -> Recording:
    rec = record(
        tmp_path_factory.mktemp("corpus"),
        "corpus",
        CORPUS,
        image=docker_image,
        tools=[lookup, price],
    )
    statuses = [s.status for s in rec.steps]
    assert statuses == ["ok"] * 7 + ["error"], [(s.index, s.error) for s in rec.steps]
    assert [c[0] for c in rec.calls] == ["lookup", "price", "lookup", "lookup"]
    return rec


DIVERGING = [
    # 0: deterministic
    "base = 40\nprint('base', base)",
    # 1: a host tool answer, then used
    "quote = fetch('ACME')\nprint('quote', quote)\nvalue = quote * 2",
    # 2: reads the clock
    "import time\nstamp = time.time()\nprint(stamp)",
    # 3: looks at the image (its environment: only the host's variables are kept out)
    "import os\nmarker = os.environ.get('CODETAPE_MARKER')\nprint('marker', marker)",
]


@pytest.fixture(scope="module")
def diverging(tmp_path_factory: pytest.TempPathFactory, docker_image: str) -> Recording:
    rec = record(
        tmp_path_factory.mktemp("diverging"),
        "diverging",
        DIVERGING,
        image=docker_image,
        tools=[fetch],
    )
    assert [s.status for s in rec.steps] == ["ok"] * 4
    assert rec.steps[3].stdout == "marker None\n"
    return rec


@pytest.fixture(scope="module")
def generator_run(tmp_path_factory: pytest.TempPathFactory, docker_image: str) -> Recording:
    """A namespace holding a generator, which cannot be pickled, before step 1."""
    return record(
        tmp_path_factory.mktemp("generator"),
        "generator",
        ["g = (i * i for i in range(5))\nn = 3", "print(next(g) + n)"],
        image=docker_image,
    )


@pytest.fixture(scope="module")
def unrestorable_run(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """An observed run whose namespace held a lock from its start: no checkpoint can
    bring it back, and no step made it, so re-running cannot either."""
    home = tmp_path_factory.mktemp("unrestorable") / "store"

    @codetape.code_action
    def execute(code: str, namespace: dict[str, Any]) -> None:
        exec(code, namespace)

    with capture(home), codetape.run("unrestorable") as run:
        namespace: dict[str, Any] = {"guard": threading.Lock()}
        execute("n = 3\nprint(n)", namespace)
        execute("print(n + 1, guard.locked())", namespace)
    return Recording(home, run.id, codetape.Store(home).steps(run.id))


@pytest.fixture(scope="module")
def vanished_image_run(
    tmp_path_factory: pytest.TempPathFactory, docker_image: str, docker_client: Any
) -> Recording:
    """A run recorded in a test image that is then removed from Docker."""
    image_id = build_image(docker_client, docker_image)
    try:
        rec = record(tmp_path_factory.mktemp("vanished"), "vanished", ["z = 1 + 1"], image=image_id)
    finally:
        remove_image(docker_client, image_id)
    assert rec.steps[0].sandbox.image_id == image_id
    return rec


# -- helpers ------------------------------------------------------------------------------


def replay_run_of(report: ReplayReport, home: Path) -> codetape.schemas.Run:
    assert report.replay_run_id is not None, report
    return codetape.Store(home).run(report.replay_run_id)


def explain(report: ReplayReport) -> str:
    return report.model_dump_json(indent=2)


def fields(report: ReplayReport) -> list[str]:
    return [d.field for d in report.differences]


def difference(report: ReplayReport, name: str) -> Any:
    found = [d for d in report.differences if d.field == name]
    assert found, f"no difference in {name}: {explain(report)}"
    return found[0]


def check_reproduced(rec: Recording, reports: list[ReplayReport]) -> None:
    """Every step reproduced, each replay is a run of its own whose ``replay_of`` names
    the step it replays, and the replayed step is what was recorded."""
    store = codetape.Store(rec.home)
    assert [r.step for r in reports] == [s.index for s in rec.steps]
    for report, recorded in zip(reports, rec.steps, strict=True):
        assert report.verdict == "reproduced", explain(report)
        assert report.run_id == rec.run_id
        assert report.differences == []
        assert report.backend == "docker"
        assert report.image == recorded.sandbox.image_id
        run = replay_run_of(report, rec.home)
        assert run.replay_of == f"{rec.run_id}:{recorded.index}"
        assert run.step_count == 1
        replayed = store.step(report.replay_run_id, 0)  # type: ignore[arg-type]
        assert replayed.sandbox.image_id == recorded.sandbox.image_id
        assert replayed.sandbox.hash_seed == recorded.sandbox.hash_seed
        assert replayed.random_seed == recorded.random_seed
        assert replayed.stdout == recorded.stdout
        assert replayed.result == recorded.result
        assert [(c.name, c.arguments, c.result) for c in replayed.tool_calls] == [
            (c.name, c.arguments, c.result) for c in recorded.tool_calls
        ]
    assert len({r.replay_run_id for r in reports}) == len(reports)


# -- 1. the determinism corpus --------------------------------------------------------------


def test_corpus_recording_is_what_the_replay_must_match(corpus: Recording) -> None:
    """Sanity of the recording itself, so a reproduced verdict means something."""
    steps = corpus.steps
    assert steps[1].stdout.splitlines()[0].startswith("[")
    # The dict of step 1 is iterated in step 2 in its insertion order, the set's order.
    assert steps[2].variables_before["lengths"].restorable
    assert steps[4].variables_after["counter"].type == "function"
    assert steps[5].result == "Account('ada', 159)"
    assert [c.name for c in steps[6].tool_calls] == ["lookup", "price", "lookup", "lookup"]
    assert steps[6].tool_calls[3].error is not None
    assert steps[7].error is not None
    assert steps[7].error.type == "ZeroDivisionError"
    assert steps[7].stdout == "dividing 97.5\n"


def test_each_corpus_step_replays_reproduced_without_calling_host_tools(
    corpus: Recording,
) -> None:
    TOOL_CALLS.clear()
    reports = [codetape.replay(corpus.run_id, s.index, home=corpus.home) for s in corpus.steps]
    check_reproduced(corpus, reports)
    assert TOOL_CALLS == [], "a hermetic replay called the real host tools"
    # The step that raised raised the same error again.
    replayed = codetape.Store(corpus.home).step(reports[7].replay_run_id, 0)  # type: ignore[arg-type]
    assert replayed.status == "error"
    assert replayed.error is not None
    assert (replayed.error.type, replayed.error.message) == (
        "ZeroDivisionError",
        corpus.steps[7].error.message,  # type: ignore[union-attr]
    )
    # The tool that raised raised again, from the recording.
    tool_step = codetape.Store(corpus.home).step(reports[6].replay_run_id, 0)  # type: ignore[arg-type]
    assert tool_step.stdout == corpus.steps[6].stdout
    assert "no such key" in tool_step.stdout


def test_replay_run_with_two_jobs_reproduces_every_step(corpus: Recording) -> None:
    TOOL_CALLS.clear()
    reports = codetape.replay_run(corpus.run_id, jobs=2, home=corpus.home)
    check_reproduced(corpus, reports)
    assert TOOL_CALLS == [], "a hermetic replay called the real host tools"


# -- 2. divergence ----------------------------------------------------------------------


def _tamper_tool_result(home: Path, run_id: str, step: Step, new_result: Any) -> None:
    """Point the recorded tool call's result at another blob, as a changed recording
    would. Done with DuckDB directly, while no codetape connection is open."""
    data = json.dumps(new_result).encode()
    digest = BlobStore(home / "blobs").put(data)
    span_id = step.tool_calls[0].call_id
    con = duckdb.connect(str(home / "codetape.duckdb"))
    try:
        rows = con.execute(
            "SELECT span_id, attributes FROM spans WHERE trace_id = ? AND parent_id = ?",
            [run_id, step.span_id],
        ).fetchall()
        assert len(rows) == 1, rows
        attrs = json.loads(rows[0][1])
        assert attrs.get(A.GEN_AI_TOOL_CALL_ID, rows[0][0]) == span_id
        attrs[A.TOOL_RESULT_DIGEST] = digest
        attrs[A.GEN_AI_TOOL_CALL_RESULT] = json.dumps(new_result)
        attrs.pop(A.TOOL_RESULT_PICKLE, None)  # the answer as the code got it: changed too
        con.execute(
            "UPDATE spans SET attributes = ? WHERE trace_id = ? AND span_id = ?",
            [json.dumps(attrs), run_id, rows[0][0]],
        )
        con.execute("INSERT OR REPLACE INTO blobs VALUES (?, ?)", [digest, data])
    finally:
        con.close()


def test_a_changed_tool_answer_in_the_recording_diverges(
    diverging: Recording, tmp_path: Path
) -> None:
    home = tmp_path / "tampered"
    shutil.copytree(diverging.home, home)
    _tamper_tool_result(home, diverging.run_id, diverging.steps[1], 999.0)
    assert codetape.Store(home).step(diverging.run_id, 1).tool_calls[0].result == 999.0
    TOOL_CALLS.clear()

    report = codetape.replay(diverging.run_id, 1, home=home)

    assert report.verdict == "diverged", explain(report)
    assert TOOL_CALLS == []
    assert fields(report) == ["stdout", "variable:quote", "variable:value"]
    stdout = difference(report, "stdout")
    assert (stdout.recorded, stdout.replayed) == ("quote 12.5\n", "quote 999.0\n")
    assert difference(report, "variable:value").recorded["preview"] == "25.0"
    assert difference(report, "variable:value").replayed["preview"] == "1998.0"
    assert replay_run_of(report, home).replay_of == f"{diverging.run_id}:1"


def test_edited_code_diverges_in_exactly_the_changed_fields(diverging: Recording) -> None:
    edited = DIVERGING[1].replace("quote * 2", "quote * 3")
    report = codetape.replay(diverging.run_id, 1, code=edited, home=diverging.home)

    assert report.verdict == "diverged", explain(report)
    assert fields(report) == ["variable:value"]
    value = difference(report, "variable:value")
    assert (value.recorded["preview"], value.replayed["preview"]) == ("25.0", "37.5")
    assert any("code was edited" in note for note in report.notes), report.notes
    replayed = codetape.Store(diverging.home).step(report.replay_run_id, 0)  # type: ignore[arg-type]
    assert replayed.code == edited


def test_a_tool_call_the_recording_does_not_have_diverges(diverging: Recording) -> None:
    extra_call = DIVERGING[1].replace(
        "quote = fetch('ACME')", "quote = fetch('ACME')\nother = fetch(symbol='XYZ')"
    )
    TOOL_CALLS.clear()
    report = codetape.replay(diverging.run_id, 1, code=extra_call, home=diverging.home)

    assert report.verdict == "diverged", explain(report)
    assert TOOL_CALLS == []
    assert "tool_call:1" in fields(report)
    assert difference(report, "tool_call:1").recorded is None
    assert difference(report, "tool_call:1").replayed == {
        "name": "fetch",
        "arguments": {"symbol": "XYZ"},
    }
    error = difference(report, "error").replayed
    assert error["type"] == "codetape.errors.ReplayToolError"
    assert "no recorded answer for fetch(symbol='XYZ')" in error["message"]


def test_a_tool_called_with_other_arguments_has_no_recorded_answer(
    diverging: Recording,
) -> None:
    """The recording knows what fetch('ACME') answered, not fetch('OTHER'): the replay
    does not make one up. The call fails in the step, saying so, and the step diverges."""
    TOOL_CALLS.clear()
    other = DIVERGING[1].replace("fetch('ACME')", "fetch('OTHER')")
    report = codetape.replay(diverging.run_id, 1, code=other, home=diverging.home)
    assert report.verdict == "diverged", explain(report)
    assert TOOL_CALLS == []
    call = difference(report, "tool_call:0")
    assert call.recorded["arguments"] == {"symbol": "ACME"}
    assert call.replayed["arguments"] == {"symbol": "OTHER"}
    error = difference(report, "error").replayed
    assert "no recorded answer for fetch('OTHER')" in error["message"]
    assert "fetch(symbol='ACME')" in error["message"]


def test_live_tools_call_the_real_host_tool(diverging: Recording) -> None:
    TOOL_CALLS.clear()
    report = codetape.replay(
        diverging.run_id, 1, live_tools=True, tools=[fetch], home=diverging.home
    )
    assert report.verdict == "reproduced", explain(report)
    assert TOOL_CALLS == [("fetch", "ACME")]


def test_unedited_code_passed_as_code_is_not_an_edit(diverging: Recording) -> None:
    report = codetape.replay(diverging.run_id, 0, code=DIVERGING[0], home=diverging.home)
    assert report.verdict == "reproduced", explain(report)
    assert not any("edited" in note for note in report.notes), report.notes


def test_a_different_image_diverges_where_it_behaves_differently(
    diverging: Recording, docker_image: str, docker_client: Any
) -> None:
    # ENV, not a RUN layer: removing an image with a layer of its own takes Docker
    # tens of seconds here.
    marker_image = build_image(docker_client, docker_image, "ENV CODETAPE_MARKER=hi")
    try:
        # Replays remove their containers after they return: wait for that, then the
        # image can go.
        with removal_in_background(join=True):
            report = codetape.replay(diverging.run_id, 3, image=marker_image, home=diverging.home)
            same = codetape.replay(diverging.run_id, 0, image=marker_image, home=diverging.home)
    finally:
        remove_image(docker_client, marker_image)

    assert report.verdict == "diverged", explain(report)
    assert report.image == marker_image
    assert fields(report) == ["stdout", "variable:marker"]
    stdout = difference(report, "stdout")
    assert (stdout.recorded, stdout.replayed) == ("marker None\n", "marker hi\n")
    marker = difference(report, "variable:marker")
    assert (marker.recorded["preview"], marker.replayed["preview"]) == ("None", "'hi'")
    assert any(marker_image in note and docker_image in note for note in report.notes), report.notes
    replayed = codetape.Store(diverging.home).step(report.replay_run_id, 0)  # type: ignore[arg-type]
    assert replayed.sandbox.image_id == marker_image
    # Where the other image behaves the same, the step reproduces (with the note).
    assert same.verdict == "reproduced", explain(same)
    assert any(marker_image in note for note in same.notes), same.notes


def test_a_step_that_reads_the_clock_diverges_showing_both_values(
    diverging: Recording,
) -> None:
    report = codetape.replay(diverging.run_id, 2, home=diverging.home)

    assert report.verdict == "diverged", explain(report)
    assert report.reason is None
    assert fields(report) == ["stdout", "variable:stamp"]
    stdout = difference(report, "stdout")
    assert float(stdout.replayed) > float(stdout.recorded)
    stamp = difference(report, "variable:stamp")
    assert stamp.recorded["type"] == stamp.replayed["type"] == "float"
    assert float(stamp.replayed["preview"]) > float(stamp.recorded["preview"])
    assert float(stamp.recorded["preview"]) == pytest.approx(float(stdout.recorded))


# -- 3. verdicts for replays that cannot run ------------------------------------------------


def test_an_unpicklable_input_is_rebuilt_by_re_running_the_step_that_made_it(
    generator_run: Recording,
) -> None:
    before = generator_run.steps[1].variables_before
    assert not before["g"].restorable
    assert before["n"].restorable

    report = codetape.replay(generator_run.run_id, 1, home=generator_run.home)

    assert report.verdict == "reproduced", explain(report)
    assert any("re-running step 0" in note for note in report.notes), report.notes
    replayed = codetape.Store(generator_run.home).step(report.replay_run_id or "", 0)
    assert replayed.stdout == "3\n"  # next(g) of the rebuilt generator, plus n


def test_an_input_nothing_can_rebuild_is_not_restorable_naming_it(
    unrestorable_run: Recording,
) -> None:
    before = unrestorable_run.steps[1].variables_before
    assert not before["guard"].restorable
    assert before["n"].restorable

    report = codetape.replay(unrestorable_run.run_id, 1, home=unrestorable_run.home)

    assert report.verdict == "not_restorable", explain(report)
    assert report.differences == []
    assert report.replay_run_id is None  # nothing ran
    reason = report.reason or ""
    assert "guard:" in reason, reason
    assert "lock" in reason, reason
    assert "n:" not in reason, reason


def test_the_step_that_makes_an_unpicklable_value_still_reproduces(
    generator_run: Recording,
) -> None:
    report = codetape.replay(generator_run.run_id, 0, home=generator_run.home)
    assert report.verdict == "reproduced", explain(report)


def test_a_missing_image_is_environment_missing_saying_how_to_get_it(
    vanished_image_run: Recording, docker_client: Any
) -> None:
    import docker.errors

    image_id = vanished_image_run.steps[0].sandbox.image_id
    assert image_id is not None
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image_id)

    report = codetape.replay(vanished_image_run.run_id, 0, home=vanished_image_run.home)

    assert report.verdict == "environment_missing", explain(report)
    reason = report.reason or ""
    assert image_id in reason, reason
    for how in ("codetape export", "--with-image", "codetape import", "--image"):
        assert how in reason, reason
    assert report.image == image_id

    # An --image that is not there either says so too, never a crash.
    absent = f"codetape-replay-test/absent-{uuid.uuid4().hex[:8]}:1"
    other = codetape.replay(
        vanished_image_run.run_id, 0, image=absent, home=vanished_image_run.home
    )
    assert other.verdict == "environment_missing", explain(other)
    assert absent in (other.reason or "")


# -- 4. observed steps ------------------------------------------------------------------


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> None:
    exec(code, namespace)


OBSERVED = [
    "prices = {'tea': 3.5, 'cake': 4.25, 'jam': 2.0}\ntotal = sum(prices.values())",
    "def with_tax(v):\n    return round(v * 1.2, 2)\n"
    "lines = [f'{k}: {with_tax(v)}' for k, v in sorted(prices.items())]\nprint(lines, total)",
]


@pytest.fixture(scope="module")
def observed_run(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    path = tmp_path_factory.mktemp("observed")
    with capture(path):
        namespace: dict[str, Any] = {}
        with codetape.run("observed") as run:
            for snippet in OBSERVED:
                execute(snippet, namespace)
    steps = codetape.Store(path).steps(run.id)
    assert [s.sandbox.backend for s in steps] == ["observed", "observed"]
    return Recording(path, run.id, steps)


def test_observed_steps_replay_locally_by_default(observed_run: Recording) -> None:
    reports = []
    for step in observed_run.steps:
        with pytest.warns(NoIsolationWarning):
            reports.append(codetape.replay(observed_run.run_id, step.index, home=observed_run.home))
    for report in reports:
        assert report.verdict == "reproduced", explain(report)
        assert report.backend == "local"
        assert report.image is None
        assert any("observed step" in note for note in report.notes), report.notes
        assert replay_run_of(report, observed_run.home).replay_of == (
            f"{observed_run.run_id}:{report.step}"
        )


def test_observed_steps_replay_in_docker_with_an_image(
    observed_run: Recording, docker_image: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoIsolationWarning)  # no local sandbox here
        report = codetape.replay(observed_run.run_id, 1, image=docker_image, home=observed_run.home)
    assert report.verdict == "reproduced", explain(report)
    assert report.backend == "docker"
    assert report.image == docker_image
    replayed = codetape.Store(observed_run.home).step(report.replay_run_id, 0)  # type: ignore[arg-type]
    assert replayed.sandbox.backend == "docker"
    assert replayed.sandbox.image == docker_image


# -- 5. the CLI ---------------------------------------------------------------------------


def invoke(home: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


def reports_of(output: str) -> list[ReplayReport]:
    data = json.loads(output)
    assert isinstance(data, list)
    return [ReplayReport.model_validate(r) for r in data]


def test_cli_replay_exit_codes_and_json(
    home: Path, diverging: Recording, unrestorable_run: Recording, vanished_image_run: Recording
) -> None:
    ok = invoke(diverging.home, "replay", diverging.run_id[:10], "--step", "0", "--json")
    assert ok.exit_code == 0, ok.output
    [report] = reports_of(ok.stdout)
    assert (report.run_id, report.step, report.verdict) == (diverging.run_id, 0, "reproduced")

    clock = invoke(diverging.home, "replay", diverging.run_id, "--step", "2", "--json")
    assert clock.exit_code == 1, clock.output
    [report] = reports_of(clock.stdout)
    assert report.verdict == "diverged"
    assert [d.field for d in report.differences] == ["stdout", "variable:stamp"]

    gen = invoke(unrestorable_run.home, "replay", unrestorable_run.run_id, "--step", "1", "--json")
    assert gen.exit_code == 2, gen.output
    assert [r.verdict for r in reports_of(gen.stdout)] == ["not_restorable"]

    gone = invoke(
        vanished_image_run.home, "replay", vanished_image_run.run_id, "--step", "0", "--json"
    )
    assert gone.exit_code == 2, gone.output
    assert [r.verdict for r in reports_of(gone.stdout)] == ["environment_missing"]


def test_cli_replay_for_people_shows_the_diff_and_reason(
    home: Path, diverging: Recording, unrestorable_run: Recording
) -> None:
    edited = home / "edited.py"
    edited.write_text(DIVERGING[1].replace("quote * 2", "quote * 3"))
    result = invoke(
        diverging.home, "replay", diverging.run_id, "--step", "1", "--code", str(edited)
    )
    assert result.exit_code == 1, result.output
    assert "diverged" in result.stdout
    assert "variable:value" in result.stdout
    assert "25.0" in result.stdout
    assert "37.5" in result.stdout
    assert "code was edited" in result.stdout

    gen = invoke(unrestorable_run.home, "replay", unrestorable_run.run_id, "--step", "1")
    assert gen.exit_code == 2
    assert "not_restorable" in gen.stdout
    assert "lock" in gen.stdout


def test_cli_replay_all_with_two_jobs(home: Path, unrestorable_run: Recording) -> None:
    result = invoke(
        unrestorable_run.home, "replay", unrestorable_run.run_id, "--all", "--jobs", "2", "--json"
    )
    assert result.exit_code == 2, result.output  # no step can be restored
    reports = reports_of(result.stdout)
    assert [(r.step, r.verdict) for r in reports] == [(0, "not_restorable"), (1, "not_restorable")]


def test_cli_replay_all_rebuilds_what_cannot_be_pickled(
    home: Path, generator_run: Recording
) -> None:
    result = invoke(
        generator_run.home, "replay", generator_run.run_id, "--all", "--jobs", "2", "--json"
    )
    assert result.exit_code == 0, result.output
    reports = reports_of(result.stdout)
    assert [(r.step, r.verdict) for r in reports] == [(0, "reproduced"), (1, "reproduced")]
    assert replay_run_of(reports[0], generator_run.home).replay_of == (f"{generator_run.run_id}:0")


def test_cli_replay_without_a_step_replays_the_first_failed_one(
    home: Path, corpus: Recording
) -> None:
    result = invoke(corpus.home, "replay", corpus.run_id[:8], "--json")
    assert result.exit_code == 0, result.output
    [report] = reports_of(result.stdout)
    assert (report.step, report.verdict) == (7, "reproduced")


def test_cli_replay_without_a_step_of_a_run_that_never_failed_says_what_to_do(
    home: Path, generator_run: Recording
) -> None:
    result = CliRunner().invoke(
        cli, ["--home", str(generator_run.home), "replay", generator_run.run_id]
    )
    assert result.exit_code == 2
    assert "has no failed step" in result.stderr
    assert "--step N or --all" in result.stderr
    assert "Traceback" not in result.output
