"""HTTP to ``codetape serve`` for the shipper: one ``requests`` session per server,
retrying what may pass later (connection errors, 5xx, 408, 429) with exponential backoff
and jitter, a ``Retry-After`` honoured, for as long as the caller's budget allows."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests

__all__ = ["PARALLEL", "Budget", "Client", "Fatal", "GaveUp", "message_of"]

log = logging.getLogger("codetape.ship")

_RETRIED = (408, 429)
_FATAL = (401, 403)  # the token: nothing will go through until it is fixed
MAX_DELAY_S = 30.0
PARALLEL = 8  # blob requests in flight at once, at most (codetape push)


class GaveUp(Exception):
    """The server could not be reached (or kept failing) within the time allowed."""


class Fatal(Exception):
    """The server refused the token: nothing goes through until it is fixed."""


@dataclass
class Budget:
    """How long a request may keep retrying: until ``until`` (monotonic), or until
    ``stop`` is set; ``None`` and ``None`` is forever."""

    until: float | None = None
    stop: threading.Event | None = None

    def spent(self) -> bool:
        """Whether the time is up (or a stop was asked): a pass ends between requests."""
        if self.stop is not None and self.stop.is_set():
            return True
        return self.until is not None and time.monotonic() > self.until

    def wait(self, delay: float) -> bool:
        """Sleep ``delay``; False when the budget does not allow it."""
        if self.stop is not None and self.stop.is_set():
            return False
        if self.until is not None and time.monotonic() + delay > self.until:
            return False
        if self.stop is not None:
            return not self.stop.wait(delay)
        time.sleep(delay)
        return True


class Client:
    """HTTP to one server, retrying what may pass later with backoff and jitter."""

    def __init__(self, base: str, token: str | None) -> None:
        import requests

        self.base = base
        self.session = requests.Session()
        # Up to PARALLEL blob requests at a time: as many pooled connections.
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=PARALLEL)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "codetape-ship"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.outage: str | None = None

    def call(
        self, method: str, path: str, budget: Budget, data: bytes | None = None, **headers: str
    ) -> requests.Response:
        import requests

        attempt = 0
        while True:
            wait: float | None = None
            try:
                answer = self.session.request(
                    method, self.base + path, data=data, headers=headers, timeout=(10, 60)
                )
            except requests.RequestException as exc:
                problem = f"cannot reach {self.base}: {type(exc).__name__}"
            else:
                status = answer.status_code
                if status in _FATAL:
                    raise Fatal(f"{self.base} refused the token ({status}): {message_of(answer)}")
                if status < 500 and status not in _RETRIED:
                    if self.outage is not None:
                        log.warning("codetape: %s answers again; shipping resumes", self.base)
                        self.outage = None
                    return answer
                problem = f"{self.base} answered {status}: {message_of(answer)}"
                wait = _retry_after(answer.headers.get("Retry-After"))
            if self.outage is None:
                log.warning("codetape: %s; the spans wait in the spool, retrying", problem)
                self.outage = problem
            delay = wait if wait is not None else min(MAX_DELAY_S, 0.25 * 2**attempt)
            attempt += 1
            if not budget.wait(delay * random.uniform(0.5, 1.0) if wait is None else delay):
                raise GaveUp(problem)

    def close(self) -> None:
        self.session.close()


def message_of(answer: requests.Response) -> str:
    try:
        return str(answer.json().get("message", ""))[:300]
    except ValueError:
        return answer.text[:300]


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return min(max(float(value), 0.0), 300.0)
    return None
