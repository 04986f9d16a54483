"""Rendering helpers shared by the pages.

Recorded strings (code, output, variable previews, tool arguments and results, the
task, agent and tool names, model messages) are untrusted. They only reach the page
through ``st.code``, ``st.text`` and ``st.dataframe`` cells, which show text as text,
with their control, bidi and invisible characters written as escapes
(``_format.visible``, as the CLI prints them), so a right-to-left override cannot
reorder what the reader sees. Calls that render Markdown (``st.markdown``,
``st.caption``, titles, alerts, and the labels of buttons, expanders, tabs and links)
only get fixed wording, numbers, statuses and hex ids. Links and query parameters
carry run ids and step numbers, nothing recorded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import streamlit as st

from .._format import (
    PREVIEW_CHARS,
    TASK_CHARS,
    Color,
    cost,
    cut,
    duration,
    visible,
)
from ..errors import CodetapeError
from ..replayer.internal import variable_differs
from ..schemas import Run, SandboxSpec, Step, VariableSnapshot
from . import _data, url

__all__ = [
    "COMPARE_PAGE",
    "FAILURES_PAGE",
    "HEX",
    "LIMIT",
    "RUNS_PAGE",
    "RUN_PAGE",
    "SHOW_ALL_MAX",
    "cells",
    "int_param",
    "plural",
    "problem",
    "run_facts",
    "run_href",
    "run_label",
    "run_picker",
    "run_rows",
    "sandbox_rows",
    "step_label",
    "table",
    "text_block",
    "tokens",
    "tool_rows",
    "variable_rows",
    "when",
]

PAGES = Path(__file__).parent / "pages"
RUNS_PAGE = PAGES / "runs.py"
RUN_PAGE = PAGES / "run.py"
COMPARE_PAGE = PAGES / "compare.py"
FAILURES_PAGE = PAGES / "failures.py"

# Longer code or output is cut, with a toggle to show all of it.
LIMIT = 20_000
# Past this, "show all" would hand the browser more text than a tab can draw: the whole
# text is offered as a download instead.
SHOW_ALL_MAX = 2_000_000
# An agent's name in a list of runs, and a run's facts in the facts table.
_NAME_CHARS = 60
_FACT_CHARS = 4000
# How the viewer shows codetape's colour names.
HEX: dict[Color, str] = {
    "green": "#2e9e5b",
    "red": "#d64545",
    "yellow": "#c9a227",
    "orange": "#e08a1e",
    "purple": "#a0459b",
    "grey": "#6b6b6b",
    "cyan": "#2b8fb3",
}


# -- formatting ------------------------------------------------------------------


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _json(value: Any, limit: int = PREVIEW_CHARS) -> str:
    return cut(json.dumps(value, ensure_ascii=False, default=repr), limit)


def when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def tokens(input_tokens: int | None, output_tokens: int | None) -> str:
    """Token counts as a model call or a run reports them; ``?`` for a count the
    framework did not report.

    >>> tokens(1200, None)
    '1,200 in · ? out'
    """
    shown = ["?" if n is None else f"{n:,}" for n in (input_tokens, output_tokens)]
    return f"{shown[0]} in · {shown[1]} out"


def run_label(run: Run) -> str:
    """A picker's label for a run: id, status, start and size, nothing recorded."""
    steps = plural(run.step_count, "step")
    return f"{run.id[:12]} · {run.status} · {when(run.started_at)} · {steps}"


def step_label(step: Step) -> str:
    mark = "✓" if step.status == "ok" else "✗"
    tools = len(step.tool_calls)
    return (
        f"{mark} Step {step.index} · {step.status} · {duration(step.duration_ms)} · "
        f"{tools} tool call{'' if tools == 1 else 's'}"
    )


# -- generic blocks --------------------------------------------------------------


