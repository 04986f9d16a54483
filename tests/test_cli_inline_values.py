"""``codetape show``: under a step's error, each name the failing line reads with its
type and preview from the recorded state, and what a subscripted value does have
(``order has keys: customer, id, total``); recorded values printed inert."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import codetape
from codetape.cli import cli
from codetape.schemas import Step

from .trajectory_fixtures import make_agent

EXAMPLE = Path(__file__).parent.parent / "examples" / "01_decorators.py"
HEADING = "the failing line reads"
TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"
RTL = "\u202egnp.exe"
MARKUP = "[link=http://evil.example]x[/link]"


def invoke(home: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def rows(output: str) -> list[list[str]]:
    """The lines under the heading, split at runs of two or more spaces."""
    after = output.split(HEADING + "\n", 1)[1]
    found = []
    for line in after.splitlines():
        if not line.startswith("  "):
            break
        found.append(re.split(r"\s{2,}", line.strip()))
    return found


@pytest.fixture
def orders_run(home: Path) -> str:
    subprocess.run([sys.executable, str(EXAMPLE), "--home", str(home)], check=True)
    return codetape.Store(home).runs()[0].id


def test_the_failing_step_shows_the_values_its_line_reads(home: Path, orders_run: str) -> None:
    output = invoke(home, "show", orders_run[:8], "--step", "2")
    error = output.index("KeyError: 'order_id'")
    assert error < output.index(HEADING) < output.index("Traceback")
    assert rows(output) == [
        ["refunded", "list", "[]"],
        ["order", "dict", "{'customer': 'ada', 'id': 'A-1001', 'total': 250.0}"],
        ["order has keys: customer, id, total"],
    ]


def test_the_run_view_shows_them_under_its_failed_step_only(home: Path, orders_run: str) -> None:
    output = invoke(home, "show", "last")
    assert output.count(HEADING) == 1
    step_2 = output.index("step 2 error")
    assert step_2 < output.index("order has keys: customer, id, total") < output.index("step 3")


def test_json_is_still_exactly_the_step_model(home: Path, orders_run: str) -> None:
    text = invoke(home, "show", "last", "--step", "2", "--json")
    assert Step.model_validate_json(text).error is not None  # extra="forbid": nothing added
    assert HEADING not in text


def test_a_smolagents_steps_failing_line_read_whole(home: Path) -> None:
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
    output = invoke(home, "show", "last", "--step", "1")
    found = rows(output)
    assert ["order", "dict", "{'id': 'A-1000', 'total': 100.0}"] in found
    assert ["order has keys: id, total"] in found
    assert not any(row[0] == "refund" for row in found)  # a tool is called, not read


class Box:
    """A value whose repr, and so its preview and the keys read from it, is hostile."""

    def __repr__(self) -> str:
        return "{'" + TITLE + CLEAR + MARKUP + RTL + "': 1, 'id': 2}"

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)


Hostile = type(f"Ev{MARKUP}il{CLEAR}", (), {"__repr__": lambda self: TITLE + MARKUP + RTL})


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> None:
    exec(code, namespace)


def test_hostile_values_names_and_types_are_printed_inert(home: Path) -> None:
    with codetape.run(f"bot {MARKUP}", task=TITLE + RTL), pytest.raises(KeyError):
        execute("y = box['order_id'] + thing", {"box": Box(), "thing": Hostile()})
    for args in (("show", "last", "--step", "0"), ("show", "last")):
        output = invoke(home, *args)
        assert "\x1b" not in output
        assert "\u202e" not in output
        found = rows(output)
        escaped = "\\x1b]0;pwned\\x07\\x1b[2J" + MARKUP + "\\u202egnp.exe"
        assert found[0] == ["box", f"{__name__}.Box", "{'" + escaped + "': 1, 'id': 2}"]
        assert found[1] == [f"box has keys: {escaped}, id"]
        assert found[2] == [
            "thing",
            f"{__name__}.Ev{MARKUP}il\\x1b[2J",
            "\\x1b]0;pwned\\x07" + MARKUP + "\\u202egnp.exe",
        ]
