"""Names a package imports when first used (PEP 562), so that a process that only
records never loads what it does not need (the data models and pydantic, the sandbox's
protocol, the read API). A package declares them once::

    __getattr__, __dir__ = lazy_names(__name__, {"Store": "._read"}, globals(), __all__)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_names"]

# A name's module relative to the package (its attribute of the same name), or the
# module and the attribute's name there.
Source = str | tuple[str, str]


def lazy_names(
    module: str, sources: Mapping[str, Source], namespace: dict[str, Any], public: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__``: each name of ``sources`` imported
    from its module (relative to the module's package) when first asked for, then kept
    in ``namespace`` (the module's ``globals()``) so the next lookup is an ordinary one."""
    package = namespace["__package__"]
    listed = sorted({*public, *sources})

    def __getattr__(name: str) -> Any:
        source = sources.get(name)
        if source is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        where, attribute = (source, name) if isinstance(source, str) else source
        value = getattr(importlib.import_module(where, package), attribute)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *listed})

    return __getattr__, __dir__
