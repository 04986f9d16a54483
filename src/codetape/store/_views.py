"""The stable SQL views over a store: ``runs``, ``steps``, ``tool_calls``, ``variables``,
``llm_calls`` and ``spans`` in the schema ``v1`` of the DuckDB file.

The internal tables change between versions; these views are the contract users query
(``Store.sql``, ``codetape sql``, docs/sql.md). A later version that must change a
view's columns adds a schema ``v2`` beside this one rather than changing ``v1``.

Ids are VARCHAR, times TIMESTAMPTZ (UTC instants), durations DOUBLE milliseconds. Every
attribute name comes from ``schemas.attributes``.
"""

from __future__ import annotations

import hashlib

from ..schemas import attributes as A

__all__ = [
    "VIEWS",
    "VIEWS_DIGEST",
    "VIEWS_SCHEMA",
    "VIEW_NAMES",
    "missing_manifests",
    "variables_view",
]

VIEWS_SCHEMA = "v1"
VIEW_NAMES = ("runs", "steps", "tool_calls", "variables", "llm_calls", "spans")


def _attr(key: str, alias: str = "sp") -> str:
    """A span attribute as text (NULL when the span does not have it)."""
    return f"""({alias}.attributes->>'$."{key}"')"""


def _ts(ns: str) -> str:
    """Nanoseconds since the epoch as a UTC instant."""
    return f"timezone('UTC', make_timestamp(({ns}) // 1000))"


def _ms(start: str, end: str) -> str:
    return f"(({end}) - ({start})) / 1e6"


_RUNS = f"""
CREATE OR REPLACE VIEW {VIEWS_SCHEMA}.runs AS
SELECT r.run_id, coalesce(r.name, 'agent') AS agent, r.task, r.status,
       {_ts("r.started_ns")} AS started_at, {_ts("r.ended_ns")} AS ended_at,
       {_ms("r.started_ns", "r.ended_ns")} AS duration_ms,
       r.final_answer, r.final_answer_type, r.error_type, r.error_message, r.replay_of,
       nullif(split_part(r.parent, ':', 1), '') AS parent_run,
       TRY_CAST(nullif(split_part(r.parent, ':', 2), '') AS INTEGER) AS parent_step,
       coalesce(s.steps, 0) AS steps, coalesce(s.failed_steps, 0) AS failed_steps,
       coalesce(m.llm_calls, 0) AS llm_calls, coalesce(m.input_tokens, 0) AS input_tokens,
       coalesce(m.output_tokens, 0) AS output_tokens, m.cost
FROM main.runs r
LEFT JOIN (
    SELECT run_id, count(*) AS steps, count(*) FILTER (WHERE status <> 'ok') AS failed_steps
    FROM main.steps GROUP BY run_id
) s USING (run_id)
LEFT JOIN (
    SELECT run_id, count(*) AS llm_calls, sum(input_tokens)::BIGINT AS input_tokens,
           sum(output_tokens)::BIGINT AS output_tokens,
           CASE WHEN count(*) FILTER (WHERE cost IS NULL AND (input_tokens IS NOT NULL
                OR output_tokens IS NOT NULL)) = 0 THEN sum(cost) END AS cost
    FROM main.llm_calls GROUP BY run_id
) m USING (run_id)
"""

