"""The Streamlit viewer, driven by AppTest against a store of real recordings: observed
runs (@code_action), a local-sandbox run with a tool call and a failing step, a replay,
a long run, an incomplete run and a run still being recorded. Recorded strings carry
XSS payloads, which must show as text and never reach an element that renders Markdown.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from click.testing import CliRunner
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

import codetape
from codetape.cli import cli
from codetape.sandbox import NoIsolationWarning
from codetape.testing import capture
from codetape.viewer import APP, _data, url

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
LINK = "[x](javascript:alert(1))"
PAYLOADS = (SCRIPT, IMG, LINK)
TIMEOUT = 60

# Elements whose text Streamlit renders as Markdown, and so must never hold a
# recorded string. Every label (buttons, expanders, tabs, links, widgets) counts too.
MARKDOWN_TYPES = frozenset(
    {"markdown", "caption", "title", "header", "subheader", "error", "warning", "info",
     "success", "latex", "toast"}
)  # fmt: skip

FAILING = [
    "orders = [{'id': 'A', 'total': 120}, {'id': 'B', 'total': 5}]",
    "big = [o for o in orders if o['total'] > 100]\nprint(len(big))",
    "ids = [o['order_id'] for o in big]",
    "print('done')",
]
FIXED = [*FAILING[:2], "ids = [o['id'] for o in big]", "print('done')"]
SANDBOXED = [
    f"note = {SCRIPT!r}\nw = lookup({IMG!r})\nprint({LINK!r})",
    "note = note + '!'\nz = [1, 2]\nprint(z[5])",
]
BIG_STDOUT = 30_000
LONG_STEPS = 45
TOKEN = "launch-token"


@dataclass(frozen=True)
class Tape:
    home: Path
    failing: str
    fixed: str
    sandboxed: str
    replay: str
    long: str
    incomplete: str
    live: str
    bulk: list[str]
    add_live_step: Callable[[str], None]


@codetape.code_action
def _execute(code: str, namespace: dict[str, Any]) -> None:
    exec(compile(code, "<code action>", "exec"), namespace)


def _record(name: str, snippets: list[str], task: str = "diff me") -> str:
    namespace: dict[str, Any] = {}
    with codetape.run(name, task=task) as run:
        for code in snippets:
            with contextlib.suppress(Exception):
                _execute(code, namespace)
        run.final_answer = "finished"
    return run.id


def lookup(city: str) -> dict[str, Any]:
    return {"city": city, "temp": 21}


def _record_sandboxed() -> str:
    with codetape.run(f"sandboxed {LINK}", task=f"weather for {SCRIPT}") as run:
        with pytest.warns(NoIsolationWarning):
            sandbox = codetape.Sandbox(backend="local", tools=[lookup])
        with sandbox:
            for code in SANDBOXED:
                sandbox.run(code)
        run.final_answer = IMG
    return run.id


def _record_incomplete(home: Path) -> str:
    child = Path(__file__).parent / "_child_record.py"
    result = subprocess.run(
        [sys.executable, str(child), "killed-bot", "2", "--kill"],
        capture_output=True, text=True, timeout=TIMEOUT,
        env={**_child_env(), "CODETAPE_HOME": str(home)},
    )  # fmt: skip
    assert result.returncode < 0, result.stderr
    return result.stdout.split("RUN_ID=")[1].split()[0]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    """One store for the module. Tests that replay work on a copy (``copy_of``)."""
    home = tmp_path_factory.mktemp("viewer") / "store"
    with pytest.MonkeyPatch.context() as mp, capture(home):
        mp.setenv("CODETAPE_HOME", str(home))
        mp.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        mp.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        bulk = [_record("bulk", [f"n = {i}"], task=f"bulk {i}") for i in range(55)]
        failing, fixed = _record("orders", FAILING), _record("orders", FIXED)
        long = _record(
            "long",
            [f"v = {i}\nprint('step {i}')" for i in range(LONG_STEPS)][:30]
            + [f"print('x' * {BIG_STDOUT})"]
            + [f"v = {i}" for i in range(31, LONG_STEPS)],
        )
        sandboxed = _record_sandboxed()
        with pytest.warns(NoIsolationWarning):
            report = codetape.replay(sandboxed, 0)
        assert report.verdict == "reproduced", report
        assert report.replay_run_id is not None
        incomplete = _record_incomplete(home)
        # A run still being recorded: entered in a context of its own, ended at teardown.
        live_context = contextvars.Context()
        recorder = live_context.run(codetape.run, "live-bot", "still going")
        live_context.run(recorder.__enter__)
        namespace: dict[str, Any] = {}

        def add_live_step(code: str) -> None:
            live_context.run(_execute, code, namespace)

        add_live_step("a = 1")
        try:
            yield Tape(home, failing, fixed, sandboxed, report.replay_run_id, long,
                       incomplete, recorder.id, bulk, add_live_step)  # fmt: skip
        finally:
            live_context.run(recorder.__exit__, None, None, None)


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def viewer_home(tape: Tape, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CODETAPE_HOME", str(tape.home))
    return tape.home


@pytest.fixture
def copy_of(tape: Tape, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the store for tests that add runs (the live run is incomplete there),
    served as ``codetape ui --allow-local-exec`` would (its token: ``TOKEN``)."""
    home = tmp_path / "store"
    shutil.copytree(tape.home, home)
    monkeypatch.setenv("CODETAPE_HOME", str(home))
    monkeypatch.setenv("CODETAPE_UI_TOKEN", TOKEN)
    monkeypatch.setenv("CODETAPE_UI_ALLOW_LOCAL_EXEC", "1")
    return home


