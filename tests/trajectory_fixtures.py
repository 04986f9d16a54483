"""Stores of smolagents runs with model calls, for the trajectory tests (CLI, viewer).

A real smolagents ``CodeAgent`` (its own ``LocalPythonExecutor``), recorded with
``instrument(agent)`` and driven by a scripted model that reports token usage, as an
evaluation harness would run it many times. Nothing of smolagents is mocked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smolagents import CodeAgent, Model, tool
from smolagents.models import ChatMessage, MessageRole
from smolagents.monitoring import TokenUsage

from codetape.integrations.smolagents import instrument

ORDERS = {f"A-{n}": {"id": f"A-{n}", "total": float(n % 300)} for n in range(1000, 1100)}


@tool  # type: ignore[untyped-decorator]
def refund(order_id: str) -> dict[str, Any]:
    """Refund one order.

    Args:
        order_id: the order's id, such as "A-1001"
    """
    if order_id not in ORDERS:
        raise ValueError(f"no order '{order_id}'")
    return {"order_id": order_id, "status": "refunded"}


@tool  # type: ignore[untyped-decorator]
def get_orders() -> list[dict[str, Any]]:
    """All open orders."""
    return [dict(o) for o in ORDERS.values()]


class ScriptedModel(Model):  # type: ignore[misc]
    """Stands in for an LLM: replies with the next canned thought and code action, and
    reports tokens as a provider would (input grows with the conversation)."""

    def __init__(self, script: list[tuple[str, str]], model_id: str = "scripted-model") -> None:
        super().__init__(model_id=model_id)
        self.script = list(script)

    def generate(self, messages: list[Any], stop_sequences: Any = None, **kwargs: Any) -> Any:
        thought, code = self.script.pop(0)
        return ChatMessage(
            role=MessageRole.ASSISTANT,
            content=f"{thought}\n<code>\n{code}\n</code>",
            token_usage=TokenUsage(input_tokens=100 * len(messages), output_tokens=len(code)),
        )


def make_agent(script: list[tuple[str, str]], name: str = "orders_bot") -> Any:
    return instrument(
        CodeAgent(
            tools=[refund, get_orders], model=ScriptedModel(script), name=name, verbosity_level=-1
        )
    )


# The three ways the evaluation runs fail; the messages differ only by order ids.
def _unknown_order(n: int) -> list[tuple[str, str]]:
    return [
        ("Thought: refund the order.", f'result = refund("B-{n:04d}")'),
        ("Thought: it does not exist; give up.", "final_answer('no such order')"),
    ]


def _wrong_key(n: int) -> list[tuple[str, str]]:
    return [
        ("Thought: list the orders.", "orders = get_orders()"),
        ("Thought: sum the totals.", "total = sum(o['amount'] for o in orders)"),
        ("Thought: the key is total.", "final_answer(sum(o['total'] for o in orders))"),
    ]


def _empty_average(n: int) -> list[tuple[str, str]]:
    return [
        (
            "Thought: average the big orders.",
            f"big = [o for o in get_orders() if o['total'] > {n + 1000}]\n"
            "mean = sum(o['total'] for o in big) / len(big)",
        ),
        ("Thought: none qualify.", "final_answer(0)"),
    ]


def _passing(task: str, n: int) -> list[tuple[str, str]]:
    if task == REFUND:
        return [
            ("Thought: refund it.", f'result = refund("A-{1000 + n}")'),
            ("Thought: done.", "final_answer(result['status'])"),
        ]
    if task == TOTAL:
        return [
            ("Thought: list the orders.", "orders = get_orders()"),
            ("Thought: sum the totals.", "final_answer(sum(o['total'] for o in orders))"),
        ]
    return [("Thought: average them.", "final_answer(1.0)")]


REFUND, TOTAL, AVERAGE = "Refund the order", "Total of all orders", "Average of the big orders"


@dataclass(frozen=True)
class Evaluation:
    """What ``record_evaluation`` recorded: failing runs per failure kind, and passing."""

    failing: dict[str, int]  # failure kind (error type) -> runs
    passing: int


def record_evaluation(
    failing: tuple[int, int, int] = (9, 7, 5), passing: tuple[int, int, int] = (3, 3, 3)
) -> Evaluation:
    """Run the orders agent ``sum(failing) + sum(passing)`` times into the configured
    store: per task, ``failing`` runs that fail one step (an unknown order id, a wrong
    key, an empty average) and ``passing`` runs that succeed."""
    kinds = ((REFUND, _unknown_order), (TOTAL, _wrong_key), (AVERAGE, _empty_average))
    for (task, script), fails, passes in zip(kinds, failing, passing, strict=True):
        for n in range(fails):
            make_agent(script(n)).run(task)
        for n in range(passes):
            make_agent(_passing(task, n)).run(task)
    return Evaluation(
        failing=dict(zip(("ValueError", "KeyError", "ZeroDivisionError"), failing, strict=True)),
        passing=sum(passing),
    )
