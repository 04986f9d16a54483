"""What OTLP backends get: each span as recorded, plus the GenAI and/or OpenInference
attributes that show a code action's code as its input and its outcome as its output.

The exporter here is the SDK's ``InMemorySpanExporter`` behind codetape's own wiring
(``configure(otlp=..., otlp_conventions=...)``); a second in-memory exporter sees the
spans as recorded, which is what the store keeps.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import codetape
from codetape.errors import ConfigError
from codetape.schemas import attributes as A
from codetape.store.internal import BlobStore
from codetape.tracer import _config, _otlp
from codetape.tracer._fit import Cuttable, fit_json
from codetape.tracer.internal import LlmCallRecorder, recording_to

from .otlp_fixtures import CODE, CONVENTION_NAMES, add, added, execute, record_run, span_key
from .trajectory_fixtures import make_agent

SETTINGS = {
    "genai": ("genai",),
    "openinference": ("openinference",),
    "both": ("genai", "openinference"),
    "none": (),
}
MARKER = "…[{} more characters in codetape]"


class Exported:
    """The spans an OTLP backend got, and the same spans as recorded."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.recorded = InMemorySpanExporter()

    def configure(self, home: Path, conventions: Any = None, **kwargs: Any) -> _config.Runtime:
        rt = codetape.configure(
            home=home, otlp="http://127.0.0.1:9", otlp_conventions=conventions, **kwargs
        )
        rt.provider.add_span_processor(SimpleSpanProcessor(self.recorded))
        return rt

    def spans(self) -> dict[str, ReadableSpan]:
        return {span_key(s.name, s.attributes or {}): s for s in self.exporter.get_finished_spans()}

    def pairs(self) -> Iterator[tuple[str, ReadableSpan, ReadableSpan]]:
        recorded = {s.context.span_id: s for s in self.recorded.get_finished_spans()}
        for key, span in self.spans().items():
            yield key, span, recorded[span.context.span_id]


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Exported:
    """``configure(otlp=...)`` exports to memory instead of a network endpoint."""
    spans = Exported()
    monkeypatch.setattr(
        _config, "_otlp_processor", lambda target: SimpleSpanProcessor(spans.exporter)
    )
    return spans


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_every_exported_attribute_of_each_span_kind(
    exported: Exported, home: Path, setting: str
) -> None:
    exported.configure(home, setting)
    record_run()
    pairs = list(exported.pairs())
    assert sorted(key for key, _, _ in pairs) == [
        "chat", "run", "step 0", "step 1", "step 2", "tool",
    ]  # fmt: skip
    for key, span, recorded in pairs:
        assert attrs(span) == {**attrs(recorded), **added(key, SETTINGS[setting])}, key
        # Everything else is the span as recorded.
        assert (span.name, span.kind, span.parent, span.context) == (
            recorded.name,
            recorded.kind,
            recorded.parent,
            recorded.context,
        )
        assert (span.start_time, span.end_time) == (recorded.start_time, recorded.end_time)
        assert span.status.status_code == recorded.status.status_code
        assert span.status.description == recorded.status.description
        assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
            (e.name, dict(e.attributes or {})) for e in recorded.events
        ]
        assert span.resource == recorded.resource


