"""The orders agent of 01_decorators.py, with its code actions run in codetape's sandbox.

Each snippet runs in a locked-down container (no network, read-only, unprivileged)
that keeps its variables between steps, while the tools stay on the host: inside the
sandbox ``get_orders`` and ``refund`` are stubs that ask the host to run the real
functions, and every call is recorded as part of its step. The "model" is the same
scripted one: its third action raises KeyError, the fourth fixes it, the fifth calls
final_answer(...).

    python examples/02_sandbox_tools.py                   # records into ./.codetape
    python examples/02_sandbox_tools.py --backend local   # no Docker: no isolation
    codetape show last --step 2                           # the failing step in full

The docker backend uses the image $CODETAPE_IMAGE (default python:3.12-slim); without a
registry, build one with scripts/build-offline-image.sh codetape/python:bookworm and
export CODETAPE_IMAGE=codetape/python:bookworm.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import codetape
from codetape.errors import DockerUnavailableError, ImageNotFoundError
from codetape.sandbox import default_image

ORDERS = [
    {"id": "A-1001", "customer": "ada", "total": 250.0},
    {"id": "A-1002", "customer": "grace", "total": 40.0},
    {"id": "A-1003", "customer": "linus", "total": 120.5},
    {"id": "A-1004", "customer": "barbara", "total": 99.99},
]

OFFLINE_IMAGE = "codetape/python:bookworm"  # what scripts/build-offline-image.sh builds

SCRIPT = [
    "orders = get_orders()\n"
    "print(f\"{len(orders)} orders, {sum(o['total'] for o in orders):.2f} in all\")",
    "big = [o for o in orders if o['total'] > threshold]\nprint([o['id'] for o in big])",
    # The mistake: the orders carry "id", not "order_id".
    "refunded = []\nfor order in big:\n    refunded.append(refund(order['order_id']))",
    "refunded = [refund(order['id']) for order in big]\nprint(refunded)",
    'final_answer(f"refunded {len(refunded)} orders: '
    "{', '.join(r['order_id'] for r in refunded)}\")",
]
# The same agent once its prompt is fixed: it never makes the mistake (--fixed).
FIXED_SCRIPT = [SCRIPT[0], SCRIPT[1], SCRIPT[3], SCRIPT[4]]


# Plain functions: the sandbox records each call, no @codetape.tool needed.
def get_orders() -> list[dict[str, Any]]:
    """All open orders."""
    return [dict(o) for o in ORDERS]


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


def open_sandbox(backend: str | None) -> codetape.Sandbox:
    """The sandbox for ``backend``; with none given, Docker when it can run, else local."""
    tools = [get_orders, refund]
    if backend is not None:
        return codetape.Sandbox(tools=tools, backend=backend)
    try:
        sandbox = codetape.Sandbox(tools=tools, backend="docker")
    except DockerUnavailableError as exc:
        how = (
            "install Docker and start its engine (Debian: apt-get install docker.io && "
            f"scripts/start-dockerd.sh), then docker pull {default_image()}"
        )
        why = exc.message
    except ImageNotFoundError as exc:
        how = f"docker pull {exc.image}"
        why = exc.message
    else:
        return sandbox
    print(
        f"warning: {why}, so the code actions run with backend='local': in a subprocess "
        "of this Python, NOT isolated from this machine.\n"
        f"  to use Docker: {how}\n"
        f"  with no registry: scripts/build-offline-image.sh {OFFLINE_IMAGE} && "
        f"export CODETAPE_IMAGE={OFFLINE_IMAGE}\n"
        "  `codetape doctor` checks the engine and the image",
        file=sys.stderr,
    )
    return codetape.Sandbox(tools=tools, backend="local")


@codetape.agent(name="orders-bot-sandbox")
def solve(
    task: str, threshold: float = 100.0, backend: str | None = None, fixed: bool = False
) -> object:
    model = ScriptedModel(FIXED_SCRIPT if fixed else SCRIPT)
    with open_sandbox(backend) as sandbox:
        print(f"sandbox: {sandbox!r}")
        sandbox.send_variables({"threshold": threshold})
        observation = task
        while (code := model.next_action(observation)) is not None:
            step = sandbox.run(code)
            if step.has_final_answer:
                return step.final_answer
            if step.error is not None:  # the agent reads the error and tries again
                observation = f"{step.error.type}: {step.error.message}"
                print(f"step {step.index} failed: {observation}")
            else:
                observation = step.stdout or "ok"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="store directory (default ./.codetape)")
    parser.add_argument(
        "--backend",
        choices=["docker", "local"],
        help="where code actions run (default: docker when the engine answers and the "
        "image exists, else local, with a warning)",
    )
    parser.add_argument(
        "--fixed", action="store_true", help="run the agent that does not make the mistake"
    )
    args = parser.parse_args()
    codetape.configure(home=args.home)
    answer = solve("Refund every order over $100", backend=args.backend, fixed=args.fixed)
    print(f"final answer: {answer}")


if __name__ == "__main__":
    main()
