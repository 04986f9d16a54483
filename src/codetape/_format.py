"""One home for how codetape shortens and shows things: preview and cut lengths, the
ellipsis, durations, the statuses and their colours, and the failing line of a
traceback. The tracer, the CLI and the viewer all use these, so a value looks the same
wherever it is shown.

Colours are named here once; each front end renders a name its own way (a rich style
in the terminal, a hex colour or an alert in the viewer).

Internal: imports nothing of codetape but ``schemas``.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from .schemas import RunStatus, StepStatus, Verdict

if TYPE_CHECKING:  # annotations only: the tracer uses this module without the models
    from .schemas import Step

__all__ = [
    "ATTRIBUTE_CHARS",
    "DIFFERENCE_CHARS",
    "ELLIPSIS",
    "MESSAGE_CHARS",
    "PREVIEW_CHARS",
    "RUN_STATUSES",
    "STACK_CHARS",
    "STATUS_CHARS",
    "STATUS_COLORS",
    "STEP_STATUSES",
    "TASK_CHARS",
    "TEXT_PREVIEW_CHARS",
    "VERDICTS",
    "VERDICT_COLORS",
    "Color",
    "cost",
    "cut",
    "duration",
    "failing_line",
    "steps_text",
    "visible",
    "visible_json",
]

# A value's preview (variables, results, tool JSON, a replay's differing value): what a
# table cell or a diff line shows.
PREVIEW_CHARS = 300
# The preview of a text that is stored whole as a blob (code, stdout, stderr, tool JSON).
TEXT_PREVIEW_CHARS = 200
# An exception message, and a run's final answer, as a span attribute.
MESSAGE_CHARS = 2000
# A stack trace as an exception event attribute (the whole one is a blob).
STACK_CHARS = 8000
# A span status description.
STATUS_CHARS = 500
# Any other recorded string attribute.
ATTRIBUTE_CHARS = 2000
# A recorded or replayed text (stdout, stderr) kept in a replay's difference.
DIFFERENCE_CHARS = 2000
# A run's task in a list of runs.
TASK_CHARS = 120

ELLIPSIS = "…"

RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
STEP_STATUSES: tuple[StepStatus, ...] = get_args(StepStatus)
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)

Color = Literal["green", "red", "yellow", "orange", "purple", "grey", "cyan"]

# Every run and step status (a test checks that none is missing).
STATUS_COLORS: dict[str, Color] = {
    "ok": "green",
    "error": "red",
    "timeout": "orange",
    "oom": "purple",
    "killed": "grey",
    "running": "cyan",
    "incomplete": "yellow",
    "interrupted": "yellow",
}
VERDICT_COLORS: dict[Verdict, Color] = {
    "reproduced": "green",
    "diverged": "red",
    "not_restorable": "yellow",
    "environment_missing": "yellow",
}

# Frames of a step's code: the sandbox compiles it as "<code action>"; an observed step
# run with plain exec() shows as "<string>". Other "<...>" frames (frozen importlib,
# codetape's tool stubs) are not the step's code.
_CODE_FRAME = re.compile(r'File "<(?:code action|string)>", line (\d+)')


# Characters that must not reach a terminal as they are: C0 and C1 controls but newline
# and tab (ESC starts the sequences that retitle a window, clear the screen or hide a
# hyperlink; a CR not ending a line overwrites it), the bidi controls (U+202E shows
# "gnp.exe" as "exe.png"), zero-width and other invisible characters, the line and
# paragraph separators, the tag characters that can hide text, and lone surrogates
# (which cannot even be printed). ZWNJ and ZWJ stay: scripts and emoji need them.
_UNSAFE = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028-\u202e"
    r"\u2060-\u2064\u2066-\u2069\ufeff\ud800-\udfff\U000e0000-\U000e007f]"
    r"|\r(?!\n)"
)


def _python_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code == 0x0D:
        return "\\r"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    high, low = divmod(code - 0x10000, 0x400)
    return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"


def visible(text: str | None) -> str:
    r"""Untrusted text (a run's name, a task, code, output, an error message) as it may
    be shown in a terminal: control, bidi and invisible characters written as Python
    escapes (``\x1b``, ``\u202e``); newlines, tabs and CRLF line ends kept; ``None``
    shows as the empty string. Every text the CLI prints from a store goes through it.

    >>> print(visible("a\x1b]0;title\x07 b\u202ec\nd\re"))
    a\x1b]0;title\x07 b\u202ec
    d\re
    """
    if not text:
        return ""
    return _UNSAFE.sub(_python_escape, text)


def visible_json(text: str) -> str:
    r"""JSON text with the characters :func:`visible` escapes written as JSON escapes
    (``\u001b``, ``\u202e``): the same JSON value, safe to print.

    >>> print(visible_json('{"name": "a\x7fb\u202ec"}'))
    {"name": "a\u007fb\u202ec"}
    """
    return _UNSAFE.sub(_json_escape, text)


def cut(text: str | None, limit: int = PREVIEW_CHARS) -> str:
    """``text`` shortened to at most ``limit`` characters, ending in ``…`` when cut;
    ``None`` shows as the empty string.

    >>> cut("abcdef", 4)
    'abc…'
    >>> cut("abc", 4)
    'abc'
    """
    if text is None:
        return ""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + ELLIPSIS


def cost(value: float | None) -> str:
    """A cost, in the unit of the prices given to ``configure(prices=...)``; empty when
    none applied.

    >>> cost(1234.5), cost(0.0123456), cost(None)
    ('1,234.50', '0.0123', '')
    """
    if value is None:
        return ""
    return f"{value:,.2f}" if value >= 1 else f"{value:.3g}"


def duration(ms: float | None, missing: str = "—") -> str:
    """A duration for people; ``missing`` when there is none (a run still going).

    >>> duration(12.3), duration(1234), duration(75_000), duration(None, "-")
    ('12 ms', '1.2 s', '1 min 15 s', '-')
    """
    if ms is None:
        return missing
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{int(ms // 60_000)} min {ms % 60_000 / 1000:.0f} s"


def failing_line(step: Step) -> int | None:
    """The line of the step's code that raised: the last frame of its code in the
    traceback, or ``None`` when the step did not raise."""
    if step.error is None or not step.error.traceback:
        return None
    found = _CODE_FRAME.findall(step.error.traceback)
    return int(found[-1]) if found else None


# smolagents' interpreter names the failing line in its message instead of a frame.
# (a compound statement's whole text: "for o in big:\n    refund(o['id'])").
_AT_LINE = re.compile(r"at line '(.*?)' due to: ", re.DOTALL)


def error_line(code: str, traceback: str | None, message: str | None) -> str | None:
    """The text of the line of ``code`` that raised: the last frame of the code in the
    traceback, or the line an interpreter's message names; None when neither says.

    >>> error_line("x = 1\ny = x / 0", 'File "<code action>", line 2, in <module>', "")
    'y = x / 0'
    """
    found = _CODE_FRAME.findall(traceback or "")
    lines = code.splitlines()
    if found and 1 <= int(found[-1]) <= len(lines):
        return lines[int(found[-1]) - 1].strip() or None
    match = _AT_LINE.search(message or "")
    return match[1].strip() or None if match else None


_CODE_BLOCKS = re.compile(
    r"```[\w+-]*[ \t]*\n.*?(?:```|\Z)|<code>.*?(?:</code>|\Z)|<end_code>", re.DOTALL
)


def _structured_thought(output: str) -> str | None:
    if not output.lstrip().startswith("{"):
        return None
    try:
        found = json.loads(output)
    except ValueError:
        return None
    thought = found.get("thought") if isinstance(found, dict) else None
    return thought if isinstance(thought, str) else None


def thought_of(output: str, code: str) -> str | None:
    """The text a model wrote around the code of its ``output``: outside its code blocks
    (fenced or in ``<code>`` tags), or, when it has none, outside the code itself; None
    when it wrote nothing else.

    >>> thought_of("Thought: add them.\n<code>\nx = 1 + 1\n</code>", "x = 1 + 1")
    'Thought: add them.'
    """
    structured = _structured_thought(output)
    if structured is not None:  # {"thought": ..., "code": ...} (structured outputs)
        rest = structured
    elif _CODE_BLOCKS.search(output):
        rest = _CODE_BLOCKS.sub("\n", output)
    elif code.strip() and code.strip() in output:
        rest = output.replace(code.strip(), "\n")
    else:
        rest = output
    rest = re.sub(r"\n{3,}", "\n\n", rest).strip()
    return rest or None


def steps_text(indexes: list[int] | range) -> str:
    """``step 2``, ``steps 2 to 5`` (a contiguous range) or ``steps 2, 4``.

    >>> steps_text([2, 3, 4]), steps_text([2, 4]), steps_text(range(0, 1))
    ('steps 2 to 4', 'steps 2, 4', 'step 0')
    """
    indexes = list(indexes)
    if len(indexes) == 1:
        return f"step {indexes[0]}"
    if indexes == list(range(indexes[0], indexes[-1] + 1)):
        return f"steps {indexes[0]} to {indexes[-1]}"
    return "steps " + ", ".join(map(str, indexes))


# -- the values on the failing line ---------------------------------------------------------

# What a line calls rather than reads: functions, tools, classes and modules.
_NOT_VALUES = frozenset(
    {"function", "builtin_function_or_method", "method", "type", "module", "Tool", "_StepTool"}
)
_KEY_IN_PREVIEW = re.compile(r"""[{,]\s*(['"])((?:(?!\1).){1,80})\1\s*:""")


@dataclass(frozen=True)
class InlineValue:
    """A name the failing line reads, as the step's recorded state has it; ``note``
    says what a value that was subscripted does have (``has keys: id, total``)."""

    name: str
    type: str
    preview: str
    note: str | None = None


def _first_use(line: str, name: str) -> int:
    found = re.search(rf"\b{re.escape(name)}\b", line)
    return found.start() if found else len(line)


def _read_names(line: str) -> tuple[list[str], set[str]]:
    """The names ``line`` reads, in order, and those it subscripts; ``[]`` when it is
    not Python on its own (the head of a block gets a body to parse)."""
    for source in (line, line + "\n    pass", line.rstrip(":") + ":\n    pass"):
        try:
            tree = ast.parse(source.strip())
        except SyntaxError:
            continue
        names: dict[str, None] = {}
        subscripted: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                names[node.id] = None
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
                subscripted.add(node.value.id)
        return sorted(names, key=lambda n: _first_use(line, n)), subscripted
    return [], set()


def _contents(preview: str, type_name: str) -> str | None:
    """What a subscripted value holds, read from its preview: a dict's keys, or how many
    items a list or tuple has."""
    try:
        value = ast.literal_eval(preview)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if isinstance(value, dict):
        return "has keys: " + ", ".join(map(str, value)) if value else "is empty"
    if isinstance(value, (list, tuple)):
        return f"has {len(value)} items (indexes 0 to {len(value) - 1})" if value else "is empty"
    if type_name == "dict":  # a preview cut short: the keys it shows
        keys = [m[2] for m in _KEY_IN_PREVIEW.finditer(preview)]
        if keys:
            return "has keys: " + ", ".join(dict.fromkeys(keys)) + ", …"
    return None


def inline_values(step: Step) -> list[InlineValue]:
    """The names the step's failing line reads, each with its type and preview as the
    recorded state after the step has it (the state the error left), and for a value
    the line subscripts, what it holds. Empty when the step did not fail on a line of
    its code, or the line reads nothing the state has."""
    if step.error is None:
        return []
    line = error_line(step.code, step.error.traceback, step.error.message)
    if line is None:
        return []
    names, subscripted = _read_names(line)
    state = {**step.variables_before, **step.variables_after}
    found = []
    for name in names:
        snap = state.get(name)
        if snap is None or snap.type.rsplit(".", 1)[-1] in _NOT_VALUES:
            continue
        note = _contents(snap.preview, snap.type) if name in subscripted else None
        found.append(InlineValue(name, snap.type, snap.preview, note))
    return found
