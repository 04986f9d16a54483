"""The store's read API: runs and steps as pydantic models, blobs as bytes."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from ..errors import (
    AmbiguousRunIdError,
    BlobNotFoundError,
    NotFoundError,
    RunNotFoundError,
    StepNotFoundError,
)
from ..schemas import (
    ErrorInfo,
    FailureGroup,
    LlmCall,
    LlmMessage,
    Run,
    RunDetail,
    SandboxSpec,
    Step,
    ToolCall,
    VariableSnapshot,
)
from ..schemas import attributes as A
from ._archive import is_archive, reads_of
from ._blobs import BlobStore
from ._db import DB_NAME, connect, held_by_this_thread, is_disk_full
from ._failures import failure_groups
from ._home import resolve_home
from ._ingest import IngestStats, spool_changed, try_ingest, wait_for_background
from ._ingest_sql import WORD_PATTERN
from ._spool import live_dir, visible_surrogates
from ._sql import Params, run_sql

__all__ = ["BLOB_PENDING", "Store", "blob_pending", "has_pending", "span_row", "steps_from_rows"]

log = logging.getLogger("codetape")

# How long a read's catch-up waits for a database another process is ingesting into
# before it reads what is there. Ingestion passes take milliseconds.
_CATCH_UP_WAIT_S = 1.0

# Blobs are looked up by key in batches of this many: DuckDB finds a short list of keys
# through the primary key's index, where a join would scan every blob's digest.
_BLOB_BATCH = 500
_BLOBS_BY_DIGEST = "SELECT digest, data FROM blobs WHERE list_contains(?::VARCHAR[], digest)"
_SPANS_OF_RUN = """SELECT span_id, parent_id, name, start_ns, end_ns, status, status_message,
       attributes FROM spans WHERE trace_id = ? ORDER BY start_ns"""
_SPANS_OF_PAGE = """SELECT span_id, parent_id, name, start_ns, end_ns, status, status_message,
       attributes FROM spans WHERE trace_id = ?
       AND (list_contains(?::VARCHAR[], span_id) OR list_contains(?::VARCHAR[], parent_id))
       ORDER BY start_ns"""

# The runs with a text (lower-case) in a step's code, output or error preview.
_STEP_HITS = "SELECT DISTINCT run_id FROM steps WHERE contains(search_text, ?)"
# A search lower-cased as the stored text is, and its words.
_SEARCH_WORDS = f"SELECT lower($1), regexp_extract_all(lower($1), '{WORD_PATTERN}')"

_RUN_ID_CHARS = 32  # a run's id: its trace id, in hex

# What a step, a model call or a message shows in place of a blob its span names and the
# store does not have (yet): spans that reached a codetape serve before their blobs (a
# Collector carries spans, not blobs), or a blob folder copied in part. The text fills
# in on the first read after the blob arrives.
BLOB_PENDING = "[codetape: blob pending: {digest} is not in the store yet]"

# Attributes whose value is a blob digest.
_DIGEST_KEYS = (".digest", A.STATE_BEFORE, A.STATE_AFTER, A.STEP_RANDOM_STATE)

_RUN_COLUMNS = """r.run_id, r.name, r.task, r.status, r.started_ns, r.ended_ns, r.final_answer,
       r.replay_of, r.error_type, r.error_message, r.parent, r.final_answer_type"""
# Runs are chosen (filtered, ordered, paged) first; only their steps are counted.
_RUN_PAGE = f"""
WITH page AS (
    SELECT {_RUN_COLUMNS} FROM runs r {{where}} ORDER BY r.started_ns DESC LIMIT ? OFFSET ?
)
SELECT r.*, coalesce(s.n, 0), coalesce(s.failed, 0), coalesce(l.lost, 0),
       coalesce(m.calls, 0), coalesce(m.input_tokens, 0), coalesce(m.output_tokens, 0), m.cost
