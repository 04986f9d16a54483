"""Values that cross the channel from the sandbox: JSON, with a few types tagged.

Tool arguments leave the sandbox as JSON in which a tuple, set, frozenset, bytes,
bytearray, datetime, date, Decimal, or a dict with keys that are not strings, is an
object ``{"$codetape": kind, "v": ...}``. They are decoded here from that JSON alone:
the host never unpickles what the sandbox sends. The channel has already bounded the
message's size and depth, so the recursion here is bounded too.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
from collections.abc import Callable
from typing import Any

__all__ = ["TAG", "BadValue", "decode_value"]

TAG = "$codetape"


class BadValue(ValueError):
    """A tagged value that is not what its tag says."""


def _items(raw: object) -> list[Any]:
    if not isinstance(raw, list):
        raise BadValue(f"a tagged container whose items are a {type(raw).__name__}")
    return [decode_value(item) for item in raw]


def _text(raw: object) -> str:
    if not isinstance(raw, str):
        raise BadValue(f"a tagged scalar that is a {type(raw).__name__}, not text")
    return raw


def _dict(raw: object) -> dict[Any, Any]:
    pairs = _items(raw)
    if not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
        raise BadValue("a tagged dict whose items are not [key, value] pairs")
    return {key: value for key, value in pairs}


_DECODERS: dict[str, Callable[[object], Any]] = {
    "tuple": lambda raw: tuple(_items(raw)),
    "set": lambda raw: set(_items(raw)),
    "frozenset": lambda raw: frozenset(_items(raw)),
    "dict": _dict,
    "bytes": lambda raw: base64.b64decode(_text(raw), validate=True),
    "bytearray": lambda raw: bytearray(base64.b64decode(_text(raw), validate=True)),
    "datetime": lambda raw: datetime.datetime.fromisoformat(_text(raw)),
    "date": lambda raw: datetime.date.fromisoformat(_text(raw)),
    "decimal": lambda raw: decimal.Decimal(_text(raw)),
}


def decode_value(value: Any) -> Any:
    """A value as the code in the sandbox passed it, from its tagged JSON; ``BadValue``
    when a tag is unknown or its value is not of its kind."""
    if isinstance(value, list):
        return [decode_value(item) for item in value]
    if not isinstance(value, dict):
        return value
    if TAG not in value:
        return {key: decode_value(item) for key, item in value.items()}
    decoder = _DECODERS.get(value[TAG]) if isinstance(value[TAG], str) else None
    if decoder is None:
        raise BadValue(f"an unknown tag {str(value[TAG])[:40]!r}")
    try:
        return decoder(value.get("v"))
    except BadValue:
        raise
    except (TypeError, ValueError, ArithmeticError, binascii.Error) as exc:
        # e.g. an unhashable set member, a date that is not ISO, a Decimal that is not one
        raise BadValue(f"a tagged {value[TAG]} that cannot be read: {exc}") from None
