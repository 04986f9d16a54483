"""``diff_runs``: two runs side by side, steps aligned by code similarity."""

from __future__ import annotations

import dataclasses
import difflib
import os

from ..schemas import Run, RunDiff, Step, StepPair, VariableChange
from ..store import Store
from ._compare import variable_differs

__all__ = ["DiffOutline", "align", "diff_outline", "diff_runs", "whole_pair"]

# Two steps whose code is at least this similar are the same step, edited.
_SIMILAR = 0.5


def _unified(a: str, b: str) -> list[str]:
    if a == b:
        return []
    return list(difflib.unified_diff(a.splitlines(), b.splitlines(), "a", "b", lineterm="", n=2))


def _similar(a: str, b: str, at_least: float) -> bool:
    """Whether ``a`` and ``b`` are at least this similar (the cheap upper bounds first)."""
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return (
        matcher.real_quick_ratio() >= at_least
        and matcher.quick_ratio() >= at_least
        and matcher.ratio() >= at_least
    )


def align(a: list[str], b: list[str]) -> list[tuple[int | None, int | None]]:
    """Pairs of indexes into ``a`` and ``b``: equal code pairs up, edited code pairs up
    with its most similar counterpart in the same gap, the rest stands alone. So a step
    inserted or removed does not shift every step after it."""
    pairs: list[tuple[int | None, int | None]] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            pairs += [(i1 + k, j1 + k) for k in range(i2 - i1)]
            continue
        # Within a gap, pair in order, greedily, when similar enough.
        j = j1
        for i in range(i1, i2):
            best = next((c for c in range(j, j2) if _similar(a[i], b[c], _SIMILAR)), None)
            if best is None:
                pairs.append((i, None))
                continue
            pairs += [(None, k) for k in range(j, best)]
            pairs.append((i, best))
            j = best + 1
        pairs += [(None, k) for k in range(j, j2)]
    return pairs


def _model_side(a: Step | None, b: Step | None, outputs: dict[str, str]) -> tuple[list[str], bool]:
    """The thoughts' diff and whether the model outputs differ, when both steps came
    from a recorded model call (a replay has none: its steps are not compared so)."""
    if a is None or b is None or a.llm_call is None or b.llm_call is None:
        return [], False
    thoughts = _unified(a.thought or "", b.thought or "")
    return thoughts, outputs.get(a.llm_call) != outputs.get(b.llm_call)


def _children(step: Step | None) -> list[str]:
    """The runs the step's tool calls started, in call order."""
    return [c.child_run for c in step.tool_calls if c.child_run] if step is not None else []


def _pair(a: Step | None, b: Step | None, outputs: dict[str, str]) -> StepPair:
    thought_diff, model_differs = _model_side(a, b, outputs)
    pair = StepPair(
        a=a.index if a else None,
        b=b.index if b else None,
        same=False,
        code_diff=_unified(a.code if a else "", b.code if b else ""),
        stdout_diff=_unified(a.stdout if a else "", b.stdout if b else ""),
        status_a=a.status if a else None,
        status_b=b.status if b else None,
        error_a=a.error if a else None,
        error_b=b.error if b else None,
        thought_diff=thought_diff,
        model_output_differs=model_differs,
        child_runs_a=_children(a),
        child_runs_b=_children(b),
    )
    if a is None or b is None:
        return pair
    va, vb = a.variables_after, b.variables_after
    added = sorted(set(vb) - set(va))
    removed = sorted(set(va) - set(vb))
    changed = [
        VariableChange(name=n, a=va[n], b=vb[n])
        for n in sorted(set(va) & set(vb))
        if variable_differs(va[n], vb[n])
    ]
    same_error = (a.error and (a.error.type, a.error.message)) == (
        b.error and (b.error.type, b.error.message)
    )
    same = (
        not pair.code_diff
        and not pair.stdout_diff
        and not thought_diff
        and not model_differs
        and a.status == b.status
        and same_error
        and not added
        and not removed
        and not changed
    )
    return pair.model_copy(
        update={
            "same": same,
            "variables_added": added,
            "variables_removed": removed,
            "variables_changed": changed,
        }
    )


def _replayed(steps: list[Step], replay_of: str, count: int) -> list[Step]:
    """The steps a replay ran: from the step it names, as many as it has."""
    first = int(replay_of.rsplit(":", 1)[1])
    return [s for s in steps if first <= s.index < first + max(1, count)]


def _restricted(
    run_a: Run, run_b: Run, steps_a: list[Step], steps_b: list[Step]
) -> tuple[list[Step], list[Step]]:
    """The steps compared: when one run replays the other, only the steps it replayed."""
    if run_b.replay_of and run_b.replay_of.startswith(run_a.id + ":"):
        steps_a = _replayed(steps_a, run_b.replay_of, len(steps_b))
    elif run_a.replay_of and run_a.replay_of.startswith(run_b.id + ":"):
        steps_b = _replayed(steps_b, run_a.replay_of, len(steps_a))
    return steps_a, steps_b