def test_genai_is_the_default_and_the_environment_can_choose(
    exported: Exported, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert exported.configure(home).otlp_conventions == ("genai",)
    record_run()
    for key, span, recorded in exported.pairs():
        assert attrs(span) == {**attrs(recorded), **added(key, ("genai",))}

    monkeypatch.setenv("CODETAPE_OTLP_CONVENTIONS", "openinference")
    assert exported.configure(home).otlp_conventions == ("openinference",)
    monkeypatch.setenv("CODETAPE_OTLP_CONVENTIONS", "genai,openinference")
    assert exported.configure(home).otlp_conventions == ("genai", "openinference")
    assert exported.configure(home, ["genai"]).otlp_conventions == ("genai",)  # argument wins
    assert exported.configure(home, "none").otlp_conventions == ()


@pytest.mark.parametrize("bad", ["opentelemetry", ["genai", "phoenix"]])
def test_an_unknown_convention_is_a_config_error(home: Path, bad: Any) -> None:
    with pytest.raises(ConfigError, match="is not a convention") as info:
        codetape.configure(home=home, otlp=False, otlp_conventions=bad)
    assert info.value.hint
    assert '"openinference"' in info.value.hint


def test_the_store_keeps_each_span_as_recorded(exported: Exported, home: Path) -> None:
    exported.configure(home, "both")
    run_id = record_run()
    codetape.Store(home).refresh()
    con = duckdb.connect(str(home / "codetape.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT span_id, attributes FROM spans").fetchall()
    finally:
        con.close()
    recorded = {f"{s.context.span_id:016x}": s for s in exported.recorded.get_finished_spans()}
    assert len(rows) == len(recorded) == 6
    for span_id, stored in rows:
        stored = json.loads(stored)
        assert not CONVENTION_NAMES & set(stored)
        assert stored == json.loads(json.dumps(attrs(recorded[span_id])))
    assert [s.code for s in codetape.Store(home).steps(run_id)] == CODE
    assert {attrs(s)[A.GEN_AI_OPERATION_NAME] for s in exported.recorded.get_finished_spans()} == {
        "invoke_agent",
        "chat",
        "execute_code",
        "execute_tool",
    }


def test_otlp_off_or_no_conventions_keep_no_texts(exported: Exported, home: Path) -> None:
    rt = codetape.configure(home=home, otlp=False, otlp_conventions="both")
    assert rt.kept_texts is None
    assert type(rt.blobs) is BlobStore
    rt = exported.configure(home, "none")
    assert rt.kept_texts is None
    assert type(rt.blobs) is BlobStore
    rt = exported.configure(home, "genai")
    assert rt.kept_texts is not None
    assert isinstance(rt.blobs, _otlp.TextKeepingBlobStore)


def test_a_replay_store_exports_with_the_same_conventions(
    exported: Exported, home: Path, tmp_path: Path
) -> None:
    rt = exported.configure(home, "openinference")
    with recording_to(tmp_path / "replays") as other:
        assert other is not rt
        assert other.otlp_conventions == ("openinference",)
        assert other.kept_texts is not None


# -- sizes ---------------------------------------------------------------------------------


def assert_cut(value: str, full: str, limit: int) -> None:
    """``value`` is the start of ``full`` and the marker of what was left out."""
    assert len(value) <= limit
    head, _, omitted = value.rpartition("…[")
    assert value == head + MARKER.format(len(full) - len(head))
    assert full.startswith(head)
    assert omitted.endswith(" more characters in codetape]")
    assert len(head) > limit // 2  # most of the room goes to the text


def test_long_values_are_cut_with_a_marker_and_kept_whole_in_the_store(
    exported: Exported, home: Path
) -> None:
    code = "".join(f"print({i} * 'x')  # line {i}\n" for i in range(2000))
    assert len(code) > 50_000
    exported.configure(home, "both")
    with codetape.run("bot", task="print a lot"):
        execute(code, {})
    [step] = [s for key, s in exported.spans().items() if key == "step 0"]
    step_attrs = attrs(step)
    limit = _otlp.DEFAULT_VALUE_CHARS
    stdout = "".join(f"{i * 'x'}\n" for i in range(2000))

    assert_cut(step_attrs["input.value"], code, limit)
    arguments = step_attrs[A.GEN_AI_TOOL_CALL_ARGUMENTS]
    assert len(arguments) <= limit
    assert_cut(json.loads(arguments)["code"], code, limit)
    for key in ("output.value", A.GEN_AI_TOOL_CALL_RESULT):
        assert len(step_attrs[key]) <= limit
        outcome = json.loads(step_attrs[key])
        assert outcome["status"] == "ok"
        assert_cut(outcome["stdout"], stdout, limit)

    [stored] = codetape.Store(home).steps(codetape.Store(home).runs()[0].id)
    assert stored.code == code
    assert stored.stdout == stdout


def test_the_opentelemetry_length_limit_bounds_every_exported_value(
    exported: Exported, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "300")
    exported.configure(home, "both")
    record_run()
    with codetape.run("bot", task="t" * 5000):
        with LlmCallRecorder("m", [{"role": "system", "content": "s" * 5000}] * 3) as call:
            call.succeeded("o" * 5000)
        execute("x = 1\n" * 1000 + "print('y' * 5000)", {"add": add})
    spans = exported.exporter.get_finished_spans()
    assert len(spans) == 9
    json_values = {
        A.GEN_AI_INPUT_MESSAGES,
        A.GEN_AI_OUTPUT_MESSAGES,
        A.GEN_AI_TOOL_CALL_ARGUMENTS,
        A.GEN_AI_TOOL_CALL_RESULT,
    }
    for span in spans:
        span_attrs = attrs(span)
        for key, value in span_attrs.items():
            if isinstance(value, str):
                assert len(value) <= 300, (span.name, key)
            if key in json_values or (key.endswith(".value") and key.startswith(("in", "out"))):
                mime = span_attrs.get(key.replace(".value", ".mime_type"), "application/json")
                if mime == "application/json":
                    json.loads(value)  # still valid JSON, however cut
    [chat] = [s for s in spans if s.name == "chat m"]
    messages = json.loads(attrs(chat)[A.GEN_AI_INPUT_MESSAGES])
    assert len(messages) == 3  # all three, each cut to a fair share
    assert all(m["parts"][0]["content"].endswith("more characters in codetape]") for m in messages)


def test_a_long_conversation_exports_the_first_and_the_latest_messages(
    exported: Exported, home: Path
) -> None:
    exported.configure(home, "both")
    messages = [{"role": "system", "content": "be brief"}] + [
        {"role": "user" if i % 2 else "assistant", "content": f"message {i}"} for i in range(1, 100)
    ]
    with codetape.run("bot"), LlmCallRecorder("m", messages) as call:
        call.succeeded("ok")
    chat = attrs(exported.spans()["chat"])
    shown = [
        (m["role"], m["parts"][0]["content"]) for m in json.loads(chat["gen_ai.input.messages"])
    ]
    latest = [("user" if i % 2 else "assistant", f"message {i}") for i in range(69, 100)]
    expected = [("system", "be brief"), *latest]
    assert shown == expected
    assert len(shown) == 32
    flattened = [
        (
            chat[f"llm.input_messages.{i}.message.role"],
            chat[f"llm.input_messages.{i}.message.content"],
        )
        for i in range(32)
    ]
    assert flattened == expected
    assert "llm.input_messages.32.message.role" not in chat
    assert chat[A.LLM_INPUT_MESSAGES] == 100  # the span still says how many there were
    assert len(chat) <= 128  # the SDKs' default attribute count limit


def test_a_long_system_prompt_is_cut_and_the_short_messages_stay_whole(
    exported: Exported, home: Path
) -> None:
    exported.configure(home, "both")
    system = "Rules:\n" + "".join(f"{i}. be careful\n" for i in range(3000))
    with codetape.run("bot"):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": "hi"}]
        with LlmCallRecorder("m", messages) as call:
            call.succeeded("hello")
    chat = attrs(exported.spans()["chat"])
    limit = _otlp.DEFAULT_VALUE_CHARS
    genai = json.loads(chat["gen_ai.input.messages"])
    assert len(chat["gen_ai.input.messages"]) <= limit
    assert_cut(genai[0]["parts"][0]["content"], system, limit)
    assert genai[1]["parts"][0]["content"] == "hi"
    assert len(chat["input.value"]) <= limit
    assert_cut(chat["llm.input_messages.0.message.content"], system, limit)
    assert chat["llm.input_messages.1.message.content"] == "hi"


# -- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize("redact", [True, False], ids=["redacted", "redact-off"])
def test_secrets_are_redacted_before_anything_is_exported(
    exported: Exported, home: Path, monkeypatch: pytest.MonkeyPatch, redact: bool
) -> None:
    canary = "Zq8" + "x7Kd" * 9
    openai_key = "sk-" + "A1b2C3d4" * 5
    monkeypatch.setenv("CANARY_API_KEY", canary)
    exported.configure(home, "both", redact=redact)

    @codetape.agent(name="bot")
    def solve(task: str) -> str:
        with LlmCallRecorder("m", [{"role": "system", "content": f"key {openai_key}"}]) as call:
            call.succeeded(f"use {canary}")
        ns: dict[str, Any] = {"add": add}
        execute(f"k = {canary!r}\nprint('key', k, {openai_key!r})\nresult = add(1, b=len(k))", ns)
        with pytest.raises(PermissionError):
            execute(f"raise PermissionError('rejected ' + {canary!r})", ns)
        return f"done with {canary}"

    solve(f"use {canary} and {openai_key}")
    everything = json.dumps(
        [
            (attrs(s), [dict(e.attributes or {}) for e in s.events])
            for s in exported.exporter.get_finished_spans()
        ]
    )
    if not redact:  # the checks below can see a leak
        assert canary in everything
        assert openai_key in everything
        return
    assert canary not in everything
    assert openai_key not in everything
    spans = exported.spans()
    assert "[REDACTED:env:CANARY_API_KEY]" in attrs(spans["step 0"])["input.value"]
    assert "[REDACTED:openai_key]" in attrs(spans["step 0"])["output.value"]
    assert "[REDACTED:openai_key]" in attrs(spans["chat"])["gen_ai.input.messages"]
    assert "[REDACTED:env:CANARY_API_KEY]" in attrs(spans["run"])["output.value"]
    assert "[REDACTED:env:CANARY_API_KEY]" in attrs(spans["step 1"])["output.value"]


# -- degrading without breaking ----------------------------------------------------------------


def test_a_text_no_longer_kept_is_exported_as_its_preview(exported: Exported, home: Path) -> None:
    rt = exported.configure(home, "openinference")
    assert rt.kept_texts is not None
    rt.kept_texts.budget = 1  # keeps only the latest text
    code = "total = 0\n" + "total += 1\n" * 100 + "print(total)"
    with codetape.run("bot"):
        execute(code, {})  # its output is stored after its code: the code is not kept
    step = attrs(exported.spans()["step 0"])
    assert step["input.value"] == step[A.CODE_PREVIEW]
    assert step["input.value"].endswith("…")


def test_a_failure_exports_the_span_as_recorded(
    exported: Exported,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any) -> dict[str, Any]:
        raise RuntimeError("conventions broke")

    monkeypatch.setattr(_otlp, "convention_attributes", broken)
    exported.configure(home, "both")
    with caplog.at_level(logging.WARNING, logger="codetape"):
        record_run()
    for _, span, recorded in exported.pairs():
        assert attrs(span) == attrs(recorded)
    assert "adding the OTLP conventions to a span" in caplog.text


def test_lone_surrogates_are_exported_as_text(exported: Exported, home: Path) -> None:
    exported.configure(home, "both")
    with codetape.run("bot"):
        execute("import os\nprint(os.fsdecode(b'report\\xff.csv'))", {})
    [span] = [s for key, s in exported.spans().items() if key == "step 0"]
    # As text, the surrogate is the six characters \udcff; in JSON, that escape.
    assert '"stdout": "report\\udcff.csv\\n"' in attrs(span)["output.value"]
    assert json.loads(attrs(span)["output.value"])["stdout"] == "report\udcff.csv\n"
    assert attrs(span)[A.STDOUT_PREVIEW] == "report\\udcff.csv\n"
    encode_spans(exported.exporter.get_finished_spans()).SerializeToString()  # OTLP can say it


def test_a_tool_that_raised_has_arguments_and_no_result(exported: Exported, home: Path) -> None:
    @codetape.tool
    def lookup(order: str) -> str:
        raise KeyError(order)

    exported.configure(home, "both")
    with codetape.run("bot"), pytest.raises(KeyError):
        execute("lookup('A-1')", {"lookup": lookup})
    tool = attrs(exported.spans()["tool"])
    assert tool["input.value"] == '{"order": "A-1"}'
    assert tool[A.GEN_AI_TOOL_CALL_ARGUMENTS] == '{"order": "A-1"}'
    assert "output.value" not in tool
    assert A.GEN_AI_TOOL_CALL_RESULT not in tool
    step = json.loads(attrs(exported.spans()["step 0"])["output.value"])
    assert step == {"status": "error", "error": {"type": "KeyError", "message": "'A-1'"}}


# -- the kept texts ------------------------------------------------------------------------------


def test_kept_texts_drop_the_least_recently_used_beyond_their_budget() -> None:
    kept = _otlp.KeptTexts(budget=10, whole=6)
    kept.add("a", "aaaa")
    kept.add("b", "bbbb")
    assert kept.get("a") is not None  # a is now the most recently used
    kept.add("c", "cccc")
    assert [d for d in "abc" if kept.get(d) is not None] == ["a", "c"]
    kept.add("d", "d" * 20)  # longer than `whole`: its start and its length
    found = kept.get("d")
    assert found is not None
    assert (found.text, found.length) == ("dddddd", 20)
    assert len(kept) <= 2


# -- fitting JSON ----------------------------------------------------------------------------

_texts = st.text(st.characters(codec="utf-8"), max_size=400)


@given(
    st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]), _texts), max_size=8),
    st.integers(min_value=1, max_value=3000),
)
def test_fitted_json_fits_stays_valid_and_marks_every_cut(
    messages: list[tuple[str, str]], limit: int
) -> None:
    value = [{"role": role, "content": Cuttable(text)} for role, text in messages]
    fitted = fit_json(value, limit)
    overhead = len(json.dumps([{"role": role, "content": ""} for role, _ in messages]))
    if fitted is None:  # only when there is no room for a marker per message
        assert limit < overhead + len(MARKER.format(10**6)) * len(messages)
        return
    assert len(fitted) <= limit
    back = json.loads(fitted)
    assert [m["role"] for m in back] == [role for role, _ in messages]
    for message, (_, text) in zip(back, messages, strict=True):
        content = message["content"]
        if content != text:
            head = content.rpartition("…[")[0]
            assert text.startswith(head)
            assert content == head + MARKER.format(len(text) - len(head))


