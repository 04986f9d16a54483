"""``CodetapeExecutor`` keeps the contract smolagents' own remote executors keep.

smolagents checks each of its remote executors with one integration suite (its
``CommonDockerExecutorIntegration``). The same behaviours, in this project's words, are
checked here twice with the real Docker engine and an offline image that has numpy and
PIL: on ``CodetapeExecutor(Sandbox(image=...))`` as an agent calls it, and on a scripted
``CodeAgent`` recorded with ``instrument(agent, sandbox=sb)``, where each case is a
recorded run whose final answer's type is on its last step.

Variables and imports carry over between actions; ``final_answer`` is the agent's own
tool, run on the host whatever inputs it declares, and its answer ends the action; an
image comes back as an image; a failed action raises smolagents' ``AgentError`` naming
the code's error, and is still recorded.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
from PIL import Image
from rich.console import Console
from smolagents import CodeAgent
from smolagents.default_tools import FinalAnswerTool
from smolagents.models import ChatMessage, MessageRole, Model
from smolagents.monitoring import AgentLogger, LogLevel
from smolagents.utils import AgentError

import codetape
from codetape.errors import CodeActionError
from codetape.integrations.smolagents import CodetapeExecutor, instrument
from codetape.schemas import Step

pytestmark = pytest.mark.docker


class PrefixedFinalAnswer(FinalAnswerTool):  # type: ignore[misc]
    """A final-answer tool of the agent's own that changes the answer."""

    def forward(self, answer: str) -> str:
        return "CUSTOM" + answer


class TwoPartFinalAnswer(FinalAnswerTool):  # type: ignore[misc]
    """A final-answer tool with inputs of its own, not ``answer``."""

    inputs = {  # noqa: RUF012 (smolagents reads the class attribute)
        "answer1": {"type": "string", "description": "First part of the answer."},
        "answer2": {"type": "string", "description": "Second part of the answer."},
    }

    def forward(self, answer1: str, answer2: str) -> str:
        return answer1 + "CUSTOM" + answer2


RED_IMAGE = """
from PIL import Image
image = Image.new("RGB", (10, 10), (255, 0, 0))
final_answer(image)
"""

# (code, the agent's final_answer tool, the answer expected)
FINAL_ANSWERS: dict[str, tuple[str, FinalAnswerTool, str]] = {
    "a string": (
        'final_answer("This is the final answer")',
        FinalAnswerTool(),
        "This is the final answer",
    ),
    "a variable": (
        'result = "This is the final answer"\nfinal_answer(result)',
        FinalAnswerTool(),
        "This is the final answer",
    ),
    "a multiline string": (
        dedent('''
            final_answer("""This is
            a multiline
            final answer""")
        '''),
        FinalAnswerTool(),
        "This is\na multiline\nfinal answer",
    ),
    "text that mentions final_answer": (
        dedent("""
            text = '''Text containing
            final_answer(5)
            '''
            final_answer(text)
        """),
        FinalAnswerTool(),
        "Text containing\nfinal_answer(5)\n",
    ),
    "a branch": (
        dedent("""
            num = 2
            if num == 1:
                final_answer("One")
            elif num == 2:
                final_answer("Two")
        """),
        FinalAnswerTool(),
        "Two",
    ),
    "the agent's own tool": (
        'final_answer(answer="_answer")',
        PrefixedFinalAnswer(),
        "CUSTOM_answer",
    ),
    "a tool with other inputs": (
        'final_answer(\n    answer1="answer1_",\n    answer2="_answer2"\n)',
        TwoPartFinalAnswer(),
        "answer1_CUSTOM_answer2",
    ),
}


@pytest.fixture
def logged() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def executor(home: Path, scientific_image: str, logged: io.StringIO) -> Iterator[CodetapeExecutor]:
    logger = AgentLogger(LogLevel.INFO, Console(force_terminal=False, file=logged))
    executor = CodetapeExecutor(codetape.Sandbox(image=scientific_image), logger=logger)
    yield executor
    executor.cleanup()


def recorded(run_id: str, index: int) -> Step:
    return codetape.Store().step(run_id, index)


def is_red_10x10(value: Any) -> bool:
    return (
        isinstance(value, Image.Image)
        and value.size == (10, 10)
        and value.getpixel((0, 0)) == (255, 0, 0)
    )


# -- the executor, as an agent calls it ---------------------------------------------------


def test_variables_and_imports_carry_over_to_the_next_action(executor: CodetapeExecutor) -> None:
    executor("import numpy as np; a = 2")
    output = executor("print(np.sqrt(a))")
    assert "1.41421" in output.logs
    assert output.is_final_answer is False


@pytest.mark.parametrize("case", sorted(FINAL_ANSWERS))
def test_the_agents_final_answer_tool_gives_the_answer(
    executor: CodetapeExecutor, case: str
) -> None:
    code, tool, expected = FINAL_ANSWERS[case]
    executor.send_tools({"final_answer": tool})
    output = executor(code)
    assert output.is_final_answer is True
    assert output.output == expected


def test_an_image_comes_back_as_an_image(executor: CodetapeExecutor) -> None:
    executor.send_tools({"final_answer": FinalAnswerTool()})
    output = executor(RED_IMAGE)
    assert output.is_final_answer is True
    assert is_red_10x10(output.output)


