"""``codetape.Sandbox``: the sandbox, with each code action recorded as a step.

The sandbox executes and returns an outcome; this subclass turns the outcome into the
step span, its blobs, redaction and secret checks, and records each tool call the
sandbox relays, so a sandboxed step looks in the store like an observed one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .._format import PREVIEW_CHARS, cut
from ..sandbox import Sandbox as _ExecutingSandbox
from ..sandbox.internal import Outcome, Pickled, RawState, StateMessage
from ..schemas import StepResult, VariableSnapshot
from ..schemas import attributes as A
from ._arguments import bind_arguments, tool_parameters
from ._config import runtime
from ._recording import RunRecorder, StepRecorder, ToolCallRecorder, current_run, step_seed
from ._state import State, StateRecorder

__all__ = ["Sandbox"]


class Sandbox(_ExecutingSandbox):
    """A warm sandbox for code actions, with host tools bridged in; each ``run`` is
    recorded as a step of the current run (or as a run of its own).

    ``backend="docker"`` (the default) runs a hardened container of ``image`` (default
    ``$CODETAPE_IMAGE`` or ``python:3.12-slim``); ``backend="local"`` runs the same
    runner in a subprocess of this Python, with no isolation, and warns so. Variables
    persist between ``run`` calls.

    >>> import codetape
    >>> def add(a: int, b: int) -> int:
    ...     return a + b
    >>> with codetape.Sandbox(tools=[add]) as sb:         # doctest: +SKIP
    ...     sb.run("x = add(2, 3)\\nx * 10").result
    '50'
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        rt = runtime()
        self._recorder = StateRecorder(rt.blobs, rt.redactor)
        self._recorded: State | None = None
        self._step: StepRecorder | None = None
        # The step to open when its code has been sent, and its random seed.
        self._opening: tuple[StepRecorder, int | None] | None = None

    def _owner(self) -> str:
        run = current_run()
        return run.id if run is not None else ""

    # -- state --------------------------------------------------------------------

    @property
    def variables(self) -> dict[str, VariableSnapshot]:
        """The namespace as of the last step (or the seeded variables), as previews."""
        if self._recorded is None:
            return {}
        return {
            name: VariableSnapshot(name=name, **var._asdict())
            for name, var in self._recorded.variables.items()
        }

    def _take_state(self, raw: StateMessage, blobs: Mapping[str, bytes]) -> RawState:
        state = super()._take_state(raw, blobs)
        self._recorded = self._recorder.record(state, self._recorded)
        return state

    # -- running code ---------------------------------------------------------------

    def run(
        self, code: str, *, random_seed: int | None = None, random_state: bytes | None = None
    ) -> StepResult:
        """Run one snippet and record it as a step of the current run (or a run of its
        own). Never raises for the snippet's own errors: see ``status`` and ``error``.

        ``random`` is seeded before each step (from the sandbox's ``seed`` and the step
        index unless ``random_seed`` is given) and the seed recorded, for replay; a
        replay of an observed step sets ``random_state`` instead."""
        run = current_run()
        if run is None:
            with RunRecorder("sandbox") as own:
                return self._record_step(own, code, random_seed, random_state)
        return self._record_step(run, code, random_seed, random_state)

    def _record_step(
        self,
        run: RunRecorder,
        code: str,
        random_seed: int | None,
        random_state: bytes | None = None,
    ) -> StepResult:
        identity = self.identity()  # starts the sandbox before the step is opened
        step = StepRecorder(run, code, mode="sandboxed", sandbox=identity)
        seed: int | None = random_seed
        if seed is None and random_state is None:
            seed = step_seed(self.seed, step.index)
        # The step's span opens once the code is on its way (``_sent``), while the
        # sandbox runs it, and before any tool call it makes is answered.
        self._step, self._opening = step, (step, seed)
        try:
            outcome = self.execute(code, seed=seed, random_state=random_state)
        finally:
            self._sent()  # the code never went (the sandbox did not start): open it now
            self._step = None
        step.finish(
            status=outcome.status,
            stdout=outcome.stdout,
            stderr=outcome.stderr,
            has_result=outcome.has_result,
            result_preview=outcome.result,
            result_type=outcome.result_type,
            error=outcome.error,
            after=self._recorded if outcome.state is not None else None,
        )
        if outcome.final_answer is not None:
            run.final_answer = outcome.final_answer["value"]
        return self._step_result(run.id, step.index, outcome)

    def _sent(self) -> None:
        if self._opening is None:
            return
        (step, seed), self._opening = self._opening, None
        step.begin(self._recorded)
        if step.span is not None and seed is not None:
            step.span.set_attribute(A.STEP_RANDOM_SEED, seed)

    def call_tool(
        self, name: str, tool: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        """Call the tool, recorded as a tool call of the running step: its answer as
        JSON (a preview and a blob) and pickled, as the code in the sandbox gets it. A
        replay's recorded answer (``Pickled``) is recorded as it was recorded."""
        arguments = bind_arguments(tool, args, kwargs)
        parameters = tool_parameters(tool)
        with ToolCallRecorder(name, arguments, step=self._step, parameters=parameters) as call:
            result = tool(*args, **kwargs)
            if isinstance(result, Pickled):
                call.succeeded(result.shown, pickled=result.data)
            else:
                call.succeeded(result)
            return result

    def _step_result(self, run_id: str, index: int, outcome: Outcome) -> StepResult:
        redact = runtime().redactor.text
        final = outcome.final_answer
        return StepResult(
            run_id=run_id,
            index=index,
            status=outcome.status,
            stdout=redact(outcome.stdout),
            stderr=redact(outcome.stderr),
            result=cut(redact(outcome.result), PREVIEW_CHARS)
            if outcome.has_result and outcome.result is not None
            else None,
            result_type=outcome.result_type,
            error=outcome.error,
            has_final_answer=final is not None,
            final_answer=final["value"] if final is not None else None,
            variables=self.variables,
            duration_ms=outcome.duration_ms,
        )
