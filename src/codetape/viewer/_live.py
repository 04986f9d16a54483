"""Runs still being recorded: the pages that show them follow them as steps arrive.

The Run page of a running run, and the Runs list while any run is running, declare a
Streamlit fragment that reruns every ``REFRESH_S`` seconds. It reads the run again (a
fresh ``Store``, which first ingests what the agent spooled since) and reruns the page
when the run has grown or ended. A page that shows no running run declares no timer,
so once the run ends the browser stops asking.
"""

from __future__ import annotations

import streamlit as st

from ..errors import CodetapeError
from ..schemas import Run
from . import _data

__all__ = ["REFRESH_S", "follow"]

# How often a page showing a run still being recorded looks for news, in seconds.
REFRESH_S = 2.0


def _progress(run: Run) -> tuple[str, int, int]:
    """What changes while a run is recorded: its status, steps and model calls (a model
    call comes before the step its code goes to)."""
    return run.status, run.step_count, run.llm_calls


def follow(run: Run) -> None:
    """While ``run`` is being recorded, rerun the page when it grows or ends."""

    @st.fragment(run_every=REFRESH_S)
    def watch() -> None:
        st.caption("This run is still being recorded: the page follows it.")
        try:
            now = _data.run(run.id)
        except CodetapeError:
            return  # the store cannot be read just now: look again at the next tick
        if _progress(now) != _progress(run):
            st.rerun()

    watch()
