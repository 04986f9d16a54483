"""The replayer as codetape's other packages use it: how two recorded steps compare.
Not for users: these names may change in any release."""

from __future__ import annotations

from ._compare import compare_steps, variable_differs
from ._diff import align

__all__ = ["align", "compare_steps", "variable_differs"]
