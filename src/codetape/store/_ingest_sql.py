"""The SQL of an ingestion pass: DuckDB reads the spool lines into a ``batch`` table,
then set-based statements store them and derive ``runs``, ``steps`` and ``llm_calls``
from them, all in the pass's one transaction.

Every statement of ``LOAD`` is idempotent (``INSERT OR IGNORE`` on the primary keys,
``INSERT OR REPLACE`` for a run's end), so a line ingested twice changes nothing.
``LOAD_NEW`` is the same with plain inserts of spans, steps and model calls: a pass
tries it first, since what it reads is nearly always new, and a plain insert skips
DuckDB's search for rows to ignore (a third of what storing a span costs); a key that
is there already fails it, and the pass is made again with ``LOAD``.
"""

from __future__ import annotations

import json

from ..schemas import attributes as A

__all__ = [
    "CLOSE_SPOOLS",
    "COUNTS",
    "LOAD",
    "LOAD_NEW",
    "MAX_RECORD_BYTES",
    "READ",
    "SAVE_OFFSETS",
    "SEARCH_TEXT",
    "STEP_WORDS",
    "WORD_PATTERN",
]

# The largest spool line that is stored (DuckDB's default JSON object limit). codetape
# never writes one this large: it cuts attributes and keeps large values as blob files.
MAX_RECORD_BYTES = 16 * 1024 * 1024

_COLUMNS = (
    "{t: 'VARCHAR', trace_id: 'VARCHAR', span_id: 'VARCHAR', parent_id: 'VARCHAR', "
    "name: 'VARCHAR', start_ns: 'BIGINT', end_ns: 'BIGINT', status: 'VARCHAR', "
    "status_message: 'VARCHAR', attributes: 'JSON', events: 'JSON', digest: 'VARCHAR', "
    "text: 'VARCHAR', b64: 'VARCHAR', records: 'BIGINT', reason: 'VARCHAR'}"
)

# All the pass's files in one parallel scan; each row knows its spool file by name.
READ = (
    "CREATE TEMP TABLE batch AS SELECT *, parse_filename(filename) AS spool "
    f"FROM read_json(?, format='newline_delimited', columns={_COLUMNS}, "
    f"maximum_object_size={MAX_RECORD_BYTES}, filename=true)"
)

# Per spool file: the lines read, and those that were JSON but no record codetape knows.
COUNTS = "SELECT spool, count(*), count(*) FILTER (WHERE t IS NULL) FROM batch GROUP BY spool"


def _attr(name: str) -> str:
    return f"attributes->>'$.\"{name}\"'"


def _paths(names: tuple[str, ...]) -> str:
    return ", ".join(f"'$.\"{name}\"'" for name in names)


# The same blob twice (two processes spooled it) is ignored like one stored already.
_INSERT_BLOBS = """
INSERT OR IGNORE INTO blobs
SELECT digest, coalesce(encode(text), from_base64(b64))
FROM batch WHERE t = 'blob' AND digest IS NOT NULL AND (text IS NOT NULL OR b64 IS NOT NULL)
"""

_INSERT_SPANS = """
INSERT OR IGNORE INTO spans
SELECT trace_id, span_id, parent_id, name, start_ns, end_ns, status, status_message,
       attributes, events
FROM batch WHERE t = 'span' AND trace_id IS NOT NULL AND span_id IS NOT NULL
"""

# What a run's row takes from its root span's attributes, in one JSON parse per span.
_RUN_ATTRS = (
    A.GEN_AI_AGENT_NAME,
    A.RUN_TASK,
    A.RUN_FINAL_ANSWER,
    A.RUN_REPLAY_OF,
    A.ERROR_TYPE,
    A.RUN_PARENT,
    A.RUN_STATUS,
    A.RUN_FINAL_ANSWER_TYPE,
)
_RUN_ROW = """
SELECT trace_id, span_id, v[1], v[2], {status}, start_ns, {end}, v[3], v[4], v[5], {message},
       spool, v[6], v[8]
FROM (
    SELECT *, json_extract_string(attributes, [{paths}]) AS v FROM batch b WHERE {where}
)
"""

# A run's "start" record makes it visible while it runs (and as incomplete if its
# process dies); its root span, when it ends, replaces that row with the outcome.
_INSERT_RUN_STARTS = "INSERT OR IGNORE INTO runs" + _RUN_ROW.format(
    status="'running'",
    end="NULL",
    message="NULL",
    paths=_paths(_RUN_ATTRS),
    where="t = 'start' AND parent_id IS NULL AND NOT EXISTS (SELECT 1 FROM batch e "
    "WHERE e.t = 'span' AND e.parent_id IS NULL AND e.trace_id = b.trace_id)",
)

