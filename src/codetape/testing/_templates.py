"""Templates: each kind of step and run end a builder needs, recorded once for real.

A template is recorded through codetape's own tracer (``codetape.run``,
``@codetape.code_action``, ``record_tool_call``) into a scratch store, and its span and
blob records are read back from the spool. The builder then writes copies of them with
new ids, times, code, output, agent names, tasks and final answers, so every other
attribute, event and status is exactly what the tracer writes. Before a template is
used, the fields the builder rewrites are checked against what the tracer wrote for the
template itself: if the tracer starts recording them differently, building fails
instead of quietly writing a store that no longer looks real.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import io
import json
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._format import MESSAGE_CHARS, TEXT_PREVIEW_CHARS, cut
from ..schemas import attributes as A
from ..store.internal import digest_of, done_dir, live_dir
from ..tracer import code_action, run
from ..tracer.internal import record_tool_call
from ._capture import capture
from ._specs import RunSpec, StepSpec

__all__ = ["TEMPLATES", "Blobs", "RunTemplate", "SpanTemplate", "StepTemplate", "Templates"]

_AGENT = "codetape-template"
_TASK = "a template task"
# Longer than the previews, so the checks below see how the tracer cuts them.
_CODE = "# a template step: the builder writes each step's own code here\n" + "pass\n" * 50
_STDOUT = "template output\n" * 20
_ANSWER = "a template answer. " * 120
_RUN_ERROR = RuntimeError("the agent stopped")
_RUN_OK = "ok"


def _mismatch(what: str) -> AssertionError:
    return AssertionError(
        f"codetape.testing: the tracer records {what} differently from how the store "
        "builder writes it; update codetape/testing/_templates.py and _builder.py"
    )


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise _mismatch(what)


@dataclass(frozen=True)
class SpanTemplate:
    """A span record as the tracer wrote it, with its times relative to its start."""

    record: dict[str, Any]
    duration: int | None  # None for a run's start record, which has no end
    events: tuple[int, ...]  # each event's distance to the span's end

    @classmethod
    def of(cls, record: dict[str, Any]) -> SpanTemplate:
        start, end = record["start_ns"], record["end_ns"]
        events = tuple((end or start) - e["ts"] for e in record["events"])
        return cls(record, None if end is None else end - start, events)

    def stamp(
        self,
        ids: tuple[str, str, str | None],
        start_ns: int,
        attributes: dict[str, Any],
        *,
        end_ns: int | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """A copy with these ids (trace, span, parent), times, attributes and name."""
        trace_id, span_id, parent_id = ids
        if self.duration is not None and end_ns is None:
            end_ns = start_ns + self.duration
        record = {
            **self.record,
            "trace_id": trace_id,
            "span_id": span_id,
            "parent_id": parent_id,
            "start_ns": start_ns,
            "end_ns": end_ns,
            "attributes": attributes,
        }
        if self.events:
            base = end_ns if end_ns is not None else start_ns
            record["events"] = [
                {**event, "ts": base - offset}
                for event, offset in zip(self.record["events"], self.events, strict=True)
            ]
        if name is not None:
            record["name"] = name
        return record


@dataclass(frozen=True)
class Blobs:
    """The blobs one recording of templates wrote (variable snapshots, tool arguments
    and answers, tracebacks): its spans name them, so they go along with its copies."""

    data: Mapping[str, bytes]


@dataclass(frozen=True)
class StepTemplate:
    step: SpanTemplate
    tools: tuple[SpanTemplate, ...]
    blobs: Blobs


@dataclass(frozen=True)
class RunTemplate:
    start: SpanTemplate  # the record written when the run starts
    end: SpanTemplate  # its root span, written when it ends
    name_prefix: str  # the root span's name, less the agent's name
    blobs: Blobs


def _step_key(spec: StepSpec) -> str:
    calls = tuple((c.name, tuple(c.arguments.items()), c.result) for c in spec.tool_calls)
    variables = tuple(spec.variables.items())
    return repr((calls, variables, _error_key(spec.error), bool(spec.stdout)))


def _error_key(error: BaseException | None) -> object:
    return None if error is None else (type(error).__module__, type(error).__qualname__, error.args)


def _run_error(spec: RunSpec) -> BaseException:
    return spec.error if spec.error is not None else _RUN_ERROR


def _run_key(spec: RunSpec) -> str:
    return repr(_error_key(_run_error(spec))) if spec.status == "error" else _RUN_OK


class Templates:
    """The templates recorded so far in this process, by the kind of step or run end."""

    def __init__(self) -> None:
        self._steps: dict[str, StepTemplate] = {}
        self._runs: dict[str, RunTemplate] = {}
        self._lock = threading.Lock()

    def prepare(self, specs: Iterable[RunSpec]) -> None:
        """Record, in one go, every template ``specs`` need that is not recorded yet."""
        with self._lock:
            steps = {_step_key(s): s for spec in specs for s in spec.steps}
            runs = {_run_key(spec): spec for spec in specs}
            steps = {k: s for k, s in steps.items() if k not in self._steps}
            errors = {k: _run_error(s) for k, s in runs.items() if k not in self._runs}
            errors.pop(_RUN_OK, None)
            if steps or errors or _RUN_OK not in self._runs:
                self._record(steps, errors)

    def step(self, spec: StepSpec) -> StepTemplate:
        return self._steps[_step_key(spec)]

    def run(self, spec: RunSpec) -> RunTemplate:
        return self._runs[_run_key(spec)]

    def _record(self, steps: dict[str, StepSpec], errors: dict[str, BaseException]) -> None:
        with tempfile.TemporaryDirectory(prefix="codetape-templates-") as tmp:
            home = Path(tmp)
            quiet = contextlib.redirect_stdout(io.StringIO())
            with capture(home, redact=False), quiet, contextlib.redirect_stderr(io.StringIO()):
                ok_run = _record_run([], _ANSWER)
                # Each step in a run of its own: what a step records of its state
                # depends on the steps before it in its run, and a template's must not.
                step_runs = {key: _record_run([spec], None) for key, spec in steps.items()}
                error_runs = {key: _record_error_run(error) for key, error in errors.items()}
            records, blobs = _read_spool(home)
        spans = [r for r in records if r["t"] == "span"]
        # Steps write start records too: a run's own is its trace's root.
        starts = {r["trace_id"]: r for r in records if r["t"] == "start" and r["parent_id"] is None}
        roots = {r["trace_id"]: r for r in spans if r["parent_id"] is None}
        self._runs[_RUN_OK] = _run_template(starts[ok_run], roots[ok_run], blobs, answer=True)
        for key, run_id in error_runs.items():
            self._runs[key] = _run_template(starts[run_id], roots[run_id], blobs, answer=False)
        for key, run_id in step_runs.items():
            [span] = (
                s for s in spans if s["trace_id"] == run_id and s["name"] == A.SPAN_EXECUTE_CODE
            )
            tools = sorted(
                (s for s in spans if s["parent_id"] == span["span_id"]), key=lambda s: s["start_ns"]
            )
            self._steps[key] = _step_template(steps[key], span, tools, blobs)


def _returning(value: object) -> Callable[[], object]:
    return lambda: value


def _record_step(spec: StepSpec) -> None:
    @code_action
    def execute(code: str, namespace: dict[str, Any]) -> None:
        for call in spec.tool_calls:
            record_tool_call(call.name, dict(call.arguments), _returning(call.result))
        namespace.update(spec.variables)
        if spec.stdout:
            print(_STDOUT, end="")
        if spec.error is not None:
            raise copy.copy(spec.error)

    try:
        execute(_CODE, {})
    except BaseException as exc:
        if spec.error is None or type(exc) is not type(spec.error):
            raise


def _record_run(steps: list[StepSpec], answer: str | None) -> str:
    with run(_AGENT, task=_TASK) as recorder:
        for spec in steps:
            _record_step(spec)
        recorder.final_answer = answer
    return recorder.id


def _record_error_run(error: BaseException) -> str:
    recorder = run(_AGENT, task=_TASK)
    try:
        with recorder:
            raise copy.copy(error)
    except BaseException as exc:
        if type(exc) is not type(error):
            raise
    return recorder.id


def _read_spool(home: Path) -> tuple[list[dict[str, Any]], Blobs]:
    """Every record the template recording spooled, and its blobs less the template's
    own code, output and answer (the builder writes each copy's own)."""
    records: list[dict[str, Any]] = []
    for path in sorted(live_dir(home).glob("*.jsonl")) + sorted(done_dir(home).glob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    data: dict[str, bytes] = {}
    for r in records:
        if r["t"] == "blob":
            text = r.get("text")
            raw = text.encode("utf-8", "surrogatepass") if text is not None else None
            data[r["digest"]] = raw if raw is not None else base64.b64decode(r["b64"])
    for path in (home / "blobs").glob("*/*"):  # blobs too big for the spool
        if not path.name.startswith("."):
            content = path.read_bytes()
            data[digest_of(content)] = content
    for own in (_CODE, _STDOUT, _ANSWER):
        data.pop(digest_of(own.encode()), None)
    return records, Blobs(data)


def _check_text(attrs: Mapping[str, Any], keys: tuple[str, str], text: str, limit: int) -> None:
    digest_key, preview_key = keys
    _check(attrs.get(digest_key) == digest_of(text.encode()), f"{digest_key!r}")
    _check(attrs.get(preview_key) == cut(text, limit), f"{preview_key!r}")


def _step_template(
    spec: StepSpec, span: dict[str, Any], tools: list[dict[str, Any]], blobs: Blobs
) -> StepTemplate:
    attrs = span["attributes"]
    _check_text(attrs, (A.CODE_DIGEST, A.CODE_PREVIEW), _CODE, TEXT_PREVIEW_CHARS)
    if spec.stdout:
        _check_text(attrs, (A.STDOUT_DIGEST, A.STDOUT_PREVIEW), _STDOUT, TEXT_PREVIEW_CHARS)
    _check(len(tools) == len(spec.tool_calls), "a step's tool calls")
    for tool in tools:
        _check(A.GEN_AI_TOOL_CALL_ID in tool["attributes"], "a tool call's id")
    _check((A.ERROR_TYPE in attrs) == (spec.error is not None), "a step's error")
    return StepTemplate(SpanTemplate.of(span), tuple(SpanTemplate.of(t) for t in tools), blobs)


def _run_template(
    start: dict[str, Any], root: dict[str, Any], blobs: Blobs, *, answer: bool
) -> RunTemplate:
    for record in (start, root):
        _check(record["name"].endswith(f" {_AGENT}"), "a run's span name")
        _check(record["attributes"].get(A.GEN_AI_AGENT_NAME) == _AGENT, "a run's agent")
        _check(record["attributes"].get(A.RUN_TASK) == _TASK, "a run's task")
    if answer:
        keys = (A.RUN_FINAL_ANSWER_DIGEST, A.RUN_FINAL_ANSWER)
        _check_text(root["attributes"], keys, _ANSWER, MESSAGE_CHARS)
    prefix = root["name"].removesuffix(_AGENT)
    return RunTemplate(SpanTemplate.of(start), SpanTemplate.of(root), prefix, blobs)


TEMPLATES = Templates()
