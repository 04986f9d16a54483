"""A LangGraph CodeAct agent recorded by codetape's LangChain callback handler.

The graph is the CodeAct loop as ``langgraph-codeact``'s ``create_codeact`` builds it:
a model node, then a node that runs the code the model wrote with ``eval_fn``, back to
the model, until the model answers without code. ``eval_fn`` carries
``@codetape.code_action``; ``CodetapeCallbackHandler`` in the graph's config records the
model calls and opens one run around the graph, so each code action is a step of that
run, linked to the model call its code came from. The model is LangChain's
``GenericFakeChatModel`` replaying canned replies, so this runs offline; pass any chat
model instead.

    python examples/04_langgraph.py                  # records into ./.codetape
    codetape show last --llm                         # the run's model calls
    codetape show last --step 1                      # the thought, the call, the code

Needs the langchain extra and LangGraph: pip install 'codetape[langchain]' langgraph.
"""

from __future__ import annotations

import argparse
import re
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

import codetape
from codetape.integrations.langchain import CodetapeCallbackHandler

ORDERS = [{"id": "A-1001", "total": 250.0}, {"id": "A-1002", "total": 40.0}]
TASK = "Which orders are over $100?"


def get_orders() -> list[dict[str, Any]]:
    """All open orders."""
    return [dict(o) for o in ORDERS]


@codetape.code_action(state="_locals")  # langgraph-codeact names the namespace _locals
def eval_fn(code: str, _locals: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Run the code in ``_locals``; return what it printed and the variables it made."""
    before, printed = set(_locals), []
    _locals["print"] = lambda *args: printed.append(" ".join(map(str, args)))
    try:
        exec(code, _locals)
    except Exception as exc:
        printed.append(f"Error during execution: {exc!r}")
    del _locals["print"]
    return "\n".join(printed), {k: _locals[k] for k in set(_locals) - before}


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    script: str | None
    context: dict[str, Any]


def codeact(model: BaseChatModel) -> Any:
    def call_model(state: State) -> dict[str, Any]:
        reply = model.invoke(
            [SystemMessage("Answer with Python in a ```python block."), *state["messages"]]
        )
        blocks = re.findall(r"```python\n(.*?)```", str(reply.content), re.DOTALL)
        return {"messages": [reply], "script": "\n".join(b.strip() for b in blocks) or None}

    def sandbox(state: State) -> dict[str, Any]:
        context = {**state.get("context", {}), "get_orders": get_orders}
        output, new_vars = eval_fn(state["script"] or "", context)
        return {"messages": [("user", output)], "context": {**state.get("context", {}), **new_vars}}

    graph = StateGraph(State)
    graph.add_node("call_model", call_model)
    graph.add_node("sandbox", sandbox)
    graph.add_edge(START, "call_model")
    graph.add_conditional_edges("call_model", lambda s: "sandbox" if s["script"] else END)
    graph.add_edge("sandbox", "call_model")
    return graph.compile(name="orders-codeact")


def scripted_model() -> BaseChatModel:
    """Canned replies, with the token counts a provider would report (made up here)."""
    replies = [
        "Let me look at the orders.\n```python\norders = get_orders()\nprint(len(orders))\n```",
        "Now the big ones.\n```python\nbig = [o['id'] for o in orders if o['total'] > 100]\n"
        "print(big)\n```",
        "Only A-1001 is over $100.",
    ]
    usage = [(120, 20), (180, 25), (230, 8)]
    return GenericFakeChatModel(
        messages=iter(
            AIMessage(
                r, usage_metadata={"input_tokens": i, "output_tokens": o, "total_tokens": i + o}
            )
            for r, (i, o) in zip(replies, usage, strict=True)
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="store directory (default ./.codetape)")
    codetape.configure(home=parser.parse_args().home)

    agent = codeact(scripted_model())
    result = agent.invoke(
        {"messages": [("user", TASK)], "script": None, "context": {}},
        config={"callbacks": [CodetapeCallbackHandler()]},
    )
    print(f"answer: {result['messages'][-1].content}")

    run = codetape.Store().runs()[0]
    print(
        f"run {run.id[:12]} ({run.name}): {run.step_count} code actions, {run.llm_calls} model "
        f"calls, {run.input_tokens} input and {run.output_tokens} output tokens"
    )


if __name__ == "__main__":
    main()
