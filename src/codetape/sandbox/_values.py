"""Values that cross the channel from the sandbox, decoded from their tagged JSON.

Tool arguments and final answers leave the sandbox as JSON in which the types JSON lacks
are tagged objects ``{"$codetape": kind, ...}`` (``_encoding`` writes them; its
docstring lists the kinds). They are decoded here from that JSON alone: the host never
unpickles what the sandbox sends. Code in the sandbox can forge any of it, so each kind
is checked before it is built: a ``.npy`` header is read and refused when its dtype holds
objects or its size disagrees with its bytes, an image must be a PNG of at most
``MAX_IMAGE_PIXELS`` pixels, nesting is bounded by ``MAX_DEPTH``. Whatever fails is a
``BadValue`` that says why; nothing half-decoded is returned.

A value the sandbox could not encode arrives as an ``OpaqueValue``: its repr, marked.
numpy, PIL and pandas are imported only for a value of their kind; a host without them
gets that value as an ``OpaqueValue`` too.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import importlib
import io
import re
import warnings
from collections.abc import Callable
from typing import Any

from ._encoding import TAG

__all__ = ["MAX_DEPTH", "MAX_IMAGE_PIXELS", "TAG", "BadValue", "OpaqueValue", "decode_value"]

# Deeper than any value the runner sends (it sends a deeper part as its repr).
MAX_DEPTH = 128
# The largest image decoded (about 200 MB as RGBA): a small PNG can claim far more.
MAX_IMAGE_PIXELS = 50_000_000
# The pandas dtypes a column is turned back into, by name. Only names: numpy parses
# others ("(100000,100000)f8") into dtypes that would allocate whatever they claim.
_DTYPE = re.compile(
    r"(category|object|str|string|bool|boolean|U?Int(8|16|32|64)|u?int(8|16|32|64)"
    r"|Float(32|64)|float(16|32|64)|complex(64|128)"
    r"|(datetime64|timedelta64)\[(s|ms|us|ns)(, [A-Za-z0-9_/+:-]{1,40})?\])"
)


class BadValue(ValueError):
    """A tagged value that is not what its tag says."""


class OpaqueValue(str):
    """A value that could not leave the sandbox as itself: its repr, with a marker that
    says so. A ``str``, so an agent can still show it; ``type_name`` is the type the
    value had in the sandbox and ``text`` its repr.

    >>> OpaqueValue("__main__.Order", "Order(id=1)")
    OpaqueValue('__main__.Order', 'Order(id=1)')
    >>> str(OpaqueValue("__main__.Order", "Order(id=1)"))
    '[codetape: a __main__.Order, sent as its repr] Order(id=1)'
    """

    type_name: str
    text: str

    def __new__(cls, type_name: str, text: str) -> OpaqueValue:
        self = super().__new__(cls, f"[codetape: a {type_name}, sent as its repr] {text}")
        self.type_name, self.text = type_name, text
        return self

    def __repr__(self) -> str:
        return f"OpaqueValue({self.type_name!r}, {self.text!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (OpaqueValue, (self.type_name, self.text))


def _text(raw: object, what: str = "scalar") -> str:
    if not isinstance(raw, str):
        raise BadValue(f"a tagged {what} that is a {type(raw).__name__}, not text")
    return raw


def _base64(raw: object, what: str) -> bytes:
    try:
        return base64.b64decode(_text(raw, what), validate=True)
    except binascii.Error:
        raise BadValue(f"a tagged {what} that is not base64") from None


def _numbers(raw: object, count: int, kinds: tuple[type, ...]) -> list[Any]:
    if (
        not isinstance(raw, list)
        or len(raw) != count
        or not all(isinstance(n, kinds) and not isinstance(n, bool) for n in raw)
    ):
        raise BadValue(f"a tagged value that is not a list of {count} numbers")
    return raw


class _Decoder:
    """Decodes one value, tracking how deep it is."""

    def __init__(self) -> None:
        self.kinds: dict[str, Callable[[dict[str, Any], int], Any]] = {
            "tuple": lambda raw, d: tuple(self.items(raw.get("v"), d)),
            "set": lambda raw, d: set(self.items(raw.get("v"), d)),
            "frozenset": lambda raw, d: frozenset(self.items(raw.get("v"), d)),
            "dict": self.pairs,
            "bytes": lambda raw, d: _base64(raw.get("v"), "bytes"),
            "bytearray": lambda raw, d: bytearray(_base64(raw.get("v"), "bytearray")),
            "datetime": lambda raw, d: datetime.datetime.fromisoformat(_text(raw.get("v"))),
            "date": lambda raw, d: datetime.date.fromisoformat(_text(raw.get("v"))),
            "time": lambda raw, d: datetime.time.fromisoformat(_text(raw.get("v"))),
            "timedelta": lambda raw, d: datetime.timedelta(*_numbers(raw.get("v"), 3, (int,))),
            "decimal": lambda raw, d: decimal.Decimal(_text(raw.get("v"))),
            "complex": lambda raw, d: complex(*_numbers(raw.get("v"), 2, (int, float))),
            "repr": _opaque,
            "ndarray": lambda raw, d: _rich(raw, "ndarray", _ndarray),
            "numpy": lambda raw, d: _rich(raw, "numpy", lambda r: _ndarray(r)[()]),
            "image": lambda raw, d: _rich(raw, "image", _image),
            "series": lambda raw, d: _rich(raw, "series", lambda r: self.series(r, d)),
            "dataframe": lambda raw, d: _rich(raw, "dataframe", lambda r: self.frame(r, d)),
        }

    def value(self, value: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise BadValue(f"a value nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, list):
            return [self.value(item, depth + 1) for item in value]
        if not isinstance(value, dict):
            return value
        if TAG not in value:
            return {key: self.value(item, depth + 1) for key, item in value.items()}
        kind = value[TAG]
        decoder = self.kinds.get(kind) if isinstance(kind, str) else None
        if decoder is None:
            raise BadValue(f"an unknown tag {str(kind)[:40]!r}")
        try:
            return decoder(value, depth + 1)
        except BadValue:
            raise
        except (TypeError, ValueError, ArithmeticError, OverflowError) as exc:
            # e.g. an unhashable set member, a date that is not ISO, a Decimal that is not one
            raise BadValue(f"a tagged {kind} that cannot be read: {exc}") from None

    def items(self, raw: object, depth: int) -> list[Any]:
        if not isinstance(raw, list):
            raise BadValue(f"a tagged container whose items are a {type(raw).__name__}")
        return [self.value(item, depth + 1) for item in raw]

    def pairs(self, raw: dict[str, Any], depth: int) -> dict[Any, Any]:
        pairs = self.items(raw.get("v"), depth)
        if not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
            raise BadValue("a tagged dict whose items are not [key, value] pairs")
        return {key: value for key, value in pairs}

    def column(self, raw: object, depth: int) -> tuple[Any, Any, str]:
        """A frame's column (or index): its values, name and dtype's name."""
        if not isinstance(raw, dict) or not isinstance(raw.get("dtype"), str):
            raise BadValue("a tagged frame whose column is not a column")
        name = self.value(raw.get("name"), depth + 1)
        if "npy" in raw:
            return _ndarray({"v": raw["npy"]}), name, raw["dtype"]
        return self.items(raw.get("items"), depth), name, raw["dtype"]

    def series(self, raw: dict[str, Any], depth: int) -> Any:
        pandas: Any = importlib.import_module("pandas")

        values, name, dtype = self.column(raw.get("data"), depth)
        index = _index(pandas, *self.column(raw.get("index"), depth))
        if len(index) != len(values):
            raise BadValue("a tagged series whose index and values differ in length")
        return _typed(pandas.Series(values, index=index, name=name), dtype)

    def frame(self, raw: dict[str, Any], depth: int) -> Any:
        pandas: Any = importlib.import_module("pandas")

        labels = self.items(raw.get("columns"), depth)
        data = raw.get("data")
        if not isinstance(data, list) or len(data) != len(labels):
            raise BadValue("a tagged dataframe whose columns and labels differ in number")
        index = _index(pandas, *self.column(raw.get("index"), depth))
        columns = []
        for values, _name, dtype in (self.column(column, depth) for column in data):
            if len(values) != len(index):
                raise BadValue("a tagged dataframe whose columns differ in length")
            columns.append(_typed(pandas.Series(values, index=index), dtype))
        frame = pandas.concat(columns, axis=1) if columns else pandas.DataFrame(index=index)
        frame.columns = pandas.Index(labels) if labels else frame.columns
        return frame


def _opaque(raw: dict[str, Any], depth: int) -> OpaqueValue:
    return OpaqueValue(_text(raw.get("type"), "repr"), _text(raw.get("v"), "repr"))


def _rich(raw: dict[str, Any], kind: str, build: Callable[[dict[str, Any]], Any]) -> Any:
    """A numpy, PIL or pandas value; a host without that library gets its repr."""
    try:
        return build(raw)
    except ImportError as exc:
        shown = raw.get("r") if isinstance(raw.get("r"), str) else f"<a {kind}>"
        return OpaqueValue(kind, f"{shown} (not decoded here: {exc})")


def _ndarray(raw: dict[str, Any]) -> Any:
    """An array from ``.npy`` bytes, read without pickle: the header is checked first,
    and a dtype that holds objects, or bytes that disagree with the shape, refused."""
    import numpy
    from numpy.lib import format as npy

    data = io.BytesIO(_base64(raw.get("v"), "ndarray"))
    try:
        version = npy.read_magic(data)
        header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = header(data, max_header_size=10_000)
    except (ValueError, SyntaxError, TypeError) as exc:
        raise BadValue(f"a tagged ndarray whose .npy header cannot be read: {exc}") from None
    if dtype.hasobject:
        raise BadValue(f"a tagged ndarray of dtype {dtype}: arrays of objects are refused")
    count = 1
    for size in shape:
        count *= size
    body = data.read()
    if len(body) != count * dtype.itemsize:
        raise BadValue(
            f"a tagged ndarray of shape {shape} and dtype {dtype} with {len(body)} bytes of "
            f"data (it needs {count * dtype.itemsize})"
        )
    flat = numpy.frombuffer(body, dtype=dtype, count=count)
    return flat.reshape(shape, order="F" if fortran else "C").copy()


def _image(raw: dict[str, Any]) -> Any:
    """A PIL image from PNG bytes: only the PNG decoder is used, and an image claiming
    more than ``MAX_IMAGE_PIXELS`` pixels is refused before it is decompressed."""
    from PIL import Image, UnidentifiedImageError

    data = io.BytesIO(_base64(raw.get("v"), "image"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(data, formats=["PNG"])
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise BadValue(
                    f"a tagged image of {width}x{height} pixels, over the "
                    f"{MAX_IMAGE_PIXELS}-pixel limit"
                )
            image.load()
            plain = image.copy()  # an Image.Image, as the code had it, not a PngImageFile
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadValue(f"a tagged image that is too large: {exc}") from None
        except UnidentifiedImageError:
            raise BadValue("a tagged image that is not a PNG") from None
        except OSError as exc:  # a truncated or corrupt PNG
            raise BadValue(f"a tagged image whose PNG cannot be read: {exc}") from None
    return plain


def _index(pandas: Any, values: Any, name: Any, dtype: str) -> Any:
    return _typed(pandas.Index(values, name=name), dtype)


def _typed(values: Any, dtype: str) -> Any:
    """A pandas column as the dtype it had (a category, a nullable integer...), when its
    name is one pandas knows; else as built."""
    if str(values.dtype) == dtype or not _DTYPE.fullmatch(dtype):
        return values
    try:
        return values.astype(dtype)
    except (TypeError, ValueError, ImportError):
        return values


def decode_value(value: Any) -> Any:
    """A value as the code in the sandbox passed it, from its tagged JSON; ``BadValue``
    when a tag is unknown, its value is not of its kind, or it is refused."""
    return _Decoder().value(value)
