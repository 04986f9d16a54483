"""Lazy ingestion on a worker thread: a run's end schedules a pass, a reader runs it.

Ending a run waits for nothing: it schedules a pass ``INGEST_DELAY_S`` later, and what
else ends meanwhile joins it and puts the pass off again (up to ``INGEST_MAX_DELAY_S``
after the first run it waits for), so a burst of short runs, such as an eval loop's,
goes into DuckDB in one transaction. A read in this process (``wait_for_background``)
or its exit runs the scheduled pass at once and waits for it.

Every pass ingests every process's spool, so processes recording into one store take
turns rather than each running its own passes: a scheduled pass waits until no pass
(of any process) has written the database for ``INGEST_DELAY_S``. However many agents
record, the store then sees about one pass a second, not one per agent; each pass pays
for opening the database and for the checkpoint that closes it, which grows with the
store's indexes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from ._catchup import key
from ._db import DB_NAME

__all__ = [
    "INGEST_DELAY_S",
    "INGEST_MAX_DELAY_S",
    "BackgroundIngester",
    "quiet_for",
    "wait_for_background",
]

# How long after a run ends its process ingests it (unless a read or the process's
# exit asks first): the runs that end meanwhile go into the same transaction.
INGEST_DELAY_S = 1.0
# A run that ends while a pass waits puts it off to INGEST_DELAY_S after that run, but
# no further than this after the first run it waits for: a process whose runs end back
# to back still stores them this often (a reader never waits for it: it ingests).
INGEST_MAX_DELAY_S = 10.0
# A background pass that finds the database busy (another process ingesting) tries
# again this many times, a delay apart; after that, the next read ingests.
_BUSY_RETRIES = 3

# Every live ingester of each store: a process can record into one store through more
# than one runtime (``configure`` and a replay's ``recording_to``).
_background: dict[Path, weakref.WeakSet[BackgroundIngester]] = {}
_background_lock = threading.Lock()


def wait_for_background(home: Path, timeout: float = 10.0) -> None:
    """Run this process's scheduled ingestion of ``home`` now and let it finish, so a
    reader sees the runs that ended before it looked (and holds no conflicting
    connection)."""
    with _background_lock:
        ingesters = list(_background.get(key(home), ()))
    deadline = time.monotonic() + timeout
    for ingester in ingesters:
        ingester.flush(max(0.0, deadline - time.monotonic()))


def quiet_for(home: Path, delay: float) -> float:
    """How much longer to wait until ``delay`` seconds have passed since the store's
    database was last written (by a pass of any process, or a reader's catch-up); 0
    when they have, or when its time is in the future (the clock went back)."""
    newest = 0.0
    for name in (DB_NAME, DB_NAME + ".wal"):
        with contextlib.suppress(OSError):
            newest = max(newest, os.stat(home / name).st_mtime)
    age = time.time() - newest
    return delay - age if 0 <= age < delay else 0.0


class BackgroundIngester:
    """Ingests a store on a worker thread, lazily, so ending a run waits for nothing.

    ``request`` (a run ended) schedules a pass ``INGEST_DELAY_S`` later; what is asked
    meanwhile joins it, so a burst of short runs is one transaction. ``flush`` runs the
    scheduled pass at once and waits for it: a read in this process does, and so does
    the interpreter's exit, so a short-lived process still leaves its runs ingested (and
    if it does not, readers ingest on open).
    """

    def __init__(
        self,
        home: Path,
        guard: Callable[[str], contextlib.AbstractContextManager[None]],
        delay: float | None = None,
    ) -> None:
        self.home = home
        # The recording path's error guard (log once, never raise into the agent): the
        # tracer's, passed in, since the store does not depend on the tracer.
        self._guard = guard
        self._delay = delay
        with _background_lock:
            _background.setdefault(key(home), weakref.WeakSet()).add(self)
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._idle = threading.Event()
        self._idle.set()
        self._due: float | None = None  # when the next pass runs (time.monotonic)
        self._first: float | None = None  # when the first request it serves came
        self._now = False  # someone waits for it: no more delay
        self._busy = 0  # passes in a row that found the database busy
        self._thread: threading.Thread | None = None
        # What the guard let through (strict mode): raised by the next flush().
        self._error: Exception | None = None

    def request(self) -> None:
        """Schedule a pass ``INGEST_DELAY_S`` from now; one scheduled already waits
        for this request too, up to ``INGEST_MAX_DELAY_S`` after its first."""
        with self._cond:
            self._idle.clear()
            now = time.monotonic()
            if self._first is None:
                self._first = now
            due = min(now + self._delay_s(), self._first + self._max_delay_s())
            if self._due is None or due > self._due:
                self._due = due
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="codetape-ingest", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _next(self) -> bool:
        """Wait until the scheduled pass is due; ``False`` (and idle) when none is."""
        with self._cond:
            while self._due is not None and not self._now:
                left = self._due - time.monotonic()
                if left <= 0:
                    # Another process's pass has just ingested (what this one spooled
                    # before it, too): let the store rest before the next.
                    left = quiet_for(self.home, self._delay_s())
                    if left <= 0:
                        break
                    self._due = time.monotonic() + left
                self._cond.wait(left)
            if self._due is None:
                self._now = False
                self._thread = None
                self._idle.set()
                return False
            self._due = self._first = None
            return True

    def _delay_s(self) -> float:
        return INGEST_DELAY_S if self._delay is None else self._delay

    def _max_delay_s(self) -> float:
        return max(INGEST_MAX_DELAY_S, self._delay_s())

    def _work(self) -> None:
        # Looked up on each pass (not imported above): ``_ingest`` imports this module.
        from . import _ingest

        while self._next():
            busy = False
            try:
                with self._guard("ingesting finished runs"):
                    busy = _ingest.try_ingest(self.home, wait_s=0.5) is None
            except Exception as exc:  # strict mode: the thread cannot raise to anyone
                self._error = exc
            with self._cond:
                self._busy = self._busy + 1 if busy else 0
                # Another process held the database: try again a little later, unless
                # a reader waits (it ingests itself) or it stayed busy too often.
                retry = busy and not self._now and self._busy <= _BUSY_RETRIES
                if retry and self._due is None:
                    self._first = time.monotonic()
                    self._due = self._first + self._delay_s()

    def flush(self, timeout: float = 10.0) -> bool:
        """Run the scheduled pass now and wait for it; ``False`` if it did not finish
        in ``timeout``. Raises what a pass raised under strict mode (otherwise the
        guard logged it)."""
        with self._cond:
            if not self._idle.is_set():
                self._now = True
                self._cond.notify_all()
        idle = self._idle.wait(timeout)
        error, self._error = self._error, None
        if error is not None:
            raise error
        return idle


def _forget_after_fork() -> None:
    # A child has none of its parent's threads, and may have inherited a held lock.
    global _background_lock
    _background_lock = threading.Lock()
    for ingesters in _background.values():
        for ingester in list(ingesters):
            ingester._reset()


os.register_at_fork(after_in_child=_forget_after_fork)
