"""One home for how codetape shortens and shows things: preview and cut lengths, the
ellipsis, durations, status colours and the failing line of a traceback. The tracer,
the CLI and the viewer all use these, so a value looks the same wherever it is shown.

Internal: imports nothing of codetape but ``schemas``.
"""

from __future__ import annotations

__all__ = [
    "ATTRIBUTE_CHARS",
    "MESSAGE_CHARS",
    "PREVIEW_CHARS",
    "STACK_CHARS",
    "STATUS_CHARS",
    "TEXT_PREVIEW_CHARS",
    "cut",
]

# A value's preview (variables, results): what a table cell or a diff line shows.
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

ELLIPSIS = "…"


def cut(text: str, limit: int = PREVIEW_CHARS) -> str:
    """``text`` shortened to at most ``limit`` characters, ending in ``…`` when cut.

    >>> cut("abcdef", 4)
    'abc…'
    >>> cut("abc", 4)
    'abc'
    """
    return text if len(text) <= limit else text[: max(0, limit - 1)] + ELLIPSIS