_STEPS = f"""
CREATE OR REPLACE VIEW {VIEWS_SCHEMA}.steps AS
SELECT s.run_id, s.step_index AS step, s.span_id, coalesce(r.name, 'agent') AS agent,
       s.status, {_ts("s.started_ns")} AS started_at, {_ts("s.ended_ns")} AS ended_at,
       {_ms("s.started_ns", "s.ended_ns")} AS duration_ms,
       coalesce(try(decode(code.data)), {_attr(A.CODE_PREVIEW)}) AS code,
       s.error_type, coalesce(s.error_message, {_attr(A.ERROR_MESSAGE)}) AS error_message,
       coalesce(s.error_line, {_attr(A.ERROR_LINE)}) AS error_line,
       {_attr(A.STDOUT_PREVIEW)} AS stdout_preview, {_attr(A.STDERR_PREVIEW)} AS stderr_preview,
       {_attr(A.RESULT_PREVIEW)} AS result_preview, {_attr(A.RESULT_TYPE)} AS result_type,
       {_attr(A.STEP_THOUGHT_PREVIEW)} AS thought_preview,
       {_attr(A.STEP_LLM_CALL)} AS llm_call,
       coalesce({_attr(A.SANDBOX_BACKEND)}, 'observed') AS sandbox_backend,
       {_attr(A.CONTAINER_IMAGE_NAME)} AS image, {_attr(A.CONTAINER_IMAGE_ID)} AS image_id,
       {_attr(A.SANDBOX_PYTHON)} AS python,
       TRY_CAST({_attr(A.STATE_VARIABLES)} AS INTEGER) AS variables
FROM main.steps s
LEFT JOIN main.spans sp ON sp.trace_id = s.run_id AND sp.span_id = s.span_id
LEFT JOIN main.runs r ON r.run_id = s.run_id
-- The code's whole text: its blob, when the database holds it (up to 16 KB).
LEFT JOIN main.blobs code ON code.digest = {_attr(A.CODE_DIGEST)}
"""

# A tool call's step: the code span it was made from (its parent).
_TOOL_CALLS = f"""
CREATE OR REPLACE VIEW {VIEWS_SCHEMA}.tool_calls AS
SELECT sp.trace_id AS run_id, s.step_index AS step, sp.span_id,
       coalesce(r.name, 'agent') AS agent,
       coalesce({_attr(A.GEN_AI_TOOL_NAME)},
                substr(sp.name, {len(A.SPAN_EXECUTE_TOOL) + 2})) AS tool,
       coalesce({_attr(A.GEN_AI_TOOL_CALL_ID)}, sp.span_id) AS call_id,
       coalesce({_attr(A.TOOL_STATUS)},
                CASE WHEN {_attr(A.ERROR_TYPE)} IS NULL THEN 'ok' ELSE 'error' END) AS status,
       {_attr(A.GEN_AI_TOOL_CALL_ARGUMENTS)} AS arguments_preview,
       {_attr(A.GEN_AI_TOOL_CALL_RESULT)} AS result_preview,
       {_attr(A.ERROR_TYPE)} AS error_type,
       coalesce({_attr(A.ERROR_MESSAGE)}, sp.status_message) AS error_message,
       {_attr(A.TOOL_CHILD_RUN)} AS child_run,
       {_ts("sp.start_ns")} AS started_at, {_ts("sp.end_ns")} AS ended_at,
       {_ms("sp.start_ns", "sp.end_ns")} AS duration_ms
FROM main.spans sp
LEFT JOIN main.steps s ON s.run_id = sp.trace_id AND s.span_id = sp.parent_id
LEFT JOIN main.runs r ON r.run_id = sp.trace_id
WHERE starts_with(sp.name, '{A.SPAN_EXECUTE_TOOL} ')
"""


# The variable manifests are JSON blobs named by the step span's state attributes:
# {"format": 2, "variables": {name: snapshot}, ...}, or {name: snapshot} before.
_SNAPSHOT = (
    "STRUCT(type VARCHAR, digest VARCHAR, size BIGINT, preview VARCHAR, restorable BOOLEAN, "
    "reason VARCHAR)"
)