# -- helpers ---------------------------------------------------------------------


def open_page(page: str, **params: str) -> AppTest:
    """The app (app.py, with its st.navigation) opened on ``page`` with ``params``."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    if page != "runs":
        at.query_params.update(params)
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _nodes(node: Any) -> Iterator[Any]:
    for child in getattr(node, "children", {}).values():
        yield child
        yield from _nodes(child)


def _page(at: AppTest) -> Iterator[Any]:
    yield from _nodes(at.main)
    yield from _nodes(at.sidebar)


def markdown_texts(at: AppTest) -> list[str]:
    """Everything on the page that Streamlit renders as Markdown."""
    texts = []
    for node in _page(at):
        if node.type in MARKDOWN_TYPES:
            texts.append(str(node.value))
        label = getattr(node, "label", None) if hasattr(node, "type") else None
        if isinstance(label, str):
            texts.append(label)
    return texts


def shown_as_text(at: AppTest) -> str:
    """Everything shown as code, text or dataframe cells."""
    parts = [c.value for c in at.code] + [t.value for t in at.text]
    parts += [df.value.to_csv() for df in at.dataframe]
    return "\n".join(parts)


def assert_inert(at: AppTest) -> None:
    for node in _page(at):
        assert node.type != "html"
        assert not getattr(getattr(node, "proto", None), "allow_html", False), node
    for text in markdown_texts(at):
        for payload in PAYLOADS:
            assert payload not in text, (payload, text)


def table(at: AppTest, column: str) -> Any:
    """The first dataframe with ``column``."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


def tables(at: AppTest, column: str) -> list[Any]:
    return [df.value for df in at.dataframe if column in df.value.columns]


def facts(at: AppTest) -> dict[str, str]:
    return dict(zip(table(at, "field")["field"], table(at, "field")["value"], strict=True))


def labelled(widgets: Any, label: str) -> Any:
    return next(w for w in widgets if w.label == label)


# -- deep links --------------------------------------------------------------------


def test_url_builds_deep_links() -> None:
    assert url() == "http://127.0.0.1:8501/"
    assert url(run="ab12", step=2) == "http://127.0.0.1:8501/run?run=ab12&step=2"
    assert url(run="ab12") == "http://127.0.0.1:8501/run?run=ab12"
    assert url("http://h:9/", a="x", b="y") == "http://h:9/compare?a=x&b=y"
    assert url(step=3, a="x") == "http://127.0.0.1:8501/compare?a=x"


# -- runs page -----------------------------------------------------------------------


def test_runs_page_lists_every_run_newest_first_with_its_status(
    tape: Tape, viewer_home: Path
) -> None:
    at = open_page("runs")
    store = codetape.Store(viewer_home)
    total = store.count_runs()
    assert at.caption[0].value.startswith(f"{total} runs · page 1 of 2")
    rows = table(at, "status")
    assert len(rows) == 50
    assert list(rows["run"]) == [r.id[:12] for r in store.runs(limit=50)]
    by_id = dict(zip(rows["run"], rows["status"], strict=True))
    assert by_id[tape.live[:12]] == "running"
    assert by_id[tape.incomplete[:12]] == "incomplete"
    assert by_id[tape.sandboxed[:12]] == "ok"
    shown = rows.set_index("run")
    assert shown.loc[tape.sandboxed[:12], "failed"] == 1
    assert shown.loc[tape.sandboxed[:12], "steps"] == 2
    assert shown.loc[tape.sandboxed[:12], "task"] == f"weather for {SCRIPT}"
    assert shown.loc[tape.replay[:12], "replay of"] == f"{tape.sandboxed[:12]} step 0"
    assert shown.loc[tape.live[:12], "duration"] == "running"
    assert_inert(at)


