"""The Run page's "Replay from here", driven by AppTest: a step and every later step of
the run replayed in one sandbox, one verdict per step in a table, a link to the replay
run; with edited code too ("Replay from here with this code"), where a tool call the
recording has no answer for stops the replay and the steps after it show as not run.

The run is recorded in a local sandbox; a recorded string and an edit carry an XSS
payload, which must show as text only.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import codetape
from codetape.sandbox import NoIsolationWarning
from codetape.testing import capture
from codetape.viewer import APP

pytestmark = pytest.mark.filterwarnings("ignore::codetape.sandbox.NoIsolationWarning")

SCRIPT = "<script>alert(1)</script>"
TIMEOUT = 60
# Where the Run page renders Markdown: no recorded string may reach these.
MARKDOWN_TYPES = frozenset(
    {"markdown", "caption", "title", "header", "subheader", "error", "warning", "info",
     "success", "toast"}
)  # fmt: skip
STEPS = [
    "city = 'paris'\nw = lookup(city)\nprint('temp', w['temp'])",
    f"seen = [city]\nnote = {SCRIPT!r}\nw2 = lookup('rome')\nprint('temps', w['temp'], w2['temp'])",
    "print('seen', seen, len(seen))",
    "print('done')",
]
COLUMN = "reason or first difference"
TOKEN = "launch-token"


def lookup(city: str) -> dict[str, Any]:
    return {"city": city, "temp": 21}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store with one four-step run: its home and the run's id."""
    home = tmp_path_factory.mktemp("viewer-from") / "store"
    with capture(home), pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NoIsolationWarning)
        mp.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        mp.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        with (
            codetape.run("weather-bot", task="temperatures") as run,
            codetape.Sandbox(backend="local", tools=[lookup]) as sandbox,
        ):
            for code in STEPS:
                assert sandbox.run(code).status == "ok"
    return home, run.id


