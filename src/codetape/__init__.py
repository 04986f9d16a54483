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

from . import errors, schemas, store
from ._version import __version__ as __version__
from .errors import CodetapeError
from .replayer import diff_runs, replay, replay_from, replay_run
from .schemas import Limits, StepResult
from .store import Store
from .tracer import Sandbox, agent, code_action, configure, llm, record_llm_call, run, tool

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