def test_runs_page_pages_through_every_run(tape: Tape, viewer_home: Path) -> None:
    total = codetape.Store(viewer_home).count_runs()
    at = open_page("runs")
    first = set(table(at, "status")["run"])
    at.pagination[0].select(2).run()
    second = set(table(at, "status")["run"])
    assert at.caption[0].value.startswith(f"{total} runs · page 2 of 2")
    assert len(second) == total - 50
    assert not first & second
    assert {r[:12] for r in tape.bulk} <= first | second


@pytest.mark.parametrize(
    ("status", "agent", "search", "expected"),
    [
        ("error", None, "", set()),
        ("incomplete", None, "", {"incomplete"}),
        ("running", None, "", {"live"}),
        ("failed", None, "", {"failing", "sandboxed", "incomplete"}),
        (None, "orders", "", {"failing", "fixed"}),
        (None, None, "order_id", {"failing"}),
        (None, None, "ONERROR", {"sandboxed", "replay"}),
        ("failed", "orders", "", {"failing"}),
    ],
)
def test_runs_page_filters_by_status_agent_and_text(
    tape: Tape,
    viewer_home: Path,
    status: str | None,
    agent: str | None,
    search: str,
    expected: set[str],
) -> None:
    at = open_page("runs")
    at.selectbox(key="filter-status").select(status)
    at.selectbox(key="filter-agent").select(agent)
    at.text_input(key="filter-search").input(search)
    at.run()
    names = {getattr(tape, n): n for n in ("failing", "fixed", "sandboxed", "replay",
                                            "incomplete", "live")}  # fmt: skip
    if not expected:
        assert [i.value for i in at.info] == ["No runs match."]
        return
    shown = {names[i] for r in table(at, "status")["run"] for i in names if i[:12] == r}
    assert shown == expected
    assert at.caption[0].value.startswith(f"{len(expected)} runs · page 1 of 1")


def test_a_search_counts_runs_up_to_a_bound(
    tape: Tape, viewer_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_data, "SEARCH_COUNT_AT_MOST", 10)
    at = open_page("runs")
    at.text_input(key="filter-search").input("bulk").run()
    assert at.caption[0].value.startswith("10+ runs · page 1 of ")
    assert len(table(at, "status")) == 50  # the page is whole: 55 runs match
    at.text_input(key="filter-search").input("bulk 7").run()
    assert at.caption[0].value.startswith("1 runs · page 1 of 1 ")


def test_agent_filter_lists_agents_as_plain_options(tape: Tape, viewer_home: Path) -> None:
    at = open_page("runs")
    options = at.selectbox(key="filter-agent").options
    assert f"sandboxed {LINK}" in options
    assert "orders" in options
    assert_inert(at)


def test_selecting_a_run_opens_its_run_page(tape: Tape, viewer_home: Path) -> None:
    at = open_page("runs")
    row = list(table(at, "status")["run"]).index(tape.failing[:12])
    at.session_state["runs-table"] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    at.run()
    assert at.title[0].value == "Run"
    assert at.query_params["run"] == tape.failing
    assert facts(at)["run"] == tape.failing


def test_runs_page_refreshes_itself_only_while_a_run_is_recorded(
    tape: Tape, viewer_home: Path, monkeypatch: pytest.MonkeyPatch, copy_of: Path
) -> None:
    intervals: list[Any] = []
    real = st.fragment

    def spy(func: Any = None, **options: Any) -> Any:
        intervals.append(options.get("run_every"))
        return real(func, **options)

    monkeypatch.setattr(st, "fragment", spy)
    # In the copy, nobody holds the live run's spool: it ended as incomplete.
    at = open_page("runs")
    assert intervals == [None]
    monkeypatch.setenv("CODETAPE_HOME", str(tape.home))
    at.run()
    assert intervals[-1] == 2.0
    steps_before = table(at, "status").set_index("run").loc[tape.live[:12], "steps"]
    tape.add_live_step("b = 2")
    at.run()
    rows = table(at, "status").set_index("run")
    assert rows.loc[tape.live[:12], "steps"] == steps_before + 1
    assert rows.loc[tape.live[:12], "status"] == "running"
    # The run page of a run being recorded follows it too.
    at = open_page("run", run=tape.live)
    assert intervals[-1] == 2.0
    assert "This run is still being recorded: the page follows it." in [c.value for c in at.caption]
    assert facts(at)["status"] == "running"


