"""The synthetic-store builder: many runs, written the way the tracer writes them, fast."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any

from .._format import MESSAGE_CHARS, TEXT_PREVIEW_CHARS, cut
from ..schemas import attributes as A
from ..store.internal import BlobStore, IngestStats, SpoolWriter, ingest
from ._specs import RunSpec, StepSpec
from ._templates import TEMPLATES, Blobs, RunTemplate

__all__ = ["BuiltRun", "StoreBuilder"]

DEFAULT_START = datetime(2025, 1, 1, tzinfo=timezone.utc)
PREPARE_RUNS = 1000  # runs whose templates add_runs prepares in one go
_S = 10**9
_FIRST_STEP_NS = _S * 8 // 10  # from a run's start to its first step
_THINK_NS = _S * 3 // 2  # between two steps: the model writing the next action
_RUN_GAP_NS = 10 * _S  # between the end of a run and the start of the next


@dataclass(frozen=True)
class BuiltRun:
    """A run the builder wrote: its id in the store and what it was made from."""

    id: str
    spec: RunSpec


class _Process:
    """One recording process as the builder plays it: a spool file of its own and the
    blobs it has written (a process writes each blob once, as the tracer does)."""

    def __init__(self, home: Path) -> None:
        self.spool = SpoolWriter(home)
        self.blobs = BlobStore(home / "blobs", spool=self.spool)
        self.runs = 0
        self._written: set[int] = set()

    def carry(self, blobs: Blobs) -> None:
        """Write a template's blobs the first time this process copies it."""
        if id(blobs) not in self._written:
            for digest, data in blobs.data.items():
                self.blobs.put(data, digest)
            self._written.add(id(blobs))

    def text(self, attrs: dict[str, Any], keys: tuple[str, str], text: str, limit: int) -> None:
        """A text field as the tracer records it: the whole text as a blob, a preview."""
        digest_key, preview_key = keys
        attrs[digest_key] = self.blobs.put_text(text)
        attrs[preview_key] = cut(text, limit)


