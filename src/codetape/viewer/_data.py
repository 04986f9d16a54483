"""The viewer's one door to the data: the store's read API (runs, steps, model calls,
failure groups, SQL over its views), ``diff_runs`` (as the Compare page shows it), ``replay``
and ``replay_from``.

The store lives where ``CODETAPE_HOME`` says (``codetape ui`` sets it). Every call opens
a fresh :class:`~codetape.Store`, which ingests what agents spooled since, so lists stay
live; a ``Store`` is not shared between sessions because it caches blobs per query.
Steps, model calls and diffs of a run are cached by the run's status and counts, so a
finished run is read once and a run still being recorded is read again when it grows.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import streamlit as st

from .._format import RUN_STATUSES
from ..errors import CodetapeError
from ..replayer import replay as replay_step
from ..replayer import replay_from as replay_steps_from
from ..replayer.internal import DiffOutline, diff_outline, whole_pair
from ..schemas import FailureGroup, LlmCall, ReplayReport, Run, Step, StepPair
from ..store import Store
from ..store.internal import REMOTE_ENV, RemoteStore, has_pending, read_token, resolve_home

__all__ = [
    "RECENT_RUNS",
    "RUNS_PER_PAGE",
    "SEARCH_COUNT_AT_MOST",
    "STATUSES",
    "STEPS_PER_PAGE",
    "agents",
    "any_running",
    "count_runs",
    "diff",
    "diff_pair",
    "failures",
    "home",
    "llm_calls",
    "missing",
    "outline",
    "page_count",
    "recent_runs",
    "replay",
    "replay_backend",
    "replay_from",
    "replays_of",
    "run",
    "runs",
    "sql",
    "steps",
    "together",
]

RUNS_PER_PAGE = 50
SEARCH_COUNT_AT_MOST = 1000  # runs a search counts before it shows "1,000+"
STEPS_PER_PAGE = 20
STATUSES = RUN_STATUSES
# The runs the pickers offer, newest first (any other is opened by its id in the link),
# and the replays of a run listed at most.
RECENT_RUNS = 100


def home() -> Path:
    return resolve_home(os.environ.get("CODETAPE_HOME") or None)


def missing() -> bool:
    """Whether nothing has recorded into the store yet (its directory does not exist:
    reading it would be an error, and creates nothing)."""
    return not os.environ.get(REMOTE_ENV) and not home().is_dir()


def _open(store_home: Path) -> Store:
    """The store to read: the server of ``codetape ui --remote URL`` ($CODETAPE_REMOTE,
    token in $CODETAPE_TOKEN) if given, else the one at ``store_home``."""
    url = os.environ.get(REMOTE_ENV)
    return RemoteStore(url, read_token()) if url else Store(store_home)


def _local_only(what: str) -> None:
    url = os.environ.get(REMOTE_ENV)
    if url:
        raise CodetapeError(
            f"{what} from a viewer reading {url} is not offered: a replay needs the run's "
            "store on this machine",
            hint="codetape --remote URL export RUN -o F, codetape import F, then replay here",
        )


# The Store of the reads in a ``together()`` block, if any.
_shared: contextvars.ContextVar[Store | None] = contextvars.ContextVar("_shared", default=None)


def _store() -> Store:
    return _shared.get() or _open(home())


@contextlib.contextmanager
def together() -> Iterator[None]:
    """The reads of a ``with`` block share one connection and one catch-up with the
    spool: the Runs page's count and page of one search look through the steps once.
    Keep it short: no agent can store what it records meanwhile. Inside another such
    block, its reads join that block's connection; before anything is recorded, each read
    goes alone (and says what is missing)."""
    if _shared.get() is not None or missing():
        yield
        return
    store = _open(home())
    with store.session():
        token = _shared.set(store)
        try:
            yield
        finally:
            _shared.reset(token)


def page_count(total: int, per_page: int) -> int:
    return max(1, math.ceil(total / per_page))


def count_runs(status: str | None, agent: str | None, search: str, failed: bool) -> int:
    """How many runs match; a search is counted up to ``SEARCH_COUNT_AT_MOST`` runs and
    one more (it looks through the newest runs' steps first and stops there)."""
    return _store().count_runs(
        status,
        agent,
        failed=failed,
        search=search or None,
        at_most=SEARCH_COUNT_AT_MOST + 1 if search else None,
    )


def runs(status: str | None, agent: str | None, search: str, failed: bool, page: int) -> list[Run]:
    """One page (1-based) of the runs that match, newest first."""
    return _store().runs(
        status,
        agent,
        RUNS_PER_PAGE,
        failed=failed,
        search=search or None,
        offset=(page - 1) * RUNS_PER_PAGE,
    )


def any_running() -> bool:
    return _store().count_runs("running") > 0


@st.cache_data(ttl=10, show_spinner=False)
def _agents(store_home: Path) -> list[str]:
    return _open(store_home).agents()


def agents() -> list[str]:
    return _agents(home())


def recent_runs(limit: int = RECENT_RUNS) -> list[Run]:
    return [] if missing() else _store().runs(limit=limit)


def replays_of(run_id: str) -> list[Run]:
    """The newest runs that replay a step of ``run_id``, newest first."""
    return [] if missing() else _store().runs(limit=RECENT_RUNS, replaying=run_id)


def run(run_id: str) -> Run:
    """The run with this id, unique id prefix or ``last``; raises NotFoundError."""
    return _store().run(run_id)


# cache_resource, not cache_data: the models are frozen, so sessions can share them
# without a copy per rerun (a 500-step run with big outputs is worth not copying).
def _version(of: Run) -> tuple[str, str, int]:
    """What changes while a run is recorded: a cache key part."""
    return of.id, of.status, of.step_count


@st.cache_resource(max_entries=32, show_spinner="Loading steps…")
def _steps(
    store_home: Path, version: tuple[str, str, int], start: int, limit: int | None
) -> list[Step]:
    return _open(store_home).steps(version[0], start, limit)


def steps(of: Run, start: int = 0, limit: int | None = None) -> list[Step]:
    """The run's steps in order, whole: all of them, or from position ``start`` at most
    ``limit`` (a page of them: only those are read)."""
    found = _steps(home(), _version(of), start, limit)
    if any(_pending(step) for step in found):
        # A blob that has not reached the store yet: read again next time, to fill it in.
        _steps.clear(home(), _version(of), start, limit)
    return found


def _pending(step: Step) -> bool:
    texts = (step.code, step.stdout, step.stderr, step.thought, step.error and step.error.traceback)
    return any(has_pending(text) for text in texts if isinstance(text, str))


@st.cache_resource(max_entries=16, show_spinner=False)
def _outline(store_home: Path, version: tuple[str, str, int]) -> list[Step]:
    return _open(store_home).steps(version[0], contents=False)


def outline(of: Run) -> list[Step]:
    """Every step of the run as its record says it, without reading a blob: status,
    times, tool calls, model call, sandbox, the code's preview (no output, variables or
    traceback). What the Run page shows of the steps it does not open."""
    return _outline(home(), _version(of))


@st.cache_resource(max_entries=16, show_spinner=False)
def _llm_calls(store_home: Path, version: tuple[str, str, int, int]) -> list[LlmCall]:
    return _open(store_home).llm_calls(version[0])


def llm_calls(of: Run) -> list[LlmCall]:
    """The run's model calls in order, with their messages; cached like its steps (a
    model call of a run being recorded may come before its step)."""
    return _llm_calls(home(), (*_version(of), of.llm_calls))


@st.cache_data(ttl=10, show_spinner="Grouping failures…")
def _failures(store_home: Path, agent: str | None) -> list[FailureGroup]:
    return _open(store_home).failures(agent)


def failures(agent: str | None = None) -> list[FailureGroup]:
    """The failing steps of every run (of ``agent``'s runs) grouped by failure
    signature, the groups that failed the most runs first; read again at most every
    10 seconds, like the agents."""
    return _failures(home(), agent)


@st.cache_resource(max_entries=16, show_spinner="Comparing…")
def _diff(
    store_home: Path, a: tuple[str, str, int], b: tuple[str, str, int], _runs: tuple[Run, Run]
) -> DiffOutline:
    return diff_outline(_store(), *_runs)


def diff(a: str, b: str) -> DiffOutline:
    """``diff_runs(a, b)`` as the Compare page shows it (every pair's status, the first
    divergence whole: ``diff_pair`` reads another pair), cached until either run changes;
    both runs and the diff are read on one connection."""
    with together():
        runs = run(a), run(b)
        return _diff(home(), _version(runs[0]), _version(runs[1]), runs)


@st.cache_resource(max_entries=64, show_spinner=False)
def _diff_pair(
    store_home: Path,
    a: tuple[str, str, int],
    b: tuple[str, str, int],
    k: int,
    _outline_of: DiffOutline,
) -> StepPair:
    return whole_pair(_open(store_home), _outline_of, k)


def diff_pair(outline: DiffOutline, k: int) -> StepPair:
    """The ``k``-th pair of a diff with all its differences, as ``diff_runs`` has it."""
    return _diff_pair(home(), _version(outline.a), _version(outline.b), k, outline)


def sql(query: str) -> duckdb.DuckDBPyRelation:
    """``Store.sql(query)``: the answer of one read-only query over the store's views,
    held in memory (the store's file is closed again); ``SqlError`` if refused or bad."""
    return _store().sql(query)


def replay_backend(step: Step) -> str:
    """Where the viewer's replays of ``step`` run: ``docker`` for a step recorded in
    Docker, else ``local`` (a subprocess on this machine, as ``replay`` does for a
    local-sandbox or observed step when no image is given)."""
    return "docker" if step.sandbox.backend == "docker" else "local"


def replay(run_id: str, step: int, code: str | None = None) -> ReplayReport:
    """Replay one step (recorded as a new run next to it); ``code`` replaces its code."""
    _local_only("replaying a step")
    return replay_step(run_id, step, code=code, home=home())


def replay_from(run_id: str, step: int, code: str | None = None) -> list[ReplayReport]:
    """Replay ``step`` (``code`` in its place) and every later step of the run in one
    sandbox, recorded as one new run next to it: one report per step run, in order."""
    _local_only("replaying steps")
    return replay_steps_from(run_id, step, code=code, home=home())