def test_runs_page_of_an_empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("CODETAPE_HOME", str(tmp_path / "empty"))
    at = open_page("runs")
    assert [i.value for i in at.info] == ["No runs match."]
    assert at.caption[0].value.startswith("0 runs · page 1 of 1")
    assert not at.pagination


def test_a_store_nothing_recorded_into_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "not-yet"
    monkeypatch.setenv("CODETAPE_HOME", str(home))
    at = open_page("runs")
    assert [i.value for i in at.info] == ["No runs yet: nothing has recorded into this store."]
    assert [c.value for c in at.code] == [str(home)]
    at = open_page("run")
    assert [i.value for i in at.info] == ["Pick a run, or open one from the Runs page."]
    assert not home.exists()  # reading creates no store


# -- run page ------------------------------------------------------------------------


def test_run_page_shows_the_run_its_timeline_and_its_failing_step(
    tape: Tape, viewer_home: Path
) -> None:
    at = open_page("run", run=tape.sandboxed[:10])
    assert at.query_params["run"] == tape.sandboxed  # the prefix became the id
    fields = facts(at)
    assert fields["run"] == tape.sandboxed
    assert fields["task"] == f"weather for {SCRIPT}"
    assert fields["status"] == "ok"
    assert fields["final answer"] == IMG
    assert fields["sandbox"].startswith("local, no isolation")
    assert fields["steps"] == "2 (1 failed)"

    [chart] = at.get("vega_lite_chart")
    assert json.loads(chart.proto.spec)["mark"]["type"] == "bar"
    bars = convert_arrow_bytes_to_pandas_df(chart.proto.data.data).to_dict("records")
    assert [(b["lane"], b["what"]) for b in bars] == [
        ("code actions", "step 0"),
        ("tool calls", "step 0: lookup"),
        ("code actions", "step 1"),
    ]
    assert [b["status"] for b in bars] == ["ok", "ok", "error"]

    [ok, failed] = at.expander
    assert ok.label.startswith("✓ Step 0 · ok")
    assert ok.label.endswith("1 tool call")
    assert failed.label.startswith("✗ Step 1 · error")
    assert failed.proto.expanded
    assert not ok.proto.expanded
    codes = {c.value.rstrip("\n"): c for c in at.code}
    assert codes[SANDBOXED[1]].proto.show_line_numbers
    assert "Failing line: line 3 (from the traceback)." in [c.value for c in at.caption]
    assert "3: print(z[5])" in codes
    assert "IndexError: list index out of range" in codes
    assert any('File "<code action>", line 3' in c for c in codes)
    assert LINK in codes  # stdout of step 0

    [tools] = tables(at, "tool")  # step 1 has none: a caption says so
    assert list(tools["tool"]) == ["lookup"]
    assert json.loads(tools["arguments"][0]) == {"city": IMG}
    assert json.loads(tools["result"][0]) == {"city": IMG, "temp": 21}
    variables = tables(at, "change")[1].set_index("name")
    assert variables.loc["note", "change"] == "● changed"
    assert variables.loc["note", "before"] == repr(SCRIPT)
    assert variables.loc["note", "after"] == repr(SCRIPT + "!")
    assert variables.loc["z", "change"] == "● added"
    assert variables.loc["w", "change"] == ""
    assert list(variables.index[:2]) == ["note", "z"]  # changed ones first
    sandbox = dict(zip(*tables(at, "field")[1].T.values, strict=True))
    assert sandbox["backend"] == "local"
    assert sandbox["python"]
    assert [b.label for b in at.button] == [
        "Replay this step",
        "Replay from here",
        "Edit and replay",
    ] * 2
    assert_inert(at)


def test_run_page_step_param_opens_that_step_on_its_page(tape: Tape, viewer_home: Path) -> None:
    at = open_page("run", run=tape.long, step="33")
    assert at.pagination[0].value == 2
    assert at.pagination[0].num_pages == 3
    labels = [e.label.split(" · ")[0] for e in at.expander]
    assert labels == [f"✓ Step {i}" for i in range(20, 40)]
    assert [e.proto.expanded for e in at.expander].count(True) == 1
    assert at.expander[13].proto.expanded
    at.pagination[0].select(3).run()
    assert [e.label.split(" · ")[0] for e in at.expander] == [
        f"✓ Step {i}" for i in range(40, LONG_STEPS)
    ]


