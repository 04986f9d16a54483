"""The replayer: re-run recorded steps in an identical sandbox and compare; carry runs
between stores as bundles; freeze a step into a regression test."""

from __future__ import annotations

from ._bundle import BundleInfo, export_run, import_bundle
from ._compare import compare_steps, variable_differs
from ._diff import align, diff_runs
from ._pytest import write_pytest
from ._replay import replay, replay_run

__all__ = [
    "BundleInfo",
    "align",
    "compare_steps",
    "diff_runs",
    "export_run",
    "import_bundle",
    "replay",
    "replay_run",
    "variable_differs",
    "write_pytest",
]
