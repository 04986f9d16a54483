"""The viewer's side of the whole trajectory, driven by AppTest over real smolagents
recordings (``tests/trajectory_fixtures``): the Failures page, the Run page's thoughts,
model calls, tokens and timeline lane, and the Compare page's thought diff.

Two stores: the evaluation (30 runs failing three ways whose messages differ only by
ids), and a smaller one where an agent's task, thoughts, model name, outputs and error
carry XSS payloads and a bidi override, recorded with prices so its runs have a cost.
Model text must show as text only, never where Streamlit renders Markdown, and with its
bidi and control characters written as escapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from smolagents import CodeAgent, tool
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

import codetape
from codetape.schemas import FailureGroup, Run
from codetape.testing import capture

from .test_viewer_apptest import (
    IMG,
    LINK,
    SCRIPT,
    assert_inert,
    markdown_texts,
    open_page,
    shown_as_text,
    table,
)
from .trajectory_fixtures import Evaluation, ScriptedModel, record_evaluation

# A right-to-left override: "invoice\u202efdp.exe" reads as "invoiceexe.pdf".
BIDI = "invoice\u202efdp.exe"
BIDI_SHOWN = "invoice\\u202efdp.exe"
HOSTILE = f"{SCRIPT} {IMG} {LINK} {BIDI}"
HOSTILE_SHOWN = f"{SCRIPT} {IMG} {LINK} {BIDI_SHOWN}"
WEATHER_TASK = f"Weather for {HOSTILE}"
HOSTILE_MODEL = f"model {LINK} {BIDI}"
WEATHER_AGENT = "weather_bot"
TIDY_AGENT = "tidy_bot"
# Characters that reorder or hide text: none may reach the page.
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@tool  # type: ignore[untyped-decorator]
def weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city's name
    """
    if city != "Paris":
        raise ValueError(f"no weather for {city}: {HOSTILE}")
    return "sunny"


def hostile_script() -> list[tuple[str, str]]:
    """The failing run: its thought and the error its tool raises (which the model
    reads back) carry the payloads; then it gives up."""
    return [
        (f"Thought: {HOSTILE}", 'w = weather("Pariss")'),
        ("Thought: give up.", "final_answer('no weather')"),
    ]


PASSING_SCRIPT = [
    ("Thought: ask for Paris.", 'w = weather("Paris")'),
    ("Thought: done.", "final_answer(w)"),
]


def weather_agent(script: list[tuple[str, str]], name: str = WEATHER_AGENT) -> Any:
    from codetape.integrations.smolagents import instrument

    model = ScriptedModel(script, model_id=HOSTILE_MODEL)
    return instrument(CodeAgent(tools=[weather], model=model, name=name, verbosity_level=-1))


@dataclass(frozen=True)
class Stores:
    evaluation: Path
    recorded: Evaluation
    hostile: Path
    weather_failed: str
    weather_passed: str


