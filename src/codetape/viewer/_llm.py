"""The model side of a run on the Run page: each step's thought (the text the model
wrote around its code) and the model call its code came from, in a collapsed expander
that is read and drawn only when opened (a call's input repeats the conversation so
far, so a page of steps would otherwise carry it twenty times); and the run's model
calls as a table.

Thoughts, messages, outputs, roles and model names are model text: untrusted, and
possibly written to steer whoever reads them. They reach the page only through
``st.text``, ``st.code`` and dataframe cells, with control, bidi and invisible
characters shown as escapes (``_format.visible``), so a message can neither render as
markup nor reorder what the reader sees. Labels and captions hold fixed wording,
numbers, and a role only when it is one of the roles frameworks use.
"""

from __future__ import annotations

import streamlit as st

from .._format import cost, cut, duration, visible
from ..schemas import LlmCall, Step
from . import _widgets as w

__all__ = ["call_rows", "model_call", "thought"]

# Roles shown in a caption as they are; any other role is shown as text.
ROLES = frozenset(
    {"system", "developer", "user", "assistant", "tool", "tool-call", "tool-response"}
)
# A model's name or a role in a table cell or a line of text.
_NAME_CHARS = 120
_ERROR_CHARS = 2000


def _name(text: str | None) -> str:
    return cut(visible(text), _NAME_CHARS)


def thought(step: Step) -> None:
    """The model's thought before the step's code, as plain text."""
    if not step.thought:
        return
    st.caption("Thought")
    st.text(visible(cut(step.thought, w.LIMIT)))


def model_call(step: Step, call: LlmCall | None, key: str) -> None:
    """The model call the step's code came from: its facts, input messages and output,
    in an expander closed until the reader opens it."""
    if step.llm_call is None:
        return
    if call is None:
        st.caption("The model call this step's code came from is not in the store.")
        return
    label = (
        f"Model call {call.index} · {w.tokens(call.input_tokens, call.output_tokens)} "
        f"tokens · {duration(call.duration_ms)}"
    )
    box = st.expander(label, type="compact", key=f"llm:{key}", on_change="rerun")
    if not box.open:
        return
    with box:
        w.table(_facts(call), empty="")
        if call.error is not None:
            st.error("The model call failed.")
            st.code(
                cut(visible(f"{call.error.type}: {call.error.message}"), _ERROR_CHARS),
                language=None,
            )
        _messages(call, key)
        st.caption("Output")
        w.text_block(call.output, key=f"all-llm-output:{key}", empty="No output.", wrap=True)


def _facts(call: LlmCall) -> list[dict[str, str]]:
    rows = [
        ("model", _name(call.model)),
        ("response model", _name(call.response_model)),
        ("tokens", w.tokens(call.input_tokens, call.output_tokens)),
        ("latency", duration(call.duration_ms)),
        ("finish", _name(", ".join(call.finish_reasons))),
        ("cost", cost(call.cost)),
        ("streamed", "yes" if call.streamed else ""),
    ]
    return [{"field": k, "value": v} for k, v in rows if v]


def _messages(call: LlmCall, key: str) -> None:
    """The input messages in order, each under its number and role."""
    st.caption(f"Input: {w.plural(len(call.input_messages), 'message')}")
    for k, message in enumerate(call.input_messages):
        if message.role in ROLES:
            st.caption(f"Message {k} · {message.role}")
        else:
            st.caption(f"Message {k} · role:")
            st.text(_name(message.role))
        w.text_block(
            message.content, key=f"all-llm-input:{key}:{k}", empty="Empty message.", wrap=True
        )


def call_rows(calls: list[LlmCall], steps: list[Step]) -> list[dict[str, str]]:
    """One row per model call of the run: the step its code went to, if any."""
    step_of = {s.llm_call: s.index for s in steps if s.llm_call}
    return [
        {
            "call": str(c.index),
            "step": str(step_of[c.span_id]) if c.span_id in step_of else "",
            "model": _name(c.response_model or c.model),
            "tokens": w.tokens(c.input_tokens, c.output_tokens),
            "latency": duration(c.duration_ms),
            "finish": _name(", ".join(c.finish_reasons)),
            "cost": cost(c.cost),
            "error": cut(visible(f"{c.error.type}: {c.error.message}"), _NAME_CHARS)
            if c.error
            else "",
        }
        for c in calls
    ]
