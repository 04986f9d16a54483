"""Worked queries over the store's views: docs/sql.md, ``codetape sql --examples``, the
viewer's Query page and the tests use this one list."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EXAMPLE_QUERIES", "ExampleQuery"]


@dataclass(frozen=True)
class ExampleQuery:
    """A question and the query that answers it."""

    title: str
    sql: str


EXAMPLE_QUERIES: tuple[ExampleQuery, ...] = (
    ExampleQuery(
        "Every step that raised KeyError this week, by agent",
        """SELECT agent, count(*) AS steps, count(DISTINCT run_id) AS runs
FROM steps
WHERE error_type = 'KeyError' AND started_at >= now() - INTERVAL 7 DAY
GROUP BY agent
ORDER BY steps DESC, agent""",
    ),
    ExampleQuery(
        "Runs where a tool returned an empty list and the next step failed",
        """SELECT t.run_id, t.step, t.tool, s.error_type
FROM tool_calls t
JOIN steps s ON s.run_id = t.run_id AND s.step = t.step + 1
WHERE t.result_preview = '[]' AND s.status <> 'ok'
ORDER BY t.run_id, t.step""",
    ),
    ExampleQuery(
        "Steps whose code imports requests",
        r"""SELECT run_id, step, agent, code
FROM steps
WHERE regexp_matches(code, '(^|\n)\s*(import|from)\s+requests\b')
ORDER BY started_at""",
    ),
    ExampleQuery(
        "The slowest tool of each agent (mean time per call)",
        """WITH per_tool AS (
    SELECT agent, tool, count(*) AS calls, avg(duration_ms) AS mean_ms
    FROM tool_calls GROUP BY agent, tool
)
SELECT agent, arg_max(tool, mean_ms) AS tool, max(mean_ms) AS mean_ms
FROM per_tool
GROUP BY agent
ORDER BY agent""",
    ),
    ExampleQuery(
        "Tokens and cost per agent",
        """SELECT agent, count(*) AS calls, sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens, sum(cost) AS cost
FROM llm_calls
GROUP BY agent
ORDER BY sum(input_tokens) + sum(output_tokens) DESC, agent""",
    ),
    ExampleQuery(
        "The most common errors",
        """SELECT error_type, count(*) AS steps, count(DISTINCT run_id) AS runs
FROM steps
WHERE status <> 'ok'
GROUP BY error_type
ORDER BY steps DESC, error_type""",
    ),
    ExampleQuery(
        "How often each agent's runs fail, per task",
        """SELECT agent, task, count(*) AS total,
       count(*) FILTER (WHERE status <> 'ok' OR failed_steps > 0) AS failing,
       round(100.0 * failing / total, 1) AS failing_pct
FROM runs
WHERE replay_of IS NULL
GROUP BY agent, task
ORDER BY failing_pct DESC, agent, task""",
    ),
    ExampleQuery(
        "Runs that recovered: a step failed, the run still ended ok",
        """SELECT run_id, agent, task, failed_steps, steps, final_answer
FROM runs
WHERE status = 'ok' AND failed_steps > 0
ORDER BY started_at""",
    ),
    ExampleQuery(
        "Tool calls that raised, with their arguments",
        """SELECT run_id, step, tool, arguments_preview, error_type, error_message
FROM tool_calls
WHERE error_type IS NOT NULL
ORDER BY started_at""",
    ),
    ExampleQuery(
        "The largest variable of each run",
        """SELECT run_id, arg_max(name, size) AS variable, arg_max(type, size) AS type,
       max(size) AS bytes
FROM variables
WHERE state = 'after'
GROUP BY run_id
ORDER BY bytes DESC, run_id""",
    ),
    ExampleQuery(
        "The ten longest steps",
        """SELECT run_id, step, agent, status, round(duration_ms, 1) AS ms, code
FROM steps
ORDER BY duration_ms DESC
LIMIT 10""",
    ),
    ExampleQuery(
        "Steps run in a sandbox, by image",
        """SELECT image, image_id, count(*) AS steps,
       count(*) FILTER (WHERE status <> 'ok') AS failed
FROM steps
WHERE sandbox_backend <> 'observed'
GROUP BY image, image_id
ORDER BY steps DESC""",
    ),
)