def record_hostile(home: Path) -> tuple[str, str]:
    """Into ``home`` (``capture`` in force): a small evaluation, then the weather agent
    failing with the payloads and passing, and an agent that only passes; with prices.
    The failing and the passing weather runs' ids."""
    codetape.configure(home=home, otlp=False, prices={"*": (2.0, 8.0)})
    record_evaluation(failing=(2, 2, 2), passing=(1, 1, 1))
    weather_agent(hostile_script()).run(WEATHER_TASK)
    weather_agent(PASSING_SCRIPT).run(WEATHER_TASK)
    weather_agent(PASSING_SCRIPT, name=TIDY_AGENT).run("Weather in Paris")
    failed, passed = codetape.Store(home).runs(agent=WEATHER_AGENT)[::-1]
    return failed.id, passed.id


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Stores:
    root = tmp_path_factory.mktemp("trajectory")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        mp.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        with capture(root / "evaluation"):
            recorded = record_evaluation()
        with capture(root / "hostile"):
            failed, passed = record_hostile(root / "hostile")
    return Stores(root / "evaluation", recorded, root / "hostile", failed, passed)


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def evaluation(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> codetape.Store:
    monkeypatch.setenv("CODETAPE_HOME", str(stores.evaluation))
    return codetape.Store(stores.evaluation)


@pytest.fixture
def hostile(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> codetape.Store:
    monkeypatch.setenv("CODETAPE_HOME", str(stores.hostile))
    return codetape.Store(stores.hostile)


# -- helpers ---------------------------------------------------------------------


def group_table(at: AppTest) -> Any:
    return table(at, "failing line")


def links(at: AppTest, start: str) -> list[Any]:
    return [p for p in at.page_link if p.label.startswith(start)]


def open_model_call(at: AppTest, run_id: str, step: int) -> AppTest:
    """Open the step's "Model call" expander, as a click on it does."""
    at.session_state[f"llm:{run_id}:{step}"] = True
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def every_value(at: AppTest) -> str:
    """Every text the page holds: elements, labels and dataframe cells."""
    return "\n".join([*markdown_texts(at), shown_as_text(at)])


@codetape.code_action
def _execute(code: str, namespace: dict[str, Any]) -> None:
    exec(compile(code, "<code action>", "exec"), namespace)


def assert_no_bidi(at: AppTest) -> None:
    shown = every_value(at)
    assert not [c for c in BIDI_CONTROLS if c in shown]


# -- the failures page ---------------------------------------------------------------


def test_failures_page_shows_the_evaluation_as_three_groups(
    stores: Stores, evaluation: codetape.Store
) -> None:
    at = open_page("failures")
    assert at.title[0].value == "Failures"
    assert "3 failure signatures · page 1 of 1" in [c.value for c in at.caption]
    rows = group_table(at)
    expected = stores.recorded.failing  # error type -> failing runs, most first
    assert list(rows["error"]) == list(expected)
    assert list(rows["runs"]) == [str(n) for n in expected.values()]
    assert list(rows["steps"]) == [str(n) for n in expected.values()]
    assert list(rows["group"]) == ["1", "2", "3"]
    assert set(rows["agents"]) == {"orders_bot"}
    assert list(rows["failing line"]) == [
        "result = refund(<str>)",
        "total = sum(o[<str>] for o in orders)",
        "mean = sum(o[<str>] for o in big) / len(big)",
    ]
    assert rows["message"][0].endswith("ValueError: no order <str>")
    assert all(a <= b for a, b in zip(rows["first seen"], rows["last seen"], strict=True))
    assert [m.value for m in at.markdown][:3] == [
        f"**Group {k}** · {n} runs · {n} failing steps · last seen {last}"
        for k, (n, last) in enumerate(zip(expected.values(), rows["last seen"], strict=True), 1)
    ]
    assert_inert(at)


def _newest_failing(store: codetape.Store, task: str | None) -> Run:
    failing = [r for r in store.runs(limit=100) if r.task == task and r.failed_steps]
    return max(failing, key=lambda r: r.started_at)


def test_each_group_links_its_newest_example_and_a_passing_run(evaluation: codetape.Store) -> None:
    at = open_page("failures")
    groups: list[FailureGroup] = evaluation.failures()
    examples = links(at, "Newest example: ")
    compares = links(at, "Compare with a passing run")
    assert len(examples) == len(compares) == 3
    for group, example, compare in zip(groups, examples, compares, strict=True):
        run = evaluation.run(group.example_run)
        assert run.id == _newest_failing(evaluation, run.task).id
        step = evaluation.step(run.id, group.example_step)
        assert step.status != "ok"
        assert example.label == f"Newest example: step {step.index} of run {run.id[:12]}"
        assert example.proto.query_string == f"run={run.id}&step={step.index}"
        assert example.proto.page.endswith("run")
        assert group.passing_run is not None
        passing = evaluation.run(group.passing_run)
        assert (passing.status, passing.failed_steps) == ("ok", 0)
        assert (passing.name, passing.task) == (run.name, run.task)
        assert compare.proto.query_string == f"a={run.id}&b={passing.id}"
        assert compare.proto.page.endswith("compare")


def test_the_example_link_opens_the_failing_step(evaluation: codetape.Store) -> None:
    group = evaluation.failures()[1]  # KeyError: the second step of its run fails
    at = open_page("run", run=group.example_run, step=str(group.example_step))
    [opened] = [e for e in at.expander if e.proto.expanded]
    assert opened.label.startswith(f"✗ Step {group.example_step} · error")
    assert group.example_step == 1


def test_the_compare_link_shows_where_the_failing_run_parted(evaluation: codetape.Store) -> None:
    group = evaluation.failures()[0]  # ValueError: an unknown order id, at step 0
    assert group.passing_run is not None
    at = open_page("compare", a=group.example_run, b=group.passing_run)
    assert [e.value for e in at.error] == ["First divergence: step 0 of A ↔ step 0 of B (pair 0)."]
    assert "The model outputs the two steps' code came from differ." in [
        c.value for c in at.caption
    ]
    [thoughts] = [c.value for c in at.code if "Thought: refund" in c.value]
    assert "-Thought: refund the order.\n+Thought: refund it." in thoughts


@pytest.mark.parametrize(
    ("agent", "errors"),
    [
        (None, {"ValueError": 3, "KeyError": 2, "ZeroDivisionError": 2}),
        ("orders_bot", {"ValueError": 2, "KeyError": 2, "ZeroDivisionError": 2}),
        (WEATHER_AGENT, {"ValueError": 1}),
    ],
)
def test_failures_page_filters_by_agent(
    hostile: codetape.Store, agent: str | None, errors: dict[str, int]
) -> None:
    at = open_page("failures")
    at.selectbox(key="failures-agent").select(agent).run()
    rows = group_table(at)
    shown: dict[str, int] = {}
    for error, runs in zip(rows["error"], rows["runs"], strict=True):
        shown[error] = shown.get(error, 0) + int(runs)
    assert shown == errors
    assert len(rows) == (4 if agent is None else len(errors))


def test_an_agent_without_failures(hostile: codetape.Store) -> None:
    at = open_page("failures")
    at.selectbox(key="failures-agent").select(TIDY_AGENT).run()
    assert [s.value for s in at.success] == ["No failing steps: every recorded step succeeded."]
    assert not at.dataframe


def test_failures_page_of_an_empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODETAPE_HOME", str(tmp_path / "not-yet"))
    at = open_page("failures")
    assert [i.value for i in at.info] == ["No runs yet: nothing has recorded into this store."]
    assert not (tmp_path / "not-yet").exists()
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("CODETAPE_HOME", str(tmp_path / "empty"))
    at = open_page("failures")
    assert [i.value for i in at.info] == [
        "No runs yet: failures show here once agents have recorded runs."
    ]


# -- the run page ----------------------------------------------------------------------


def test_run_page_shows_tokens_model_calls_and_each_steps_thought(
    evaluation: codetape.Store,
) -> None:
    group = evaluation.failures()[1]
    run = evaluation.run(group.example_run)
    calls = evaluation.llm_calls(run.id)
    steps = evaluation.steps(run.id)
    at = open_page("run", run=run.id)
    facts = table(at, "field").set_index("field")["value"]
    assert facts["model calls"] == str(len(calls)) == "3"
    assert facts["tokens"] == f"{run.input_tokens:,} in · {run.output_tokens:,} out"
    assert run.input_tokens == sum(c.input_tokens or 0 for c in calls) > 0
    assert "cost" not in facts  # no prices were configured
    # Every step's thought, as plain text, in order.
    assert [t.value for t in at.text] == [s.thought for s in steps]
    assert steps[1].thought == "Thought: sum the totals."
    # The run's calls, each with the step its code went to.
    rows = table(at, "latency")
    assert list(rows["call"]) == ["0", "1", "2"]
    assert list(rows["step"]) == ["0", "1", "2"]
    assert set(rows["model"]) == {"scripted-model"}
    assert list(rows["tokens"]) == [
        f"{c.input_tokens:,} in · {c.output_tokens:,} out" for c in calls
    ]
    # A closed "Model call" expander per step, loaded only when opened.
    model_calls = [e for e in at.expander if e.label.startswith("Model call")]
    assert [e.label.split(" · ")[0] for e in model_calls] == [f"Model call {k}" for k in range(3)]
    assert model_calls[1].label.startswith(f"Model call 1 · {calls[1].input_tokens:,} in · ")
    assert not any(e.proto.expanded for e in model_calls)
    assert not [c for c in at.code if "New task:" in c.value]
    assert_inert(at)


def test_a_steps_model_call_shows_its_messages_and_output(evaluation: codetape.Store) -> None:
    group = evaluation.failures()[1]
    run_id = group.example_run
    call = evaluation.llm_calls(run_id)[1]
    at = open_model_call(open_page("run", run=run_id, step="1"), run_id, 1)
    facts = {
        r["field"]: r["value"] for t in at.dataframe for r in t.value.to_dict("records")
        if "field" in t.value.columns
    }  # fmt: skip
    assert facts["model"] == "scripted-model"
    assert facts["tokens"] == f"{call.input_tokens:,} in · {call.output_tokens:,} out"
    assert facts["latency"].endswith("ms")
    captions = [c.value for c in at.caption]
    roles = [m.role for m in call.input_messages]
    assert roles[:2] == ["system", "user"]
    assert [c for c in captions if c.startswith("Message ")] == [
        f"Message {k} · {role}" for k, role in enumerate(roles)
    ]
    assert f"Input: {len(roles)} messages" in captions
    codes = [c.value.rstrip("\n") for c in at.code]
    assert "New task:\nTotal of all orders" in codes
    assert call.output in codes
    assert "total = sum(o['amount'] for o in orders)" in call.output
    # The smolagents system prompt holds Markdown links: shown as text only.
    assert any("](https://" in c for c in codes)
    assert_inert(at)


def test_the_timeline_has_a_row_for_model_calls(evaluation: codetape.Store) -> None:
    run_id = evaluation.failures()[0].example_run
    at = open_page("run", run=run_id)
    [chart] = at.get("vega_lite_chart")
    bars = convert_arrow_bytes_to_pandas_df(chart.proto.data.data).to_dict("records")
    assert [(b["lane"], b["what"], b["status"]) for b in bars] == [
        ("model calls", "model call 0 → step 0: scripted-model", "ok"),
        ("model calls", "model call 1 → step 1: scripted-model", "ok"),
        ("code actions", "step 0", "error"),
        ("tool calls", "step 0: refund", "error"),
        ("code actions", "step 1", "ok"),
    ]
    calls = {b["what"]: b for b in bars}
    steps = {b["what"]: b for b in bars if b["lane"] == "code actions"}
    # Each call comes before the step its code went to.
    assert calls["model call 1 → step 1: scripted-model"]["start"] < steps["step 1"]["start"]


# -- hostile model text -----------------------------------------------------------------


def test_model_text_shows_as_text_with_bidi_escaped(
    stores: Stores, hostile: codetape.Store
) -> None:
    run_id = stores.weather_failed
    at = open_model_call(open_page("run", run=run_id, step="0"), run_id, 0)
    shown = shown_as_text(at)
    assert f"Thought: {HOSTILE_SHOWN}" in [t.value for t in at.text]
    assert f"New task:\nWeather for {HOSTILE_SHOWN}" in shown  # the input message
    assert f'Thought: {HOSTILE_SHOWN}\n<code>\nw = weather("Pariss")' in shown  # the output
    assert f"no weather for Pariss: {HOSTILE_SHOWN}" in shown  # the step's error
    facts = table(at, "field").set_index("field")["value"]
    assert facts["task"] == f"Weather for {HOSTILE_SHOWN}"
    assert float(facts["cost"]) > 0  # prices were configured
    model = f"model {LINK} {BIDI_SHOWN}"
    assert model in list(table(at, "latency")["model"])
    bars = convert_arrow_bytes_to_pandas_df(at.get("vega_lite_chart")[0].proto.data.data)
    assert f"model call 0 → step 0: {model}" in list(bars["what"])
    assert_no_bidi(at)
    assert_inert(at)


def test_failures_and_compare_show_hostile_errors_as_text(
    stores: Stores, hostile: codetape.Store
) -> None:
    at = open_page("failures")
    rows = group_table(at)
    [message] = rows[rows["agents"] == WEATHER_AGENT]["message"]
    assert message.startswith("ValueError: no weather for Pariss: <script>alert(<n>)</script>")
    assert "invoice\\u202efdp.exe" in message
    assert f"no weather for Pariss: {HOSTILE_SHOWN}" in shown_as_text(at)  # the example's
    [compare] = [
        p
        for p in links(at, "Compare with a passing run")
        if stores.weather_failed in p.proto.query_string
    ]
    assert compare.proto.query_string == f"a={stores.weather_failed}&b={stores.weather_passed}"
    assert_no_bidi(at)
    assert_inert(at)
    at = open_page("compare", a=stores.weather_failed, b=stores.weather_passed)
    assert f"-Thought: {HOSTILE_SHOWN}" in shown_as_text(at)
    assert_no_bidi(at)
    assert_inert(at)


def test_a_role_frameworks_do_not_use_shows_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any loop's model call (``record_llm_call``): an unknown role and a finish reason
    carry payloads; the role is shown as text under a fixed caption."""
    home = tmp_path / "store"
    with capture(home), codetape.run("loop", task="any loop") as run:
        codetape.record_llm_call(
            model="m",
            messages=[{"role": SCRIPT, "content": LINK}, {"role": "user", "content": "go"}],
            output=f"{IMG}\n```python\nx = 1\n```",
            usage=(5, 2),
            finish_reason=LINK,
        )
        _execute("x = 1", {})
    monkeypatch.setenv("CODETAPE_HOME", str(home))
    at = open_model_call(open_page("run", run=run.id, step="0"), run.id, 0)
    captions = [c.value for c in at.caption]
    assert "Message 0 · role:" in captions
    assert "Message 1 · user" in captions
    assert [t.value for t in at.text] == [IMG, SCRIPT]  # the thought, then the role
    calls = table(at, "latency")
    assert (calls["finish"][0], calls["tokens"][0], calls["step"][0]) == (LINK, "5 in · 2 out", "0")
    [call_facts] = [t.value for t in at.dataframe if "finish" in set(t.value.get("field", []))]
    assert call_facts.set_index("field")["value"]["finish"] == LINK
    assert_inert(at)
