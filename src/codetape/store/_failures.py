"""Failing steps across runs, grouped by what failed: the failure signature.

Someone running hundreds of evaluation runs first needs to know which few ways they
fail. A signature is the exception type, the message with what varies from run to run
masked (quoted values, ids, numbers, addresses) and the failing line of code, masked
alike; two steps that failed the same way in different runs share one. Replays are
not the agent's runs: their steps are left out, and they are never the passing run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the read API's model: ingestion (recording) never loads it
    from ..schemas import FailureGroup

__all__ = ["failure_groups", "normalize_message"]

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]

_MASKS = (
    # Quoted values first: an id in quotes is one value, not a number and letters.
    (re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\""), "<str>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<addr>"),
    (
        re.compile(
            r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
        ),
        "<id>",
    ),
    # Hex or alphanumeric ids: a run of 6+ letters and digits with at least one digit.
    (re.compile(r"\b(?=[A-Za-z_-]*\d)[A-Za-z0-9_-]{6,}\b"), "<id>"),
    # Numbers, with a unit or not ("30.5s"), not inside a word ("v2", "sha256").
    (re.compile(r"(?<![\w<.])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\d.])"), "<n>"),
)
# smolagents' interpreter puts the failing line in front of the message.
_AT_LINE = re.compile(r"^Code execution failed at line '.*?' due to: ", re.DOTALL)


def normalize_message(message: str) -> str:
    """The message with what varies between runs masked; its first line only.

    >>> normalize_message("no order 'A-1007' (after 3 tries, id 9f8e7d6c5b)")
    'no order <str> (after <n> tries, id <id>)'
    """
    text = _AT_LINE.sub("", message.strip()).split("\n", 1)[0]
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return text[:300]


# The failing steps grouped by their raw type, message and line in SQL: a group's
# steps, runs, agents, first and last start and its last step (the example); raw
# groups whose masked message and line are the same are merged in Python.
_FAILED_STEPS = """
SELECT coalesce(st.error_type, st.status), coalesce(st.error_message, ''), st.error_line,
       count(*), list(DISTINCT st.run_id), list(DISTINCT coalesce(r.name, 'agent')),
       min(coalesce(st.started_ns, 0)), max(coalesce(st.started_ns, 0)),
       arg_max([st.run_id, CAST(st.step_index AS VARCHAR), coalesce(r.name, 'agent'), r.task],
               coalesce(st.started_ns, 0))
FROM steps st JOIN runs r USING (run_id)
WHERE st.status <> 'ok' AND r.replay_of IS NULL {agent}
GROUP BY ALL
"""

_PASSING_RUN = """
SELECT r.run_id FROM runs r
WHERE r.status = 'ok' AND r.replay_of IS NULL AND r.name = ? AND r.task IS NOT DISTINCT FROM ?
    AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.run_id = r.run_id AND s.status <> 'ok')
ORDER BY r.started_ns DESC LIMIT 1
"""


@dataclass
class _Group:
    error_type: str
    message: str
    line: str | None
    steps: int = 0
    runs: set[str] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)
    first_ns: int = 0
    last_ns: int = -1
    example: tuple[str, int, str, str | None, str] = ("", 0, "", None, "")


def _ts(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)


def _grouped(rows: list[tuple[Any, ...]]) -> dict[str, _Group]:
    groups: dict[str, _Group] = {}
    # Many steps fail with the same message or line: each is masked once.
    masked: dict[str, str] = {}
    for error_type, message, line, steps, runs, agents, first, last, example in rows:
        if line and line not in masked:
            masked[line] = normalize_message(line)
        if message not in masked:
            masked[message] = normalize_message(message)
        line = masked[line] if line else None
        normalized = masked[message]
        key = "\x00".join((error_type, normalized, line or ""))
        signature = hashlib.sha256(key.encode()).hexdigest()[:12]
        group = groups.setdefault(signature, _Group(error_type, normalized, line))
        group.steps += int(steps)
        group.runs.update(runs)
        group.agents.update(agents)
        group.first_ns = first if group.last_ns < 0 else min(group.first_ns, first)
        if last >= group.last_ns:
            group.last_ns = last
            run_id, index, agent, task = example
            group.example = (run_id, int(index or 0), agent, task, message)
    return groups


def failure_groups(query: Query, agent: str | None = None) -> list[FailureGroup]:
    """The failing steps of the store (of ``agent``'s runs), grouped by signature, the
    groups that failed the most runs first."""
    from ..schemas import FailureGroup

    where, params = ("AND r.name = ?", [agent]) if agent is not None else ("", [])
    groups = _grouped(query(_FAILED_STEPS.format(agent=where), params))
    found = []
    for signature, group in groups.items():
        run_id, index, name, task, message = group.example
        passing = query(_PASSING_RUN, [name, task])
        found.append(
            FailureGroup(
                signature=signature,
                error_type=group.error_type,
                message=group.message,
                line=group.line,
                steps=group.steps,
                runs=len(group.runs),
                agents=sorted(group.agents),
                first_seen=_ts(group.first_ns),
                last_seen=_ts(group.last_ns),
                example_run=run_id,
                example_step=index,
                example_message=message,
                passing_run=str(passing[0][0]) if passing else None,
            )
        )
    return sorted(found, key=lambda g: (-g.runs, -g.steps, -g.last_seen.timestamp()))
