"""Debugging in the first minute, in the viewer, driven by AppTest over real recordings:
under a failing step's error, the values its failing line reads (``order has keys:
customer, id, total``); nested agents (a smolagents managed agent) linked both ways on
the Run page and shown in the Runs list; the Runs list's link column; and the pages of a
run still being recorded following it until it ends.

The recordings: ``examples/01_decorators.py`` (the orders agent's ``KeyError``), a step
failing on values whose previews and type names carry XSS payloads, Markdown links and
a right-to-left override, and a smolagents ``CodeAgent`` whose managed agent is given a
hostile task. Recorded text must show as text only, with its bidi and control
characters written as escapes.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from smolagents import CodeAgent
from streamlit.testing.v1 import AppTest

import codetape
from codetape.integrations.smolagents import instrument
from codetape.schemas import Run, Step
from codetape.testing import capture
from codetape.viewer import _data

from .test_viewer_apptest import (
    IMG,
    LINK,
    SCRIPT,
    assert_inert,
    facts,
    markdown_texts,
    open_page,
    shown_as_text,
    table,
)
from .test_viewer_trajectory import BIDI, BIDI_CONTROLS, BIDI_SHOWN, HOSTILE, HOSTILE_SHOWN
from .trajectory_fixtures import ScriptedModel, get_orders, refund

EXAMPLE = Path(__file__).parent.parent / "examples" / "01_decorators.py"
HEADING = "The values the failing line reads (as the step left them)"
# The orders agent's failing step, as the Run page shows its values.
ORDERS_VALUES = (
    "refunded: list = []\n"
    "order: dict = {'customer': 'ada', 'id': 'A-1001', 'total': 250.0}\n"
    "    order has keys: customer, id, total"
)
PARENT_TASK = f"Count for {HOSTILE}"
CHILD_TASK = f"count {HOSTILE}"


class Box:
    """A value whose preview, and so the keys read from it, carries the payloads."""

    def __repr__(self) -> str:
        return "{" + repr(HOSTILE) + ": 1, 'id': 2}"

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)


# A class whose very name carries a Markdown link and a script tag.
Hostile = type(f"Ev{LINK}il{SCRIPT}", (), {"__repr__": lambda self: f"{IMG} {BIDI}"})
HOSTILE_CODE = "y = box['order_id'] + thing"
HOSTILE_VALUES = (
    f"box: {__name__}.Box = {{'{HOSTILE_SHOWN}': 1, 'id': 2}}\n"
    f"    box has keys: {HOSTILE_SHOWN}, id\n"
    f"thing: {__name__}.Ev{LINK}il{SCRIPT} = {IMG} {BIDI_SHOWN}"
)


@codetape.code_action
def _execute(code: str, namespace: dict[str, Any]) -> None:
    exec(compile(code, "<code action>", "exec"), namespace)


def pricer() -> Any:
    script = [("Thought: count the orders.", "n = len(get_orders())\nfinal_answer(str(n))")]
    return CodeAgent(
        tools=[get_orders],
        model=ScriptedModel(script, model_id="pricer-model"),
        name="pricer",
        description="Counts the open orders.",
        verbosity_level=-1,
    )


def boss() -> Any:
    """A CodeAgent whose first step calls its managed agent with a hostile task."""
    script = [
        ("Thought: ask the pricer.", f"count = pricer(task={CHILD_TASK!r})\nprint(count)"),
        ("Thought: done.", "final_answer(count)"),
    ]
    return instrument(
        CodeAgent(
            tools=[refund],
            model=ScriptedModel(script, model_id="boss-model"),
            managed_agents=[pricer()],
            name="boss",
            verbosity_level=-1,
        )
    )


@dataclass(frozen=True)
class Recorded:
    """The runs ``record`` made: the orders example's, the hostile values', and the
    nested agents' parent and child."""

    orders: str
    hostile: str
    parent: str
    child: str


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
    return {**env, "CODETAPE_HOME": str(home)}


def record(home: Path) -> Recorded:
    """Into ``home`` (recording configured there): the three kinds of run."""
    subprocess.run([sys.executable, str(EXAMPLE), "--home", str(home)], check=True, env=_env(home))
    (orders,) = codetape.Store(home).runs()
    with codetape.run(f"values {LINK}", task=PARENT_TASK) as hostile, contextlib.suppress(KeyError):
        _execute(HOSTILE_CODE, {"box": Box(), "thing": Hostile()})
    boss().run(PARENT_TASK)
    runs = {r.name: r for r in codetape.Store(home).runs(limit=10)}
    return Recorded(orders.id, hostile.id, runs["boss"].id, runs["pricer"].id)


