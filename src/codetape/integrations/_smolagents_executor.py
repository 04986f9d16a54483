"""``CodetapeExecutor``: a smolagents ``PythonExecutor`` backed by ``codetape.Sandbox``.

``CodeAgent(..., executor=CodetapeExecutor(sb))`` runs the agent's code actions in
codetape's sandbox (a hardened Docker container by default): the agent's tools, its
``final_answer`` tool included, stay on the host and are called over the sandbox's
channel, and every action is recorded as a step with its variables, output, error and
tool calls. It keeps smolagents' executor contract: a failed action raises an
``AgentError`` (an ``AgentExecutionError``) that names the code's own error, and the
final answer is whatever the agent's ``final_answer`` tool returned.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from smolagents.local_python_executor import CodeOutput, PythonExecutor
from smolagents.monitoring import AgentLogger, LogLevel
from smolagents.utils import AgentExecutionError

from ..errors import CodeActionError
from ..tracer.internal import current_run

if TYPE_CHECKING:  # annotations only: instrument() alone loads no sandbox
    from ..schemas import StepResult
    from ..tracer import Sandbox

__all__ = ["CodetapeExecutor"]

log = logging.getLogger("codetape")
_said = False


def _say_how_to_group() -> None:
    """Without a run around it, each action is a run of its own: say once how to make
    each ``agent.run`` one run."""
    global _said
    if not _said:
        _said = True
        log.warning(
            "codetape: CodetapeExecutor records each code action as a run of its own when "
            "no run is open; record the agent with instrument(agent, sandbox=sb) (from "
            "codetape.integrations.smolagents) to make each agent.run one run, with its "
            "model calls"
        )


class CodeActionFailed(CodeActionError, AgentExecutionError):
    """A failed code action as smolagents' executors report one: an ``AgentError`` to
    the agent (whose message carries the code's error type, message and traceback), and
    codetape's ``CodeActionError``, with the recorded step's run id and index."""

    def __init__(self, result: StepResult, logger: Any) -> None:
        error = result.error
        CodeActionError.__init__(
            self,
            result.status,
            error.type if error is not None else None,
            error.message if error is not None else "",
            traceback=error.traceback if error is not None else None,
            run_id=result.run_id,
            step=result.index,
        )
        logger.log_error(self.message)  # as AgentError does


class CodetapeExecutor(PythonExecutor):
    """Runs a CodeAgent's code actions in ``sandbox`` and records each one.

    ``logger`` receives the errors of failed actions, as smolagents' executors' loggers
    do (by default none is shown: the agent logs them itself).

    >>> from codetape import Sandbox                               # doctest: +SKIP
    >>> from smolagents import CodeAgent
    >>> agent = CodeAgent(tools=[...], model=model, executor=CodetapeExecutor(Sandbox()))
    """

    def __init__(self, sandbox: Sandbox, logger: AgentLogger | None = None) -> None:
        self.sandbox = sandbox
        self.logger = logger if logger is not None else AgentLogger(LogLevel.OFF)
        # smolagents reads state["_print_outputs"] to show the logs of a failed step.
        self.state: dict[str, Any] = {"_print_outputs": ""}

    def send_tools(self, tools: dict[str, Any]) -> None:
        """Bridge the agent's tools into the sandbox; its ``final_answer`` tool replaces
        the sandbox's built-in one."""
        self.sandbox.add_tools(dict(tools))

    def send_variables(self, variables: dict[str, Any]) -> None:
        if variables:
            self.sandbox.send_variables(variables)

    def __call__(self, code_action: str) -> CodeOutput:
        if current_run() is None:
            _say_how_to_group()
        result = self.sandbox.run(code_action)
        logs = result.stdout + (result.stderr if result.stderr else "")
        self.state["_print_outputs"] = logs
        if not result.ok:
            raise CodeActionFailed(result, self.logger)
        if result.has_final_answer:
            return CodeOutput(output=result.final_answer, logs=logs, is_final_answer=True)
        return CodeOutput(output=result.result, logs=logs, is_final_answer=False)

    def cleanup(self) -> None:
        self.sandbox.close()