def test_run_page_cuts_big_output_and_shows_all_on_request(tape: Tape, viewer_home: Path) -> None:
    at = open_page("run", run=tape.long, step="30")
    [big] = [c for c in at.code if c.value.startswith("xxxx")]
    assert len(big.value) == 20_000
    toggle = labelled(at.toggle, f"Show all {BIG_STDOUT + 1:,} characters")
    toggle.set_value(True).run()
    [big] = [c for c in at.code if c.value.startswith("xxxx")]
    assert big.value.rstrip("\n") == "x" * BIG_STDOUT


def test_run_page_without_a_run_offers_a_picker(tape: Tape, viewer_home: Path) -> None:
    at = open_page("run")
    picker = labelled(at.selectbox, "Open a run")
    picker.select(tape.fixed).run()
    assert at.query_params["run"] == tape.fixed
    assert facts(at)["run"] == tape.fixed


def test_run_page_says_when_the_link_names_no_run(tape: Tape, viewer_home: Path) -> None:
    at = open_page("run", run=LINK)
    assert [e.value for e in at.error] == ["The link names no run of this store."]
    assert LINK in at.text[0].value
    assert_inert(at)


def test_replay_button_shows_the_verdict_in_place(tape: Tape, copy_of: Path) -> None:
    at = open_page("run", run=tape.sandboxed, step="0", token=TOKEN)
    with pytest.warns(NoIsolationWarning):
        at.button(key=f"replay:{tape.sandboxed}:0").click().run()
    assert not at.exception, at.exception
    assert "Reproduced: the replay matches the recording." in [s.value for s in at.success]
    assert "Replayed with the local backend: no isolation." in [c.value for c in at.caption]
    compare = labelled(at.page_link, "Compare the run with its replay")
    replays = [r for r in codetape.Store(copy_of).runs(limit=200) if r.replay_of]
    newest = max(replays, key=lambda r: r.started_at)
    assert newest.replay_of == f"{tape.sandboxed}:0"
    assert compare.proto.query_string == f"a={tape.sandboxed}&b={newest.id}"
    assert_inert(at)


def test_edit_and_replay_runs_the_edited_code(tape: Tape, copy_of: Path) -> None:
    at = open_page("run", run=tape.sandboxed, step="0", token=TOKEN)
    key = f"{tape.sandboxed}:0"
    at.button(key=f"edit:{key}").click().run()
    area = at.text_area(key=f"code:{key}")
    assert area.value == SANDBOXED[0]
    area.input(SANDBOXED[0].replace(repr(LINK), f"'edited {SCRIPT}'")).run()
    with pytest.warns(NoIsolationWarning):
        at.button(key=f"replay-edited:{key}").click().run()
    assert not at.exception, at.exception
    assert "Diverged: the replay differs from the recording." in [e.value for e in at.error]
    assert "note: the code was edited" in at.text[0].value
    [diff] = [c.value for c in at.code if c.language == "diff"]
    assert f"-{LINK}" in diff
    assert f"+edited {SCRIPT}" in diff
    differences = table(at, "recorded")
    assert list(differences["field"]) == ["stdout"]
    assert_inert(at)


# -- compare page --------------------------------------------------------------------


def test_compare_page_marks_the_first_divergence(tape: Tape, viewer_home: Path) -> None:
    at = open_page("compare", a=tape.failing[:8], b=tape.fixed)
    assert at.query_params["a"] == tape.failing  # a prefix resolves to the full id
    assert [e.value for e in at.error] == ["First divergence: step 2 of A ↔ step 2 of B (pair 2)."]
    pairs = table(at, "pair")
    assert list(pairs["same"]) == ["same", "same", "differs", "differs"]
    assert list(pairs["first divergence"]) == ["", "", "◀ here", ""]
    assert list(pairs["status a"]) == ["ok", "ok", "error", "ok"]
    assert labelled(at.selectbox, "Pair").value == 2
    [code_diff] = [c.value for c in at.code if "order_id" in c.value]
    assert "-ids = [o['order_id'] for o in big]" in code_diff
    assert "+ids = [o['id'] for o in big]" in code_diff
    errors = table(at, "side").set_index("side")
    assert errors.loc["A", "error"].startswith("KeyError: ")
    assert errors.loc["B", "status"] == "ok"
    variables = table(at, "variable")
    assert list(variables["variable"]) == ["ids"]
    assert variables["difference"][0] == "only in B"
    links = [p.proto.query_string for p in at.page_link]
    assert f"run={tape.failing}&step=2" in links
    assert f"run={tape.fixed}&step=2" in links
    labelled(at.selectbox, "Pair").select(0).run()
    assert "Same code." in [c.value for c in at.caption]


