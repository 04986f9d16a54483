"""``codetape replay RUN --from N``: replay a step (or an edit of it) and then the rest
of the run in the same sandbox, one verdict per step, with the exit codes of
``codetape replay``.

One four-step run is recorded for the module in a local sandbox (no Docker needed),
with a host tool that the replays must never call: they answer it from the recording.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import codetape
from codetape.cli import cli
from codetape.sandbox import NoIsolationWarning
from codetape.schemas import ReplayReport
from codetape.testing import capture

pytestmark = pytest.mark.filterwarnings("ignore::codetape.sandbox.NoIsolationWarning")

PRICES = {"apple": 1.5, "kiwi": 0.75}
HOST_CALLS: list[str] = []


def get_price(item: str) -> float:
    HOST_CALLS.append(item)
    return PRICES[item]


STEPS = [
    "import statistics as st\ncart = ['apple']\ntotal = get_price('apple')\n"
    "print('cart', cart, total)",
    "cart.append('kiwi')\ntotal += get_price('kiwi')\nprint('cart', cart, total)",
    "avg = st.mean([total, 1])\nprint('avg', avg)",
    "print('items', len(cart))",
]
# Step 1 edited: the same tool call, so the replay carries on, but every later step
# sees another total.
PRICIER = STEPS[1].replace("get_price('kiwi')", "get_price('kiwi') * 2")
# Step 1 edited to ask the tool something the recording never asked.
FIG = STEPS[1].replace("'kiwi'", "'fig'")


@dataclass(frozen=True)
class Recorded:
    home: Path
    run_id: str


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    home = tmp_path_factory.mktemp("replay-from") / "store"
    with capture(home), warnings.catch_warnings():
        warnings.simplefilter("ignore", NoIsolationWarning)
        with (
            codetape.run("shop-bot", task="price the cart") as run,
            codetape.Sandbox(backend="local", tools=[get_price]) as sandbox,
        ):
            for code in STEPS:
                assert sandbox.run(code).status == "ok"
    assert HOST_CALLS == ["apple", "kiwi"]
    HOST_CALLS.clear()
    return Recorded(home, run.id)


def invoke(recorded: Recorded, *args: str) -> Result:
    """``codetape replay RUN ARGS`` against the module's store."""
    return CliRunner().invoke(
        cli, ["--home", str(recorded.home), "replay", recorded.run_id[:10], *args]
    )


def reports_of(result: Result) -> list[ReplayReport]:
    data = json.loads(result.stdout)
    assert isinstance(data, list)
    return [ReplayReport.model_validate(r) for r in data]


_VERDICTS = "reproduced|diverged|not_restorable|environment_missing"


def table_rows(output: str) -> list[tuple[int, str]]:
    """(step, verdict) of each row of the verdict table."""
    return [
        (int(m[1]), m[2])
        for m in re.finditer(rf"^\s*(\d+)\s+({_VERDICTS})\b", output, re.MULTILINE)
    ]


def fields(report: ReplayReport) -> dict[str, Any]:
    return {d.field: (d.recorded, d.replayed) for d in report.differences}


def edit(tmp_path: Path, code: str) -> str:
    path = tmp_path / "edited.py"
    path.write_text(code)
    return str(path)


# -- the rest of the run reproduces ---------------------------------------------------


def test_from_1_shows_one_reproduced_row_per_later_step_and_exits_0(
    home: Path, recorded: Recorded
) -> None:
    result = invoke(recorded, "--from", "1")

    assert result.exit_code == 0, result.output
    assert table_rows(result.stdout) == [(1, "reproduced"), (2, "reproduced"), (3, "reproduced")]
    assert re.search(r"^3 steps replayed from step 1 in .+: 3 reproduced$", result.stdout, re.M)
    assert "first divergence" not in result.stdout
    assert "did not run" not in result.stdout
    assert HOST_CALLS == []  # every tool call was answered from the recording


def test_from_json_gives_one_report_per_step_all_in_one_replay_run(
    home: Path, recorded: Recorded
) -> None:
    result = invoke(recorded, "--from", "1", "--json")

    assert result.exit_code == 0, result.output
    reports = reports_of(result)
    assert [(r.run_id, r.step, r.verdict) for r in reports] == [
        (recorded.run_id, 1, "reproduced"),
        (recorded.run_id, 2, "reproduced"),
        (recorded.run_id, 3, "reproduced"),
    ]
    [replay_run_id] = {r.replay_run_id for r in reports}
    assert replay_run_id is not None
    replay_run = codetape.Store(recorded.home).run(replay_run_id)
    assert replay_run.replay_of == f"{recorded.run_id}:1"
    assert replay_run.step_count == 3


def test_from_the_first_step_replays_the_whole_run(home: Path, recorded: Recorded) -> None:
    result = invoke(recorded, "--from", "0", "--json")

    assert result.exit_code == 0, result.output
    assert [(r.step, r.verdict) for r in reports_of(result)] == [
        (0, "reproduced"), (1, "reproduced"), (2, "reproduced"), (3, "reproduced")
    ]  # fmt: skip