_RUN_ENDS = f"t = 'span' AND parent_id IS NULL AND name LIKE '{A.SPAN_INVOKE_AGENT}%'"
_RUN_END_ROW = _RUN_ROW.format(
    status="v[7]", end="end_ns", message="status_message", paths=_paths(_RUN_ATTRS), where=_RUN_ENDS
)
_UPSERT_RUN_ENDS = "INSERT OR REPLACE INTO runs" + _RUN_END_ROW
# The same for new records (``LOAD_NEW``): the rows of the runs that end here and were
# stored running (their start record ingested by an earlier pass) go, and the ends are
# plain inserts. ``INSERT OR REPLACE`` matches every ended run against every stored run
# and costs twice as much; a run stored otherwise (ended already) fails the plain insert,
# and the pass is made again with ``LOAD``.
_DROP_RUNNING = (
    "DELETE FROM runs WHERE status = 'running' AND run_id IN "
    f"(SELECT trace_id FROM batch WHERE {_RUN_ENDS})"
)
_INSERT_RUN_ENDS = "INSERT INTO runs" + _RUN_END_ROW

_STEP_ATTRS = (
    A.STEP_INDEX,
    A.STEP_STATUS,
    A.CODE_PREVIEW,
    A.STDOUT_PREVIEW,
    A.ERROR_TYPE,
    A.ERROR_MESSAGE,
    A.ERROR_LINE,
)
# What a search looks through in a step (``steps.search_text``): its code, output and
# error previews, lower-cased once here rather than at every search.
SEARCH_TEXT = (
    "lower(concat_ws(chr(10), {code}, {stdout}, "
    "CASE WHEN {etype} IS NOT NULL THEN concat({etype}, ': ', {emsg}) END))"
)
# A word: two or more letters, digits and underscores (what a search's words are matched
# against). One-letter words (``x``, ``i``, ``0``) are in nearly every run, so they would
# narrow no search; a search's one-letter words are found in the steps' text alone. The
# regex costs ingestion per word it finds: skipping them halves it.
WORD_PATTERN = r"[\pL\pN_]{2,}"
# The words of steps (``{source}``: rows with run_id and search_text), once per run.
STEP_WORDS = (
    "SELECT DISTINCT run_id, unnest(regexp_extract_all(search_text, "
    + f"'{WORD_PATTERN}')) FROM ".replace("{", "{{").replace("}", "}}")
    + "{source} WHERE search_text IS NOT NULL"
)
_STEP_COLUMNS = (
    "run_id, span_id, step_index, status, started_ns, ended_ns, code_preview, "
    "stdout_preview, error_type, error_message, error_line, search_text"
)
# The pass's steps, once: stored in ``steps`` (in the order they started: a search that
# looks through a window of time reads the row groups of that time alone) and their
# words in ``search_words``.
_BATCH_STEPS = f"""
CREATE OR REPLACE TEMP TABLE batch_steps AS
SELECT trace_id AS run_id, span_id, CAST(v[1] AS INTEGER) AS step_index, v[2] AS status,
       start_ns AS started_ns, end_ns AS ended_ns, v[3] AS code_preview,
       v[4] AS stdout_preview, v[5] AS error_type, v[6] AS error_message, v[7] AS error_line,
       {SEARCH_TEXT.format(code="v[3]", stdout="v[4]", etype="v[5]", emsg="v[6]")}
           AS search_text
FROM (
    SELECT trace_id, span_id, start_ns, end_ns,
           json_extract_string(attributes, [{_paths(_STEP_ATTRS)}]) AS v
    FROM batch WHERE t = 'span' AND name = '{A.SPAN_EXECUTE_CODE}'
)
"""
_INSERT_STEPS = f"""
INSERT OR IGNORE INTO steps ({_STEP_COLUMNS}) SELECT {_STEP_COLUMNS} FROM batch_steps
ORDER BY started_ns
"""
_INSERT_STEP_WORDS = "INSERT INTO search_words " + STEP_WORDS.format(source="batch_steps")
_DROP_BATCH_STEPS = "DROP TABLE batch_steps"

_LLM_ATTRS = (
    A.LLM_INDEX,
    A.GEN_AI_RESPONSE_MODEL,
    A.GEN_AI_REQUEST_MODEL,
    A.GEN_AI_USAGE_INPUT_TOKENS,
    A.GEN_AI_USAGE_OUTPUT_TOKENS,
    A.LLM_COST,
)
_INSERT_LLM_CALLS = f"""
INSERT OR IGNORE INTO llm_calls
SELECT trace_id, span_id, TRY_CAST(v[1] AS INTEGER), coalesce(v[2], v[3]),
       TRY_CAST(v[4] AS BIGINT), TRY_CAST(v[5] AS BIGINT), TRY_CAST(v[6] AS DOUBLE),
       start_ns, end_ns
FROM (
    SELECT trace_id, span_id, start_ns, end_ns,
           json_extract_string(attributes, [{_paths(_LLM_ATTRS)}]) AS v
    FROM batch WHERE t = 'span' AND starts_with(name, '{A.SPAN_CHAT} ')
        AND {_attr(A.GEN_AI_OPERATION_NAME)} = '{A.OP_CHAT}'
)
"""

