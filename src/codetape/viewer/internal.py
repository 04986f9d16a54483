"""The viewer as codetape's CLI uses it: the command that serves it and what that
command reads from its environment. Not for users: these names may change in any
release. Imports no Streamlit."""

from __future__ import annotations

from ._server import ALLOW_LOCAL_EXEC_ENV, TOKEN_ENV, command

__all__ = ["ALLOW_LOCAL_EXEC_ENV", "TOKEN_ENV", "command"]