def test_compare_a_run_against_its_replay(tape: Tape, viewer_home: Path) -> None:
    at = open_page("compare", a=tape.sandboxed)
    link = labelled(at.page_link, f"Compare with its replay {tape.replay[:12]}")
    assert link.proto.query_string == f"a={tape.sandboxed}&b={tape.replay}"
    at.query_params["b"] = tape.replay
    at.run()
    assert "B replays step 0 of A: only that step of A is compared." in [
        c.value for c in at.caption
    ]
    assert [s.value for s in at.success] == ["The runs match step by step."]
    assert list(table(at, "pair")["step a"]) == ["0"]
    assert_inert(at)


def test_compare_pickers_write_the_query_params(tape: Tape, viewer_home: Path) -> None:
    at = open_page("compare")
    assert [i.value for i in at.info] == ["Pick two runs, or a run and one of its replays."]
    labelled(at.selectbox, "Run A").select(tape.sandboxed).run()
    labelled(at.selectbox, "Run B").select(tape.failing).run()
    assert (at.query_params["a"], at.query_params["b"]) == (tape.sandboxed, tape.failing)
    assert at.error[0].value.startswith("First divergence")
    shown = shown_as_text(at)
    assert SCRIPT in shown  # the payloads are there, as text
    assert LINK in shown
    assert_inert(at)


def test_every_page_shows_payloads_as_text_only(tape: Tape, viewer_home: Path) -> None:
    for page, params in (
        ("runs", {}),
        ("run", {"run": tape.sandboxed, "step": "0"}),
        ("run", {"run": tape.replay}),
        ("compare", {"a": tape.sandboxed, "b": tape.replay}),
    ):
        at = open_page(page, **params)
        shown = shown_as_text(at)
        assert any(p in shown for p in PAYLOADS), page
        assert_inert(at)


# -- codetape ui -----------------------------------------------------------------


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str]]]:
    calls: list[tuple[list[str], dict[str, str]]] = []

    def execve(path: str, command: list[str], env: dict[str, str]) -> None:
        assert path == command[0]
        calls.append((command, env))

    monkeypatch.setattr("codetape.cli._view.os.execve", execve)
    return calls


def test_ui_serves_the_app_on_loopback_and_prints_the_url(
    launched: list[tuple[list[str], dict[str, str]]], tmp_path: Path
) -> None:
    result = CliRunner().invoke(cli, ["ui", "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [(command, env)] = launched
    token = env["CODETAPE_UI_TOKEN"]
    assert len(token) >= 32
    assert f"http://127.0.0.1:8501/?token={token}" in result.output
    assert command == [
        sys.executable, "-m", "codetape.viewer._server",
        "--server.address", "127.0.0.1", "--server.port", "8501",
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
    ]  # fmt: skip
    assert env["CODETAPE_HOME"] == str(tmp_path.absolute())
    assert "CODETAPE_UI_ALLOW_LOCAL_EXEC" not in env
    assert "warning" not in result.output


def test_ui_binds_elsewhere_only_when_told_and_warns(
    launched: list[tuple[list[str], dict[str, str]]], tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        cli, ["--home", str(tmp_path), "ui", "--host", "0.0.0.0", "--port", "9000"]
    )
    assert result.exit_code == 0, result.output
    assert "http://0.0.0.0:9000/" in result.output
    assert "warning: binding 0.0.0.0" in result.output
    [(command, env)] = launched
    assert command[command.index("--server.address") + 1] == "0.0.0.0"
    assert command[command.index("--server.port") + 1] == "9000"
    assert env["CODETAPE_HOME"] == str(tmp_path.absolute())


def test_ui_without_streamlit_says_how_to_install(
    launched: list[tuple[list[str], dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        "codetape.cli._view.importlib.util.find_spec",
        lambda name, *a: None if name == "streamlit" else real(name, *a),
    )  # fmt: skip
    result = CliRunner().invoke(cli, ["ui"])
    assert result.exit_code == 2
    assert "the viewer needs Streamlit" in result.output
    assert "pip install 'codetape[viewer]'" in result.output
    assert launched == []