FROM page r LEFT JOIN (
    SELECT run_id, count(*) AS n, count(*) FILTER (WHERE status <> 'ok') AS failed
    FROM steps WHERE run_id IN (SELECT run_id FROM page) GROUP BY run_id
) s USING (run_id) LEFT JOIN (
    SELECT run_id, sum(records) AS lost
    FROM lost_records WHERE run_id IN (SELECT run_id FROM page) GROUP BY run_id
) l USING (run_id) LEFT JOIN (
    SELECT run_id, count(*) AS calls, sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens,
           -- a cost only when every call that reported tokens has a price
           CASE WHEN count(*) FILTER (WHERE cost IS NULL AND (input_tokens IS NOT NULL
                OR output_tokens IS NOT NULL)) = 0 THEN sum(cost) END AS cost
    FROM llm_calls WHERE run_id IN (SELECT run_id FROM page) GROUP BY run_id
) m USING (run_id)
ORDER BY r.started_ns DESC
"""


def _candidates(text: str, words: list[str]) -> tuple[str, list[Any]]:
    """SQL for the runs that have every word of ``text`` (a word with text on both
    sides in the search whole, one at its start or end as a part of a word: the search
    may begin or end in the middle of one)."""
    conditions, params = [], []
    at = 0
    for word in words:
        at = text.index(word, at)
        inside = at > 0 and at + len(word) < len(text)
        conditions.append("word = ?" if inside else "contains(word, ?)")
        params.append(word)
        at += len(word)
    sql = (
        f"SELECT run_id FROM search_words WHERE {' OR '.join(conditions)} GROUP BY run_id "
        f"HAVING {' AND '.join(f'bool_or({c})' for c in conditions)}"
    )
    return sql, [*params, *params]


def _step_hits(text: str, words: list[str]) -> tuple[str, list[Any]]:
    """SQL for the runs with ``text`` in a step's search text: only the steps of the
    runs that have every word of ``text`` are looked through."""
    if not words:
        return _STEP_HITS, [text]
    sql, params = _candidates(text, words)
    return f"{_STEP_HITS} AND run_id IN ({sql})", [text, *params]


def blob_pending(digest: object) -> str:
    """The text shown where the content of a blob the store lacks would be."""
    return BLOB_PENDING.format(digest=digest)


def has_pending(text: str | None) -> bool:
    """Whether recorded text holds a blob's place (``blob_pending``)."""
    return bool(text) and "[codetape: blob pending: sha256:" in str(text)


def _ts(ns: int | None) -> datetime | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)


def _run_from_row(row: Sequence[Any]) -> Run:
    (run_id, name, task, status, started, ended, answer, replay_of, etype, emsg) = row[:10]
    parent, answer_type, n, failed, lost, calls, input_tokens, output_tokens, cost = row[10:]
    parent_run, _, parent_step = (parent or "").rpartition(":")
    return Run(
        id=run_id,
        name=name or "agent",
        task=task,
        status=status,
        started_at=_ts(started) or datetime.fromtimestamp(0, tz=timezone.utc),
        ended_at=_ts(ended),
        step_count=n,
        failed_steps=failed,
        final_answer=answer,
        final_answer_type=answer_type,
        replay_of=replay_of,
        error=ErrorInfo(type=etype, message=emsg or "") if etype else None,
        lost_records=int(lost),
        parent_run=parent_run or None,
        parent_step=int(parent_step) if parent_run and parent_step.isdigit() else None,
        llm_calls=int(calls),
        input_tokens=int(input_tokens),
        output_tokens=int(output_tokens),
        cost=float(cost) if cost is not None else None,
    )


