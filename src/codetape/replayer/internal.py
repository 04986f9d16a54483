"""The replayer as codetape's other packages use it: how two recorded steps compare.
Not for users: these names may change in any release."""

from __future__ import annotations

from ._compare import compare_steps, variable_differs
from ._diff import DiffOutline, align, diff_outline, whole_pair

__all__ = [
    "DiffOutline",
    "align",
    "compare_steps",
    "diff_outline",
    "variable_differs",
    "whole_pair",
]
