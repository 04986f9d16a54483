"""Teeing stdout and stderr: the user still sees the output, and the step keeps a copy.

The tee is installed once over ``sys.stdout``/``sys.stderr`` and copies writes into
the buffer of the code action running in the current context (a ``ContextVar``), so
concurrent async code actions each get their own output and nothing else's.
"""

from __future__ import annotations

import io
import sys
import threading
from contextvars import ContextVar, Token
from typing import Any, TextIO

__all__ = ["Captured", "capture_output"]

_buffers: ContextVar[tuple[io.StringIO, io.StringIO] | None] = ContextVar(
    "codetape_capture", default=None
)
_install_lock = threading.Lock()
_installed = 0


class _Tee(io.TextIOBase):
    def __init__(self, inner: TextIO, slot: int) -> None:
        self._inner = inner
        self._slot = slot

    def write(self, s: str) -> int:
        buffers = _buffers.get()
        if buffers is not None:
            buffers[self._slot].write(s)
        return self._inner.write(s)

    def flush(self) -> None:
        self._inner.flush()

    def isatty(self) -> bool:
        return self._inner.isatty()

    def fileno(self) -> int:
        return self._inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._inner, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class Captured:
    """What a code action printed; filled in while it runs."""

    def __init__(self) -> None:
        self._out = io.StringIO()
        self._err = io.StringIO()

    @property
    def stdout(self) -> str:
        return self._out.getvalue()

    @property
    def stderr(self) -> str:
        return self._err.getvalue()


# The tee last made for each stream, reused while the stream under it is the same: a
# tee dropped on every step would flush the real stream as it is collected.
_tees: list[_Tee | None] = [None, None]


def _tee(inner: TextIO, slot: int) -> _Tee:
    tee = _tees[slot]
    if tee is None or tee._inner is not inner or tee.closed:
        tee = _tees[slot] = _Tee(inner, slot)
    return tee


def _install() -> None:
    global _installed
    with _install_lock:
        if not isinstance(sys.stdout, _Tee):
            sys.stdout = _tee(sys.stdout, 0)
        if not isinstance(sys.stderr, _Tee):
            sys.stderr = _tee(sys.stderr, 1)
        _installed += 1


def _uninstall() -> None:
    global _installed
    with _install_lock:
        _installed -= 1
        if _installed:
            return
        # Only undo our own wrapper: if someone replaced the stream since, leave theirs.
        if isinstance(sys.stdout, _Tee):
            sys.stdout = sys.stdout._inner
        if isinstance(sys.stderr, _Tee):
            sys.stderr = sys.stderr._inner


class capture_output:
    """Tee stdout and stderr into a ``Captured`` for the block (a class, not a
    generator: it is entered once per recorded step)."""

    __slots__ = ("_captured", "_token")

    def __init__(self) -> None:
        self._captured = Captured()
        self._token: Token[tuple[io.StringIO, io.StringIO] | None] | None = None

    def __enter__(self) -> Captured:
        _install()
        captured = self._captured
        self._token = _buffers.set((captured._out, captured._err))
        return captured

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _buffers.reset(self._token)
            self._token = None
        _uninstall()
