"""The store's paged reads: ``steps(run_id, start, limit)`` reads a window of a run's
steps, ``steps(..., contents=False)`` a run's steps without their blobs, and a search
of ``runs`` and ``count_runs`` in one session looks through the steps once."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

import codetape
from codetape.store import _read
from codetape.testing import RunSpec, StepSpec, build_store, synthetic_runs, synthetic_step


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store of a few short runs and one of 24 steps; its path and the long run's id."""
    path = tmp_path_factory.mktemp("paging")
    kinds = ("lookup", "notify", "compute", "fails") * 6
    long_run = RunSpec(
        "orders-agent",
        "Refund customer 4242",
        tuple(synthetic_step(kind, i, 4242) for i, kind in enumerate(kinds)),  # type: ignore[arg-type]
    )
    runs = build_store(path, specs=[*synthetic_runs(4, 3, seed=3), long_run], seed=3)
    return path, runs[-1].id


@pytest.fixture
def home(built: tuple[Path, str]) -> Path:
    return built[0]


@pytest.fixture
def run_id(built: tuple[Path, str]) -> str:
    return built[1]


@pytest.mark.parametrize(
    ("start", "limit"), [(0, 5), (5, 5), (20, 5), (22, 10), (24, 5), (30, 3), (3, 0), (7, None)]
)
def test_a_page_of_steps_is_that_slice_of_all_steps(
    home: Path, run_id: str, start: int, limit: int | None
) -> None:
    store = codetape.Store(home)
    every = store.steps(run_id)
    assert len(every) == 24
    end = None if limit is None else start + limit
    assert store.steps(run_id, start, limit) == every[start:end]


def test_steps_without_contents_read_no_blob(home: Path, run_id: str) -> None:
    store = codetape.Store(home)
    every = store.steps(run_id)
    outline = store.steps(run_id, contents=False)
    assert [(s.index, s.status, s.span_id, s.started_at, s.duration_ms) for s in outline] == [
        (s.index, s.status, s.span_id, s.started_at, s.duration_ms) for s in every
    ]
    for light, full in zip(outline, every, strict=True):
        assert light.sandbox == full.sandbox
        assert light.llm_call == full.llm_call
        assert [(c.name, c.call_id, c.started_at, c.error) for c in light.tool_calls] == [
            (c.name, c.call_id, c.started_at, c.error) for c in full.tool_calls
        ]
        assert full.code.startswith(light.code)
        assert light.stdout == ""
        assert light.variables_after == {}
        assert (light.error is None) == (full.error is None)
        if light.error is not None and full.error is not None:
            assert light.error.type == full.error.type
            assert light.error.traceback is None
    # A later read with contents is whole again (nothing of the light read stays).
    assert store.steps(run_id, 2, 2) == every[2:4]


def test_a_page_of_steps_of_a_prefix(home: Path, run_id: str) -> None:
    store = codetape.Store(home)
    assert store.steps(run_id[:10], 23, 5) == store.steps(run_id)[23:]


@pytest.mark.parametrize(("start", "limit"), [(-1, None), (0, -1)])
def test_a_negative_window_is_refused(
    home: Path, run_id: str, start: int, limit: int | None
) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        codetape.Store(home).steps(run_id, start, limit)


def test_blobs_of_many_digests_in_batches(home: Path, run_id: str) -> None:
    store = codetape.Store(home)
    digests = [d for s in store.steps(run_id) for d in (s.state_before, s.state_after) if d]
    absent = [f"sha256:{k:064x}" for k in range(1200)]  # more than one batch of keys
    found = store.blobs_of([*absent[:600], *digests, *absent[600:]])
    assert set(found) == set(digests)
    assert all(found[d] == store.blob(d) for d in digests)


