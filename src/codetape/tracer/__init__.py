"""The tracer: decorators, run and step recording, state snapshots, spool and OTLP.

Users record with ``agent``, ``code_action``, ``tool``, ``llm``, ``record_llm_call``,
``run``, ``configure`` and ``Sandbox`` (the sandbox with each code action recorded).
What codetape's other packages need of the recording machinery is in ``codetape.tracer.internal``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ._config import configure
from ._decorators import agent, code_action, run, tool
from ._llm import llm, record_llm_call

if TYPE_CHECKING:
    from ._sandboxed import Sandbox

__all__ = [
    "Sandbox",
    "agent",
    "code_action",
    "configure",
    "llm",
    "record_llm_call",
    "run",
    "tool",
]


# The sandbox (its protocol, Docker) is imported when first used: a process that records
# observed steps never loads it.
__getattr__, __dir__ = lazy_names(__name__, {"Sandbox": "._sandboxed"}, globals(), __all__)
