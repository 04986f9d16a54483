"""SIGTERM and SIGINT: what was running is recorded, then the signal does what it did.

When the first run starts in the main thread, codetape puts a handler in front of the
one each signal had, unless the signal was ignored (or not handled from Python). On a
signal the handler first makes the spool durable, then:

- if the signal would have ended the process (its default action), it ends every open
  tool call, step and run as interrupted, then restores the default action and sends
  the signal again, so the process ends as it would have (exit status included);
- otherwise it calls the handler that was there before: Python's own SIGINT handler
  raises ``KeyboardInterrupt`` (a step it stops is recorded as interrupted), and an
  agent's own handler runs as before; the run goes on being recorded.

That work runs on a thread of its own and gets at most ``FLUSH_S`` seconds: the signal
may have landed while this very thread held a lock the work needs, and then the process
must still end. A handler the agent sets after codetape's replaces it, as it should.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from ._errors import internal_errors

__all__ = ["FLUSH_S", "install_signal_handlers"]

FLUSH_S = 2.0
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_previous: dict[int, Any] = {}
_lock = threading.Lock()


def install_signal_handlers() -> None:
    """Put codetape's handler in front of SIGTERM's and SIGINT's, once per process and
    only from the main thread (Python allows no other)."""
    if len(_previous) == len(_SIGNALS) or threading.current_thread() is not threading.main_thread():
        return
    with _lock:
        for signum in _SIGNALS:
            if signum in _previous:
                continue
            current = signal.getsignal(signum)
            if current is signal.SIG_IGN or current is None:
                _previous[signum] = None  # ignored, or handled outside Python: left so
                continue
            try:
                signal.signal(signum, _handle)
            except (ValueError, OSError):
                continue
            _previous[signum] = current


def _handle(signum: int, frame: FrameType | None) -> None:
    previous = _previous.get(signum)
    ends_process = previous is signal.SIG_DFL
    _record_in_time(signal.Signals(signum).name, end_open=ends_process)
    if ends_process:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    elif callable(previous):
        handler: Callable[[int, FrameType | None], Any] = previous
        handler(signum, frame)


def _record_in_time(signal_name: str, *, end_open: bool) -> None:
    worker = threading.Thread(
        target=_record, args=(signal_name, end_open), name="codetape-signal", daemon=True
    )
    worker.start()
    worker.join(FLUSH_S)


def _record(signal_name: str, end_open: bool) -> None:
    from ._config import all_runtimes
    from ._recording import interrupt_open

    with internal_errors("recording what a signal interrupted"):
        if end_open:
            interrupt_open(signal_name)
        for rt in all_runtimes():
            rt.spool.sync()
            if rt.otlp is not None:
                rt.provider.force_flush(int(FLUSH_S * 1000))