def _found_by_scan(home: Path, search: str) -> set[str]:
    """The runs with ``search`` in their task, answer or a step's previews, any case."""
    with duckdb.connect(str(home / "codetape.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT run_id FROM runs WHERE contains(lower(coalesce(task, '')), $1) "
            "OR contains(lower(coalesce(final_answer, '')), $1) OR run_id IN (SELECT run_id "
            "FROM steps WHERE contains(lower(code_preview || chr(10) || coalesce("
            "stdout_preview, '')), $1))",
            [search.lower()],
        ).fetchall()
    return {r[0] for r in rows}


SEARCHES = ["customer 4242", "CUSTOMER 4242", "send_email(", "send%email", "send_", "\\", "zzz"]


@pytest.mark.parametrize("search", SEARCHES)
def test_a_search_in_one_session_counts_and_lists_alike(home: Path, search: str) -> None:
    store = codetape.Store(home)
    alone = (store.count_runs(search=search), store.runs(search=search))
    with store.session():
        together = (store.count_runs(search=search), store.runs(search=search))
        again = store.runs(search=search, limit=1)
        other = store.count_runs(search="customer")
    assert together == alone
    assert again == alone[1][:1]
    assert {r.id for r in alone[1]} == _found_by_scan(home, search)
    assert alone[0] == len(alone[1])
    assert other == len(_found_by_scan(home, "customer"))


# -- search through the words index -----------------------------------------------------

_SEARCHED = RunSpec(
    "orders-agent",
    "Look the orders up",
    (
        StepSpec("rows = Fetch_Orders(region='Nord')", "Dispatched TARDY: 3 parcels\n"),
        StepSpec("refund(order_id=77)", error=ValueError("Refund Denied for Order 77")),
    ),
    status="error",
)
# What a user types, and whether the run above is found (its task and answer aside).
FOUND = [
    ("fetch_orders", True),  # a word of the code, another case
    ("FETCH_ORDERS(REGION=", True),  # across words and punctuation
    ("etch_ord", True),  # part of a word
    ("orders(reg", True),  # the end of one word and the start of the next
    ("dispatched tardy", True),  # the output
    ("tardy: 3 PARCELS", True),
    ("refund denied", True),  # the error's message
    ("valueerror: refund", True),  # and type
    ("'nord'", True),
    ("3 parcels", True),  # a one-letter word: not in the words index, found in the text
    ("rows = f", True),
    ("order 8", False),
    ("x = 3", False),
    ("dispatched  tardy", False),  # the words are there, not that text
    ("tardy dispatched", False),
    ("nord region", False),
    ("parcel 3", False),
    ("ord_77", False),
]


def _search_store(path: Path) -> tuple[codetape.Store, str]:
    [built] = build_store(path, specs=[_SEARCHED], seed=9)
    build_store(path, specs=synthetic_runs(3, 3, seed=4), seed=10)
    return codetape.Store(path), built.id


@pytest.mark.parametrize(("search", "found"), FOUND)
def test_a_search_finds_a_step_by_its_code_output_or_error_in_any_case(
    tmp_path: Path, search: str, found: bool
) -> None:
    store, run_id = _search_store(tmp_path)
    assert ([r.id for r in store.runs(search=search)] == [run_id]) is found
    assert store.count_runs(search=search) == int(found)


def test_a_store_of_schema_3_is_made_searchable_when_migrated(tmp_path: Path) -> None:
    store, run_id = _search_store(tmp_path)
    # The store as schema 3 left it: no search text, no words.
    con = duckdb.connect(str(tmp_path / "codetape.duckdb"))
    con.execute("DROP TABLE search_words")
    con.execute("DROP SCHEMA IF EXISTS v1 CASCADE")  # the views of schema 4 read steps
    con.execute("DROP INDEX steps_run_id")  # columns of an indexed table cannot be dropped
    con.execute("ALTER TABLE steps DROP COLUMN search_text")
    con.execute("CREATE INDEX steps_run_id ON steps (run_id)")
    con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    con.close()
    codetape.Store(tmp_path).refresh()  # opened for writing: migrated
    for search, found in FOUND:
        assert ([r.id for r in store.runs(search=search)] == [run_id]) is found, search
    assert store.count_runs(search="Refund Denied") == 1


def test_runs_replaying_a_run_are_its_replays_only(tmp_path: Path) -> None:
    built = build_store(tmp_path, specs=synthetic_runs(5, 2, seed=6), seed=6)
    original, other = built[0].id, built[1].id
    con = duckdb.connect(str(tmp_path / "codetape.duckdb"))
    for replay, of in [(built[2].id, f"{original}:0"), (built[3].id, f"{original}:1"),
                       (built[4].id, f"{other}:0")]:  # fmt: skip
        con.execute("UPDATE runs SET replay_of = ? WHERE run_id = ?", [of, replay])
    con.close()
    store = codetape.Store(tmp_path)
    assert [r.id for r in store.runs(replaying=original)] == [built[3].id, built[2].id]
    assert [r.id for r in store.runs(replaying=other, status="ok")] == [
        r.id for r in [built[4]] if r.spec.status == "ok"
    ]
    assert store.runs(replaying=original[:8]) == []  # a whole id, not a prefix


@pytest.mark.parametrize("search", SEARCHES)
def test_a_search_window_by_window_finds_the_same_runs(
    home: Path, search: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows of one run: every search with a word in more than one run, and every
    # search without a word, looks through the steps a run at a time, newest first.
    monkeypatch.setattr(_read, "_SEARCH_WINDOW_RUNS", 1)
    store = codetape.Store(home)
    found = store.runs(search=search)
    assert {r.id for r in found} == _found_by_scan(home, search)
    assert [r.started_at for r in found] == sorted((r.started_at for r in found), reverse=True)
    with store.session():
        first = store.count_runs(search=search, at_most=1)
        page = store.runs(search=search, limit=2)
        second = store.runs(search=search, limit=2, offset=2)
        total = store.count_runs(search=search)
    assert first == min(1, len(found))
    assert page + second == found[:4]
    assert total == len(found)
    assert store.count_runs(search=search, at_most=2) == min(2, len(found))
