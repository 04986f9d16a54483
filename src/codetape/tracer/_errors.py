"""Tracing never breaks the agent: errors on the recording path are logged and swallowed.

Each distinct failure is logged once (with its traceback) so a broken recorder does not
flood the agent's logs. A full disk is one failure however many places it shows up in
(the spool, blob files, ingestion): it is said once, loudly, without a traceback, and
what could not be written is counted on its run. ``CODETAPE_STRICT=1`` re-raises
instead, for codetape's own tests.
"""

from __future__ import annotations

import logging
import os
from types import TracebackType

from ..store.internal import is_disk_full

__all__ = ["internal_errors"]

log = logging.getLogger("codetape")
_seen: set[tuple[str, str]] = set()


class internal_errors:
    """Swallow (and log once) an ``Exception`` raised in the block: what the recording
    was ``doing`` failed, the agent carries on. A class, not a generator: it is entered
    several times per recorded step."""

    __slots__ = ("doing",)

    def __init__(self, doing: str) -> None:
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        if os.environ.get("CODETAPE_STRICT") == "1":
            return False
        if is_disk_full(exc):
            _disk_full(exc)
            return True
        key = (self.doing, type(exc).__name__)
        if key not in _seen:
            _seen.add(key)
            log.warning(
                "codetape: recording failed while %s; the agent carries on, but this step "
                "may be incomplete in the store",
                self.doing,
                exc_info=(type(exc), exc, tb),
            )
        return True


def _disk_full(exc: BaseException) -> None:
    if ("disk full", "") in _seen:
        return
    _seen.add(("disk full", ""))
    log.error(
        "codetape: NOT RECORDING: no space left on the disk of the store (%s). The agent "
        "carries on; what cannot be written is lost, and counted on its run once there is "
        "space again (codetape doctor lists it). Free space on that disk.",
        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
    )
