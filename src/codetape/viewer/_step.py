"""One step on the Run page: the model's thought and the model call its code came
from, links to the runs its tool calls started, code, output (under an error, the
values its failing line reads), tool calls, variables, sandbox, and the replay buttons
("Replay this step", "Replay from here", "Edit and replay") with their reports shown in
place.

The buttons run code, so they work only for a session ``_access`` allows (the
launch's token; for a local replay, ``--allow-local-exec``); otherwise they are
disabled with a note saying why, and a click that reaches the server anyway runs
nothing. Reports are kept in the session state under the step's key, so they survive
reruns.
"""

from __future__ import annotations

import json

import streamlit as st

from .._format import InlineValue, cut, failing_line, inline_values, visible
from ..errors import CodetapeError
from ..schemas import LlmCall, Run, Step
from . import _access, _data, _llm, _nested
from . import _widgets as w
from ._reports import show_from, show_report

__all__ = ["replaying", "show"]

# A result's type name.
_TYPE_CHARS = 200


def show(run: Run, step: Step, call: LlmCall | None = None) -> None:
    """The step; ``call`` is the model call its code came from (``step.llm_call``)."""
    key = f"{run.id}:{step.index}"
    _llm.thought(step)
    _llm.model_call(step, call, key)
    _nested.step_children(step)
    code, tools, variables, sandbox = st.tabs(
        ["Code and output", f"Tool calls ({len(step.tool_calls)})", "Variables", "Sandbox"]
    )
    with code:
        _code_and_output(step, key)
    with tools:
        w.table(w.tool_rows(step), empty="No tool calls.")
        _tool_in_full(step, key)
    with variables:
        st.caption("Before and after the step; changed variables are marked and listed first.")
        w.table(w.variable_rows(step), empty="No variables.")
    with sandbox:
        w.table(w.sandbox_rows(step.sandbox), empty="No sandbox identity recorded.")
    _replay_buttons(run, step, key)


def _code_and_output(step: Step, key: str) -> None:
    w.text_block(
        step.code,
        key=f"all-code:{key}",
        language="python",
        line_numbers=True,
        empty="No code recorded.",
    )
    line = failing_line(step)
    if line is not None:
        st.caption(f"Failing line: line {line} (from the traceback).")
        lines = step.code.splitlines()
        if 0 < line <= len(lines):
            st.code(visible(f"{line}: {lines[line - 1]}"), language="python")
    out, err = st.columns(2)
    with out:
        st.caption("stdout")
        w.text_block(step.stdout, key=f"all-stdout:{key}", empty="No stdout.")
    with err:
        st.caption("stderr")
        w.text_block(step.stderr, key=f"all-stderr:{key}", empty="No stderr.")
    if step.result is not None:
        st.caption("Result of the last expression")
        shown = f"{cut(step.result_type, _TYPE_CHARS)}: {cut(step.result, w.LIMIT)}"
        st.code(visible(shown), language=None)
    if step.error is not None or step.status != "ok":
        st.error(f"The step ended with status {step.status}.")
        if step.error is not None:
            error = cut(f"{step.error.type}: {step.error.message}", w.LIMIT)
            st.code(visible(error), language=None)
            _inline_values(step)
            w.text_block(step.error.traceback or "", key=f"all-tb:{key}", empty="No traceback.")


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _inline_text(values: list[InlineValue]) -> str:
    """The values the failing line reads, one per line (``order: dict = {...}``), each
    subscripted one followed by what it holds (``order has keys: id, total``); control,
    bidi and invisible characters as escapes, a value's own line breaks as ``\\n``.

    >>> print(_inline_text([InlineValue("order", "dict", "{'id': 1}", "has keys: id")]))
    order: dict = {'id': 1}
        order has keys: id
    """
    lines = []
    for v in values:
        kind, preview = _one_line(cut(v.type, _TYPE_CHARS)), _one_line(cut(v.preview))
        lines.append(f"{v.name}: {kind} = {preview}")
        if v.note:
            lines.append(f"    {v.name} {_one_line(v.note)}")
    return visible("\n".join(lines))


def _inline_values(step: Step) -> None:
    """Under a step's error: each name its failing line reads, as the step left it."""
    values = inline_values(step)
    if not values:
        return
    st.caption("The values the failing line reads (as the step left them)")
    st.code(_inline_text(values), language=None, wrap_lines=True)