def cells(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for a dataframe: each string with its control, bidi and invisible
    characters written as escapes."""
    return [{k: visible(v) if isinstance(v, str) else v for k, v in r.items()} for r in rows]


def table(rows: Sequence[dict[str, Any]], *, empty: str, key: str | None = None) -> None:
    """Rows of plain strings as a dataframe, or ``empty`` (fixed wording) when none."""
    if not rows:
        st.caption(empty)
        return
    st.dataframe(cells(rows), hide_index=True, width="stretch", key=key)


def text_block(
    text: str,
    *,
    key: str,
    language: str | None = None,
    line_numbers: bool = False,
    empty: str = "(empty)",
    wrap: bool = False,
) -> None:
    """Recorded text as code (control and bidi characters as escapes; long lines
    wrapped when ``wrap``, for prose); past ``LIMIT`` characters cut, with a "show all"
    toggle, or past ``SHOW_ALL_MAX`` a button that downloads all of it, as it was
    recorded."""
    if not text:
        st.caption(empty)
        return
    if len(text) > SHOW_ALL_MAX:
        st.caption(
            f"Showing the first {LIMIT:,} of {len(text):,} characters: too long to show "
            "in full here."
        )
        whole = text
        st.download_button(
            f"Download all {len(text):,} characters",
            lambda: whole,  # made only when asked for
            file_name=_file_name(key),
            mime="text/plain",
            key=f"download:{key}",
            on_click="ignore",
        )
        text = text[:LIMIT]
    elif len(text) > LIMIT and not st.toggle(f"Show all {len(text):,} characters", key=key):
        st.caption(f"Showing the first {LIMIT:,} of {len(text):,} characters.")
        text = text[:LIMIT]
    text = visible(text)
    st.code(
        text,
        language=language,
        line_numbers=line_numbers,
        wrap_lines=wrap,
        height=_height(text),
    )


def _file_name(key: str) -> str:
    """``all-stdout:3f2a…:2`` → ``stdout-3f2a…-2.txt``: the key holds fixed words, hex ids
    and numbers."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", key.removeprefix("all-")) + ".txt"


def _height(text: str) -> int | Literal["content"]:
    return 420 if text.count("\n") > 20 else "content"


def problem(what: str, exc: CodetapeError) -> None:
    """A fixed headline, then the error's own message as plain text."""
    st.error(what)
    st.text(visible(str(exc)))


def int_param(name: str) -> int | None:
    raw = st.query_params.get(name)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def run_picker(label: str, param: str, runs: list[Run]) -> str | None:
    """A run picker bound to the ``param`` query parameter (an id, prefix or ``last``)."""
    current = st.query_params.get(param) or None
    known = {r.id: r for r in runs}
    if current is not None and current not in known:
        try:
            found = _data.run(current)
        except CodetapeError as exc:
            problem(f"The link names no run of this store ({param}).", exc)
        else:
            known[found.id] = found
            current = found.id
    options: list[str | None] = [None, *known]
    choice = st.selectbox(
        label,
        options,
        index=options.index(current) if current in known else 0,
        format_func=lambda i: "—" if i is None else run_label(known[i]),
        key=f"pick-{param}:{current}",
    )
    if choice != st.query_params.get(param):
        if choice is None:
            st.query_params.pop(param, None)
        else:
            st.query_params[param] = choice
    return choice


# -- runs ------------------------------------------------------------------------


def run_rows(runs: list[Run]) -> list[dict[str, Any]]:
    return [
        {
            "run": r.id[:12],
            "status": r.status,
            "agent": cut(r.name, _NAME_CHARS),
            "parent": _parent(r),
            "task": cut(r.task, TASK_CHARS),
            "steps": r.step_count,
            "failed": r.failed_steps,
            "duration": _run_duration(r),
            "started": when(r.started_at),
            "replay of": _replay_of(r),
            "tokens": f"{r.input_tokens + r.output_tokens:,}" if r.llm_calls else "",
        }
        for r in runs
    ]


def run_href(run_id: str) -> str:
    """The Run page's address for ``run_id``, from the server's root (under its base
    path, when it has one): a link column's value."""
    base = str(st.get_option("server.baseUrlPath") or "").strip("/")
    return url(f"/{base}", run=run_id)


def _run_duration(run: Run) -> str:
    if run.ended_at is None:
        return "running" if run.status == "running" else "—"
    return duration(run.duration_ms)