def diff_runs(a: str, b: str, *, home: str | os.PathLike[str] | None = None) -> RunDiff:
    """Compare two runs step by step.

    Steps are aligned by code similarity; each aligned pair carries the code and stdout
    diffs, both statuses and errors, the variables added, removed and changed (by
    digest), and, when both steps came from a recorded model call, the diff of their
    thoughts and whether the model's outputs differ: two runs that diverge because the
    model answered differently show it at the first divergence. When ``b`` is a replay
    of ``a`` from one of its steps, only the steps it replayed are compared (that step,
    and with ``replay_from`` the ones after it). ``first_divergence`` points at the
    first pair that differs.

    >>> d = codetape.diff_runs("3f2a", "9c1e")             # doctest: +SKIP
    >>> d.pairs[d.first_divergence].stdout_diff
    ['--- a', '+++ b', '@@ -1 +1 @@', '-2 orders', '+3 orders']
    """
    store = Store(home)
    with store.session():  # one connection and one catch-up for every read
        run_a, run_b = store.run(a), store.run(b)
        steps_a, steps_b = store.steps(run_a.id), store.steps(run_b.id)
        # The runs' model outputs by call (span ids are unique across the two runs).
        outputs = {
            c.span_id: c.output
            for run in (run_a, run_b)
            for c in store.llm_calls(run.id, messages=False)
        }
    steps_a, steps_b = _restricted(run_a, run_b, steps_a, steps_b)
    pairs = [
        _pair(
            steps_a[i] if i is not None else None,
            steps_b[j] if j is not None else None,
            outputs,
        )
        for i, j in align([s.code for s in steps_a], [s.code for s in steps_b])
    ]
    first = next((k for k, p in enumerate(pairs) if not p.same), None)
    return RunDiff(a=run_a, b=run_b, pairs=pairs, first_divergence=first)


# More pairs than this left undecided by the step records: read both runs whole at
# once rather than step by step.
_WHOLE_STEPS_AT_MOST = 4


@dataclasses.dataclass(frozen=True)
class DiffOutline:
    """What ``diff_runs`` finds, read as the viewer shows it: every pair's step indexes,
    statuses and whether it is the same (``pairs``, without their diffs), and the first
    divergence whole (``first``); ``whole_pair`` reads any other pair whole. What it
    says equals what ``diff_runs`` says."""

    a: Run
    b: Run
    pairs: list[StepPair]
    first_divergence: int | None
    first: StepPair | None
    outputs: dict[str, str]  # the runs' model outputs by call, for reading a pair whole


def _differs(a: Step, b: Step, codes: dict[str, str], outputs: dict[str, str]) -> bool:
    """Whether two steps' records and code alone show that they differ (code, status,
    error or the model's output): then neither needs reading whole."""
    model_differs = (
        a.llm_call is not None
        and b.llm_call is not None
        and outputs.get(a.llm_call) != outputs.get(b.llm_call)
    )
    error_a = a.error and (a.error.type, a.error.message)
    error_b = b.error and (b.error.type, b.error.message)
    return (
        codes[a.span_id] != codes[b.span_id]
        or a.status != b.status
        or error_a != error_b
        or model_differs
    )


def _whole(store: Store, run: Run, wanted: set[int]) -> dict[int, Step]:
    """The run's steps at these indexes, whole: one by one when few, else all at once."""
    if len(wanted) > _WHOLE_STEPS_AT_MOST:
        return {s.index: s for s in store.steps(run.id) if s.index in wanted}
    return {i: store.step(run.id, i) for i in sorted(wanted)}


def diff_outline(store: Store, run_a: Run, run_b: Run) -> DiffOutline:
    """``diff_runs`` of two runs reading only what the viewer's Compare page shows: both
    runs' step records without their blobs and the steps' code; whole, only the steps
    whose records cannot tell whether they differ, and the first divergence. One
    connection (the caller's session, if open)."""
    with store.session():
        steps_a, steps_b = _restricted(
            run_a,
            run_b,
            store.steps(run_a.id, contents=False),
            store.steps(run_b.id, contents=False),
        )
        codes = store.step_codes(run_a.id, run_b.id)
        outputs = {
            c.span_id: c.output
            for run in (run_a, run_b)
            for c in store.llm_calls(run.id, messages=False)
        }
        aligned = [
            (steps_a[i] if i is not None else None, steps_b[j] if j is not None else None)
            for i, j in align(
                [codes[s.span_id] for s in steps_a], [codes[s.span_id] for s in steps_b]
            )
        ]
        undecided = [(x, y) for x, y in aligned if x and y and not _differs(x, y, codes, outputs)]
        whole_a = _whole(store, run_a, {x.index for x, _ in undecided})
        whole_b = _whole(store, run_b, {y.index for _, y in undecided})
        same = {
            (x.index, y.index)
            for x, y in undecided
            if _pair(whole_a[x.index], whole_b[y.index], outputs).same
        }
        pairs = [
            StepPair(
                a=x.index if x else None,
                b=y.index if y else None,
                same=x is not None and y is not None and (x.index, y.index) in same,
                status_a=x.status if x else None,
                status_b=y.status if y else None,
            )
            for x, y in aligned
        ]
        first = next((k for k, p in enumerate(pairs) if not p.same), None)
        outline = DiffOutline(run_a, run_b, pairs, first, None, outputs)
        if first is None:
            return outline
        return dataclasses.replace(outline, first=whole_pair(store, outline, first))


def whole_pair(store: Store, outline: DiffOutline, k: int) -> StepPair:
    """The outline's ``k``-th pair with all its diffs, as ``diff_runs`` has it."""
    if k == outline.first_divergence and outline.first is not None:
        return outline.first
    i, j = outline.pairs[k].a, outline.pairs[k].b
    with store.session():
        a = store.step(outline.a.id, i) if i is not None else None
        b = store.step(outline.b.id, j) if j is not None else None
    return _pair(a, b, outline.outputs)
