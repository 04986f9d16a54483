"""Tracing never breaks the agent: errors on the recording path are logged and swallowed.

Each distinct failure is logged once (with its traceback) so a broken recorder does not
flood the agent's logs. ``CODETAPE_STRICT=1`` re-raises instead, for codetape's own tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

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
        key = (doing, type(exc).__name__)
        if key not in _seen:
            _seen.add(key)
            log.warning(
                "codetape: recording failed while %s; the agent carries on, but this step "
                "may be incomplete in the store",
                doing,
                exc_info=True,
            )
