"""Tracing never breaks the agent: errors on the recording path are logged and swallowed.

Each distinct failure is logged once (with its traceback) so a broken recorder does not
flood the agent's logs. A full disk is one failure however many places it shows up in
(the spool, blob files, ingestion): it is said once, loudly, without a traceback, and
what could not be written is counted on its run. ``CODETAPE_STRICT=1`` re-raises
instead, for codetape's own tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from ..store.internal import is_disk_full

__all__ = ["internal_errors"]

log = logging.getLogger("codetape")
_seen: set[tuple[str, str]] = set()


@contextlib.contextmanager
def internal_errors(doing: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if os.environ.get("CODETAPE_STRICT") == "1":
            raise
        if is_disk_full(exc):
            _disk_full(exc)
            return
        key = (doing, type(exc).__name__)
        if key not in _seen:
            _seen.add(key)
            log.warning(
                "codetape: recording failed while %s; the agent carries on, but this step "
                "may be incomplete in the store",
                doing,
                exc_info=True,
            )


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
