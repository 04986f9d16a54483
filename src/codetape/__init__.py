"""codetape: record, replay and diff the code actions of code-acting AI agents.

>>> import codetape, tempfile
>>> _ = codetape.configure(home=tempfile.mkdtemp())
>>> @codetape.code_action
... def execute(code: str, namespace: dict) -> None:
...     exec(code, namespace)
>>> with codetape.run("demo", task="add") as run:
...     execute("x = 1 + 1", {})
>>> codetape.Store().step(run.id, 0).variables_after["x"].preview
'2'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import errors
from ._version import __version__ as __version__
from .errors import CodetapeError
from .tracer import agent, code_action, configure, llm, record_llm_call, run, tool

if TYPE_CHECKING:
    from . import schemas, store
    from .replayer import diff_runs, replay, replay_from, replay_run
    from .schemas import Limits, StepResult
    from .store import Store
    from .tracer import Sandbox

# Imported when first used, not by ``import codetape``: a process that only records
# (an agent) never loads the replayer, the sandbox or the data models (pydantic).
_LAZY = {
    "Sandbox": "tracer",
    "diff_runs": "replayer",
    "replay": "replayer",
    "replay_from": "replayer",
    "replay_run": "replayer",
    "Limits": "schemas",
    "StepResult": "schemas",
    "Store": "store",
}


def __getattr__(name: str) -> Any:
    if name in ("schemas", "store", "replayer"):
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, "schemas", "store"])


__all__ = [
    "CodetapeError",
    "Limits",
    "Sandbox",
    "StepResult",
    "Store",
    "agent",
    "code_action",
    "configure",
    "diff_runs",
    "errors",
    "llm",
    "record_llm_call",
    "replay",
    "replay_from",
    "replay_run",
    "run",
    "schemas",
    "store",
    "tool",
]