def test_from_the_last_step_is_one_row(home: Path, recorded: Recorded) -> None:
    result = invoke(recorded, "--from", "3")

    assert result.exit_code == 0, result.output
    assert table_rows(result.stdout) == [(3, "reproduced")]


# -- an edit --------------------------------------------------------------------------


def test_an_edit_that_changes_a_later_steps_output_diverges_there_too(
    home: Path, recorded: Recorded, tmp_path: Path
) -> None:
    result = invoke(recorded, "--from", "1", "--code", edit(tmp_path, PRICIER))

    assert result.exit_code == 1, result.output
    assert table_rows(result.stdout) == [(1, "diverged"), (2, "diverged"), (3, "diverged")]
    assert re.search(r"^3 steps replayed from step 1 in .+: 3 diverged$", result.stdout, re.M)
    assert "note: the code was edited" in result.stdout
    # The first divergence in full, as `--step` shows it: a diff of the two stdouts.
    assert "first divergence: step 1 differs in 2 fields" in result.stdout
    assert "-cart ['apple', 'kiwi'] 2.25" in result.stdout
    assert "+cart ['apple', 'kiwi'] 3.0" in result.stdout
    assert "steps 2 to 3 differ too" in result.stdout

    as_json = invoke(recorded, "--from", "1", "--code", edit(tmp_path, PRICIER), "--json")
    assert as_json.exit_code == 1, as_json.output
    first, second, last = reports_of(as_json)
    assert fields(first)["stdout"] == (
        "cart ['apple', 'kiwi'] 2.25\n",
        "cart ['apple', 'kiwi'] 3.0\n",
    )
    # Step 2 ran its recorded code on what the edit left: another average.
    assert fields(second)["stdout"] == ("avg 1.625\n", "avg 2.0\n")
    assert "stdout" not in fields(last)  # it still prints the same...
    assert "variable:total" in fields(last)  # ...but ends on the edited total
    assert HOST_CALLS == []


def test_an_edit_asking_a_tool_something_new_stops_naming_the_call(
    home: Path, recorded: Recorded, tmp_path: Path
) -> None:
    result = invoke(recorded, "--from", "1", "--code", edit(tmp_path, FIG))

    assert result.exit_code == 1, result.output
    assert table_rows(result.stdout) == [(1, "diverged")]
    assert "step 1: no recorded answer for get_price('fig')" in result.stdout
    assert "the replay stopped at step 1: steps 2 to 3 did not run" in result.stdout
    assert "--live-tools --tools MODULE" in result.stdout
    assert HOST_CALLS == []

    as_json = invoke(recorded, "--from", "1", "--code", edit(tmp_path, FIG), "--json")
    [report] = reports_of(as_json)
    assert (report.step, report.verdict) == (1, "diverged")
    assert report.reason is not None
    assert report.reason.startswith("no recorded answer for get_price('fig')")


def test_live_tools_answer_what_the_recording_lacks_and_the_replay_carries_on(
    home: Path, recorded: Recorded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shop_tools_for_replay_from.py").write_text(
        "def get_price(item):\n    return {'apple': 1.5, 'kiwi': 0.75, 'fig': 2.0}[item]\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["--from", "1", "--code", edit(tmp_path, FIG), "--live-tools", "--json"]

    result = invoke(recorded, *args, "--tools", "shop_tools_for_replay_from")

    assert result.exit_code == 1, result.output
    reports = reports_of(result)
    assert [r.step for r in reports] == [1, 2, 3]
    assert all(r.reason is None for r in reports)
    assert fields(reports[0])["stdout"][1] == "cart ['apple', 'fig'] 3.5\n"

    without = invoke(recorded, *args)
    assert without.exit_code == 2
    assert "--live-tools needs --tools MODULE" in without.output


# -- the command line -----------------------------------------------------------------


@pytest.mark.parametrize("other", [["--step", "2"], ["--all"]])
def test_from_is_exclusive_with_step_and_all(
    home: Path, recorded: Recorded, other: list[str]
) -> None:
    result = invoke(recorded, "--from", "1", *other)

    assert result.exit_code == 2
    assert "pass only one of --step, --from and --all" in result.output


def test_from_a_step_the_run_does_not_have_says_which_it_has(
    home: Path, recorded: Recorded
) -> None:
    result = invoke(recorded, "--from", "9")

    assert result.exit_code != 0
    assert "has no step 9 (it has steps 0..3)" in result.stderr
    assert "Traceback" not in result.output


def test_help_explains_from() -> None:
    result = CliRunner().invoke(cli, ["replay", "--help"])

    assert result.exit_code == 0
    assert "--from N" in result.stdout
    text = " ".join(result.stdout.split())  # as wrapped to the terminal's width
    assert "every later recorded step in the same sandbox" in text
    assert "codetape replay RUN --from 3 --code F.py" in text
