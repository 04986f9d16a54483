"""The web viewer: ``codetape ui`` serves ``viewer/app.py`` with Streamlit.

This package imports no Streamlit at import time, so the CLI can build deep links
without the ``viewer`` extra installed.

>>> from codetape.viewer import url
>>> url(run="3f2a9c", step=2)
'http://127.0.0.1:8501/run?run=3f2a9c&step=2'
>>> url(a="3f2a9c", b="9c1e00")
'http://127.0.0.1:8501/compare?a=3f2a9c&b=9c1e00'
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

__all__ = ["APP", "DEFAULT_URL", "url"]

APP = Path(__file__).parent / "app.py"
DEFAULT_URL = "http://127.0.0.1:8501"


def url(
    base: str = DEFAULT_URL,
    *,
    run: str | None = None,
    step: int | None = None,
    a: str | None = None,
    b: str | None = None,
) -> str:
    """A deep link into the viewer: the compare page for ``a``/``b``, the run page
    (opened at ``step``) for ``run``, else the runs list."""
    base = base.rstrip("/")
    if a is not None or b is not None:
        return f"{base}/compare?" + urlencode({k: v for k, v in (("a", a), ("b", b)) if v})
    if run is not None:
        params: dict[str, str | int] = {"run": run}
        if step is not None:
            params["step"] = step
        return f"{base}/run?" + urlencode(params)
    return f"{base}/"
