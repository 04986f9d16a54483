"""The orders agent as a smolagents CodeAgent, recorded by codetape both ways.

``instrument(agent)`` records each ``agent.run(task)`` as a run and each code action
the agent writes as a step: its code, the variables before and after, what it printed,
its result or error and every call to the agent's tools, with the model call its code
came from (the messages, the output, the tokens) and the thought around it. The agent is a real
smolagents ``CodeAgent`` running its actions in its own ``LocalPythonExecutor``; only
the model is scripted, so this runs offline. Its third action uses a key the orders do
not have and raises KeyError; smolagents shows the error to the model, and the fourth
action fixes it.

The same agent is then run a second time with ``instrument(agent, sandbox=sandbox)``:
its actions run in codetape's sandbox (a hardened Docker container when Docker and the
sandbox image are there, else the local backend, with a warning), its tools stay on the
host, and each step is recorded with the image it ran in.

    python examples/03_smolagents.py                 # records into ./.codetape
    codetape runs --failed                           # the run with a failed step
    codetape show last --step 2                      # the failing step in full
    codetape failures                                # failing steps grouped by cause

Needs the smolagents extra: pip install 'codetape[smolagents]'.
"""

from __future__ import annotations

import argparse
from typing import Any

from smolagents import CodeAgent, Model, tool
from smolagents.models import ChatMessage, MessageRole
from smolagents.monitoring import TokenUsage

import codetape
from codetape.integrations.smolagents import instrument

ORDERS = [
    {"id": "A-1001", "customer": "ada", "total": 250.0},
    {"id": "A-1002", "customer": "grace", "total": 40.0},
    {"id": "A-1003", "customer": "linus", "total": 120.5},
    {"id": "A-1004", "customer": "barbara", "total": 99.99},
]

TASK = "Refund every order over the threshold"

# What the scripted model "writes", one code action per reply. CodeAgent reads the code
# between <code> and </code>, its default code_block_tags.
SCRIPT = [
    "orders = get_orders()\n"
    "print(f\"{len(orders)} orders, {sum(o['total'] for o in orders):.2f} in all\")",
    "big = [o for o in orders if o['total'] > threshold]\nprint([o['id'] for o in big])",
    # The mistake: the orders carry "id", not "order_id".
    "refunded = []\nfor order in big:\n    refunded.append(refund(order['order_id']))",
    "refunded = [refund(order['id']) for order in big]\nprint(refunded)",
    "final_answer(\n"
    "    f\"refunded {len(refunded)} orders: {', '.join(r['order_id'] for r in refunded)}\"\n"
    ")",
]


@tool
def get_orders() -> list[dict[str, Any]]:
    """All open orders."""
    return [dict(o) for o in ORDERS]


@tool
def refund(order_id: str) -> dict[str, Any]:
    """Refund one order; raises for an unknown id.

    Args:
        order_id: the order's id, such as "A-1001"
    """
    order = next((o for o in ORDERS if o["id"] == order_id), None)
    if order is None:
        raise ValueError(f"no order {order_id!r}")
    return {"order_id": order_id, "amount": order["total"], "status": "refunded"}


class ScriptedModel(Model):
    """Stands in for an LLM: replies with the next canned code action, whatever it is
    shown. Pass a real smolagents model instead to record a real agent."""

    def __init__(self, script: list[str]) -> None:
        super().__init__(model_id="scripted")
        self._script = iter(script)

    def generate(self, messages: list[Any], stop_sequences: Any = None, **kwargs: Any) -> Any:
        code = next(self._script, "final_answer('out of script')")
        return ChatMessage(
            role=MessageRole.ASSISTANT,
            content=f"Thought: the next step.\n<code>\n{code}\n</code>",
            # What a provider reports; made up here (no model ran).
            token_usage=TokenUsage(input_tokens=400 * len(messages), output_tokens=len(code) // 4),
        )


def build_agent(model: Any) -> Any:
    return CodeAgent(tools=[get_orders, refund], model=model, name="orders_bot", max_steps=8)


def sandbox_backend(requested: str) -> str:
    """docker when the engine and the sandbox image are there, else local (with a word)."""
    if requested != "auto":
        return requested
    try:
        import docker

        docker.from_env(timeout=5).images.get(codetape.sandbox.default_image())
    except Exception as exc:
        print(
            f"Docker or the sandbox image {codetape.sandbox.default_image()} is not available "
            f"({type(exc).__name__}): running the sandboxed agent with the local backend, "
            "WITHOUT isolation. To use Docker: start dockerd and run "
            "scripts/build-offline-image.sh (or docker pull python:3.12-slim)."
        )
        return "local"
    return "docker"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="store directory (default ./.codetape)")
    parser.add_argument(
        "--backend",
        choices=["auto", "docker", "local"],
        default="auto",
        help="sandbox backend for the second run (default: docker if available)",
    )
    args = parser.parse_args()
    codetape.configure(home=args.home)

    # 1. Observed mode: the agent runs its actions in its own LocalPythonExecutor, and
    #    codetape records them from the outside.
    agent = instrument(build_agent(ScriptedModel(SCRIPT)))
    answer = agent.run(TASK, additional_args={"threshold": 100.0})
    print(f"observed run, final answer: {answer}")

    # 2. Sandboxed mode: the actions run in codetape's sandbox, the tools on the host;
    #    each agent.run is still one run, with its steps and model calls.
    with codetape.Sandbox(backend=sandbox_backend(args.backend)) as sandbox:
        agent = instrument(build_agent(ScriptedModel(SCRIPT)), sandbox=sandbox)
        answer = agent.run(TASK, additional_args={"threshold": 100.0})
    print(f"sandboxed run ({sandbox.backend}), final answer: {answer}")


if __name__ == "__main__":
    main()
