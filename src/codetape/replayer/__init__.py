"""The replayer: re-run recorded steps in an identical sandbox and compare; carry runs
between stores as bundles; freeze a step into a regression test."""

from __future__ import annotations

from ._bundle import BundleInfo, export_run, import_bundle
from ._diff import diff_runs
from ._pytest import write_pytest
from ._replay import replay, replay_from, replay_run

__all__ = [
    "BundleInfo",
    "diff_runs",
    "export_run",
    "import_bundle",
    "replay",
    "replay_from",
    "replay_run",
    "write_pytest",
]
