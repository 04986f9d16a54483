"""A store for the SQL tests: real smolagents runs with tools, failures, model calls with
prices, and the cases the worked queries look for (a tool that found nothing followed
by a failing step, code that imports requests, a slow tool)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from smolagents import CodeAgent, tool

import codetape
from codetape.integrations.smolagents import instrument
from tests.trajectory_fixtures import ScriptedModel, record_evaluation

PRICES = {"scripted-model": (1.0, 2.0)}  # per million input and output tokens


@tool  # type: ignore[untyped-decorator]
def search(query: str) -> list[str]:
    """Search the orders.

    Args:
        query: what to look for
    """
    return [] if "nobody" in query else [f"A-1001 ({query})"]


@tool  # type: ignore[untyped-decorator]
def slow_lookup(key: str) -> str:
    """Look a key up in a slow service.

    Args:
        key: the key
    """
    time.sleep(0.02)
    return key.upper()


NOTHING_FOUND = [
    ("Thought: search for it.", 'hits = search("orders of nobody")'),
    ("Thought: take the first.", "first = hits[0]"),
    ("Thought: there is none.", "final_answer('none')"),
]
IMPORTS_REQUESTS = [
    ("Thought: fetch it.", "import requests\npage = requests.get('https://example.com')"),
    ("Thought: no network; look it up.", "note = 'no requests here'\nkey = slow_lookup('a')"),
    ("Thought: done.", "final_answer(key)"),
]


def search_agent(script: list[tuple[str, str]]) -> Any:
    return instrument(
        CodeAgent(
            tools=[search, slow_lookup],
            model=ScriptedModel(script),
            name="search_bot",
            verbosity_level=-1,
        )
    )


def record_sql_store(home: Path) -> None:
    """Seven runs into ``home``: five of orders_bot (three fail a step and recover), two
    of search_bot; model calls priced."""
    codetape.configure(home=home, otlp=False, prices=PRICES)
    record_evaluation(failing=(1, 1, 1), passing=(1, 1, 0))
    search_agent(NOTHING_FOUND).run("Find the orders of nobody")
    search_agent(IMPORTS_REQUESTS).run("Fetch the page")
