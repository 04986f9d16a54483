"""The values on the failing line: ``inline_values(step)`` reads the names the step's
failing line reads from its recorded state, and says what a subscripted value holds,
for steps recorded from a real smolagents agent and from ``@codetape.code_action``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import codetape
from codetape._format import InlineValue, inline_values
from tests.trajectory_fixtures import make_agent


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> None:
    exec(code, namespace)


def failing_step() -> Any:
    store = codetape.Store()
    (run,) = store.runs()
    return next(s for s in store.steps(run.id) if s.error is not None)


def test_a_smolagents_key_error_shows_the_keys_the_dict_does_have(home: Path) -> None:
    make_agent(
        [
            ("Thought: list them.", "orders = get_orders()[:2]\nrefunded = []"),
            (
                "Thought: refund.",
                "for order in orders:\n    refunded.append(refund(order['order_id']))",
            ),
            ("Thought: stop.", "final_answer(len(refunded))"),
        ]
    ).run("Refund them")
    values = {v.name: v for v in inline_values(failing_step())}
    assert values["order"] == InlineValue(
        "order", "dict", "{'id': 'A-1000', 'total': 100.0}", "has keys: id, total"
    )
    assert values["refunded"].preview == "[]"
    assert "refund" not in values  # a tool is called, not read


def test_an_index_error_says_how_many_items_there_are(home: Path) -> None:
    with codetape.run("bot"), pytest.raises(IndexError):
        execute("orders = [{'id': 'A'}]\nfirst = orders[0]\nlast = orders[3]['id']", {})
    (value,) = inline_values(failing_step())
    assert (value.name, value.note) == ("orders", "has 1 items (indexes 0 to 0)")


def test_a_division_shows_both_operands(home: Path) -> None:
    with codetape.run("bot"), pytest.raises(ZeroDivisionError):
        execute("total = 12.5\ncount = 0\nmean = total / count", {})
    assert [(v.name, v.preview) for v in inline_values(failing_step())] == [
        ("total", "12.5"),
        ("count", "0"),
    ]


def test_a_cut_preview_still_names_the_keys_it_shows(home: Path) -> None:
    big = {f"key_{i}": "x" * 40 for i in range(40)}
    with codetape.run("bot"), pytest.raises(KeyError):
        execute("big['missing']", {"big": big})
    (value,) = inline_values(failing_step())
    assert value.note is not None
    assert value.note.startswith("has keys: key_0, key_1, key_10")  # as the preview orders them
    assert value.note.endswith(", …")


def test_a_step_that_did_not_fail_has_no_inline_values(home: Path) -> None:
    with codetape.run("bot"):
        execute("x = 1", {})
    store = codetape.Store()
    (run,) = store.runs()
    assert inline_values(store.step(run.id, 0)) == []