def variables_view(schema: str, tables: str, blobs: str) -> str:
    """The ``variables`` view in ``schema``, over the internal tables of the schema
    ``tables`` and the blobs (digest, data) of the relation ``blobs``. Each manifest is
    parsed once however many states share it, straight into typed snapshots."""
    return f"""
CREATE OR REPLACE VIEW {schema}.variables AS
WITH states AS (
    SELECT s.run_id, s.step_index, coalesce(r.name, 'agent') AS agent, w.state, w.digest
    FROM {tables}.steps s
    JOIN {tables}.spans sp ON sp.trace_id = s.run_id AND sp.span_id = s.span_id
    LEFT JOIN {tables}.runs r ON r.run_id = s.run_id,
    LATERAL (VALUES ('before', {_attr(A.STATE_BEFORE)}), ('after', {_attr(A.STATE_AFTER)}))
        w(state, digest)
    WHERE w.digest IS NOT NULL
), manifests AS (
    SELECT b.digest, try(decode(b.data)::JSON) AS manifest
    FROM {blobs} b WHERE b.digest IN (SELECT digest FROM states)
), entries AS (
    SELECT digest, unnest(map_entries(try(CAST(CASE WHEN manifest->>'$.format' = '2'
               THEN manifest->'$.variables' ELSE manifest END AS MAP(VARCHAR, {_SNAPSHOT}))))) AS v
    FROM manifests
)
SELECT st.run_id, st.step_index AS step, st.agent, st.state, e.v.key AS name,
       e.v.value.type AS type, e.v.value.digest AS digest, e.v.value.size AS size,
       e.v.value.preview AS preview, e.v.value.restorable AS restorable,
       e.v.value.reason AS reason
FROM states st JOIN entries e ON e.digest = st.digest
"""


# The manifests a step span names that the database does not hold (over 16 KB: they
# are files of the blob folder), in the schema ``tables``.
def missing_manifests(tables: str) -> str:
    return f"""
SELECT DISTINCT w.digest
FROM {tables}.spans sp,
     LATERAL (VALUES ({_attr(A.STATE_BEFORE)}), ({_attr(A.STATE_AFTER)})) w(digest)
WHERE sp.name = '{A.SPAN_EXECUTE_CODE}' AND w.digest IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM {tables}.blobs b WHERE b.digest = w.digest)
"""


_LLM_CALLS = f"""
CREATE OR REPLACE VIEW {VIEWS_SCHEMA}.llm_calls AS
SELECT l.run_id, l.call_index, l.span_id, coalesce(r.name, 'agent') AS agent, l.model,
       {_attr(A.GEN_AI_RESPONSE_MODEL)} AS response_model,
       l.input_tokens, l.output_tokens, l.cost,
       {_attr(A.ERROR_TYPE)} AS error_type,
       {_attr(A.LLM_INPUT_PREVIEW)} AS input_preview,
       {_attr(A.LLM_OUTPUT_PREVIEW)} AS output_preview,
       {_ts("l.started_ns")} AS started_at, {_ts("l.ended_ns")} AS ended_at,
       {_ms("l.started_ns", "l.ended_ns")} AS duration_ms
FROM main.llm_calls l
LEFT JOIN main.spans sp ON sp.trace_id = l.run_id AND sp.span_id = l.span_id
LEFT JOIN main.runs r ON r.run_id = l.run_id
"""

_SPANS = f"""
CREATE OR REPLACE VIEW {VIEWS_SCHEMA}.spans AS
SELECT trace_id, span_id, parent_id, name, {_ts("start_ns")} AS started_at,
       {_ts("end_ns")} AS ended_at, {_ms("start_ns", "end_ns")} AS duration_ms,
       status, status_message, attributes, events
FROM main.spans
"""

# Run by the store's migration (after the tables exist), in its transaction.
_VARIABLES = variables_view(VIEWS_SCHEMA, "main", "main.blobs")
_PARTS = (_RUNS, _STEPS, _TOOL_CALLS, _VARIABLES, _LLM_CALLS, _SPANS)
VIEWS = "\n;\n".join((f"CREATE SCHEMA IF NOT EXISTS {VIEWS_SCHEMA}", *_PARTS))
# Kept in the store's meta table: a store whose views another codetape made (of the
# same schema version) has them made again by its next writer.
VIEWS_DIGEST = hashlib.sha256(VIEWS.encode()).hexdigest()[:16]
