"""A process that only records loads only what recording needs.

An agent process imports codetape, instruments its agent and records runs; the data
models (pydantic), the sandbox's protocol and the replayer are for reading, replaying
and sandboxed steps. Each case runs in a fresh interpreter, so what it finds in
``sys.modules`` is what that process imported, checked after its exit's ingestion.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import codetape

# Runs a scripted smolagents CodeAgent (three code actions, two tools) twice under
# instrument(), then, after codetape's own exit handlers (ingestion), prints which of
# the heavy modules the process imported.
_AGENT = textwrap.dedent(
    """
    import atexit, json, sys

    HEAVY = ["pydantic", "codetape.schemas._models", "codetape.sandbox._sandbox",
             "codetape.sandbox._messages", "codetape.replayer", "codetape.store._read"]
    # Registered first, so it runs last: after codetape's exit ingestion.
    atexit.register(lambda: print(json.dumps([m for m in HEAVY if m in sys.modules])))

    from smolagents import CodeAgent, Model, tool
    from smolagents.models import ChatMessage, MessageRole

    import codetape
    from codetape.integrations.smolagents import instrument

    @tool
    def get_orders() -> list:
        \"\"\"All open orders.\"\"\"
        return [{"id": "A-1", "total": 250.0}, {"id": "A-2", "total": 40.0}]

    @tool
    def refund(order_id: str) -> dict:
        \"\"\"Refund one order.

        Args:
            order_id: the order's id
        \"\"\"
        return {"order_id": order_id, "status": "refunded"}

    ACTIONS = [
        "orders = get_orders()\\nprint(len(orders), 'orders')",
        "big = [o for o in orders if o['total'] > 100]\\n"
        "refunded = [refund(o['id']) for o in big]",
        "final_answer('refunded ' + ', '.join(r['order_id'] for r in refunded))",
    ]

    class Scripted(Model):
        def __init__(self):
            super().__init__(model_id="scripted")
            self.turn = 0

        def generate(self, messages, stop_sequences=None, **kw):
            code = ACTIONS[self.turn % len(ACTIONS)]
            self.turn += 1
            return ChatMessage(role=MessageRole.ASSISTANT,
                               content=f"Thought: next.\\n<code>\\n{code}\\n</code>")

    codetape.configure(home=sys.argv[1], otlp=False)
    agent = instrument(CodeAgent(tools=[get_orders, refund], model=Scripted(),
                                 verbosity_level=-1))
    for _ in range(2):
        agent.model.turn = 0
        assert agent.run("Refund every order over $100") == "refunded A-1"
    """
)


def _run(*args: str) -> list[str]:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_import_codetape_loads_no_models_sandbox_or_replayer() -> None:
    heavy = _run(
        "-c",
        "import json, sys, codetape, codetape.integrations.smolagents\n"
        "print(json.dumps([m for m in ('pydantic', 'codetape.sandbox._sandbox',"
        " 'codetape.replayer', 'codetape.store._read') if m in sys.modules]))",
    )
    assert heavy == []


def test_recording_an_agent_loads_no_models_sandbox_or_replayer(tmp_path: Path) -> None:
    # smolagents' @tool reads its function's source: the agent is a file.
    script = tmp_path / "agent.py"
    script.write_text(_AGENT)
    assert _run(str(script), str(tmp_path / "home")) == []
    # The runs were recorded in full all the same.
    store = codetape.Store(tmp_path / "home")
    runs = store.runs()
    assert len(runs) == 2
    assert all(run.status == "ok" for run in runs)
    steps = store.steps(runs[0].id)
    assert [step.code.splitlines()[0] for step in steps][:1] == ["orders = get_orders()"]
    assert steps[1].variables_after["refunded"].preview == (
        "[{'order_id': 'A-1', 'status': 'refunded'}]"
    )


def test_the_lazy_names_are_the_same_objects() -> None:
    from codetape import schemas, store
    from codetape.sandbox import Limits, Sandbox
    from codetape.schemas import _models
    from codetape.tracer import _sandboxed

    assert schemas.StepStatus is _models.StepStatus
    assert schemas.Limits is Limits is codetape.Limits
    assert codetape.Sandbox is _sandboxed.Sandbox
    assert issubclass(codetape.Sandbox, Sandbox)
    assert store.Store is codetape.Store
