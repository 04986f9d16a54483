"""The Compare page's blocks: the aligned step table with the first divergence
marked, and one pair's thought, code, output, error and variable differences."""

from __future__ import annotations

import streamlit as st

from .._format import MESSAGE_CHARS, cut
from ..replayer.internal import DiffOutline
from ..schemas import ErrorInfo, StepPair
from . import _widgets as w

__all__ = ["divergence", "pair_details", "pair_label"]


def _side(index: int | None) -> str:
    return "—" if index is None else str(index)


def pair_label(diff: DiffOutline, k: int) -> str:
    pair = diff.pairs[k]
    mark = " · first divergence" if k == diff.first_divergence else ""
    state = "same" if pair.same else "differs"
    return f"pair {k}: step {_side(pair.a)} of A ↔ step {_side(pair.b)} of B · {state}{mark}"


def divergence(diff: DiffOutline) -> None:
    """Where the runs part, then every aligned pair of steps."""
    b_replays = diff.b.replay_of or ""
    if b_replays.startswith(diff.a.id + ":"):
        step = b_replays.rpartition(":")[2]
        st.caption(f"B replays step {int(step)} of A: only that step of A is compared.")
    first = diff.first_divergence
    if first is None:
        st.success("The runs match step by step.")
    else:
        pair = diff.pairs[first]
        st.error(
            f"First divergence: step {_side(pair.a)} of A ↔ step {_side(pair.b)} of B "
            f"(pair {first})."
        )
    w.table(
        [
            {
                "pair": str(k),
                "step a": _side(p.a),
                "step b": _side(p.b),
                "status a": p.status_a or "—",
                "status b": p.status_b or "—",
                "same": "same" if p.same else "differs",
                "first divergence": "◀ here" if k == first else "",
            }
            for k, p in enumerate(diff.pairs)
        ],
        empty="Neither run has steps.",
    )


def _error(error: ErrorInfo | None) -> str:
    return "" if error is None else cut(f"{error.type}: {error.message}", MESSAGE_CHARS)


def _model_side(pair: StepPair, k: int) -> None:
    """When both steps came from a model call: how the thoughts differ, and whether
    the outputs did (two runs can part because the model answered differently)."""
    if pair.thought_diff:
        st.caption("The model's thought (- A, + B)")
        w.text_block(
            "\n".join(pair.thought_diff), key=f"all-thought-diff:{k}", language="diff", wrap=True
        )
    if pair.model_output_differs:
        st.caption("The model outputs the two steps' code came from differ.")


def pair_details(diff: DiffOutline, k: int, pair: StepPair) -> None:
    """The ``k``-th pair, read whole (``_data.diff_pair``)."""
    links = st.columns(2)
    for column, run, step, side in (
        (links[0], diff.a, pair.a, "A"),
        (links[1], diff.b, pair.b, "B"),
    ):
        if step is not None:
            column.page_link(
                w.RUN_PAGE,
                label=f"Open step {step} of {side}",
                query_params={"run": run.id, "step": str(step)},
            )
    _model_side(pair, k)
    code, output = st.columns(2)
    with code:
        st.caption("Code (- A, + B)")
        w.text_block(
            "\n".join(pair.code_diff), key=f"all-code-diff:{k}", language="diff", empty="Same code."
        )
    with output:
        st.caption("stdout (- A, + B)")
        w.text_block(
            "\n".join(pair.stdout_diff),
            key=f"all-out-diff:{k}",
            language="diff",
            empty="Same stdout.",
        )
    if pair.error_a != pair.error_b or pair.status_a != pair.status_b:
        st.caption("Status and error")
        w.table(
            [
                {"side": side, "status": status or "—", "error": _error(error)}
                for side, status, error in (
                    ("A", pair.status_a, pair.error_a),
                    ("B", pair.status_b, pair.error_b),
                )
            ],
            empty="",
        )
    st.caption("Variables after the step")
    rows = [
        {"variable": n, "difference": "only in B", "A": "", "B": ""} for n in pair.variables_added
    ]
    rows += [
        {"variable": n, "difference": "only in A", "A": "", "B": ""} for n in pair.variables_removed
    ]
    rows += [
        {
            "variable": c.name,
            "difference": "changed",
            "A": cut(c.a.preview),
            "B": cut(c.b.preview),
        }
        for c in pair.variables_changed
    ]
    w.table(rows, empty="No variable differences.")
