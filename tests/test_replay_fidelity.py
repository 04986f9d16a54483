"""Replay fidelity (issue 9, "Proof"): every step of every trajectory of the corpus
(``tests/replay_corpus.py``) replays ``reproduced``, whichever way it was recorded, and
``replay_from(run, 1)`` reproduces the rest of the run; replays still diverge where the
step's world changed (edited code, another tool answer, the clock, ``uuid4``, another
image).

Each trajectory is recorded once per mode into a store shared by this module (an
agent is recorded the way its user would: ``instrument(agent)``, ``CodetapeExecutor`` in
Docker, or a plain ``@code_action`` loop), and read and replayed through the public API
only. Every replay is a run of its own, so the tests stay independent of each other. The
Docker cases skip without an engine and the sandbox image, and fail under ``CI=true``.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import codetape
from codetape.sandbox.internal import removal_in_background
from codetape.schemas import ReplayReport

from .replay_corpus import (
    CLOCK_AND_UUID,
    HELPERS,
    MODES,
    PRICES,
    READS_THE_IMAGE,
    SHARED,
    TRAJECTORIES,
    Trajectory,
    play,
    record,
)
from .sandbox_fixtures import build_image, remove_image

pytestmark = [
    # Observed steps replay in a local subprocess, which says (rightly) that it is not
    # isolated; that is expected here, not a failure.
    pytest.mark.filterwarnings("ignore::codetape.sandbox.NoIsolationWarning"),
]


def _mode_param(mode: str, *values: Any, id: str) -> Any:
    marks = [pytest.mark.docker] if mode == "docker" else []
    return pytest.param(*values, mode, id=id, marks=marks)


ALL_MODES = [_mode_param(m, id=m) for m in MODES]
CASES = [_mode_param(m, t, id=f"{t.name}-{m}") for t in TRAJECTORIES for m in MODES]


# -- recordings shared by the module ---------------------------------------------------------

_recorded: dict[tuple[Path, str, str], str] = {}


class Recordings:
    """Records a trajectory in a mode the first time a test asks, then hands out the
    same run id to every later test of the module."""

    def __init__(self, home: Path, request: pytest.FixtureRequest) -> None:
        self.home = home
        self.request = request

    def image(self, mode: str) -> str | None:
        """The sandbox image for Docker mode (skips, or fails under CI, without it)."""
        if mode != "docker":
            return None
        image: str = self.request.getfixturevalue("docker_image")
        return image

    def run_id(self, trajectory: Trajectory, mode: str) -> str:
        image = self.image(mode)
        key = (self.home, trajectory.name, mode)
        if key not in _recorded:
            _recorded[key] = record(trajectory, mode, image)
        return _recorded[key]


@pytest.fixture(scope="module")
def corpus_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replay-corpus")


@pytest.fixture
def recordings(
    home: Path, corpus_home: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Recordings:
    """codetape records into, and replays from, the module's shared store for the test
    (``home`` puts the configuration back afterwards)."""
    monkeypatch.setenv("CODETAPE_HOME", str(corpus_home))
    codetape.configure(home=corpus_home, otlp=False)
    return Recordings(corpus_home, request)


# -- helpers ------------------------------------------------------------------------------


def _short(value: Any, limit: int = 240) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def describe(report: ReplayReport) -> str:
    """A report as a person debugging the replay wants to read it."""
    lines = [f"step {report.step}: {report.verdict}"]
    if report.reason:
        lines.append(f"    reason: {_short(report.reason, 600)}")
    lines += [
        f"    {d.field}: recorded {_short(d.recorded)} | replayed {_short(d.replayed)}"
        for d in report.differences
    ]
    return "\n".join(lines)


def check_reproduced(what: str, reports: list[ReplayReport | str], steps: list[int]) -> None:
    """Every step reproduced. ``reports`` holds a report per replayed step, or the text
    of the exception its replay raised; the message counts and explains the failures."""
    bad = [r if isinstance(r, str) else describe(r) for r in reports if not _reproduced(r)]
    assert not bad, (
        f"{what}: reproduced {len(reports) - len(bad)}/{len(steps)} steps\n" + "\n".join(bad)
    )


def _reproduced(report: ReplayReport | str) -> bool:
    return not isinstance(report, str) and report.verdict == "reproduced"


def replay_each(run_id: str, steps: int) -> list[ReplayReport | str]:
    outcomes: list[ReplayReport | str] = []
    for index in range(steps):
        try:
            outcomes.append(codetape.replay(run_id, index))
        except Exception as exc:  # counted and shown: a replay that raises did not reproduce
            where = traceback.extract_tb(exc.__traceback__)[-1]
            outcomes.append(
                f"step {index}: replay raised {type(exc).__name__}: {exc} "
                f"(at {where.filename}:{where.lineno})"
            )
    return outcomes


def fields(report: ReplayReport) -> list[str]:
    return [d.field for d in report.differences]


def difference(report: ReplayReport, name: str) -> tuple[str, str]:
    """The recorded and replayed values of one differing field, as text (a variable's
    preview, or the value itself)."""
    found = [d for d in report.differences if d.field == name]
    assert found, f"no difference in {name}:\n{describe(report)}"
    return _shown(found[0].recorded), _shown(found[0].replayed)


def _shown(value: Any) -> str:
    if isinstance(value, dict) and "preview" in value:
        return str(value["preview"])
    return str(value)


# -- 1. the corpus: every step of every trajectory, recorded three ways, reproduces ---------


@pytest.mark.parametrize(("trajectory", "mode"), CASES)
def test_the_recording_is_the_trajectory(
    recordings: Recordings, trajectory: Trajectory, mode: str
) -> None:
    """The run holds the trajectory as the agent ran it, so "reproduced" means something."""
    run_id = recordings.run_id(trajectory, mode)
    store = codetape.Store()
    steps = store.steps(run_id)
    assert [s.code for s in steps] == list(trajectory.steps)
    failed = [s.index for s in steps if s.status != "ok"]
    assert failed == list(trajectory.failing), [(s.index, s.error) for s in steps]
    assert store.run(run_id).final_answer is not None


@pytest.mark.parametrize(("trajectory", "mode"), CASES)
def test_every_step_replays_reproduced(
    recordings: Recordings, trajectory: Trajectory, mode: str
) -> None:
    run_id = recordings.run_id(trajectory, mode)
    reports = replay_each(run_id, len(trajectory.steps))
    check_reproduced(f"{trajectory.name} ({mode})", reports, list(range(len(trajectory.steps))))


@pytest.mark.parametrize(("trajectory", "mode"), CASES)
def test_replay_from_step_1_reproduces_the_rest_of_the_run(
    recordings: Recordings, trajectory: Trajectory, mode: str
) -> None:
    run_id = recordings.run_id(trajectory, mode)
    reports = codetape.replay_from(run_id, 1)
    rest = list(range(1, len(trajectory.steps)))
    assert [r.step for r in reports] == rest, "\n".join(describe(r) for r in reports)
    assert {r.run_id for r in reports} == {run_id}
    check_reproduced(f"replay_from({trajectory.name} ({mode}), 1)", list(reports), rest)


# -- 2. read-your-writes ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_a_store_opened_before_a_run_sees_it_afterwards(
    home: Path, request: pytest.FixtureRequest, mode: str
) -> None:
    image = Recordings(home, request).image(mode)
    store = codetape.Store()
    assert store.runs() == []

    play(HELPERS, mode, image)  # records, and reads nothing back

    runs = store.runs()
    assert [(r.name, r.task) for r in runs] == [(HELPERS.name, HELPERS.task)]
    assert [s.index for s in store.steps(runs[0].id)] == list(range(len(HELPERS.steps)))
    assert store.run(runs[0].id).final_answer == "3.18"


# -- 3. divergence is still detected ------------------------------------------------------

# HELPERS step 1 prices ['apple', 'pear', 'kiwi']: 1.25 + 0.8 + 0.6.
HELPERS_STEP_1 = HELPERS.steps[1]
assert "cart.append('kiwi')\ntotal = cost(cart)\n" in HELPERS_STEP_1


@pytest.mark.parametrize("mode", ALL_MODES)
def test_edited_code_diverges_naming_the_output_and_variable_that_differ(
    recordings: Recordings, mode: str
) -> None:
    run_id = recordings.run_id(HELPERS, mode)
    edited = HELPERS_STEP_1.replace("total = cost(cart)", "total = cost(cart) * 2")

    report = codetape.replay(run_id, 1, code=edited)

    assert report.verdict == "diverged", describe(report)
    assert difference(report, "stdout") == ("total 2.65\n", "total 5.30\n")
    assert difference(report, "variable:total") == ("2.65", "5.3")
    assert "variable:cart" not in fields(report), describe(report)


def _tools_answering_differently() -> list[Callable[..., Any]]:
    """Host functions named as the run's tools, ``get_price`` answering other prices.
    (A plain run also recorded its ``final_answer`` tool; a user passes all of them.)"""

    def get_price(item: str) -> float:
        return PRICES[item] + 1.0

    def final_answer(answer: Any) -> Any:
        return answer

    return [get_price, final_answer]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_a_tool_answering_differently_diverges(recordings: Recordings, mode: str) -> None:
    run_id = recordings.run_id(HELPERS, mode)

    report = codetape.replay(run_id, 1, live_tools=True, tools=_tools_answering_differently())

    assert report.verdict == "diverged", describe(report)
    assert difference(report, "stdout") == ("total 2.65\n", "total 5.65\n")
    assert difference(report, "variable:total") == ("2.65", "5.65")


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.mark.parametrize("mode", ALL_MODES)
def test_a_step_reading_the_clock_diverges_with_both_times(
    recordings: Recordings, mode: str
) -> None:
    run_id = recordings.run_id(CLOCK_AND_UUID, mode)

    report = codetape.replay(run_id, 0)

    assert report.verdict == "diverged", describe(report)
    recorded, replayed = difference(report, "variable:started")
    assert float(replayed) > float(recorded)
    out_recorded, out_replayed = difference(report, "stdout")
    assert out_recorded == f"started {recorded}\n"
    assert out_replayed == f"started {replayed}\n"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_a_step_drawing_uuid4_diverges_with_both_uuids(recordings: Recordings, mode: str) -> None:
    run_id = recordings.run_id(CLOCK_AND_UUID, mode)

    report = codetape.replay(run_id, 1)

    assert report.verdict == "diverged", describe(report)
    recorded, replayed = difference(report, "variable:token")
    recorded_uuid, replayed_uuid = UUID.search(recorded), UUID.search(replayed)
    assert recorded_uuid is not None, describe(report)
    assert replayed_uuid is not None, describe(report)
    assert recorded_uuid.group() != replayed_uuid.group()
    assert difference(report, "stdout") == (
        f"{recorded_uuid.group()}\n",
        f"{replayed_uuid.group()}\n",
    )


MOTD = "codetape corpus image"
ANOTHER_MOTD = f"RUN printf '%s\\n' '{MOTD}' > /etc/motd"


@pytest.mark.docker
def test_a_different_image_diverges_where_the_step_reads_it(
    recordings: Recordings, docker_client: Any, docker_image: str
) -> None:
    run_id = recordings.run_id(READS_THE_IMAGE, "docker")
    recorded_stdout = codetape.Store().step(run_id, 0).stdout
    assert recorded_stdout.startswith("motd The programs included with")

    other = build_image(docker_client, docker_image, ANOTHER_MOTD)
    try:
        # A replay removes its container after it returns; the image can go once the
        # removals of this block are done.
        with removal_in_background(join=True):
            report = codetape.replay(run_id, 0, image=other)
    finally:
        remove_image(docker_client, other)

    assert report.verdict == "diverged", describe(report)
    assert report.image == other
    assert difference(report, "stdout") == (recorded_stdout, f"motd {MOTD}\n")
    recorded, replayed = difference(report, "variable:greeting")
    assert "The programs included with" in recorded
    assert MOTD in replayed


# -- 4. replay_from with an edit ----------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_replay_from_an_edit_calling_a_tool_the_recording_lacks_stops_naming_the_call(
    recordings: Recordings, mode: str
) -> None:
    run_id = recordings.run_id(HELPERS, mode)
    edited = HELPERS_STEP_1.replace("cart.append('kiwi')", "cart.append('fig')")

    reports = codetape.replay_from(run_id, 1, code=edited)

    assert [r.step for r in reports] == [1], "\n".join(describe(r) for r in reports)
    report = reports[0]
    assert report.verdict == "diverged", describe(report)
    reason = report.reason or ""
    assert "no recorded answer" in reason, describe(report)
    assert "get_price('fig')" in reason, describe(report)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_replay_from_carries_an_edit_through_the_later_steps(
    recordings: Recordings, mode: str
) -> None:
    run_id = recordings.run_id(SHARED, mode)
    edited = SHARED.steps[1].replace("events.append('a')", "events.append('z')")
    assert edited != SHARED.steps[1]

    reports = codetape.replay_from(run_id, 1, code=edited)

    assert [r.step for r in reports] == [1, 2, 3], "\n".join(describe(r) for r in reports)
    first, second, last = reports
    assert first.verdict == "diverged", describe(first)
    recorded, replayed = difference(first, "stdout")
    assert "'events': ['a', 1.25]" in recorded
    assert "'events': ['z', 1.25]" in replayed
    # Step 2 prints the same, but the events it leaves are the edited ones.
    assert second.verdict == "diverged", describe(second)
    assert "stdout" not in fields(second), describe(second)
    assert "variable:events" in fields(second), describe(second)
    assert last.verdict == "diverged", describe(last)
