"""Pydantic models at codetape's edges: store rows, CLI ``--json`` and bundles."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ._literals import RunStatus, StepStatus, Verdict

__all__ = [
    "Difference",
    "ErrorInfo",
    "FailureGroup",
    "Limits",
    "LlmCall",
    "LlmMessage",
    "ReplayReport",
    "Run",
    "RunDetail",
    "RunDiff",
    "RunStatus",
    "SandboxSpec",
    "Step",
    "StepPair",
    "StepResult",
    "StepStatus",
    "ToolCall",
    "VariableChange",
    "VariableSnapshot",
    "Verdict",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VariableSnapshot(_Model):
    """One variable of a step's namespace, as recorded.

    ``digest`` is the value's fingerprint: equal values have equal digests, whichever
    process took them (a class made by the agent's code is named by its name and code,
    not by where it lives). It is ``None`` when the value could not be serialized (or
    held a secret); ``restorable`` is False when the step's checkpoint cannot bring the
    value back (``reason`` says why: a replay then rebuilds it by re-running steps).
    """

    name: str
    type: str
    digest: str | None
    size: int
    preview: str
    restorable: bool
    reason: str | None = None


class ErrorInfo(_Model):
    type: str
    message: str
    traceback: str | None = None


class ToolCall(_Model):
    """A tool called from inside a code action."""

    name: str
    call_id: str
    arguments: Any
    result: Any = None
    error: ErrorInfo | None = None
    started_at: datetime
    duration_ms: float
    # Observed steps: the blob of the answer pickled as the tool returned it.
    result_pickle: str | None = None
    # The tool's parameters, ``[name, kind]`` (kinds as ``inspect.Parameter`` names).
    parameters: list[list[str]] | None = None
    # The run this call started (a managed agent's), by id.
    child_run: str | None = None


class SandboxSpec(_Model):
    """Where a step ran: the image identity (sandboxed) or the host fingerprint (observed)."""

    backend: str
    image: str | None = None
    image_id: str | None = None
    repo_digests: list[str] = Field(default_factory=list)
    layers_digest: str | None = None
    python: str | None = None
    platform: str | None = None
    env_fingerprint: str | None = None
    limits: dict[str, Any] | None = None
    hash_seed: int | None = None


class Limits(_Model):
    """Resource limits of a sandbox. ``memory``, ``tmpfs`` (``/tmp``) and ``shm``
    (``/dev/shm``) take Docker's sizes (``"512m"``, ``"1g"``); ``output_bytes`` caps each
    of stdout and stderr per step (and, with a margin, every message from the sandbox).

    After each step the processes and threads the code left running are stopped;
    ``keep_background=True`` lets them run on into later steps."""

    timeout_s: float = Field(30.0, gt=0)
    memory: str = "512m"
    pids: int = Field(128, gt=0)
    cpus: float = Field(1.0, gt=0)
    tmpfs: str = "64m"
    shm: str = "64m"
    output_bytes: int = Field(1_000_000, gt=0)
    keep_background: bool = False


class StepResult(_Model):
    """What ``Sandbox.run`` returns: the outcome of one code action.

    ``result`` is the preview of the last expression's value, as a REPL shows it;
    ``final_answer`` is what the code passed to ``final_answer(...)`` (or what the
    agent's own ``final_answer`` tool returned), decoded as its type (JSON values,
    tuples, sets, bytes, dates, Decimals, images, arrays and frames; anything else a
    marked ``OpaqueValue`` repr), with ``has_final_answer`` telling None apart.
    """

    run_id: str
    index: int
    status: StepStatus
    stdout: str
    stderr: str
    result: str | None = None
    result_type: str | None = None
    error: ErrorInfo | None = None
    has_final_answer: bool = False
    final_answer: Any = None
    variables: dict[str, VariableSnapshot]
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Step(_Model):
    """One recorded code action, reassembled from its span and blobs."""

    run_id: str
    index: int
    span_id: str
    code: str
    status: StepStatus
    stdout: str
    stderr: str
    result: str | None
    result_type: str | None = None
    error: ErrorInfo | None
    variables_before: dict[str, VariableSnapshot]
    variables_after: dict[str, VariableSnapshot]
    tool_calls: list[ToolCall]
    sandbox: SandboxSpec
    started_at: datetime
    duration_ms: float
    random_seed: int | None = None
    # The blobs of the recorded states (manifests naming the checkpoints), for replay.
    state_before: str | None = None
    state_after: str | None = None
    # Observed steps: how the code was executed, and random's state before it.
    executor: dict[str, Any] | None = None
    random_state: str | None = None
    # The model call whose output the code came from (its span id), and the text the
    # model wrote around the code block.
    llm_call: str | None = None
    thought: str | None = None


class LlmMessage(_Model):
    """One message of a model call, as text (images and other parts as markers)."""

    role: str
    content: str


class LlmCall(_Model):
    """One model call of a run: a ``chat {model}`` span under the run's root.

    ``index`` orders the run's calls; ``input_messages`` and ``output`` are redacted.
    Tokens are the framework's own counts (None when it reported none); ``cost`` is set
    when ``configure(prices=...)`` named the model."""

    run_id: str
    span_id: str
    index: int
    model: str | None
    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reasons: list[str] = Field(default_factory=list)
    cost: float | None = None
    input_messages: list[LlmMessage] = Field(default_factory=list)
    output: str = ""
    streamed: bool = False
    error: ErrorInfo | None = None
    started_at: datetime
    duration_ms: float


class Run(_Model):
    """One agent run: a trace whose root span is ``invoke_agent``."""

    id: str
    name: str
    task: str | None
    status: RunStatus
    started_at: datetime
    ended_at: datetime | None
    step_count: int
    failed_steps: int
    final_answer: str | None
    # The final answer's type as the agent returned it (``str``, ``PIL.Image.Image``).
    final_answer_type: str | None = None
    replay_of: str | None = None
    error: ErrorInfo | None = None
    # Records of this run that could not be stored (a spool line the store had to set
    # aside, or a span the recorder could not write for lack of disk space).
    lost_records: int = 0
    # A run started by a tool call of another run's step (a managed agent): that step.
    parent_run: str | None = None
    parent_step: int | None = None
    # The run's model calls: how many, the tokens they reported, and their cost when
    # prices were configured for all of their models (None when any is unpriced).
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None

    @property
    def duration_ms(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds() * 1000


class Difference(_Model):
    """One field where a replay differs from the recording.

    ``field`` is ``stdout``, ``stderr``, ``result``, ``error``, ``status``,
    ``variable:<name>`` or ``tool_call:<i>``; the values are the recorded and replayed
    values, or their previews when large."""

    field: str
    recorded: Any = None
    replayed: Any = None


class ReplayReport(_Model):
    """The outcome of replaying one recorded step."""

    run_id: str
    step: int
    verdict: Verdict
    differences: list[Difference] = Field(default_factory=list)
    replay_run_id: str | None = None
    duration_ms: float = 0.0
    reason: str | None = None
    notes: list[str] = Field(default_factory=list)
    backend: str | None = None
    image: str | None = None

    @property
    def reproduced(self) -> bool:
        return self.verdict == "reproduced"


class VariableChange(_Model):
    """A variable present on both sides whose value differs."""

    name: str
    a: VariableSnapshot
    b: VariableSnapshot


class StepPair(_Model):
    """Two aligned steps of a run diff (one side is None for an inserted or removed step).

    The diffs are unified-diff lines (``-`` for side a, ``+`` for side b)."""

    a: int | None
    b: int | None
    same: bool
    code_diff: list[str] = Field(default_factory=list)
    stdout_diff: list[str] = Field(default_factory=list)
    status_a: StepStatus | None = None
    status_b: StepStatus | None = None
    error_a: ErrorInfo | None = None
    error_b: ErrorInfo | None = None
    variables_added: list[str] = Field(default_factory=list)
    variables_removed: list[str] = Field(default_factory=list)
    variables_changed: list[VariableChange] = Field(default_factory=list)
    # The model's thoughts (unified diff) and whether the model outputs the code came
    # from differ: runs that diverge because the model answered differently show it here.
    thought_diff: list[str] = Field(default_factory=list)
    model_output_differs: bool = False
    # The runs the steps' tool calls started (managed agents), by id, in call order:
    # diffing a pair's child runs compares what the managed agents did.
    child_runs_a: list[str] = Field(default_factory=list)
    child_runs_b: list[str] = Field(default_factory=list)


class RunDiff(_Model):
    """Two runs side by side, their steps aligned by code similarity.

    ``first_divergence`` is the index in ``pairs`` of the first pair that differs
    (None when the runs match)."""

    a: Run
    b: Run
    pairs: list[StepPair]
    first_divergence: int | None = None


class RunDetail(_Model):
    """A run with all of its steps: what ``codetape show RUN --json`` prints."""

    run: Run
    steps: list[Step]
    llm_calls: list[LlmCall] = Field(default_factory=list)


class FailureGroup(_Model):
    """Failing steps across runs that share a failure signature: the exception type,
    the message with ids, numbers and quoted values masked, and the failing line.

    ``example_run``/``example_step`` is the newest failing step of the group;
    ``passing_run`` a run of the same agent and task that succeeded, when there is one
    (compare it with the example to see what went differently)."""

    signature: str
    error_type: str
    message: str
    line: str | None = None
    steps: int
    runs: int
    agents: list[str]
    first_seen: datetime
    last_seen: datetime
    example_run: str
    example_step: int
    example_message: str
    passing_run: str | None = None
