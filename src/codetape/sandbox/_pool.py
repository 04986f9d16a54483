"""Sandbox containers started ahead of need, and removed off the caller's path.

Replays start a fresh container per replay, so each one waits for its container to
start. Inside ``warm_pool()`` a Docker sandbox takes a container that was started ahead
for the same image id, limits and environment (the hash seed is part of it), and a new
one is started for the next sandbox while this one works. Nothing is started ahead
outside a pool, and a pool starts at most ``budget`` containers ahead in all: only what
was asked for.

A container is handed out once. Its sandbox removes it when done (a used container is
never put back), and a pool removes the ones nobody took when it closes, and at exit.
Each carries the usual labels (host, pid), so the orphan sweep removes them too when
the process is killed first.

Replays spread over several Docker engines give each engine a pool of its own
(``WarmPool`` made by the caller, entered with ``in_pool()`` by each worker); a pool's
key also names the engine, so a container is never handed to another engine's sandbox.

Inside ``warm_pool()`` or ``removal_in_background()`` removing a used container happens
on a background thread: the runner is stopped at once (its channel closes and it
exits), and the ``docker rm`` that follows no longer holds up the caller. Pending
removals finish when the scope ends, or at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from typing import Any

__all__ = [
    "WarmPool",
    "current_pool",
    "in_pool",
    "removal_in_background",
    "remover",
    "warm_pool",
]


class Remover:
    """Runs removals, one after another, on one background thread."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, remove: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="codetape-container-removal", daemon=True
                )
                self._thread.start()
        self._queue.put(remove)

    def _work(self) -> None:
        while True:
            remove = self._queue.get()
            try:
                with contextlib.suppress(Exception):  # already gone; the sweep is the backstop
                    remove()
            finally:
                self._queue.task_done()

    def join(self) -> None:
        """Wait until every removal submitted so far is done."""
        self._queue.join()


_REMOVER = Remover()
_BACKGROUND: ContextVar[bool] = ContextVar("codetape_removal_in_background", default=False)


def remover() -> Remover | None:
    """The background remover when the caller is in a scope that asked for it."""
    return _REMOVER if _BACKGROUND.get() or _ACTIVE.get() is not None else None


@contextlib.contextmanager
def removal_in_background(join: bool = False) -> Iterator[None]:
    """Remove used containers on a background thread within this scope; with ``join``,
    wait for those removals when it ends (else they finish later, or at exit)."""
    token = _BACKGROUND.set(True)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)
        if join:
            _REMOVER.join()


class WarmPool:
    """Runner processes started ahead, by key; each is handed out once.

    ``ahead``: how many to keep ready per key once a key was asked for; ``budget``: how
    many it may start ahead in all (None: no cap)."""

    def __init__(self, ahead: int = 1, budget: int | None = None) -> None:
        self.ahead = ahead
        self.budget = budget
        self.started = 0
        self._ready: dict[Hashable, list[Any]] = {}
        self._discard: dict[Hashable, Callable[[Any], None]] = {}
        self._lock = threading.Lock()
        self.closed = False
        _POOLS.add(self)

    def take(
        self, key: Hashable, spawn: Callable[[], Any], discard: Callable[[Any], None]
    ) -> tuple[Any, bool]:
        """A process for ``key``: one started ahead (True) or a new one (False); then
        start the next ones ahead, within the budget."""
        with self._lock:
            ready = self._ready.setdefault(key, [])
            item = ready.pop(0) if ready else None
            self._discard[key] = discard
        warm = item is not None
        if item is None:
            item = spawn()
        self._refill(key, spawn)
        return item, warm

    def _refill(self, key: Hashable, spawn: Callable[[], Any]) -> None:
        while True:
            with self._lock:
                ready = self._ready[key]
                full = len(ready) >= self.ahead
                spent = self.budget is not None and self.started >= self.budget
                if self.closed or full or spent:
                    return
                self.started += 1
            item = spawn()
            with self._lock:
                if not self.closed:
                    self._ready[key].append(item)
                    continue
            self._discard[key](item)
            return

    def close(self) -> None:
        """Remove every process nobody took, and wait for pending removals."""
        with self._lock:
            self.closed = True
            left = [(key, item) for key, items in self._ready.items() for item in items]
            self._ready.clear()
        for key, item in left:
            with contextlib.suppress(Exception):  # already gone; the sweep is the backstop
                self._discard[key](item)
        _REMOVER.join()


_ACTIVE: ContextVar[WarmPool | None] = ContextVar("codetape_warm_pool", default=None)
_POOLS: weakref.WeakSet[WarmPool] = weakref.WeakSet()


def current_pool() -> WarmPool | None:
    return _ACTIVE.get()


@contextlib.contextmanager
def warm_pool(ahead: int = 1, budget: int | None = None) -> Iterator[WarmPool]:
    """Within this scope (and the threads that copy its context), Docker sandboxes take
    containers started ahead for their image; see the module's docstring."""
    pool: WarmPool = WarmPool(ahead, budget)
    token = _ACTIVE.set(pool)
    try:
        yield pool
    finally:
        _ACTIVE.reset(token)
        pool.close()


@contextlib.contextmanager
def in_pool(pool: WarmPool) -> Iterator[WarmPool]:
    """Within this scope, Docker sandboxes take containers from ``pool``, which the
    caller made and closes (one pool per engine, each worker entering its engine's)."""
    token = _ACTIVE.set(pool)
    try:
        yield pool
    finally:
        _ACTIVE.reset(token)


@atexit.register
def _close_all() -> None:
    for pool in list(_POOLS):
        pool.close()
    _REMOVER.join()
