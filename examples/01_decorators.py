"""A hand-written code-acting agent, recorded by codetape with two decorators.

The "model" is scripted (a list of canned code snippets), so this runs offline. The
agent's task: refund every order over a threshold. Its third action uses a key the
orders do not have and raises; the agent sees the error and fixes it in the next
action, as a real code agent would.

    python examples/01_decorators.py            # records into ./.codetape
    codetape runs --failed                      # the run with a failed step
    codetape show last --step 2                 # the failing step in full
"""

from __future__ import annotations

import argparse
import traceback
from typing import Any

import codetape

ORDERS = [
    {"id": "A-1001", "customer": "ada", "total": 250.0},
    {"id": "A-1002", "customer": "grace", "total": 40.0},
    {"id": "A-1003", "customer": "linus", "total": 120.5},
    {"id": "A-1004", "customer": "barbara", "total": 99.99},
]

SCRIPT = [
    (
        "orders = get_orders()\n"
        "print(f\"{len(orders)} orders, {sum(o['total'] for o in orders):.2f} in all\")"
    ),
    "big = [o for o in orders if o['total'] > threshold]\nprint([o['id'] for o in big])",
    # The mistake: the orders carry "id", not "order_id".
    "refunded = []\nfor order in big:\n    refunded.append(refund(order['order_id']))",
    "refunded = [refund(order['id']) for order in big]\nprint(refunded)",
    (
        'final_answer(f"refunded {len(refunded)} orders: '
        "{', '.join(r['order_id'] for r in refunded)}\")"
    ),
]


@codetape.tool
def get_orders() -> list[dict[str, Any]]:
    """All open orders."""
    return [dict(o) for o in ORDERS]


@codetape.tool
def refund(order_id: str) -> dict[str, Any]:
    """Refund one order; raises for an unknown id."""
    order = next((o for o in ORDERS if o["id"] == order_id), None)
    if order is None:
        raise ValueError(f"no order {order_id!r}")
    return {"order_id": order_id, "amount": order["total"], "status": "refunded"}


class ScriptedModel:
    """Stands in for an LLM: returns the next canned snippet, whatever it is shown."""

    def __init__(self, script: list[str]) -> None:
        self._script = iter(script)

    def next_action(self, observation: str) -> str | None:
        return next(self._script, None)


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> None:
    """The agent's executor: runs one snippet in the shared namespace."""
    exec(compile(code, "<code action>", "exec"), namespace)


@codetape.agent(name="orders-bot")
def solve(task: str, threshold: float = 100.0) -> object:
    model = ScriptedModel(SCRIPT)
    answers: list[object] = []
    namespace: dict[str, Any] = {
        "get_orders": get_orders,
        "refund": refund,
        "final_answer": answers.append,
        "threshold": threshold,
    }
    observation = task
    while not answers and (code := model.next_action(observation)) is not None:
        try:
            execute(code, namespace)
            observation = "ok"
        except Exception as exc:  # the agent reads the error and tries again
            observation = "".join(traceback.format_exception_only(exc))
            print(f"step failed: {observation.strip()}")
    return answers[0] if answers else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="store directory (default ./.codetape)")
    args = parser.parse_args()
    codetape.configure(home=args.home)
    answer = solve("Refund every order over $100")
    print(f"final answer: {answer}")


if __name__ == "__main__":
    main()
