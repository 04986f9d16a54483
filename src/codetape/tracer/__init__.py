"""The tracer: decorators, run and step recording, state snapshots, spool and OTLP.

Users record with ``agent``, ``code_action``, ``tool``, ``llm``, ``record_llm_call``,
``run``, ``configure`` and ``Sandbox`` (the sandbox with each code action recorded).
What codetape's other packages need of the recording machinery is in ``codetape.tracer.internal``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    # The sandbox (its protocol, Docker) is imported when first used: a process that
    # records observed steps never loads it.
    if name == "Sandbox":
        from ._sandboxed import Sandbox

        globals()["Sandbox"] = Sandbox
        return Sandbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