class StoreBuilder:
    """Writes synthetic runs into the store at ``home`` as codetape's tracer records them.

    Each kind of step and run end is recorded once through the tracer itself, and its
    records are copied with each run's own ids, times, agent, task, code, output and
    answer, through the store's own spool writer and blob store, one spool file per
    ``runs_per_spool`` runs (as that many runs of one process would leave). A spool file
    is finished when the next one starts and at ``close()``; ``codetape.Store(home)``
    ingests what is finished when it opens. Runs start at ``start`` (2025-01-01 UTC by
    default), one after another; ids come from ``seed`` (random without one).

    ``runs`` lists what was written, each run's id with its spec; with
    ``keep_runs=False`` it stays empty, so that writing millions of steps (fed to
    ``add_runs`` as a generator) holds no more than a thousand runs' specs at a time.

    The first time a kind of step is asked for, recording its template swaps codetape's
    configuration for a moment: do not build while other threads record.

    >>> import codetape, tempfile
    >>> from codetape.testing import RunSpec, StepSpec, StoreBuilder
    >>> home = tempfile.mkdtemp()
    >>> with StoreBuilder(home, seed=1) as builder:
    ...     run_id = builder.add_run(RunSpec("bot", steps=(StepSpec("n = 2", stdout="2\\n"),)))
    >>> codetape.Store(home).step(run_id, 0).stdout
    '2\\n'
    """

    def __init__(
        self,
        home: str | os.PathLike[str],
        *,
        seed: int | None = None,
        runs_per_spool: int = 100,
        start: datetime = DEFAULT_START,
        keep_runs: bool = True,
    ) -> None:
        self.home = Path(home).expanduser().absolute()
        self.runs: list[BuiltRun] = []
        self._keep = keep_runs
        self._rng = random.Random(seed)
        self._per_spool = runs_per_spool
        self._clock = int(start.timestamp()) * _S + start.microsecond * 1000
        self._process: _Process | None = None

    def add_run(self, spec: RunSpec) -> str:
        """Write one run; returns its id."""
        TEMPLATES.prepare([spec])
        return self._write_run(spec)

    def add_runs(self, specs: Iterable[RunSpec]) -> list[str]:
        """Write several runs (the templates of each thousand recorded in one go, the
        specs read as they come); returns their ids."""
        return list(self.iter_runs(specs))

    def iter_runs(self, specs: Iterable[RunSpec]) -> Iterator[str]:
        """Write runs as ``add_runs`` does, yielding each one's id once it is written."""
        it = iter(specs)
        while chunk := list(islice(it, PREPARE_RUNS)):
            TEMPLATES.prepare(chunk)
            for spec in chunk:
                yield self._write_run(spec)

    def close(self) -> None:
        """Finish the current spool file, as its process would on exit."""
        if self._process is not None:
            self._process.spool.close()
            self._process = None

    def ingest(self, wait_s: float = 60.0) -> IngestStats:
        """Finish the spool and ingest it into the store's database now (reading the
        store would do it too), in one pass."""
        self.close()
        return ingest(self.home, wait_s=wait_s)

    def __enter__(self) -> StoreBuilder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _hex(self, like: str) -> str:
        width = len(like)
        return f"{self._rng.getrandbits(4 * width):0{width}x}"

    def _current(self) -> _Process:
        if self._process is not None and self._process.runs >= self._per_spool:
            self.close()
        if self._process is None:
            self._process = _Process(self.home)
        return self._process

    def _write_run(self, spec: RunSpec) -> str:
        process = self._current()
        tpl = TEMPLATES.run(spec)
        process.carry(tpl.blobs)
        trace_id = self._hex(tpl.start.record["trace_id"])
        root = (trace_id, self._hex(tpl.start.record["span_id"]), None)
        start, name = self._clock, tpl.name_prefix + spec.agent
        attrs = _run_attributes(tpl.start.record["attributes"], spec)
        process.spool.write(tpl.start.stamp(root, start, attrs, name=name), defer=True)
        at = start + _FIRST_STEP_NS
        for index, step in enumerate(spec.steps):
            at = self._write_step(process, step, index, root[:2], at) + _THINK_NS
        end = at - _THINK_NS // 2
        if spec.status != "incomplete":
            process.spool.write(self._end(process, tpl, spec, root, (start, end)))
        process.runs += 1
        self._clock = end + _RUN_GAP_NS
        if self._keep:
            self.runs.append(BuiltRun(trace_id, spec))
        return trace_id

    def _end(
        self,
        process: _Process,
        tpl: RunTemplate,
        spec: RunSpec,
        ids: tuple[str, str, None],
        times: tuple[int, int],
    ) -> dict[str, Any]:
        """The root span a run leaves when it ends, with its final answer if any."""
        attrs = _run_attributes(tpl.end.record["attributes"], spec)
        keys = (A.RUN_FINAL_ANSWER_DIGEST, A.RUN_FINAL_ANSWER)
        for key in keys:
            attrs.pop(key, None)
        if spec.final_answer is not None:
            process.text(attrs, keys, spec.final_answer, MESSAGE_CHARS)
        start, end = times
        name = tpl.name_prefix + spec.agent
        return tpl.end.stamp(ids, start, attrs, end_ns=end, name=name)

    def _write_step(
        self, process: _Process, spec: StepSpec, index: int, run: tuple[str, str], at: int
    ) -> int:
        """Write one step's spans (and blobs) starting at ``at``; returns when it ends."""
        tpl = TEMPLATES.step(spec)
        process.carry(tpl.blobs)
        trace_id, root_id = run
        step_id = self._hex(tpl.step.record["span_id"])
        for tool in tpl.tools:
            attrs = dict(tool.record["attributes"])
            attrs[A.GEN_AI_TOOL_CALL_ID] = self._hex(attrs[A.GEN_AI_TOOL_CALL_ID])
            offset = tool.record["start_ns"] - tpl.step.record["start_ns"]
            ids = (trace_id, self._hex(tool.record["span_id"]), step_id)
            process.spool.write(tool.stamp(ids, at + offset, attrs), defer=True)
        attrs = dict(tpl.step.record["attributes"])
        attrs[A.STEP_INDEX] = index
        process.text(attrs, (A.CODE_DIGEST, A.CODE_PREVIEW), spec.code, TEXT_PREVIEW_CHARS)
        if spec.stdout:
            keys = (A.STDOUT_DIGEST, A.STDOUT_PREVIEW)
            process.text(attrs, keys, spec.stdout, TEXT_PREVIEW_CHARS)
        step = tpl.step.stamp((trace_id, step_id, root_id), at, attrs)
        process.spool.write(step, defer=True)
        end: int = step["end_ns"]
        return end


def _run_attributes(template: dict[str, Any], spec: RunSpec) -> dict[str, Any]:
    attrs = {**template, A.GEN_AI_AGENT_NAME: spec.agent}
    if spec.task is None:
        attrs.pop(A.RUN_TASK, None)
    else:
        attrs[A.RUN_TASK] = spec.task
    return attrs