# -- sandboxed steps ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::codetape.sandbox.NoIsolationWarning")
def test_a_sandboxed_step_exports_its_code_and_outcome(exported: Exported, home: Path) -> None:
    exported.configure(home, "both")
    limits = codetape.Limits(timeout_s=2)
    with (
        codetape.run("bot"),
        codetape.Sandbox(backend="local", tools=[add], limits=limits) as sandbox,
    ):
        assert sandbox.run("a = add(1, b=5)\nprint('a is', a)\na * 2").status == "ok"
        assert sandbox.run("while True:\n    pass").status == "timeout"
    steps = [attrs(exported.spans()[f"step {i}"]) for i in range(2)]
    assert steps[0][A.STEP_MODE] == "sandboxed"
    assert steps[0]["input.value"] == "a = add(1, b=5)\nprint('a is', a)\na * 2"
    assert json.loads(steps[0]["output.value"]) == {
        "status": "ok",
        "stdout": "a is 6\n",
        "result": "12",
        "result_type": "int",
    }
    assert attrs(exported.spans()["tool"])["output.value"] == "6"
    timed_out = json.loads(steps[1][A.GEN_AI_TOOL_CALL_RESULT])
    assert timed_out["status"] == "timeout"
    assert timed_out["error"]["message"].startswith("the code action ran past its 2s limit")