# A step's "start" record waits for its span; a step that ended in the same batch
# needs none (only a step's span ends it: the other spans are not looked through).
_INSERT_STEP_STARTS = f"""
INSERT OR IGNORE INTO span_starts
SELECT trace_id, span_id, parent_id, name, start_ns, attributes, spool
FROM batch b WHERE t = 'start' AND name = '{A.SPAN_EXECUTE_CODE}'
    AND trace_id IS NOT NULL AND span_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM batch e
        WHERE e.t = 'span' AND e.name = '{A.SPAN_EXECUTE_CODE}'
            AND e.trace_id = b.trace_id AND e.span_id = b.span_id)
"""

_DROP_ENDED_STARTS = f"""
DELETE FROM span_starts s USING batch b
WHERE b.t = 'span' AND b.name = '{A.SPAN_EXECUTE_CODE}'
    AND s.trace_id = b.trace_id AND s.span_id = b.span_id
"""

# What a recorder could not write (no space), told by a "lost" record once it could.
_INSERT_LOST = """
INSERT OR IGNORE INTO lost_records
SELECT spool, span_id, trace_id, records, reason FROM batch
WHERE t = 'lost' AND span_id IS NOT NULL AND records > 0
"""

# A run whose every record of its own was lost still shows, marked; its real records,
# if any arrive, replace this row.
_INSERT_LOST_RUNS = """
INSERT OR IGNORE INTO runs (run_id, status, started_ns, spool)
SELECT trace_id, 'running', min(start_ns), any_value(spool) FROM batch
WHERE t = 'lost' AND trace_id IS NOT NULL GROUP BY trace_id
"""

LOAD = (
    _INSERT_BLOBS,
    _INSERT_SPANS,
    _INSERT_RUN_STARTS,
    _UPSERT_RUN_ENDS,
    _BATCH_STEPS,
    _INSERT_STEPS,
    _INSERT_STEP_WORDS,
    _DROP_BATCH_STEPS,
    _INSERT_LLM_CALLS,
    _INSERT_STEP_STARTS,
    _DROP_ENDED_STARTS,
    _INSERT_LOST,
    _INSERT_LOST_RUNS,
)
_PLAIN = (_INSERT_SPANS, _INSERT_STEPS, _INSERT_LLM_CALLS)


def _as_new(statement: str) -> tuple[str, ...]:
    """``statement`` of ``LOAD`` as ``LOAD_NEW`` makes it."""
    if statement == _UPSERT_RUN_ENDS:
        return (_DROP_RUNNING, _INSERT_RUN_ENDS)
    if statement in _PLAIN:
        return (statement.replace("INSERT OR IGNORE INTO", "INSERT INTO"),)
    return (statement,)


LOAD_NEW = tuple(new for statement in LOAD for new in _as_new(statement))

# The spool files of dead writers ($spools, a list), after their last records: their
# runs still running are incomplete, and their steps that never ended are interrupted,
# with the code they were running.
_INTERRUPTED = json.dumps({A.STEP_STATUS: "interrupted"})
_DEAD = "spool IN (SELECT unnest($spools))"
CLOSE_SPOOLS = (
    f"UPDATE runs SET status = 'incomplete' WHERE {_DEAD} AND status = 'running'",
    f"""
    INSERT OR IGNORE INTO spans
    SELECT trace_id, span_id, parent_id, name, start_ns, NULL, 'ERROR',
           'its process ended while the step ran',
           json_merge_patch(coalesce(attributes, '{{}}'), '{_INTERRUPTED}'), '[]'
    FROM span_starts WHERE {_DEAD}
    """,
    f"""
    INSERT OR IGNORE INTO steps ({_STEP_COLUMNS})
    SELECT trace_id, span_id, TRY_CAST({_attr(A.STEP_INDEX)} AS INTEGER), 'interrupted',
           start_ns, NULL, {_attr(A.CODE_PREVIEW)}, NULL, NULL, NULL, NULL,
           lower({_attr(A.CODE_PREVIEW)})
    FROM span_starts WHERE {_DEAD}
    """,
    "INSERT INTO search_words "
    + STEP_WORDS.format(
        source=f"(SELECT trace_id AS run_id, lower({_attr(A.CODE_PREVIEW)}) AS search_text "
        f"FROM span_starts WHERE {_DEAD})"
    ),
    f"DELETE FROM span_starts WHERE {_DEAD}",
)

# Each file's new offset and counts, all files in one statement (lists, one per column).
SAVE_OFFSETS = """
INSERT OR REPLACE INTO ingest_files
SELECT unnest($names), unnest($offsets), unnest($torn), unnest($bad), unnest($done)
"""
