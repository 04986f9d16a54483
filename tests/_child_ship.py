"""A recording process for the shipping tests: records into ``$CODETAPE_HOME``.

    python tests/_child_ship.py MODE [options]

MODE ``otlp URL``: the scripted run (``otlp_fixtures.record_run``) sent through the
plain OTLP exporter (``configure(otlp=URL)``; the token header comes from
``OTEL_EXPORTER_OTLP_TRACES_HEADERS``), nothing shipped by codetape.

MODE ``ship``: ``configure()`` ships to ``$CODETAPE_REMOTE`` with ``$CODETAPE_TOKEN``;
the scripted run, then a run with a large value (its blobs are files), then:

  --smolagents          then a scripted smolagents CodeAgent's run (two tools)
  --die-in-step READY   a third run whose second step creates READY and sleeps: the
                        parent kills this process there with SIGKILL
  --recorded PATH       create PATH once the runs are recorded ...
  --hold PATH           ... and wait for PATH before exiting

Each run's id is printed as ``RUN_ID=...``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import codetape
from codetape.tracer.internal import current_run
from tests import otlp_fixtures

WAIT_S = 300.0  # a guard against waiting forever if the parent died


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            sys.exit(f"gave up waiting for {path}")
        time.sleep(0.02)


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> None:
    exec(code, namespace)


def started() -> None:
    run = current_run()
    assert run is not None
    print(f"RUN_ID={run.id}", flush=True)


@codetape.agent(name="big-values")
def big_values(task: str) -> str:
    started()
    ns: dict[str, Any] = {}
    execute("big = 'x' * 300_000\nrows = [{'i': i, 'sq': i * i} for i in range(5000)]", ns)
    execute("print(len(big), len(rows))\n" + "# a long comment\n" * 1500, ns)
    return "done"


@codetape.agent(name="doomed")
def doomed(ready: str) -> str:
    started()
    ns: dict[str, Any] = {"ready": ready}
    execute("n = 41\nprint('before the end')", ns)
    execute(
        "import pathlib, time\npathlib.Path(ready).touch()\nn += 1\ntime.sleep(600)",
        ns,
    )
    return "never"


def smolagents_run() -> None:
    """A scripted smolagents CodeAgent under ``instrument()``: three code actions, two
    tools, a final answer."""
    from smolagents import CodeAgent, Model, tool
    from smolagents.models import ChatMessage, MessageRole

    from codetape.integrations.smolagents import instrument

    @tool  # type: ignore[untyped-decorator]
    def get_orders() -> list:  # type: ignore[type-arg]
        """All open orders."""
        return [{"id": "A-1", "total": 250.0}, {"id": "A-2", "total": 40.0}]

    @tool  # type: ignore[untyped-decorator]
    def refund(order_id: str) -> dict:  # type: ignore[type-arg]
        """Refund one order.

        Args:
            order_id: the order's id
        """
        return {"order_id": order_id, "status": "refunded"}

    actions = [
        "orders = get_orders()\nprint(len(orders), 'orders')",
        "big = [o for o in orders if o['total'] > 100]\nrefunded = [refund(o['id']) for o in big]",
        "final_answer('refunded ' + ', '.join(r['order_id'] for r in refunded))",
    ]

    class Scripted(Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(model_id="scripted")
            self.turn = 0

        def generate(self, messages: Any, stop_sequences: Any = None, **kw: Any) -> ChatMessage:
            code = actions[self.turn % len(actions)]
            self.turn += 1
            return ChatMessage(
                role=MessageRole.ASSISTANT, content=f"Thought: next.\n<code>\n{code}\n</code>"
            )

    agent = instrument(CodeAgent(tools=[get_orders, refund], model=Scripted(), verbosity_level=-1))
    assert agent.run("Refund every order over $100") == "refunded A-1"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["otlp", "ship"])
    parser.add_argument("url", nargs="?")
    parser.add_argument("--smolagents", action="store_true")
    parser.add_argument("--die-in-step", type=Path)
    parser.add_argument("--recorded", type=Path)
    parser.add_argument("--hold", type=Path)
    args = parser.parse_args()
    if args.mode == "otlp":
        codetape.configure(otlp=args.url, otlp_conventions="none")
        print(f"RUN_ID={otlp_fixtures.record_run()}", flush=True)
        return
    codetape.configure()
    print(f"RUN_ID={otlp_fixtures.record_run()}", flush=True)
    big_values("large values")
    if args.smolagents:
        smolagents_run()
    if args.die_in_step:
        doomed(str(args.die_in_step))
    if args.recorded:
        args.recorded.touch()
    if args.hold:
        wait_for(args.hold)


if __name__ == "__main__":
    main()
