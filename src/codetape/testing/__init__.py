"""Test support: record into a temporary store in a test, and build synthetic stores.

``captape`` is a pytest fixture (codetape's ``capsys``): the test records into a store
of its own, and ``captape.runs()`` / ``captape.steps(run)`` read back what it recorded.
It is registered as a pytest plugin when codetape is installed; with plugin
autoloading off, add ``pytest_plugins = ["codetape.testing"]`` to your ``conftest.py``.

.. code-block:: python

    def test_the_agent_reads_the_orders(captape):
        solve("how many orders are late?")
        [run] = captape.runs()
        assert run.status == "ok"
        assert captape.steps(run)[0].tool_calls[0].name == "get_orders"

``capture()`` does the same in a ``with`` block, outside pytest. ``StoreBuilder`` and
``build_store`` write many runs into a store, fast, as the tracer would have recorded
them: for tests that need a store full of runs, and for ``bench/viewer.py``.

>>> import codetape, tempfile
>>> from codetape.testing import build_store
>>> home = tempfile.mkdtemp()
>>> built = build_store(home, runs=3, steps=4, seed=7)
>>> [len(codetape.Store(home).steps(run.id)) for run in built]
[4, 4, 4]
"""

from __future__ import annotations

from ._builder import BuiltRun, StoreBuilder
from ._capture import CapturedRuns, capture
from ._fixtures import captape
from ._specs import RunSpec, RunStatus, StepSpec, ToolCallSpec
from ._synthetic import StepKind, build_store, synthetic_runs, synthetic_step

__all__ = [
    "BuiltRun",
    "CapturedRuns",
    "RunSpec",
    "RunStatus",
    "StepKind",
    "StepSpec",
    "StoreBuilder",
    "ToolCallSpec",
    "build_store",
    "captape",
    "capture",
    "synthetic_runs",
    "synthetic_step",
]
