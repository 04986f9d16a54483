"""The Compare page's diff (``diff_outline``, reading only what the page shows) says
what ``diff_runs`` says, on recorded runs of every kind of difference."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

import codetape
from codetape.replayer.internal import diff_outline, whole_pair
from codetape.store import Store


@codetape.code_action
def _execute(code: str, namespace: dict[str, Any]) -> None:
    exec(compile(code, "<code action>", "exec"), namespace)


def _record(snippets: list[str]) -> str:
    namespace: dict[str, Any] = {}
    with codetape.run("outline", task="diff me") as run:
        for code in snippets:
            with contextlib.suppress(Exception):
                _execute(code, namespace)
    return run.id


ORDERS = [
    "orders = [{'id': 'A', 'total': 120}, {'id': 'B', 'total': 5}]",
    "big = [o for o in orders if o['total'] > 100]\nprint(len(big))",
    "ids = [o['id'] for o in big]",
    "print('done')",
]
# Longer than a code preview: aligned by the whole code, read from its blob.
LONG = "values = [\n" + "".join(f"    {n},  # the value {n}\n" for n in range(40)) + "]"
NOW = "import time\nnow = time.time_ns()\nprint(now)"  # same code, other output and value

CASES: dict[str, tuple[list[str], list[str]]] = {
    "edited step": (ORDERS, [*ORDERS[:2], "ids = [o['order_id'] for o in big]", ORDERS[3]]),
    "identical, few steps": (ORDERS, ORDERS),
    "identical, many steps": (ORDERS * 3, ORDERS * 3),
    "same code, other output": ([*ORDERS, NOW, *ORDERS], [*ORDERS, NOW, *ORDERS]),
    "other values": (["x = 1", "y = x + 1", "print(y)"], ["x = 2", "y = x + 1", "print(y)"]),
    "inserted and removed": (["a = 1", "b = 2", "c = 3"], ["a = 1", "new = 0", "c = 3"]),
    "long code": ([LONG, "print(sum(values))"], [LONG.replace("39", "41"), "print(sum(values))"]),
    "error": (["raise ValueError('no')"], ["raise ValueError('yes')"]),
    "empty": ([], ["x = 1"]),
}


def _same_as_diff_runs(home: Path, a: str, b: str) -> None:
    full = codetape.diff_runs(a, b)
    store = Store(home)
    outline = diff_outline(store, store.run(a), store.run(b))
    assert (outline.a, outline.b) == (full.a, full.b)
    assert outline.first_divergence == full.first_divergence
    shown = [(p.a, p.b, p.same, p.status_a, p.status_b) for p in outline.pairs]
    assert shown == [(p.a, p.b, p.same, p.status_a, p.status_b) for p in full.pairs]
    assert [whole_pair(store, outline, k) for k in range(len(full.pairs))] == full.pairs
    if full.first_divergence is not None:
        assert outline.first == full.pairs[full.first_divergence]


@pytest.mark.parametrize("case", list(CASES))
def test_the_outline_says_what_diff_runs_says(home: Path, case: str) -> None:
    a, b = CASES[case]
    _same_as_diff_runs(home, _record(a), _record(b))


def test_the_outline_of_a_run_and_its_replay(home: Path) -> None:
    with pytest.warns(codetape.sandbox.NoIsolationWarning):
        report = codetape.replay(_record(ORDERS), 1)
    assert report.replay_run_id is not None
    _same_as_diff_runs(home, report.run_id, report.replay_run_id)
    _same_as_diff_runs(home, report.replay_run_id, report.run_id)