def test_a_syntax_error_is_an_agent_error_and_the_step_is_recorded(
    executor: CodetapeExecutor, logged: io.StringIO
) -> None:
    with pytest.raises(AgentError) as raised:
        executor('print("Missing Parenthesis')
    assert "SyntaxError" in str(raised.value)
    assert 'print("Missing Parenthesis' in str(raised.value)  # where, as the code has it
    assert "SyntaxError" in logged.getvalue()  # told to the executor's logger, as smolagents does
    error = raised.value
    assert isinstance(error, CodeActionError)  # codetape's own tree too
    assert error.run_id is not None
    assert error.step is not None
    step = recorded(error.run_id, error.step)
    assert (step.status, step.code) == ("error", 'print("Missing Parenthesis')
    assert step.error is not None
    assert step.error.type == "SyntaxError"


def test_a_runtime_error_names_the_codes_error_and_keeps_what_was_printed(
    executor: CodetapeExecutor,
) -> None:
    with pytest.raises(AgentError, match="ZeroDivisionError: division by zero"):
        executor("print('before')\n1 / 0")
    # smolagents shows the logs of a failed action from the executor's state.
    assert executor.state["_print_outputs"] == "before\n"


# -- the same cases through instrument(agent, sandbox=sb) -------------------------------


class ScriptedModel(Model):  # type: ignore[misc]
    """Stands in for an LLM: replies with the next canned code action."""

    def __init__(self, script: list[str]) -> None:
        super().__init__(model_id="scripted")
        self.script = list(script)

    def generate(self, messages: list[Any], stop_sequences: Any = None, **kwargs: Any) -> Any:
        code = self.script.pop(0)
        return ChatMessage(
            role=MessageRole.ASSISTANT, content=f"Thought: go.\n<code>\n{code}\n</code>"
        )


@pytest.fixture
def sandbox(home: Path, scientific_image: str) -> Iterator[codetape.Sandbox]:
    with codetape.Sandbox(image=scientific_image) as sandbox:
        yield sandbox


def run_agent(
    sandbox: codetape.Sandbox, script: list[str], final_answer: FinalAnswerTool | None = None
) -> tuple[Any, Any, list[Step]]:
    """Run a scripted agent in ``sandbox``; returns its answer, its run and its steps."""
    tools = [final_answer] if final_answer is not None else []
    agent = instrument(
        CodeAgent(tools=tools, model=ScriptedModel(script), verbosity_level=-1), sandbox=sandbox
    )
    answer = agent.run("the task")
    store = codetape.Store()
    runs = store.runs()
    assert len(runs) == 1, runs
    return answer, runs[0], store.steps(runs[0].id)


def test_an_instrumented_agent_keeps_variables_and_imports_between_steps(
    sandbox: codetape.Sandbox,
) -> None:
    answer, run, steps = run_agent(
        sandbox,
        [
            "import numpy as np; a = 2",
            "print(np.sqrt(a))",
            "final_answer(round(float(np.sqrt(a)), 3))",
        ],
    )
    assert answer == 1.414
    assert "1.41421" in steps[1].stdout
    assert (run.status, run.final_answer, run.final_answer_type) == ("ok", "1.414", "float")
    assert (steps[-1].result, steps[-1].result_type) == ("1.414", "float")
    assert [s.sandbox.backend for s in steps] == ["docker"] * 3


@pytest.mark.parametrize("case", sorted(FINAL_ANSWERS))
def test_an_instrumented_agent_gets_its_final_answer_tools_answer(
    sandbox: codetape.Sandbox, case: str
) -> None:
    code, tool, expected = FINAL_ANSWERS[case]
    answer, run, steps = run_agent(sandbox, [code], final_answer=tool)
    assert answer == expected
    assert (run.status, run.final_answer, run.final_answer_type) == ("ok", expected, "str")
    (step,) = steps
    assert (step.status, step.result, step.result_type) == ("ok", repr(expected), "str")
    assert [call.name for call in step.tool_calls] == ["final_answer"]  # run on the host


def test_an_instrumented_agents_image_answer_is_an_image(sandbox: codetape.Sandbox) -> None:
    answer, run, steps = run_agent(sandbox, [RED_IMAGE])
    assert is_red_10x10(answer.to_raw())  # smolagents hands an image answer over as an AgentImage
    # The run keeps the answer as the code gave it, not smolagents' wrapper.
    assert (run.status, run.final_answer_type) == ("ok", "PIL.Image.Image")
    assert run.final_answer is not None
    assert "image mode=RGB size=10x10" in run.final_answer
    (step,) = steps
    assert step.result_type == "PIL.Image.Image"
    assert step.result is not None
    assert "image mode=RGB size=10x10" in step.result


def test_an_instrumented_agent_sees_its_syntax_error_and_carries_on(
    sandbox: codetape.Sandbox,
) -> None:
    answer, run, steps = run_agent(sandbox, ['print("Missing Parenthesis', 'final_answer("fixed")'])
    assert answer == "fixed"
    assert [s.status for s in steps] == ["error", "ok"]
    assert steps[0].error is not None
    assert steps[0].error.type == "SyntaxError"
    assert (run.status, run.final_answer) == ("ok", "fixed")
