"""``CodetapeExecutor``: a smolagents ``PythonExecutor`` backed by ``codetape.Sandbox``.

``CodeAgent(..., executor=CodetapeExecutor(sb))`` runs the agent's code actions in
codetape's sandbox (a hardened Docker container by default): the agent's tools stay on
the host and are called over the sandbox's channel, and every action is recorded as a
step with its variables, output, error and tool calls.
"""

from __future__ import annotations

from typing import Any

from smolagents.local_python_executor import CodeOutput, PythonExecutor

from ..errors import CodeActionError
from ..tracer import Sandbox

__all__ = ["CodetapeExecutor"]

# The runner defines final_answer itself: the agent's FinalAnswerTool is not bridged.
_BUILTIN_TOOLS = frozenset({"final_answer"})


class CodetapeExecutor(PythonExecutor):
    """Runs a CodeAgent's code actions in ``sandbox`` and records each one.

    >>> from codetape import Sandbox                               # doctest: +SKIP
    >>> from smolagents import CodeAgent
    >>> agent = CodeAgent(tools=[...], model=model, executor=CodetapeExecutor(Sandbox()))
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        # smolagents reads state["_print_outputs"] to show the logs of a failed step.
        self.state: dict[str, Any] = {"_print_outputs": ""}

    def send_tools(self, tools: dict[str, Any]) -> None:
        self.sandbox.add_tools(
            {name: tool for name, tool in tools.items() if name not in _BUILTIN_TOOLS}
        )

    def send_variables(self, variables: dict[str, Any]) -> None:
        if variables:
            self.sandbox.send_variables(variables)

    def __call__(self, code_action: str) -> CodeOutput:
        result = self.sandbox.run(code_action)
        logs = result.stdout + (result.stderr if result.stderr else "")
        self.state["_print_outputs"] = logs
        if result.status != "ok":
            error = result.error
            raise CodeActionError(
                result.status, error.type if error else None, error.message if error else ""
            )
        if result.has_final_answer:
            return CodeOutput(output=result.final_answer, logs=logs, is_final_answer=True)
        return CodeOutput(output=result.result, logs=logs, is_final_answer=False)

    def cleanup(self) -> None:
        self.sandbox.close()
