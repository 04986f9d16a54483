"""Texts within a size: cut with a marker of what was left out, and JSON values whose
strings are cut fairly (the short ones whole, the long ones to equal lengths) so that the
JSON stays valid and fits.

The exported convention attributes use these (``_conventions``): a backend gets at most
the OpenTelemetry attribute length limit per value, and codetape's store keeps the whole
text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = ["Cuttable", "Kept", "cut_marked", "fit_json"]


@dataclass(frozen=True)
class Kept:
    """A text kept for the export: all of it, or its beginning and its full length."""

    text: str
    length: int


class Cuttable(str):
    """A string that ``fit_json`` may cut; ``length`` is the full text's length when the
    string is only its beginning."""

    length: int

    def __new__(cls, text: str, length: int | None = None) -> Cuttable:
        self = super().__new__(cls, text)
        self.length = len(text) if length is None else max(length, len(text))
        return self


def _marker(omitted: int) -> str:
    return f"…[{omitted} more characters in codetape]"


def cut_marked(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters: whole, or cut with a marker of how many
    characters were left out (counted from the full text of a ``Cuttable``).

    >>> cut_marked("abcdefghij" * 10, 45)
    'abcdefghija…[89 more characters in codetape]'
    """
    length = text.length if isinstance(text, Cuttable) else len(text)
    if length <= limit:
        return str(text)
    keep = max(0, limit - len(_marker(length)))
    return text[:keep] + _marker(length - keep)


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _leaves(value: object) -> Iterator[Cuttable]:
    if isinstance(value, Cuttable):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)


def _replaced(value: object, cut: Iterator[str]) -> object:
    """``value`` with its ``Cuttable`` leaves replaced, in ``_leaves`` order."""
    if isinstance(value, Cuttable):
        return next(cut)
    if isinstance(value, Mapping):
        return {key: _replaced(item, cut) for key, item in value.items()}
    if isinstance(value, list):
        return [_replaced(item, cut) for item in value]
    return value


def _shares(lengths: list[int], budget: int) -> list[int]:
    """Split ``budget`` characters fairly: short texts whole, long ones equally."""
    shares = [0] * len(lengths)
    left, count = budget, len(lengths)
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        shares[i] = min(lengths[i], left // count)
        left -= shares[i]
        count -= 1
    return shares


def fit_json(value: object, limit: int) -> str | None:
    """``value`` as JSON in at most ``limit`` characters, its ``Cuttable`` strings cut
    fairly (each cut one marked); None when even cut to nothing it does not fit.

    >>> fit_json({"code": Cuttable("x = 1\\n" * 40)}, 80)
    '{"code": "x = 1\\\\nx = 1\\\\nx = 1\\\\nx = 1\\\\nx = 1…[211 more characters in codetape]"}'
    """
    leaves = list(_leaves(value))
    text = _dumps(value)
    if len(text) <= limit and all(leaf.length == len(leaf) for leaf in leaves):
        return text
    overhead = len(_dumps(_replaced(value, iter([""] * len(leaves)))))
    if not leaves or overhead > limit:
        return None
    # Start from all the room there is and shrink by what escaping costs: the strings'
    # share of the JSON text is nearly proportional to their own length.
    budget = limit - overhead
    for _ in range(16):
        shares = _shares([leaf.length for leaf in leaves], budget)
        cut = (cut_marked(leaf, share) for leaf, share in zip(leaves, shares, strict=True))
        fitted = _dumps(_replaced(value, cut))
        if len(fitted) <= limit:
            return fitted
        if budget == 0:
            return None
        budget = max(0, min(budget - 1, budget * (limit - overhead) // (len(fitted) - overhead)))
    return None