# -- a real agent framework ----------------------------------------------------------------------


def test_an_instrumented_smolagents_run_exports_its_messages_and_code(
    exported: Exported, home: Path
) -> None:
    exported.configure(home, "both")
    script = [
        ("Thought: refund it.", 'result = refund("A-1001")\nprint(result)'),
        ("Thought: done.", "final_answer(result['status'])"),
    ]
    assert make_agent(script).run("Refund the order") == "refunded"
    spans = exported.exporter.get_finished_spans()
    chats = [attrs(s) for s in spans if s.name.startswith("chat")]
    steps = sorted(
        (attrs(s) for s in spans if s.name == "execute_code"), key=lambda a: a[A.STEP_INDEX]
    )
    assert len(chats) == 2
    assert [s["input.value"] for s in steps] == [code for _, code in script]
    assert json.loads(steps[0][A.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"code": script[0][1]}
    assert "'status': 'refunded'" in json.loads(steps[0]["output.value"])["stdout"]
    for chat, (thought, code) in zip(chats, script, strict=True):
        # smolagents' own system prompt first, the task, then the conversation so far.
        messages = json.loads(chat[A.GEN_AI_INPUT_MESSAGES])
        assert messages[0]["role"] == "system"
        assert any("Refund the order" in m["parts"][0]["content"] for m in messages)
        assert chat["llm.input_messages.0.message.role"] == "system"
        assert (
            chat["llm.output_messages.0.message.content"] == f"{thought}\n<code>\n{code}\n</code>"
        )
        assert chat["llm.model_name"] == "scripted-model"
    # The second call sees the first step's observation.
    second = chats[1]["input.value"]
    assert "refunded" in second