def _decoded(data: bytes) -> str:
    """A stored text: UTF-8, with a lone surrogate (recorded with ``surrogatepass``) shown
    as ``\\udcff`` and any other undecodable byte replaced."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return visible_surrogates(data.decode("utf-8", "surrogatepass"))
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace")


def _visible_json(value: Any) -> Any:
    if isinstance(value, str):
        return visible_surrogates(value)
    if isinstance(value, list):
        return [_visible_json(v) for v in value]
    if isinstance(value, dict):
        return {visible_surrogates(k): _visible_json(v) for k, v in value.items()}
    return value


# A search with more candidate runs than this looks through the steps newest first, a
# window of this many runs at a time, until it has the runs asked for.
_SEARCH_WINDOW_RUNS = 2000


_NEVER, _ALWAYS = -(2**63), 2**63 - 1


@dataclass
class _Search:
    """A search's runs in one session: ``table`` holds the runs found so far whose
    steps hold the text. A search looked through window by window has looked through
    the steps that started at ``scanned_from`` or later: it knows every such run that
    started then or later; ``scanned_from`` is ``_NEVER`` once it looked through all."""

    table: str
    text: str
    windowed: bool = False
    scanned_from: int = _ALWAYS


class Store:
    """Read access to a codetape store directory.

    Every read sees every run this process has finished, whenever the store was
    opened, and what other processes had spooled when the read began, runs still being
    recorded included: it first waits for this process's background ingestion and then
    ingests what is new in the spool (a read with nothing new only looks at the spool
    files' sizes). Each query opens the DuckDB file read-only for just that query, so
    agents can keep recording while you read; ``session()`` groups several reads.

    >>> import codetape, tempfile
    >>> store = codetape.Store(tempfile.mkdtemp())
    >>> store.runs()
    []

    A directory ``codetape export --parquet`` wrote is opened as a read-only archive
    (``archive`` is True): every read works on it, nothing is ingested or written.
    """

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home: Path = resolve_home(home)
        self.archive = is_archive(self.home)
        # Where the database and blob files are read: an archive's built store.
        self._reads = reads_of(self.home)
        self.blobs = BlobStore(self._reads / "blobs")
        self.last_ingest: IngestStats | None = None
        # Why the last catch-up could not store what is spooled (no disk space), if so.
        self.ingest_problem: str | None = None
        self._blob_cache: dict[str, bytes] = {}
        # The searches of the open session: the table of each one's runs (_search_hits).
        self._searches: dict[str, _Search] = {}
        # False while steps are read without their blobs (``steps(contents=False)``).
        self._read_blobs = True
        self._session: duckdb.DuckDBPyConnection | None = None

    @property
    def db_path(self) -> Path:
        return self._reads / DB_NAME

    def refresh(self) -> IngestStats | None:
        """Ingest pending spool records now, whether or not the spool looks changed
        (skipped when another process is at it)."""
        if self.archive:
            return None
        wait_for_background(self.home)
        if not live_dir(self.home).exists() and self.db_path.exists():
            return None
        self.last_ingest = self._try_ingest(10.0)
        return self.last_ingest

    def _try_ingest(self, wait_s: float) -> IngestStats | None:
        """Ingest what is spooled; on a full disk, say so once and read what is there."""
        try:
            stats = try_ingest(self.home, wait_s=wait_s)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if self.ingest_problem is None:
                log.warning(
                    "codetape: no space left on the disk of the store %s (%s): showing what "
                    "it held before; what is spooled since is kept, and stored once there is "
                    "space again",
                    self.home,
                    first,
                )
            self.ingest_problem = first
            return None
        self.ingest_problem = None
        return stats

    def _catch_up(self) -> None:
        """Before a read: what this process finished, then what the spool holds."""
        if self.archive:
            return
        if held_by_this_thread(self.home):
            # This thread has the database open (another Store's session): nobody in
            # this process can ingest until it closes it. Read what is there.
            return
        wait_for_background(self.home)
        if spool_changed(self.home):
            # None when another process held the database all along: read what is there.
            stats = self._try_ingest(_CATCH_UP_WAIT_S)
            if stats is not None:
                self.last_ingest = stats

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._session is not None:
            return self._session.execute(sql, list(params)).fetchall()
        self._catch_up()
        with connect(self._reads, read_only=True) as con:
            return con.execute(sql, list(params)).fetchall()

    @contextlib.contextmanager
    def session(self) -> Iterator[Store]:
        """Run the queries of a ``with`` block on one read-only connection, rather than
        one each, after one catch-up with the spool. Nothing in this process can ingest
        meanwhile, so keep it short.

        >>> with store.session():                          # doctest: +SKIP
        ...     run, steps = store.run("last"), store.steps("last")
        """
        if self._session is not None:
            yield self
            return
        self._catch_up()
        with connect(self._reads, read_only=True) as con:
            self._session = con
            try:
                yield self
            finally:
                self._session = None
                self._searches = {}

    def sql(self, query: str, params: Params = None) -> duckdb.DuckDBPyRelation:
        """The answer of one read-only SQL query over the store's views (``runs``,
        ``steps``, ``tool_calls``, ``variables``, ``llm_calls``, ``spans``: docs/sql.md)
        as a DuckDB relation (``.df()``, ``.pl()``, ``.arrow()``, ``.fetchall()``), held in
        memory: the store's file is closed when it returns. ``params`` fill ``?`` (a
        sequence) or ``$name`` (a mapping). A query that writes, attaches, installs or
        reads files, or more than one statement, raises ``SqlError``; so does bad SQL.

        >>> store.sql("SELECT agent, count(*) AS n FROM runs GROUP BY agent").df()  # doctest: +SKIP
        """
        self._catch_up()
        return run_sql(self._reads, query, params)

    def blobs_of(self, digests: Iterable[str]) -> dict[str, bytes]:
        """Several blobs at once (small ones in one query); missing ones are left out."""
        wanted = sorted(set(digests))
        found = self._stored_blobs(wanted)
        for digest in wanted:
            if digest not in found:
                with contextlib.suppress(BlobNotFoundError):
                    found[digest] = self.blobs.get(digest)
        return found

    def _stored_blobs(self, digests: Sequence[str]) -> dict[str, bytes]:
        """The blobs held in the database among ``digests``, a batch of keys at a time."""
        found: dict[str, bytes] = {}
        for at in range(0, len(digests), _BLOB_BATCH):
            batch = list(digests[at : at + _BLOB_BATCH])
            for digest, data in self._query(_BLOBS_BY_DIGEST, [batch]):
                found[digest] = bytes(data)
        return found

    # -- runs ------------------------------------------------------------------

    def runs(
        self,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 100,
        *,
        failed: bool = False,
        offset: int = 0,
        search: str | None = None,
        replaying: str | None = None,
    ) -> list[Run]:
        """Runs, newest first. ``failed=True`` keeps runs that errored, died, or have a
        failed step; ``search`` keeps runs with that text (in any case) in a step's code,
        output or error (their first 200 characters), its task or its final answer;
        ``replaying`` keeps the replays of a step of that run (its full id). In one
        ``session()``, ``count_runs`` and ``runs`` of one search look through the steps
        once."""
        with self.session():
            where, params, state = self._filters(status, agent, failed, search)
            if replaying is not None:
                where += " AND " if where else " WHERE "
                where += "starts_with(r.replay_of, ?)"
                params.append(replaying + ":")
            self._search_until(state, where, params, offset + limit)
            rows = self._query(_RUN_PAGE.format(where=where), [*params, limit, offset])
        return [_run_from_row(r) for r in rows]

    def count_runs(
        self,
        status: str | None = None,
        agent: str | None = None,
        *,
        failed: bool = False,
        search: str | None = None,
        at_most: int | None = None,
    ) -> int:
        """How many runs ``runs()`` would list with no limit; with ``at_most``, counted
        up to that many (a search that many runs match stops looking there)."""
        with self.session():
            where, params, state = self._filters(status, agent, failed, search)
            found = self._search_until(state, where, params, at_most)
            if found is None:
                found = int(self._query(f"SELECT count(*) FROM runs r {where}", params)[0][0])
        return found if at_most is None else min(found, at_most)

    def _search_until(
        self, state: _Search | None, where: str, params: list[Any], wanted: int | None
    ) -> int | None:
        """Look through the steps for a windowed search (newest runs first, a window of
        runs at a time) until ``wanted`` runs that match ``where`` are known, or all of
        them (``wanted`` None); returns how many are known then, or None when every
        one is."""
        if state is None or not state.windowed:
            return None
        while state.scanned_from != _NEVER:
            if state.scanned_from != _ALWAYS and wanted is not None:
                known = self._query(
                    f"SELECT count(*) FROM runs r {where} {'AND' if where else 'WHERE'} "
                    "r.started_ns >= ?",
                    [*params, state.scanned_from],
                )
                if int(known[0][0]) >= wanted:
                    return int(known[0][0])
            self._next_window(state)
        return None

    def _next_window(self, state: _Search) -> None:
        """Look through the steps of the next window of older runs. Steps are stored
        about in the order they ran, so a window's steps are read alone (DuckDB skips
        the row groups whose times are all outside it)."""
        hi = state.scanned_from
        below = self._query(
            "SELECT started_ns FROM runs WHERE started_ns < ? ORDER BY started_ns DESC "
            "LIMIT 1 OFFSET ?",
            [hi, _SEARCH_WINDOW_RUNS - 1],
        )
        lo = int(below[0][0]) if below and below[0][0] is not None else _NEVER
        self._query(
            f"INSERT INTO {state.table} SELECT DISTINCT run_id FROM steps "
            "WHERE started_ns >= ? AND (started_ns < ? OR ?) AND contains(search_text, ?)",
            [lo, hi, hi == _ALWAYS, state.text],
        )
        if lo == _NEVER:  # and the steps without a start time
            self._query(
                f"INSERT INTO {state.table} SELECT DISTINCT run_id FROM steps "
                "WHERE started_ns IS NULL AND contains(search_text, ?)",
                [state.text],
            )
        state.scanned_from = lo

    def agents(self) -> list[str]:
        """The agent names in the store, sorted."""
        return [str(r[0]) for r in self._query("SELECT DISTINCT name FROM runs ORDER BY 1")]

    def _filters(
        self, status: str | None, agent: str | None, failed: bool, search: str | None
    ) -> tuple[str, list[Any], _Search | None]:
        where: list[str] = []
        state = None
        params: list[Any] = []
        if status is not None:
            where.append("r.status = ?")
            params.append(status)
        if agent is not None:
            where.append("r.name = ?")
            params.append(agent)
        if failed:
            where.append(
                "(r.status IN ('error', 'incomplete') OR r.run_id IN "
                "(SELECT run_id FROM steps WHERE status <> 'ok'))"
            )
        if search:
            [(text, words)] = self._query(_SEARCH_WORDS, [search])
            hits, hit_params = self._search_hits(text, words)
            state = self._searches.get(text)
            where.append(
                "(contains(lower(coalesce(r.task, '')), ?) OR "
                f"contains(lower(coalesce(r.final_answer, '')), ?) OR r.run_id IN ({hits}))"
            )
            params += [text, text, *hit_params]
        return (" WHERE " + " AND ".join(where) if where else ""), params, state

    def _search_hits(self, text: str, words: list[str]) -> tuple[str, list[Any]]:
        """SQL for the runs with ``text`` in a step's code, output or error preview. In
        a session, a table of them made once per search: the count of runs and the page
        of them that follows look through the steps once, not twice. When many runs
        have the search's words, the table is filled newest runs first, a window at a
        time, as far as ``runs`` and ``count_runs`` need (``_search_until``)."""
        sql, params = _step_hits(text, words)
        if self._session is None:
            return sql, params
        state = self._searches.get(text)
        if state is None:
            table = f"codetape_search_{len(self._searches)}"
            state = _Search(table, text, windowed=True)
            if words:
                sql, params = _candidates(text, words)
                self._session.execute(f"CREATE TEMP TABLE {table}_words AS {sql}", params)
                [(many,)] = self._session.execute(
                    f"SELECT count(*) > ? FROM {table}_words", [_SEARCH_WINDOW_RUNS]
                ).fetchall()
                state.windowed = bool(many)
            if state.windowed:
                self._session.execute(f"CREATE TEMP TABLE {table} (run_id VARCHAR)")
            else:
                self._session.execute(
                    f"CREATE TEMP TABLE {table} AS {_STEP_HITS} "
                    f"AND run_id IN (SELECT run_id FROM {table}_words)",
                    [text],
                )
            self._searches[text] = state
        return f"SELECT run_id FROM {state.table}", []

    def resolve_run_id(self, run_id: str) -> str:
        """The full id of the run whose id starts with ``run_id`` (a unique prefix), or
        of the newest run for ``"last"``."""
        prefix = run_id.strip().lower()
        if prefix == "last":
            rows = self._query("SELECT run_id FROM runs ORDER BY started_ns DESC LIMIT 1")
            if not rows:
                raise RunNotFoundError(run_id, self.home)
            return str(rows[0][0])
        if not prefix:
            raise RunNotFoundError(run_id, self.home)
        if len(prefix) == _RUN_ID_CHARS:  # a whole id: looked up through the key's index
            rows = self._query("SELECT run_id FROM runs WHERE run_id = ?", [prefix])
            if rows:
                return str(rows[0][0])
        rows = self._query(
            "SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id LIMIT 6",
            [prefix],
        )
        if not rows:
            raise RunNotFoundError(run_id, self.home)
        if len(rows) > 1 and rows[0][0] != prefix:
            raise AmbiguousRunIdError(run_id, [r[0] for r in rows])
        return str(rows[0][0])

    def run(self, run_id: str) -> Run:
        with self.session():
            full = self.resolve_run_id(run_id)
            return _run_from_row(
                self._query(_RUN_PAGE.format(where="WHERE r.run_id = ?"), [full, 1, 0])[0]
            )

    def detail(self, run_id: str) -> RunDetail:
        with self.session():
            run = self.run(run_id)
            return RunDetail(run=run, steps=self.steps(run.id), llm_calls=self.llm_calls(run.id))

    # -- model calls -------------------------------------------------------------

    def llm_calls(self, run_id: str, *, messages: bool = True) -> list[LlmCall]:
        """The run's model calls, in the order they were made; with their input messages
        unless ``messages=False`` (each call resends the conversation so far: a long
        run's messages are much text, and a list rarely needs them)."""
        with self.session():
            full = self.resolve_run_id(run_id)
            return self._llm_calls(full, "", [], messages)

    def llm_call(self, run_id: str, span_id: str) -> LlmCall:
        """One model call of the run, with its messages, by its span id
        (``Step.llm_call`` names the call a step came from)."""
        with self.session():
            full = self.resolve_run_id(run_id)
            found = self._llm_calls(full, "AND span_id = ?", [span_id], True)
        if not found:
            raise NotFoundError(
                f"run {full} has no model call {span_id!r}",
                path=self.home,
                hint=f"`codetape show {full[:12]} --llm` lists its model calls",
            )
        return found[0]

    def _llm_calls(
        self, run_id: str, where: str, params: list[Any], messages: bool
    ) -> list[LlmCall]:
        spans = self._query(
            "SELECT span_id, parent_id, name, start_ns, end_ns, status, status_message, "
            "attributes FROM spans WHERE trace_id = ? AND starts_with(name, ?) "
            f"AND attributes->>'$.\"{A.GEN_AI_OPERATION_NAME}\"' = ? {where} ORDER BY start_ns",
            [run_id, A.SPAN_CHAT + " ", A.OP_CHAT, *params],
        )
        self._prefetch(spans)
        inputs: list[list[dict[str, Any]]] = [
            self._json(self._attributes(span[7]).get(A.LLM_INPUT_DIGEST), []) if messages else []
            for span in spans
        ]
        contents = self.blobs_of(
            m.get("content.digest") or "" for entries in inputs for m in entries
        )
        calls = [
            self._llm_call(run_id, span, entries, contents)
            for span, entries in zip(spans, inputs, strict=True)
        ]
        return sorted(calls, key=lambda c: (c.index, c.started_at))

    def _llm_call(
        self,
        run_id: str,
        span: tuple[Any, ...],
        messages: list[dict[str, Any]],
        contents: dict[str, bytes],
    ) -> LlmCall:
        span_id, _, _, start_ns, end_ns, _, status_message, raw = span
        attrs = self._attributes(raw)
        error = None
        if A.ERROR_TYPE in attrs:
            error = ErrorInfo(
                type=attrs[A.ERROR_TYPE], message=attrs.get(A.ERROR_MESSAGE, status_message or "")
            )
        return LlmCall(
            run_id=run_id,
            span_id=span_id,
            index=int(attrs.get(A.LLM_INDEX, 0)),
            model=attrs.get(A.GEN_AI_REQUEST_MODEL),
            response_model=attrs.get(A.GEN_AI_RESPONSE_MODEL),
            input_tokens=attrs.get(A.GEN_AI_USAGE_INPUT_TOKENS),
            output_tokens=attrs.get(A.GEN_AI_USAGE_OUTPUT_TOKENS),
            finish_reasons=list(attrs.get(A.GEN_AI_RESPONSE_FINISH_REASONS, [])),
            cost=attrs.get(A.LLM_COST),
            input_messages=[
                LlmMessage(
                    role=str(m.get("role", "")),
                    content=_decoded(contents[m["content.digest"]])
                    if m.get("content.digest") in contents
                    else blob_pending(m.get("content.digest")),
                )
                for m in messages
                if isinstance(m, dict)
            ],
            output=self._text(attrs.get(A.LLM_OUTPUT_DIGEST), attrs.get(A.LLM_OUTPUT_PREVIEW, "")),
            streamed=bool(attrs.get(A.LLM_STREAMED, False)),
            error=error,
            started_at=_ts(start_ns) or datetime.fromtimestamp(0, tz=timezone.utc),
            duration_ms=((end_ns or start_ns) - start_ns) / 1e6,
        )

    # -- failures ----------------------------------------------------------------

    def failures(self, agent: str | None = None) -> list[FailureGroup]:
        """Failing steps across all runs (or ``agent``'s) grouped by failure signature:
        exception type, message with ids, numbers and quoted values masked, and the
        failing line; the groups that failed the most runs first."""
        with self.session():
            return failure_groups(self._query, agent)

    # -- steps -----------------------------------------------------------------

    def steps(
        self, run_id: str, start: int = 0, limit: int | None = None, *, contents: bool = True
    ) -> list[Step]:
        """The run's steps in order. ``start`` and ``limit`` page them by position (from
        the ``start``-th step, at most ``limit``): only those steps' records and blobs
        are read. ``contents=False`` reads no blob: each step as its record alone says
        it, for an overview of a long run (status, times, tool calls, model call,
        sandbox), with the code's and the thought's previews, and stdout, stderr,
        variables, the traceback and tool calls' arguments and results left empty.

        >>> second_page = store.steps("last", 20, 20)          # doctest: +SKIP
        >>> outline = store.steps("last", contents=False)      # doctest: +SKIP
        """
        if start < 0 or (limit is not None and limit < 0):
            raise ValueError(f"start and limit must not be negative, not {start}, {limit}")
        with self.session():
            return self._steps(run_id, start, limit, contents)

    def _steps(self, run_id: str, start: int, limit: int | None, contents: bool) -> list[Step]:
        full = self.resolve_run_id(run_id)
        if start or limit is not None:
            # Only the page's steps and their children (tool calls) are read.
            window = "SELECT span_id FROM steps WHERE run_id = ? ORDER BY step_index, started_ns"
            params: list[Any] = [full]
            if limit is not None:
                window, params = window + " LIMIT ?", [full, limit]
            wanted = [r[0] for r in self._query(window + " OFFSET ?", [*params, start])]
            spans = self._query(_SPANS_OF_PAGE, [full, wanted, wanted]) if wanted else []
        else:
            spans = self._query(_SPANS_OF_RUN, [full])
        if not contents:
            self._blob_cache = {}
            self._read_blobs = False
            try:
                return self._assemble(full, spans, prefetch=False)
            finally:
                self._read_blobs = True
        return self._assemble(full, spans)

    def step(self, run_id: str, index: int) -> Step:
        with self.session():
            return self._step_at(run_id, index)

    def _step_at(self, run_id: str, index: int) -> Step:
        full = self.resolve_run_id(run_id)
        found = self._query(
            "SELECT span_id FROM steps WHERE run_id = ? AND step_index = ? LIMIT 1",
            [full, index],
        )
        spans = []
        if found:
            spans = self._query(
                "SELECT span_id, parent_id, name, start_ns, end_ns, status, status_message, "
                "attributes FROM spans WHERE trace_id = ? AND (span_id = ? OR parent_id = ?) "
                "ORDER BY start_ns",
                [full, found[0][0], found[0][0]],
            )
        steps = self._assemble(full, spans)
        if not steps:
            available = [
                r[0]
                for r in self._query(
                    "SELECT step_index FROM steps WHERE run_id = ? ORDER BY step_index", [full]
                )
            ]
            raise StepNotFoundError(full, index, available)
        return steps[0]

    def step_codes(self, *run_ids: str) -> dict[str, str]:
        """The whole code of each step of these runs by the step's span id, reading only
        the code's blobs (at once for all the runs): what aligning runs needs
        (``steps(contents=False)`` has the code's preview)."""
        with self.session():
            records = {
                span_id: self._attributes(raw)
                for run_id in run_ids
                for span_id, raw in self._query(
                    "SELECT span_id, attributes FROM spans WHERE trace_id = ? AND name = ?",
                    [self.resolve_run_id(run_id), A.SPAN_EXECUTE_CODE],
                )
            }
            digests = {a.get(A.CODE_DIGEST) for a in records.values()}
            self._blob_cache = self._stored_blobs(sorted(d for d in digests if d))
            return {
                span_id: self._text(a.get(A.CODE_DIGEST), a.get(A.CODE_PREVIEW, ""))
                for span_id, a in records.items()
            }

    def _assemble(
        self, run_id: str, spans: list[tuple[Any, ...]], *, prefetch: bool = True
    ) -> list[Step]:
        if prefetch:
            self._prefetch(spans)
        children: dict[str, list[tuple[Any, ...]]] = {}
        code_spans = []
        for span in spans:
            if span[2] == A.SPAN_EXECUTE_CODE:
                code_spans.append(span)
            elif span[1] is not None:
                children.setdefault(span[1], []).append(span)
        steps = [self._step(run_id, s, children.get(s[0], [])) for s in code_spans]
        return sorted(steps, key=lambda s: s.index)

    def _step(self, run_id: str, span: tuple[Any, ...], tool_spans: list[tuple[Any, ...]]) -> Step:
        span_id, _, _, start_ns, end_ns, _, status_message, raw = span
        attrs = self._attributes(raw)
        error = None
        if A.ERROR_TYPE in attrs:
            tb = attrs.get(A.ERROR_TRACEBACK_DIGEST)
            error = ErrorInfo(
                type=attrs[A.ERROR_TYPE],
                message=attrs.get(A.ERROR_MESSAGE, status_message or ""),
                traceback=self._text(tb) if tb and self._read_blobs else None,
            )
        return Step(
            run_id=run_id,
            index=int(attrs.get(A.STEP_INDEX, 0)),
            span_id=span_id,
            code=self._text(attrs.get(A.CODE_DIGEST), attrs.get(A.CODE_PREVIEW, "")),
            status=attrs.get(A.STEP_STATUS, "error" if error else "ok"),
            stdout=self._text(attrs.get(A.STDOUT_DIGEST)),
            stderr=self._text(attrs.get(A.STDERR_DIGEST)),
            result=attrs.get(A.RESULT_PREVIEW),
            result_type=attrs.get(A.RESULT_TYPE),
            error=error,
            variables_before=self._variables(attrs.get(A.STATE_BEFORE)),
            variables_after=self._variables(attrs.get(A.STATE_AFTER)),
            tool_calls=[self._tool_call(t) for t in tool_spans],
            sandbox=SandboxSpec(
                backend=attrs.get(A.SANDBOX_BACKEND, "observed"),
                image=attrs.get(A.CONTAINER_IMAGE_NAME),
                image_id=attrs.get(A.CONTAINER_IMAGE_ID),
                repo_digests=list(attrs.get(A.CONTAINER_IMAGE_REPO_DIGESTS, [])),
                layers_digest=attrs.get(A.SANDBOX_LAYERS_DIGEST),
                python=attrs.get(A.SANDBOX_PYTHON),
                platform=attrs.get(A.SANDBOX_PLATFORM),
                env_fingerprint=attrs.get(A.SANDBOX_ENV_FINGERPRINT),
                limits=json.loads(attrs[A.SANDBOX_LIMITS]) if A.SANDBOX_LIMITS in attrs else None,
                hash_seed=attrs.get(A.SANDBOX_HASH_SEED),
            ),
            started_at=_ts(start_ns) or datetime.fromtimestamp(0, tz=timezone.utc),
            duration_ms=((end_ns or start_ns) - start_ns) / 1e6,
            random_seed=attrs.get(A.STEP_RANDOM_SEED),
            state_before=attrs.get(A.STATE_BEFORE),
            state_after=attrs.get(A.STATE_AFTER),
            executor=json.loads(attrs[A.STEP_EXECUTOR]) if A.STEP_EXECUTOR in attrs else None,
            random_state=attrs.get(A.STEP_RANDOM_STATE),
            llm_call=attrs.get(A.STEP_LLM_CALL),
            thought=self._text(
                attrs.get(A.STEP_THOUGHT_DIGEST), attrs.get(A.STEP_THOUGHT_PREVIEW, "")
            )
            or None,
        )

    def _tool_call(self, span: tuple[Any, ...]) -> ToolCall:
        span_id, _, name, start_ns, end_ns, _, status_message, raw = span
        attrs = self._attributes(raw)
        error = None
        if A.ERROR_TYPE in attrs:
            error = ErrorInfo(
                type=attrs[A.ERROR_TYPE], message=attrs.get(A.ERROR_MESSAGE, status_message or "")
            )
        return ToolCall(
            name=attrs.get(A.GEN_AI_TOOL_NAME, name.removeprefix(A.SPAN_EXECUTE_TOOL + " ")),
            call_id=attrs.get(A.GEN_AI_TOOL_CALL_ID, span_id),
            arguments=self._json(attrs.get(A.TOOL_ARGUMENTS_DIGEST), {}),
            result=self._json(attrs.get(A.TOOL_RESULT_DIGEST), None),
            result_pickle=attrs.get(A.TOOL_RESULT_PICKLE),
            child_run=attrs.get(A.TOOL_CHILD_RUN),
            parameters=json.loads(attrs[A.TOOL_PARAMETERS]) if A.TOOL_PARAMETERS in attrs else None,
            error=error,
            started_at=_ts(start_ns) or datetime.fromtimestamp(0, tz=timezone.utc),
            duration_ms=((end_ns or start_ns) - start_ns) / 1e6,
        )

    def _attributes(self, raw: str | None) -> dict[str, Any]:
        """A span's attributes, with the full value of any that was recorded cut."""
        attrs: dict[str, Any] = json.loads(raw) if raw else {}
        full = self._json(attrs.get(A.ATTRIBUTES_FULL_DIGEST), {})
        if isinstance(full, dict):
            attrs.update(full)
        return attrs

    # -- blobs -----------------------------------------------------------------

    def blob(self, digest: str) -> bytes:
        """The bytes of a blob, by its ``sha256:...`` digest."""
        found = self._blob_cache.get(digest)
        if found is not None:
            return found
        rows = self._query("SELECT data FROM blobs WHERE digest = ?", [digest])
        if rows:
            return bytes(rows[0][0])
        return self.blobs.get(digest)

    def _prefetch(self, spans: list[tuple[Any, ...]]) -> None:
        """Load the small blobs a set of spans names in one query, not one per blob."""
        digests: set[str] = set()
        for span in spans:
            attrs = json.loads(span[7]) if span[7] else {}
            digests.update(v for k, v in attrs.items() if k.endswith(_DIGEST_KEYS))
        digests.discard("")
        self._blob_cache = self._stored_blobs(sorted(digests))

    def _text(self, digest: str | None, fallback: str = "") -> str:
        if not digest or not self._read_blobs:
            return fallback
        try:
            return _decoded(self.blob(digest))
        except BlobNotFoundError:
            return (fallback + "\n" if fallback else "") + blob_pending(digest)

    def _json(self, digest: str | None, fallback: Any) -> Any:
        if not digest or not self._read_blobs:
            return fallback
        try:
            data = self.blob(digest)
        except BlobNotFoundError:
            return fallback
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:  # a lone surrogate, recorded with surrogatepass
            return _visible_json(json.loads(data.decode("utf-8", "surrogatepass")))
        return json.loads(text)

    def _variables(self, digest: str | None) -> dict[str, VariableSnapshot]:
        manifest = self._json(digest, {})
        if manifest.get("format") == 2:  # the variables, the bindings and the checkpoint
            manifest = manifest["variables"]
        return {name: VariableSnapshot(name=name, **snap) for name, snap in manifest.items()}

    # -- health ----------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Numbers for ``codetape doctor``: rows, pending spool files, and what could not
        be stored: torn last lines of killed writers, spool lines set aside
        (``bad_lines``), and spans a recorder could not write for lack of disk space
        (``unwritten_records``)."""
        rows = self._query(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM steps), "
            "(SELECT count(*) FROM spans), "
            "(SELECT coalesce(sum(torn_lines), 0) FROM ingest_files), "
            "(SELECT coalesce(sum(bad_lines), 0) FROM ingest_files), "
            "(SELECT coalesce(sum(records), 0) FROM lost_records WHERE NOT starts_with(id, '@'))"
        )[0]
        pending = len(list(live_dir(self.home).glob("*.jsonl")))
        keys = ("runs", "steps", "spans", "torn_lines", "bad_lines", "unwritten_records")
        return {**dict(zip(keys, map(int, rows), strict=True)), "pending_spool_files": pending}

    def lost_records(self, limit: int = 5) -> list[dict[str, Any]]:
        """Where records could not be stored, newest spool files first: the spool file,
        the line's byte offset in it (``None`` for spans never written), the run (when
        known), how many records, and why."""
        rows = self._query(
            "SELECT spool, id, run_id, records, reason FROM lost_records "
            "ORDER BY spool DESC, id LIMIT ?",
            [limit],
        )
        return [
            {
                "spool": spool,
                "offset": int(key[1:]) if key.startswith("@") else None,
                "run_id": run_id,
                "records": int(records),
                "reason": reason or "",
            }
            for spool, key, run_id, records, reason in rows
        ]


def span_row(record: dict[str, Any]) -> tuple[Any, ...]:
    """A spool span record as ingestion stores its row, in the order ``Store`` reads
    span rows: id, parent, name, times, status, status message, the attributes' JSON."""
    return (
        record.get("span_id"),
        record.get("parent_id"),
        record.get("name"),
        record.get("start_ns"),
        record.get("end_ns"),
        record.get("status"),
        record.get("status_message"),
        json.dumps(record.get("attributes") or {}),
    )


def steps_from_rows(
    home: Path, run_id: str, spans: list[tuple[Any, ...]], blobs: dict[str, bytes]
) -> list[Step]:
    """The steps of run ``run_id`` assembled from its span rows (``span_row``) and every
    blob they name, without reading the database: the same ``Step``s as a read after
    ingestion (what a replay reads back of the run it has just recorded)."""
    reader = Store(home)
    reader._blob_cache = dict(blobs)
    return reader._assemble(run_id, spans, prefetch=False)
