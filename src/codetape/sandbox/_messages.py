"""The shapes of the messages the host accepts from the runner.

Code in the sandbox can write to the channel, so every message is checked against its
shape here before the host uses a field of it: a field of the wrong type, or a message
that lacks one, is refused with the reason (``BadMessage``), never a ``TypeError`` deep in
the host. Fields are strict (a string is not taken for a number). Values the runner
passes through from the code (a final answer, tool arguments) are JSON of any shape,
already bounded in size and depth by the channel.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "BadMessage",
    "CheckpointMessage",
    "FinalAnswerMessage",
    "ReadyMessage",
    "ResultMessage",
    "StateMessage",
    "StateReply",
    "ToolCallMessage",
    "VariableMessage",
    "check",
]


class BadMessage(Exception):
    """A message from the runner that does not have the shape of its kind."""


class _Message(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")
    # What the message is, as an error about it says.
    shown: ClassVar[str] = "message"


_M = TypeVar("_M", bound=_Message)


class ErrorMessage(_Message):
    type: str
    message: str
    traceback: str | None = None


class VariableMessage(_Message):
    type: str = "?"
    preview: str = ""
    size: int = Field(0, ge=0)
    digest: str | None = None
    reason: str | None = None


class FilesMessage(_Message):
    files: str | None = None
    reason: str | None = None


class CheckpointMessage(_Message):
    digest: str | None = None
    reason: str | None = None
    # The namespace's ``__name__``: whatever the code set it to.
    name: Any = None
    # Digests of the blobs sent with this message (the checkpoint's own, the large
    # values' and the /tmp files'): their bytes came as blob frames.
    data: str | None = None
    blobs: dict[str, str] = Field(default_factory=dict)
    large: dict[str, str] = Field(default_factory=dict)
    files: FilesMessage | None = None
    files_data: str | None = None


class StateMessage(_Message):
    variables: dict[str, VariableMessage] = Field(default_factory=dict)
    # digest -> digest of a blob sent with this message
    data: dict[str, str] = Field(default_factory=dict)
    modules: dict[str, str] = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict)
    checkpoint: CheckpointMessage = Field(default_factory=CheckpointMessage)


class FinalAnswerMessage(_Message):
    """How the code ended its action: ``final_answer(value)``. ``tool``: the host's own
    final_answer tool gave the answer (the host holds it, and ``value`` comes only when
    the host asked for it); else ``value`` is the answer in its tagged JSON."""

    value: Any = None
    type: str = "?"
    preview: str = ""
    tool: bool = False


class ResultMessage(_Message):
    shown: ClassVar[str] = "the reply to a code action"
    op: Literal["result"]
    status: Literal["ok", "error"]
    has_result: bool = False
    result: str | None = None
    result_type: str | None = None
    error: ErrorMessage | None = None
    stdout: str = ""
    stderr: str = ""
    final_answer: FinalAnswerMessage | None = None
    state: StateMessage


class StateReply(_Message):
    shown: ClassVar[str] = "a state reply"
    state: StateMessage
    errors: dict[str, str] = Field(default_factory=dict)


class ReadyMessage(_Message):
    shown: ClassVar[str] = "the runner's greeting"
    op: Literal["ready"]
    python: str = ""
    platform: str = ""


class ToolCallMessage(_Message):
    shown: ClassVar[str] = "a tool call"
    op: Literal["tool_call"]
    name: str
    args: list[Any] = Field(default_factory=list)
    keywords: dict[str, Any] = Field(default_factory=dict)


def check(kind: type[_M], message: dict[str, Any]) -> _M:
    """``message`` as a ``kind``, or ``BadMessage`` saying which field is wrong."""
    try:
        return kind.model_validate(message)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])[:200] or "shape"
        count = exc.error_count()
        raise BadMessage(
            f"{kind.shown} whose {where} is wrong ({first['msg']}; "
            f"{count} problem{'s' * (count != 1)} in all)"
        ) from None
