"""A tool call's arguments by parameter name, as the tool receives them: one binding
for every way codetape sees a tool called (observed, sandboxed, smolagents ``Tool``)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

__all__ = ["bind_arguments", "tool_parameters", "tool_signature"]


def tool_signature(tool: Any) -> inspect.Signature | None:
    """The signature a tool's arguments bind to: a smolagents ``Tool`` is called through
    ``__call__(*args, **kwargs)``, which calls ``forward``."""
    try:
        signature = inspect.signature(getattr(tool, "forward", tool))
    except (TypeError, ValueError):
        return None
    params = list(signature.parameters.values())
    inputs = getattr(tool, "inputs", None)
    if params and params[0].name == "self" and isinstance(inputs, dict) and "self" not in inputs:
        # smolagents' @tool makes forward a staticmethod whose signature starts with self
        signature = signature.replace(parameters=params[1:])
    return signature


def bind_arguments(
    tool: Any,
    args: tuple[Any, ...] | list[Any],
    kwargs: Mapping[str, Any],
    signature: inspect.Signature | None = None,
) -> dict[str, Any]:
    """The call's arguments by parameter name; what was passed when they do not bind.

    >>> def get_price(item: str, qty: int = 1) -> float: ...
    >>> bind_arguments(get_price, ["pear"], {"qty": 2})
    {'item': 'pear', 'qty': 2}
    """
    inputs = getattr(tool, "inputs", None)
    if isinstance(inputs, dict):
        if (
            len(args) == 1
            and not kwargs
            and isinstance(args[0], dict)
            and all(key in inputs for key in args[0])
        ):  # Tool.__call__ takes a single dict of its inputs as keyword arguments
            return dict(args[0])
        if len(args) <= len(inputs):  # a Tool's parameters are its inputs, in order
            return {**dict(zip(inputs, args, strict=False)), **kwargs}
    signature = signature or tool_signature(tool)
    if signature is not None:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            pass  # the tool raises its own TypeError; record what was passed
        else:
            arguments: dict[str, Any] = {}
            for name, value in bound.arguments.items():
                if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                    arguments.update(value)
                else:
                    arguments[name] = value
            return arguments
    return {"args": list(args), **kwargs} if args else dict(kwargs)


def tool_parameters(
    tool: Any, signature: inspect.Signature | None = None
) -> list[list[str]] | None:
    """The tool's parameters as ``[name, kind]`` pairs, recorded with each call, so a
    replay's stand-in binds arguments the way the tool did (``*items`` stays a tuple of
    positional values, not one argument)."""
    inputs = getattr(tool, "inputs", None)
    if isinstance(inputs, dict):
        return [[name, "POSITIONAL_OR_KEYWORD"] for name in inputs]
    signature = signature or tool_signature(tool)
    if signature is None:
        return None
    return [[p.name, p.kind.name] for p in signature.parameters.values()]
