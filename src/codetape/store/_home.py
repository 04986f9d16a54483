"""Where the store lives: ``configure(home=...)``, else ``CODETAPE_HOME``, else ``./.codetape``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["resolve_home", "set_default_home"]

_default: Path | None = None


def set_default_home(home: str | os.PathLike[str] | None) -> None:
    global _default
    _default = Path(home).expanduser().absolute() if home is not None else None


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    if home is not None:
        return Path(home).expanduser().absolute()
    if _default is not None:
        return _default
    env = os.environ.get("CODETAPE_HOME")
    return Path(env).expanduser().absolute() if env else Path.cwd() / ".codetape"