def _replay_of(run: Run) -> str:
    if not run.replay_of:
        return ""
    original, _, step = run.replay_of.rpartition(":")
    # A replay from a step onward runs that step and the ones after it.
    return f"{original[:12]} {'from step' if run.step_count > 1 else 'step'} {step}"


def _parent(run: Run, id_chars: int = 12) -> str:
    """The step of another run whose tool call started ``run`` (a managed agent's)."""
    if not run.parent_run:
        return ""
    step = "" if run.parent_step is None else f" step {run.parent_step}"
    return f"{run.parent_run[:id_chars]}{step}"


def _sandbox_summary(spec: SandboxSpec) -> str:
    if spec.backend == "docker":
        return f"docker: {spec.image or '?'} ({spec.image_id or 'no image id'})"
    if spec.backend == "local":
        return f"local, no isolation (python {spec.python or '?'})"
    return f"{spec.backend} (python {spec.python or '?'}, {spec.platform or '?'})"


def run_facts(run: Run, steps: list[Step]) -> None:
    image = "; ".join(dict.fromkeys(_sandbox_summary(s.sandbox) for s in steps))
    rows = [
        ("run", run.id),
        ("agent", run.name),
        ("task", run.task or ""),
        ("status", run.status),
        ("final answer", run.final_answer if run.final_answer is not None else ""),
        ("error", f"{run.error.type}: {run.error.message}" if run.error else ""),
        ("started", when(run.started_at)),
        ("duration", duration(run.duration_ms)),
        ("steps", f"{run.step_count} ({run.failed_steps} failed)"),
        ("model calls", str(run.llm_calls) if run.llm_calls else ""),
        ("tokens", tokens(run.input_tokens, run.output_tokens) if run.llm_calls else ""),
        ("cost", cost(run.cost)),
        ("sandbox", image),
        ("replay of", run.replay_of or ""),
        ("parent", _parent(run, _FACT_CHARS)),
    ]
    table([{"field": k, "value": cut(v, _FACT_CHARS)} for k, v in rows if v != ""], empty="")


# -- steps -----------------------------------------------------------------------


def tool_rows(step: Step) -> list[dict[str, str]]:
    return [
        {
            "#": str(k),
            "tool": call.name,
            "arguments": _json(call.arguments),
            "result": "" if call.error else _json(call.result),
            "error": f"{call.error.type}: {call.error.message}" if call.error else "",
            "duration": duration(call.duration_ms),
        }
        for k, call in enumerate(step.tool_calls)
    ]


def _change(before: VariableSnapshot | None, after: VariableSnapshot | None) -> str:
    if before is None:
        return "● added"
    if after is None:
        return "● removed"
    return "● changed" if variable_differs(before, after) else ""


def variable_rows(step: Step) -> list[dict[str, str]]:
    """Every variable before and after the step; changed ones marked, listed first."""
    before, after = step.variables_before, step.variables_after
    rows = []
    for name in sorted(set(before) | set(after)):
        b, a = before.get(name), after.get(name)
        shown = a or b
        assert shown is not None
        rows.append(
            {
                "change": _change(b, a),
                "name": name,
                "type": shown.type,
                "before": cut(b.preview) if b else "",
                "after": cut(a.preview) if a else "",
                "restorable": "yes" if shown.restorable else f"no: {shown.reason or 'not stored'}",
            }
        )
    return sorted(rows, key=lambda r: r["change"] == "")


def sandbox_rows(spec: SandboxSpec) -> list[dict[str, str]]:
    fields: list[tuple[str, Any]] = [
        ("backend", spec.backend),
        ("image", spec.image),
        ("image id", spec.image_id),
        ("repo digests", ", ".join(spec.repo_digests)),
        ("layers digest", spec.layers_digest),
        ("python", spec.python),
        ("platform", spec.platform),
        ("environment fingerprint", spec.env_fingerprint),
        ("limits", json.dumps(spec.limits) if spec.limits else None),
        ("hash seed", spec.hash_seed),
    ]
    return [{"field": k, "value": str(v)} for k, v in fields if v not in (None, "")]
