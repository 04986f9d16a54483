"""An agent's namespace outlives its runs: what the next run records of it.

A run takes over the state snapshots of the run that ended before it (same store, same
redaction), so values the last run left are checked rather than described again. What
a run records must not change for it: a change made between the runs (in place, by
the host) is in the next run's first state, an unchanged namespace is the last run's
final state, and a value replaced by an equal one keeps its preview.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import codetape
from codetape.schemas import Step
from codetape.tracer.internal import recording_to

from .test_state_reach import execute, fingerprint, restored


def _run(home: Path, codes: list[str], ns: dict[str, Any]) -> list[Step]:
    with codetape.run("bot") as r:
        for code in codes:
            execute(code, ns)
    return codetape.Store(home).steps(r.id)


def test_a_change_the_host_makes_between_runs_is_in_the_next_runs_first_state(
    home: Path,
) -> None:
    ns: dict[str, Any] = {}
    first = _run(home, ["rows = [1, 2]\ntable = {'a': 1}"], ns)
    ns["rows"].append(3)  # the host, after the run ended
    ns["table"]["b"] = 2
    second = _run(home, ["n = len(rows)"], ns)
    before = second[0].variables_before
    assert before["rows"].preview == "[1, 2, 3]"
    assert before["rows"].digest == fingerprint([1, 2, 3])
    assert before["table"].preview == "{'a': 1, 'b': 2}"
    assert second[0].state_before != first[-1].state_after
    values = restored(home, second[0].state_before)
    assert values["rows"] == [1, 2, 3]
    assert values["table"] == {"a": 1, "b": 2}
    assert second[0].variables_after["n"].preview == "3"


def test_an_unchanged_namespace_starts_the_next_run_as_the_last_one_ended(
    home: Path,
) -> None:
    ns: dict[str, Any] = {}
    first = _run(home, ["orders = [{'id': 'A-1', 'total': 250.0}]"], ns)
    second = _run(home, ["orders = [{'id': 'A-1', 'total': 250.0}]\nbig = orders[:1]"], ns)
    assert second[0].state_before == first[-1].state_after
    assert second[0].variables_before["orders"].preview == "[{'id': 'A-1', 'total': 250.0}]"
    # Replaced by an equal list: the same record; a new name is described.
    after = second[0].variables_after
    assert after["orders"].preview == "[{'id': 'A-1', 'total': 250.0}]"
    assert after["orders"].digest == fingerprint([{"id": "A-1", "total": 250.0}])
    assert after["big"].preview == "[{'id': 'A-1', 'total': 250.0}]"
    assert restored(home, second[0].state_after)["big"] == [{"id": "A-1", "total": 250.0}]


def test_a_run_into_another_store_describes_everything_again(home: Path, tmp_path: Path) -> None:
    ns: dict[str, Any] = {}
    _run(home, ["rows = [1, 2]"], ns)
    with recording_to(tmp_path / "other"):
        second = _run(tmp_path / "other", ["n = 1"], ns)
    # The first state's values are in the other store: its checkpoint restores them.
    assert second[0].variables_before["rows"].preview == "[1, 2]"
    assert restored(tmp_path / "other", second[0].state_before)["rows"] == [1, 2]