@pytest.fixture
def run_id(recorded: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The run, in a copy of the store (replays add runs), which the viewer reads as
    ``codetape ui --allow-local-exec`` serves it (its token: ``TOKEN``)."""
    home = tmp_path / "store"
    shutil.copytree(recorded[0], home)
    monkeypatch.setenv("CODETAPE_HOME", str(home))
    monkeypatch.setenv("CODETAPE_UI_TOKEN", TOKEN)
    monkeypatch.setenv("CODETAPE_UI_ALLOW_LOCAL_EXEC", "1")
    return recorded[1]


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    st.cache_data.clear()
    st.cache_resource.clear()


def open_run(run_id: str, step: int) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.query_params.update({"run": run_id, "step": str(step), "token": TOKEN})
    at.switch_page("pages/run.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def verdicts(at: AppTest) -> list[tuple[str, str, str]]:
    """(step, verdict, reason or first difference) of each row of the verdict table."""
    [df] = [d.value for d in at.dataframe if COLUMN in d.value.columns]
    return list(zip(df["step"], df["verdict"], df[COLUMN], strict=True))


def markdown_texts(at: AppTest) -> Iterator[str]:
    def nodes(node: Any) -> Iterator[Any]:
        for child in getattr(node, "children", {}).values():
            yield child
            yield from nodes(child)

    for node in nodes(at.main):
        if node.type in MARKDOWN_TYPES:
            yield str(node.value)
        label = getattr(node, "label", None)
        if isinstance(label, str):
            yield label


def replays() -> list[codetape.schemas.Run]:
    """The replay runs in the store the viewer serves (``CODETAPE_HOME``)."""
    runs = codetape.Store(os.environ["CODETAPE_HOME"]).runs(limit=50)
    return [r for r in runs if r.replay_of]


def assert_inert(at: AppTest) -> None:
    for text in markdown_texts(at):
        assert "alert(1)" not in text, text


def test_replay_from_here_shows_one_verdict_per_remaining_step(run_id: str) -> None:
    at = open_run(run_id, 1)
    at.button(key=f"replay-from:{run_id}:1").click().run()

    assert not at.exception, [e.value for e in at.exception]
    assert [s.value for s in at.success] == [
        "Reproduced: all 3 steps from step 1 match the recording."
    ]
    assert verdicts(at) == [("1", "reproduced", ""), ("2", "reproduced", ""),
                            ("3", "reproduced", "")]  # fmt: skip
    assert "Replayed with the local backend: no isolation." in [c.value for c in at.caption]
    # One replay run holds the three steps; the page links to it.
    [replay] = replays()
    assert replay.replay_of == f"{run_id}:1"
    assert replay.step_count == 3
    [link] = [p for p in at.get("page_link") if p.proto.label == "Open the replay run"]
    assert link.proto.query_string == f"run={replay.id}"
    [compare] = [
        p for p in at.get("page_link") if p.proto.label == "Compare the run with its replay"
    ]
    assert compare.proto.query_string == f"a={run_id}&b={replay.id}"
    assert_inert(at)


def test_the_comparison_with_a_replay_from_here_pairs_every_replayed_step(run_id: str) -> None:
    at = open_run(run_id, 1)
    at.button(key=f"replay-from:{run_id}:1").click().run()
    [replay] = replays()
    at.query_params.clear()
    at.query_params.update({"a": run_id, "b": replay.id})
    at.switch_page("pages/compare.py").run()

    assert not at.exception, [e.value for e in at.exception]
    assert [s.value for s in at.success] == ["The runs match step by step."]
    [pairs] = [d.value for d in at.dataframe if "pair" in d.value.columns]
    assert list(zip(pairs["step a"], pairs["step b"], pairs["same"], strict=True)) == [
        ("1", "0", "same"),
        ("2", "1", "same"),
        ("3", "2", "same"),
    ]


def test_replay_from_the_first_and_the_last_step(run_id: str) -> None:
    at = open_run(run_id, 0)
    at.button(key=f"replay-from:{run_id}:0").click().run()
    assert [v[:2] for v in verdicts(at)] == [(str(i), "reproduced") for i in range(4)]

    at.button(key=f"replay-from:{run_id}:3").click().run()
    assert "Reproduced: step 3 matches the recording." in [s.value for s in at.success]
    # The steps whose replays are shown stay open, the linked one too.
    assert [e.proto.expanded for e in at.expander] == [True, False, False, True]


def test_an_edit_carried_through_the_rest_of_the_run(run_id: str) -> None:
    at = open_run(run_id, 1)
    key = f"{run_id}:1"
    at.button(key=f"edit:{key}").click().run()
    at.text_area(key=f"code:{key}").input(STEPS[1].replace("[city]", "[city, city]")).run()
    at.button(key=f"replay-from-edited:{key}").click().run()

    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == [
        "Diverged: 3 of 3 steps from step 1 differ from the recording; the first is step 1."
    ]
    rows = verdicts(at)
    assert [r[:2] for r in rows] == [("1", "diverged"), ("2", "diverged"), ("3", "diverged")]
    assert rows[0][2] == "variable:seen: ['paris'] → ['paris', 'paris']"
    # Step 2 ran its recorded code on the edited list: another output.
    assert rows[1][2] == "stdout: \"seen ['paris'] 1\\n\" → \"seen ['paris', 'paris'] 2\\n\""
    assert "First divergence: step 1" in [c.value for c in at.caption]
    assert any("note: the code was edited" in t.value for t in at.text)
    assert_inert(at)


def test_an_edit_asking_a_tool_something_new_stops_and_the_rest_is_not_run(
    run_id: str,
) -> None:
    at = open_run(run_id, 1)
    key = f"{run_id}:1"
    at.button(key=f"edit:{key}").click().run()
    edited = STEPS[1].replace("lookup('rome')", f"lookup({SCRIPT!r})")
    at.text_area(key=f"code:{key}").input(edited).run()
    at.button(key=f"replay-from-edited:{key}").click().run()

    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == ["Diverged: step 1 differs from the recording."]
    assert [w.value for w in at.warning] == [
        "The replay stopped at step 1: steps 2 to 3 did not run."
    ]
    assert verdicts(at) == [
        ("1", "diverged", f"no recorded answer for lookup({SCRIPT!r})"),
        ("2", "not run", ""),
        ("3", "not run", ""),
    ]
    assert_inert(at)
