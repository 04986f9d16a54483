"""``codetape serve``: one process that owns a store and accepts spans over OTLP/HTTP and
blobs over plain HTTP from many machines (docs/server.md)."""

from __future__ import annotations

from ._app import Limits, ServerSettings, create_app
from ._run import TOKEN_ENV, serve

__all__ = ["TOKEN_ENV", "Limits", "ServerSettings", "create_app", "serve"]
