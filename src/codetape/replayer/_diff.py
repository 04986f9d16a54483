"""``diff_runs``: two runs side by side, steps aligned by code similarity."""

from __future__ import annotations

import difflib
import os

from ..schemas import RunDiff, Step, StepPair, VariableChange
from ..store import Store
from ._compare import variable_differs

__all__ = ["align", "diff_runs"]

# Two steps whose code is at least this similar are the same step, edited.
_SIMILAR = 0.5


def _unified(a: str, b: str) -> list[str]:
    if a == b:
        return []
    return list(difflib.unified_diff(a.splitlines(), b.splitlines(), "a", "b", lineterm="", n=2))


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


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
            best, best_score = None, _SIMILAR
            for candidate in range(j, j2):
                score = _similarity(a[i], b[candidate])
                if score >= best_score:
                    best, best_score = candidate, score
                    break
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
    if run_b.replay_of and run_b.replay_of.startswith(run_a.id + ":"):
        steps_a = _replayed(steps_a, run_b.replay_of, len(steps_b))
    elif run_a.replay_of and run_a.replay_of.startswith(run_b.id + ":"):
        steps_b = _replayed(steps_b, run_a.replay_of, len(steps_a))
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
