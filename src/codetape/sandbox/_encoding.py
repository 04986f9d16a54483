"""How values leave the sandbox: JSON, with the types JSON lacks tagged.

The runner receives this file as source (like the state codec) and encodes with it the
values the code sends to the host: tool arguments and final answers. The host decodes
them in ``_values`` from the JSON alone; it never unpickles what a sandbox sends.

A tagged value is an object ``{"$codetape": kind, ...}``:

- ``tuple``, ``set``, ``frozenset``: ``v`` is the list of items; ``dict``: ``v`` is a list
  of ``[key, value]`` pairs (for keys that are not all strings, or a key that is the tag);
- ``bytes``, ``bytearray``: base64; ``datetime``, ``date``, ``time``: ISO 8601;
  ``decimal``: its text; ``timedelta``: ``[days, seconds, microseconds]``;
  ``complex``: ``[real, imag]``;
- ``image``: a PIL image as PNG bytes (base64);
- ``ndarray`` and ``numpy``: a numpy array, or a numpy scalar as a 0-d array, as ``.npy``
  bytes (base64) written without pickle: an array of objects is not sent this way;
- ``dataframe`` and ``series``: a pandas frame or series column by column, each column a
  ``.npy`` array or, for a column of Python objects, a list of encoded values;
- ``repr``: anything else, as its type's name and its repr (``v``), which the host gives
  back as a marked text, never as a value of another type.

Every rich tag also carries ``r``, the value's repr, so a host without numpy, PIL or
pandas still shows what it got. Stdlib only; numpy, PIL and pandas are used only when
the code already imported them (a value of their types cannot exist otherwise).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import io
import re
import reprlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_DEPTH", "TAG", "encode"]

TAG = "$codetape"
# How deep a value may nest (the host refuses messages nested deeper than 128 levels,
# and the protocol's envelope takes a few): a deeper part is sent as its repr.
MAX_DEPTH = 100
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 2000
_PNG_MODES = frozenset(["1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"])
# Memory addresses differ on every run (as the state codec masks them in previews).
_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]+")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _qualified(cls: type) -> str:
    module = getattr(cls, "__module__", None) or "?"
    name = getattr(cls, "__qualname__", None) or cls.__name__
    return name if module == "builtins" else f"{module}.{name}"


def shown(value: Any) -> str:
    """A value's repr, short, its memory addresses masked, and never an error (a repr
    that raises says so)."""
    try:
        return _ADDRESS.sub("at 0x…", _REPR.repr(value))
    except Exception as exc:
        return f"<{_qualified(type(value))}: repr failed: {type(exc).__name__}>"


def opaque(value: Any, why: str = "") -> dict[str, Any]:
    """The marker of a value that cannot leave the sandbox as itself."""
    marker = {TAG: "repr", "type": _qualified(type(value)), "v": shown(value)}
    if why:
        marker["why"] = why
    return marker


_SCALARS: tuple[tuple[str, type, Callable[[Any], Any]], ...] = (
    ("datetime", datetime.datetime, lambda v: v.isoformat()),
    ("date", datetime.date, lambda v: v.isoformat()),
    ("time", datetime.time, lambda v: v.isoformat()),
    ("timedelta", datetime.timedelta, lambda v: [v.days, v.seconds, v.microseconds]),
    ("decimal", decimal.Decimal, str),
    ("complex", complex, lambda v: [v.real, v.imag]),
    ("bytes", bytes, _b64),
    ("bytearray", bytearray, lambda v: _b64(bytes(v))),
)
_CONTAINERS = (("tuple", tuple), ("frozenset", frozenset), ("set", set))


def encode(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON with tagged types; what has no encoding becomes a marker."""
    if depth > MAX_DEPTH:
        return opaque(value, f"it nests deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    rich = _rich(value, depth)
    if rich is not None:
        return rich
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, list):
        return [encode(item, depth + 1) for item in value]
    if isinstance(value, dict):
        if TAG not in value and all(isinstance(key, str) for key in value):
            return dict((key, encode(item, depth + 1)) for key, item in value.items())
        pairs = [[encode(k, depth + 3), encode(v, depth + 3)] for k, v in value.items()]
        return {TAG: "dict", "v": pairs}
    for kind, containers in _CONTAINERS:
        if isinstance(value, containers):
            return {TAG: kind, "v": [encode(item, depth + 2) for item in value]}
    for scalar, scalars, encoder in _SCALARS:
        if isinstance(value, scalars):
            return {TAG: scalar, "v": encoder(value)}
    return opaque(value)


def _rich(value: Any, depth: int) -> dict[str, Any] | None:
    """numpy, PIL and pandas values, when their module is loaded; else None."""
    root = (type(value).__module__ or "").partition(".")[0]
    try:
        if root == "numpy" and "numpy" in sys.modules:
            return _numpy(value, sys.modules["numpy"])
        if root == "PIL" and "PIL.Image" in sys.modules:
            return _image(value, sys.modules["PIL.Image"])
        if root == "pandas" and "pandas" in sys.modules:
            return _pandas(value, sys.modules["pandas"], depth)
    except Exception as exc:  # a library's own error: the value goes as its repr
        return opaque(value, f"{type(exc).__name__}: {exc}")
    return None


def _npy(array: Any, numpy: Any) -> str:
    buffer = io.BytesIO()
    numpy.lib.format.write_array(buffer, array, allow_pickle=False)
    return _b64(buffer.getvalue())


def _numpy(value: Any, numpy: Any) -> dict[str, Any] | None:
    if isinstance(value, numpy.generic):
        kind, array = "numpy", numpy.asarray(value)
    elif type(value) is numpy.ndarray:
        kind, array = "ndarray", value
    else:
        return None
    if array.dtype.hasobject:
        return opaque(value, "an array of Python objects has no safe encoding")
    return {TAG: kind, "v": _npy(array, numpy), "r": shown(value)}


def _image(value: Any, image_module: Any) -> dict[str, Any] | None:
    if not isinstance(value, image_module.Image):
        return None
    if value.mode not in _PNG_MODES:
        return opaque(value, f"PNG cannot hold an image of mode {value.mode}")
    buffer = io.BytesIO()
    value.save(buffer, format="PNG")
    return {TAG: "image", "v": _b64(buffer.getvalue()), "r": shown(value)}


def _column(values: Any, numpy: Any, depth: int) -> dict[str, Any]:
    """One column (or an index) of a frame: ``.npy`` bytes, or its items encoded."""
    array = values.to_numpy()
    column = {"dtype": str(values.dtype), "name": encode(values.name, depth + 2)}
    if array.dtype.hasobject:
        column["items"] = [encode(item, depth + 3) for item in array.tolist()]
    else:
        column["npy"] = _npy(array, numpy)
    return column


def _pandas(value: Any, pandas: Any, depth: int) -> dict[str, Any] | None:
    numpy = sys.modules["numpy"]
    if type(value) is pandas.Series:
        return {
            TAG: "series",
            "data": _column(value, numpy, depth + 1),
            "index": _column(value.index, numpy, depth + 1),
            "r": shown(value),
        }
    if type(value) is not pandas.DataFrame:
        return None
    return {
        TAG: "dataframe",
        "columns": [encode(label, depth + 2) for label in value.columns],
        "data": [_column(value.iloc[:, i], numpy, depth + 2) for i in range(value.shape[1])],
        "index": _column(value.index, numpy, depth + 1),
        "r": shown(value),
    }