@dataclass
class Live:
    """A run being recorded, in a context of its own: ``step`` records one more step,
    ``end`` ends it."""

    id: str
    step: Callable[[str], None]
    end: Callable[[], None]


@contextlib.contextmanager
def live_run(name: str = "live-bot") -> Iterator[Live]:
    context = contextvars.Context()
    recorder = context.run(codetape.run, name, "still going")
    context.run(recorder.__enter__)
    namespace: dict[str, Any] = {}
    ended: list[bool] = []

    def end() -> None:
        if not ended:
            ended.append(True)
            context.run(recorder.__exit__, None, None, None)

    try:
        yield Live(recorder.id, lambda code: context.run(_execute, code, namespace), end)
    finally:
        end()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Recorded]]:
    home = tmp_path_factory.mktemp("debugging") / "store"
    with pytest.MonkeyPatch.context() as mp, capture(home):
        mp.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        mp.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        yield home, record(home)


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def runs(recorded: tuple[Path, Recorded], monkeypatch: pytest.MonkeyPatch) -> Recorded:
    monkeypatch.setenv("CODETAPE_HOME", str(recorded[0]))
    return recorded[1]


# -- helpers ---------------------------------------------------------------------


def values_block(at: AppTest) -> str:
    """The code block under the caption that introduces the failing line's values."""
    captions = [c.value for c in at.caption]
    assert captions.count(HEADING) == 1, captions
    [block] = [c.value for c in at.code if c.value.startswith(("order:", "box:", "refunded:"))]
    return str(block)


def links(at: AppTest) -> dict[str, str]:
    """The page's links: label -> query string."""
    return {p.label: p.proto.query_string for p in at.page_link}


def assert_no_bidi(at: AppTest) -> None:
    shown = "\n".join([*markdown_texts(at), shown_as_text(at)])
    assert [c for c in BIDI_CONTROLS if c in shown] == []


# -- 1. the values on the failing line -------------------------------------------


def test_the_failing_steps_values_show_under_its_error(runs: Recorded) -> None:
    at = open_page("run", run=runs.orders)
    codes = [c.value for c in at.code]
    error = codes.index("KeyError: 'order_id'")
    values = codes.index(ORDERS_VALUES)
    assert error < values
    assert "Traceback" in codes[values + 1]  # the traceback comes after them
    assert values_block(at) == ORDERS_VALUES
    assert [c.language for c in at.code if c.value == ORDERS_VALUES] == ["plaintext"]
    assert_inert(at)


def test_only_a_failing_step_shows_values(runs: Recorded) -> None:
    at = open_page("run", run=runs.orders, step="1")
    # Step 1 is open, step 2 (the failing one) is on the page too, closed.
    assert [c.value for c in at.caption].count(HEADING) == 1
    at = open_page("run", run=runs.parent)
    assert HEADING not in [c.value for c in at.caption]


def test_hostile_values_and_type_names_show_as_escaped_text(runs: Recorded) -> None:
    at = open_page("run", run=runs.hostile)
    assert values_block(at) == HOSTILE_VALUES
    assert SCRIPT in values_block(at)  # the payloads are there, as text
    assert_inert(at)
    assert_no_bidi(at)


# -- 2. nested agents ----------------------------------------------------------------


def test_the_parent_run_links_to_the_run_its_tool_call_started(runs: Recorded) -> None:
    at = open_page("run", run=runs.parent)
    found = links(at)
    started = f"Step 0, tool call #0 started: run {runs.child[:12]}"
    in_step = f"Tool call #0 started a run: run {runs.child[:12]}"
    assert found[started] == f"run={runs.child}"
    assert found[in_step] == f"run={runs.child}"
    assert "This run's tool calls started 1 run (nested agents)." in [c.value for c in at.caption]
    assert "parent" not in facts(at)
    tools = table(at, "tool")
    assert list(tools["tool"]) == ["pricer"]
    assert CHILD_TASK.replace(BIDI, BIDI_SHOWN) in tools["arguments"][0]
    assert_inert(at)
    assert_no_bidi(at)


def test_the_child_run_links_back_to_its_parents_step(runs: Recorded) -> None:
    at = open_page("run", run=runs.child)
    back = f"Started by a tool call of step 0 of run {runs.parent[:12]}: open it"
    assert links(at)[back] == f"run={runs.parent}&step=0"
    assert facts(at)["parent"] == f"{runs.parent} step 0"
    assert "count " + HOSTILE_SHOWN in facts(at)["task"]
    assert_inert(at)
    assert_no_bidi(at)
    # The link opens the parent at that step.
    at = open_page("run", run=runs.parent, step="0")
    assert at.expander[0].label.startswith("✓ Step 0")
    assert at.expander[0].proto.expanded


