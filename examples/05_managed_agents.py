"""A smolagents CodeAgent with a managed agent, recorded by codetape as two linked runs.

The ``boss`` agent writes code that calls ``pricer``, a managed ``CodeAgent`` that
looks up order totals. ``instrument(boss)`` records both: each ``agent.run`` is a run,
and the pricer's run is the child of the boss's step (and tool call) that started it.
The boss's second action takes the pricer's answer for a bare number, but a managed agent
answers with a report: the failing step shows the value on its failing line (``answer:
str = "Here is the final answer from your managed agent 'pricer': ..."``). Only the
models are scripted, so this runs offline.

    python examples/05_managed_agents.py          # records into ./.codetape
    codetape runs                                 # the pricer's run under the boss's
    codetape show BOSS_RUN --step 1               # the failing line's values
    codetape failures                             # failing steps grouped by cause

Needs the smolagents extra: pip install 'codetape[smolagents]'.
"""

from __future__ import annotations

import argparse
from typing import Any

from smolagents import CodeAgent, Model, tool
from smolagents.models import ChatMessage, MessageRole

import codetape
from codetape.integrations.smolagents import instrument

ORDERS = {"A-1001": 250.0, "A-1002": 40.0, "A-1003": 120.5}


@tool
def order_total(order_id: str) -> float:
    """The total of one order.

    Args:
        order_id: the order's id, such as "A-1001"
    """
    return ORDERS[order_id]


class ScriptedModel(Model):
    """Stands in for an LLM: replies with the next canned thought and code action."""

    def __init__(self, model_id: str, script: list[tuple[str, str]]) -> None:
        super().__init__(model_id=model_id)
        self._script = iter(script)

    def generate(self, messages: list[Any], stop_sequences: Any = None, **kwargs: Any) -> Any:
        thought, code = next(self._script, ("Out of script.", "final_answer('out of script')"))
        return ChatMessage(
            role=MessageRole.ASSISTANT, content=f"{thought}\n<code>\n{code}\n</code>"
        )


def build() -> Any:
    pricer = CodeAgent(
        tools=[order_total],
        model=ScriptedModel(
            "pricer-model",
            [
                (
                    "Thought: look up each order and add them.",
                    "totals = [order_total(i) for i in ['A-1001', 'A-1003']]\n"
                    "final_answer(str(sum(totals)))",
                )
            ],
        ),
        name="pricer",
        description="Looks up the totals of orders; give it the order ids.",
    )
    return CodeAgent(
        tools=[],
        model=ScriptedModel(
            "boss-model",
            [
                ("Thought: ask the pricer.", "answer = pricer(task='totals of A-1001, A-1003')"),
                # The mistake: a managed agent answers with a report, not the bare number.
                ("Thought: convert it.", "grand = float(answer)"),
                (
                    "Thought: the number is on the last line.",
                    "grand = float(answer.splitlines()[-1])",
                ),
                ("Thought: done.", "final_answer(f'{grand:.2f} EUR')"),
            ],
        ),
        managed_agents=[pricer],
        name="boss",
        max_steps=6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="store directory (default ./.codetape)")
    args = parser.parse_args()
    codetape.configure(home=args.home)
    boss = instrument(build())  # records the boss and its managed pricer
    print(f"final answer: {boss.run('What do orders A-1001 and A-1003 come to?')}")


if __name__ == "__main__":
    main()
