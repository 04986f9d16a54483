"""The ``codetape`` command: a thin layer that opens the store, calls the library and
prints with rich (for people) or ``--json`` (the pydantic models, for scripts).

``_app`` holds the click group, the consoles and the error handler; each command group
is one module that registers its commands on the group when imported:

- ``_inspect``: ``runs``, ``show``, ``doctor`` (its checks and container cleanup are in
  ``_doctor``; a run's head in ``_header``, how a step prints in ``_steps``, the
  model-call views in ``_llm``, ``show --follow`` in ``_follow``)
- ``_replay``: ``replay``, ``export``, ``import``, ``pytest``
- ``_view``: ``diff``, ``ui``
- ``_failures``: ``failures``
- ``_sql``: ``sql``
- ``_image``: ``image build``
- ``_serve``: ``serve`` (the server itself is the ``server`` package)
- ``_push``: ``push`` (the shipper is ``store._ship``)

``_links`` makes run ids hyperlinks to the viewer's page when its address is known.
"""

from __future__ import annotations

# Importing a command module registers its commands on ``cli``.
from . import _failures, _image, _inspect, _push, _replay, _serve, _sql, _view  # noqa: F401
from ._app import cli, main

__all__ = ["cli", "main"]
