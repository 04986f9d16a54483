"""Recording into a store of its own for a while, then putting codetape back as it was."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..schemas import Run, Step
from ..store import Store
from ..store.internal import resolve_home, set_default_home
from ..tracer import configure
from ..tracer.internal import runtime

__all__ = ["CapturedRuns", "capture"]


class CapturedRuns:
    """The runs recorded into one capture's store, read back through ``codetape.Store``.

    >>> import codetape, codetape.testing
    >>> with codetape.testing.capture() as captured:
    ...     with codetape.run("orders-bot", task="count the orders") as run:
    ...         run.final_answer = "3 orders"
    ...     [(r.name, r.final_answer) for r in captured.runs()]
    [('orders-bot', '3 orders')]
    """

    def __init__(self, home: Path) -> None:
        self.home = home

    @property
    def store(self) -> Store:
        """The capture's store, opened now, so it holds every run recorded so far."""
        return Store(self.home)

    def runs(self) -> list[Run]:
        """Every run recorded so far, oldest first (``Store.runs`` lists newest first)."""
        store = self.store
        with store.session():
            return store.runs(limit=max(1, store.count_runs()))[::-1]

    def steps(self, run: Run | str = "last") -> list[Step]:
        """The steps of ``run`` (a ``Run``, an id or a unique id prefix; the newest run by
        default), in order."""
        return self.store.steps(run.id if isinstance(run, Run) else run)

    def __repr__(self) -> str:
        return f"<CapturedRuns {self.home}>"


@dataclass(frozen=True)
class _Settings:
    """What ``configure`` was given, as far as the runtime it built tells it back."""

    home: Path
    otlp: str | bool
    redact: bool
    pinned: Path | None  # the home ``Store()`` uses whatever CODETAPE_HOME says, if any

    @classmethod
    def in_force(cls) -> _Settings:
        # codetape.tracer cannot say "nothing is configured" without configuring the
        # defaults, so when nothing is, this configures what the first recording would.
        pinned = _pinned_home()
        with _no_empty_directory_left(resolve_home()):
            rt = runtime()
        otlp = rt.otlp.endpoint if rt.otlp is not None else False
        return cls(rt.home, otlp, rt.redactor.enabled, pinned)

    def restore(self) -> None:
        with _no_empty_directory_left(self.home):
            configure(home=self.home, otlp=self.otlp, redact=self.redact)
        set_default_home(self.pinned)


@contextlib.contextmanager
def _no_empty_directory_left(home: Path) -> Iterator[None]:
    """``configure`` creates the store directory at once, where a first recording
    would create it anyway; so one it created and nothing filled is removed again."""
    existed = home.exists()
    yield
    if not existed:
        with contextlib.suppress(OSError):  # not empty, or not there
            home.rmdir()


def _pinned_home() -> Path | None:
    """The home an earlier ``configure(home=...)`` pinned for readers, or ``None`` when
    they follow ``CODETAPE_HOME`` and the working directory (told apart by pointing
    ``CODETAPE_HOME`` at a path that cannot exist for a moment)."""
    probe = Path(tempfile.gettempdir(), f"codetape-probe-{uuid.uuid4().hex}").absolute()
    saved = os.environ.get("CODETAPE_HOME")
    os.environ["CODETAPE_HOME"] = str(probe)
    try:
        found = resolve_home()
    finally:
        if saved is None:
            del os.environ["CODETAPE_HOME"]
        else:
            os.environ["CODETAPE_HOME"] = saved
    return None if found == probe else found


@contextlib.contextmanager
def capture(
    home: str | os.PathLike[str] | None = None, *, redact: bool = True
) -> Iterator[CapturedRuns]:
    """Record into the store at ``home`` inside the ``with`` block, then put back the
    configuration that was in force before it.

    Without ``home`` the store is a new temporary directory, removed at the end of the
    block. Nothing is sent over OTLP. Recording goes to this store from every thread of
    the process while the block runs. If codetape had not been configured before, it is
    left configured with the defaults its first recording would have picked.

    >>> import codetape, codetape.testing
    >>> @codetape.code_action
    ... def execute(code: str, namespace: dict) -> None:
    ...     exec(code, namespace)
    >>> with codetape.testing.capture() as captured:
    ...     execute("total = 2 + 3", {})
    ...     [step] = captured.steps()
    >>> step.variables_after["total"].preview
    '5'
    """
    previous = _Settings.in_force()
    made = None if home is not None else tempfile.mkdtemp(prefix="codetape-capture-")
    try:
        rt = configure(home=home if home is not None else made, otlp=False, redact=redact)
        yield CapturedRuns(rt.home)
    finally:
        previous.restore()
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
