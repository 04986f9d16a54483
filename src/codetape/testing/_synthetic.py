"""Made-up but plausible runs: agents that look orders up, email customers and fail."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Literal, get_args

from ..errors import ConfigError
from ..store.internal import done_dir
from ._builder import BuiltRun, StoreBuilder
from ._specs import RunSpec, RunStatus, StepSpec, ToolCallSpec

__all__ = ["StepKind", "build_store", "synthetic_runs", "synthetic_step"]

StepKind = Literal["lookup", "notify", "compute", "fails"]
_KINDS: tuple[StepKind, ...] = get_args(StepKind)

AGENTS = ("orders-agent", "support-triage", "research-assistant", "data-cleaner")
TASKS = (
    "Refund the duplicate charges of customer {c}",
    "Summarize the open tickets of customer {c} and draft a reply",
    "Find every order of customer {c} shipped late last quarter",
    "Reconcile the invoices of customer {c} against payments",
)
_ORDERS = [{"id": i, "amount": 12.5 * i, "late": i % 2 == 0} for i in range(1, 6)]
_LOOKUP = ToolCallSpec("lookup", {"table": "orders", "customer": 1}, _ORDERS)
_EMAIL = ToolCallSpec("send_email", {"to": "c1@example.com", "body": "2 late orders"}, "queued")
# Share of each kind of step in runs without failures, and in the three in ten with some.
_CLEAN: dict[StepKind, int] = {"lookup": 45, "notify": 12, "compute": 43, "fails": 0}
_FLAKY: dict[StepKind, int] = {"lookup": 40, "notify": 10, "compute": 38, "fails": 12}


def synthetic_step(kind: StepKind, index: int, customer: int) -> StepSpec:
    """A step of the given kind: ``lookup`` calls one tool, ``notify`` two, ``compute``
    none and ``fails`` raises ``ZeroDivisionError``. Its code and output name the step
    and the customer; its tool calls and variables are the kind's own.

    >>> synthetic_step("notify", 3, 4242).code.splitlines()[0]
    '# step 3: customer 4242'
    """
    head = f"# step {index}: customer {customer}\n"
    if kind == "lookup":
        code = "orders = lookup('orders', customer=customer)\nprint(len(orders), 'orders')"
        out = f"[step {index}] 5 orders of customer {customer}\n"
        return StepSpec(head + code, out, (_LOOKUP,), {"orders": _ORDERS})
    if kind == "notify":
        code = (
            "late = [o for o in orders if o['late']]\n"
            "send_email(to=f'c{customer}@example.com', body=f'{len(late)} late orders')\n"
            "print('emailed', len(late))"
        )
        out = f"[step {index}] emailed customer {customer} about 2 late orders\n"
        return StepSpec(head + code, out, (_LOOKUP, _EMAIL), {"late": _ORDERS[1::2]})
    if kind == "compute":
        code = "total = sum(o['amount'] for o in orders)\nprint(f'total: {total:.2f}')"
        out = f"[step {index}] total for customer {customer}: 187.50\n"
        return StepSpec(head + code, out, (), {"total": 187.5})
    code = "average_refund = total / len(refunds)"
    return StepSpec(head + code, "", (), {}, ZeroDivisionError("division by zero"))


def synthetic_runs(count: int, steps: int = 5, *, seed: int | None = 0) -> list[RunSpec]:
    """``count`` runs of ``steps`` steps each, drawn from ``seed``: four agents, tasks
    about a customer, steps of every kind (three runs in ten have failing ones), and
    about one run in twenty that raises and one in a hundred that never ends.

    >>> [len(r.steps) for r in synthetic_runs(3, steps=4)]
    [4, 4, 4]
    """
    return list(_iter_synthetic_runs(count, steps, seed=seed))


def _iter_synthetic_runs(count: int, steps: int = 5, *, seed: int | None = 0) -> Iterator[RunSpec]:
    """The runs of ``synthetic_runs``, the same ones, made one at a time.

    >>> list(_iter_synthetic_runs(2, seed=3)) == synthetic_runs(2, seed=3)
    True
    """
    rng = random.Random(seed)
    for _ in range(count):
        customer = rng.randint(1000, 9999)
        task = rng.choice(TASKS).format(c=customer)
        weights = _FLAKY if rng.random() < 0.3 else _CLEAN
        kinds = rng.choices(_KINDS, [weights[k] for k in _KINDS], k=steps)
        roll = rng.random()
        status: RunStatus = "incomplete" if roll < 0.01 else "error" if roll < 0.06 else "ok"
        yield RunSpec(
            agent=rng.choice(AGENTS),
            task=task,
            steps=tuple(synthetic_step(k, i, customer) for i, k in enumerate(kinds)),
            status=status,
            final_answer=f"Done: {task.lower()}" if status == "ok" else None,
        )


def build_store(
    home: str | os.PathLike[str],
    runs: int = 10,
    steps: int = 5,
    *,
    seed: int | None = 0,
    specs: Iterable[RunSpec] | None = None,
    chunk_runs: int = 5000,
    keep_runs: bool = True,
) -> list[BuiltRun]:
    """Write ``runs`` synthetic runs of ``steps`` steps (or the given ``specs``) into the
    store at ``home`` and ingest them; returns what was written, in order.

    It streams: runs are made (``specs`` may be a generator), spooled and ingested
    ``chunk_runs`` at a time, and each chunk's spool files are removed once ingested,
    so memory and spool space stay bounded however many runs are written. With
    ``keep_runs=False`` nothing is kept of the runs written and the list is empty.

    >>> import codetape, tempfile
    >>> home = tempfile.mkdtemp()
    >>> built = build_store(home, runs=20, steps=3)
    >>> codetape.Store(home).count_runs()
    20
    """
    if chunk_runs < 1:
        raise ConfigError(f"build_store: chunk_runs must be 1 or more, not {chunk_runs}")
    it = iter(specs) if specs is not None else _iter_synthetic_runs(runs, steps, seed=seed)
    with StoreBuilder(Path(home), seed=seed, keep_runs=keep_runs) as builder:
        while chunk := list(islice(it, chunk_runs)):
            builder.add_runs(chunk)
            builder.ingest()
            shutil.rmtree(done_dir(builder.home), ignore_errors=True)
    return builder.runs
