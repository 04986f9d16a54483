"""Who may run code from the viewer: a session opened with the per-launch token, and
for a step that replays in a local subprocess, only with ``codetape ui
--allow-local-exec``.

``codetape ui`` makes a random token for each launch, prints it in the viewer's link
(``http://127.0.0.1:8501/?token=…``) and hands it to the server in
``CODETAPE_UI_TOKEN``. A session that once opened a page with it keeps it; other
sessions see the replay buttons disabled, with a note on how to get the link. A server
started without a token (not by ``codetape ui``) runs no code at all.
"""

from __future__ import annotations

import hmac
import os
import re

import streamlit as st

from ..schemas import Step
from . import _data
from ._server import ALLOW_LOCAL_EXEC_ENV, TOKEN_ENV

__all__ = ["refusal", "remember_token"]

_GRANTED = "codetape:token"
_HEX = re.compile("[0-9a-f]+")
_NO_TOKEN = (
    "Replaying runs code on this machine, so the replay buttons work only in a viewer "
    "started with `codetape ui`, opened with the link it prints."
)
_NEED_LINK = (
    "Replaying runs code on this machine, so the replay buttons need the link "
    "`codetape ui` printed when it started (`http://…/?token=…`): open that link in this "
    "browser, then come back to this step."
)
_LOCAL = (
    "This step replays in a local subprocess, without isolation (it was not recorded in "
    "Docker), so the viewer replays it only when started with "
    "`codetape ui --allow-local-exec`. In a terminal: `codetape replay {run} --step {step}`."
)


def remember_token() -> None:
    """Keep in the session that its page was opened with this launch's token."""
    expected = os.environ.get(TOKEN_ENV, "")
    given = st.query_params.get("token")
    if expected and given and hmac.compare_digest(given.encode(), expected.encode()):
        st.session_state[_GRANTED] = True


def refusal(step: Step) -> str | None:
    """Why this session may not replay ``step`` (fixed wording), or None if it may.
    (A page opened with the token unlocks here too: Streamlit runs a page without
    ``app.py`` the first time, when the viewer's ``pages/`` folder is all it knows.)"""
    remember_token()
    if not os.environ.get(TOKEN_ENV):
        return _NO_TOKEN
    if not st.session_state.get(_GRANTED):
        return _NEED_LINK
    if _data.replay_backend(step) == "local" and os.environ.get(ALLOW_LOCAL_EXEC_ENV) != "1":
        # Only a hex id and a number reach the Markdown, nothing recorded.
        run = step.run_id[:12] if _HEX.fullmatch(step.run_id) else "RUN"
        return _LOCAL.format(run=run, step=step.index)
    return None