def test_the_runs_list_shows_each_runs_parent(runs: Recorded) -> None:
    at = open_page("runs")
    rows = table(at, "status").set_index("run")
    assert rows.loc[runs.child[:12], "parent"] == f"{runs.parent[:12]} step 0"
    assert rows.loc[runs.parent[:12], "parent"] == ""
    assert rows.loc[runs.orders[:12], "parent"] == ""
    assert_inert(at)


def test_ids_that_are_not_run_ids_link_nowhere(
    runs: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forged store (an imported bundle, say) may hold anything where a parent or a
    child run's id belongs: it shows as text, in no link and no label."""
    forged = f"{LINK}{BIDI}"
    real_run, real_steps, real_outline = _data.run, _data.steps, _data.outline

    def run(run_id: str) -> Run:
        return real_run(run_id).model_copy(update={"parent_run": forged, "parent_step": 0})

    def forge(found: list[Step]) -> list[Step]:
        if not found or found[0].index != 0:
            return found
        calls = [c.model_copy(update={"child_run": forged}) for c in found[0].tool_calls]
        return [found[0].model_copy(update={"tool_calls": calls}), *found[1:]]

    def steps(of: Run, start: int = 0, limit: int | None = None) -> list[Step]:
        return forge(real_steps(of, start, limit))

    monkeypatch.setattr(_data, "run", run)
    monkeypatch.setattr(_data, "steps", steps)
    monkeypatch.setattr(_data, "outline", lambda of: forge(real_outline(of)))
    at = open_page("run", run=runs.parent)
    texts = [t.value for t in at.text]
    assert texts.count(f"{LINK}{BIDI_SHOWN}") == 3  # the parent, and the call twice
    assert not any(forged in p.proto.query_string for p in at.page_link)
    assert_inert(at)
    assert_no_bidi(at)


# -- 3. the runs table's link column -------------------------------------------------


def test_each_row_links_to_its_run_page(runs: Recorded) -> None:
    at = open_page("runs")
    [df] = [d for d in at.dataframe if "status" in d.value.columns]
    rows = df.value
    assert list(rows.columns[:2]) == ["open", "run"]
    assert [href.removeprefix("/run?run=")[:12] for href in rows["open"]] == list(rows["run"])
    assert all(href == f"/run?run={r.id}" for href, r in zip(rows["open"], _listed(), strict=True))
    link = json.loads(df.proto.columns)["open"]
    assert link["type_config"] == {"type": "link", "display_text": "Open"}
    assert link["pinned"] is True
    # The keyboard path stays: ticking a row's box opens the run too.
    row = list(rows["run"]).index(runs.orders[:12])
    at.session_state["runs-table"] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    at.run()
    assert at.title[0].value == "Run"
    assert at.query_params["run"] == runs.orders


def _listed() -> list[Run]:
    return codetape.Store(_data.home()).runs(limit=50)


def test_the_link_column_follows_the_servers_base_path(
    runs: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = st.get_option
    monkeypatch.setattr(
        st, "get_option", lambda name: "/tape/" if name == "server.baseUrlPath" else real(name)
    )
    at = open_page("runs")
    assert table(at, "status")["open"][0].startswith("/tape/run?run=")


# -- 4. runs being recorded ------------------------------------------------------------


def test_pages_follow_a_running_run_until_it_ends(
    runs: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    intervals: list[Any] = []
    real = st.fragment

    def spy(func: Any = None, **options: Any) -> Any:
        intervals.append(options.get("run_every"))
        return real(func, **options)

    monkeypatch.setattr(st, "fragment", spy)
    with live_run() as live:
        live.step("a = 1")
        listing = open_page("runs")
        assert intervals[-1] == 2.0
        rows = table(listing, "status").set_index("run")
        assert (rows.loc[live.id[:12], "status"], rows.loc[live.id[:12], "steps"]) == (
            "running",
            1,
        )
        page = open_page("run", run=live.id)
        assert intervals[-1] == 2.0
        assert "This run is still being recorded: the page follows it." in [
            c.value for c in page.caption
        ]
        assert [e.label.split(" · ")[0] for e in page.expander] == ["✓ Step 0"]
        live.step("b = a + 1")
        page.run()
        assert [e.label.split(" · ")[0] for e in page.expander] == ["✓ Step 0", "✓ Step 1"]
        live.end()
        page.run()
        assert facts(page)["status"] == "ok"
        assert "This run is still being recorded: the page follows it." not in [
            c.value for c in page.caption
        ]
        intervals.clear()
        listing.run()
        assert table(listing, "status").set_index("run").loc[live.id[:12], "status"] == "ok"
        assert intervals == [None]  # nothing running: no timer