def _tool_in_full(step: Step, key: str) -> None:
    """A tool call's arguments and result in full, for values the table cuts."""
    if not step.tool_calls:
        return
    k = st.selectbox(
        "Show a tool call in full",
        range(len(step.tool_calls)),
        format_func=lambda i: f"#{i}",
        key=f"tool:{key}",
    )
    call = step.tool_calls[k]
    shown = {
        "arguments": call.arguments,
        "result": call.result,
        "error": call.error.model_dump() if call.error else None,
    }
    w.text_block(
        json.dumps(shown, indent=2, ensure_ascii=False, default=repr),
        key=f"all-tool:{key}:{k}",
        language="json",
    )


# What the session keeps per step: the replay buttons (True in the rerun a click
# starts), the editing flag and the reports.
_STATE = (
    "replay", "replay-from", "edit", "replay-edited", "replay-from-edited", "editing",
    "report", "from-report", "edited-report", "edited-from-report",
)  # fmt: skip


def replaying(run: Run, step: Step) -> bool:
    """Whether a replay of the step was just asked for, is being edited or has reports
    to show: its expander opens (a replay adds a link above the steps, which would
    otherwise leave the expander closed)."""
    key = f"{run.id}:{step.index}"
    return any(st.session_state.get(f"{name}:{key}") for name in _STATE)


def _replay_buttons(run: Run, step: Step, key: str) -> None:
    why = _access.refusal(step)
    off = why is not None
    one, rest, edit = st.columns(3)
    if one.button("Replay this step", key=f"replay:{key}", disabled=off):
        _replay(run, step, None, f"report:{key}")
    if rest.button("Replay from here", key=f"replay-from:{key}", disabled=off):
        _replay_from(run, step, None, f"from-report:{key}")
    if edit.button("Edit and replay", key=f"edit:{key}", disabled=off) and not off:
        st.session_state[f"editing:{key}"] = True
    if why is not None:
        st.caption(why)
    _reports(key, "report", "from-report")
    if st.session_state.get(f"editing:{key}") and not off:
        code = st.text_area(
            "Code to run on the step's recorded input", step.code, height=240, key=f"code:{key}"
        )
        this, rest = st.columns(2)
        if this.button("Replay with this code", key=f"replay-edited:{key}"):
            _replay(run, step, code, f"edited-report:{key}")
        if rest.button("Replay from here with this code", key=f"replay-from-edited:{key}"):
            _replay_from(run, step, code, f"edited-from-report:{key}")
        _reports(key, "edited-report", "edited-from-report")


def _reports(key: str, one: str, rest: str) -> None:
    """The reports kept in the session state: one step's, then a replay from it."""
    report = st.session_state.get(f"{one}:{key}")
    if report is not None:
        show_report(report, f"{one}:{key}")
    kept = st.session_state.get(f"{rest}:{key}")
    if kept is not None:
        reports, not_run = kept
        show_from(reports, not_run, f"{rest}:{key}")


def _replay(run: Run, step: Step, code: str | None, slot: str) -> None:
    if _access.refusal(step) is not None:
        return  # a click on a disabled button, forged: nothing runs
    with st.spinner("Replaying…"):
        try:
            st.session_state[slot] = _data.replay(run.id, step.index, code)
        except CodetapeError as exc:
            st.session_state.pop(slot, None)
            w.problem("The replay could not run.", exc)


def _replay_from(run: Run, step: Step, code: str | None, slot: str) -> None:
    """Replay from ``step`` (``code`` in its place) to the end of the run; keep the
    reports and the steps a stop left unrun."""
    if _access.refusal(step) is not None:
        return  # a click on a disabled button, forged: nothing runs
    with st.spinner(f"Replaying from step {step.index} to the end of the run…"):
        try:
            reports = _data.replay_from(run.id, step.index, code)
        except CodetapeError as exc:
            st.session_state.pop(slot, None)
            w.problem("The replay could not run.", exc)
            return
    done = {r.step for r in reports}
    later = [s.index for s in _data.outline(run) if s.index >= step.index]
    st.session_state[slot] = (reports, [i for i in later if i not in done])
