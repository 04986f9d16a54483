"""Values leaving the sandbox: a safe typed encoding, never a pickle.

Final answers and tool arguments leave the sandbox as JSON with the types JSON lacks
tagged (``codetape.sandbox._encoding`` writes it, inside the sandbox; ``_values`` reads
it, on the host). What a user sees: the value comes back as the type it had (a tuple,
a set, an image, a numpy array, a DataFrame), anything without an encoding as its marked
repr (an ``OpaqueValue``), and a payload that lies about what it is is refused with an
error that says why, never decoded.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import io
import json
import math
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import codetape
from codetape import Sandbox, StepResult
from codetape.sandbox import NoIsolationWarning, OpaqueValue
from codetape.sandbox._encoding import TAG, encode
from codetape.sandbox._values import MAX_DEPTH, BadValue, decode_value

# -- JSON plus tags: the round trip ------------------------------------------------------


def through_the_channel(value: Any) -> Any:
    """``value`` encoded as the sandbox does, sent as JSON text, decoded as the host does."""
    return decode_value(json.loads(json.dumps(encode(value))))


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same type all the way down (1, 1.0 and True are not the same)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, datetime.datetime):
        return bool(a == b and a.utcoffset() == b.utcoffset())
    return bool(a == b)


_ZONES = st.sampled_from(
    [None, datetime.timezone.utc, datetime.timezone(datetime.timedelta(hours=5, minutes=30))]
)
_hashable = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.dates(),
    st.decimals(allow_nan=False),
)
_scalars = st.one_of(
    _hashable,
    st.floats(allow_nan=False),
    st.binary(max_size=16).map(bytearray),
    st.datetimes(timezones=_ZONES),
    st.times(),
    st.timedeltas(),
    st.complex_numbers(allow_nan=False),
)
_keys = st.one_of(st.text(max_size=8), st.integers(), st.just(TAG), st.tuples(st.integers()))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.frozensets(_hashable, max_size=4),
        st.sets(_hashable, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
        st.dictionaries(_keys, inner, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_json_and_the_tagged_types_come_back_as_they_were(value: Any) -> None:
    assert same(through_the_channel(value), value)


@pytest.mark.parametrize(
    "value",
    [
        {TAG: "tuple", "v": [1]},  # a dict that looks like a tag is still a dict
        {1: "a", "1": "b"},
        [(), set(), frozenset(), b"", bytearray()],
        float("inf"),
        decimal.Decimal("-0.000"),
        datetime.datetime(2024, 2, 29, 23, 59, 59, 999999),
    ],
    ids=repr,
)
def test_values_json_would_confuse_come_back_as_they_were(value: Any) -> None:
    assert same(through_the_channel(value), value)


# -- numpy, PIL and pandas ---------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.int16).reshape(3, 4),
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.array([True, False]),
        np.array([1 + 2j], dtype=np.complex64),
        np.array(["2024-01-01", "NaT"], dtype="datetime64[s]"),
        np.array(["ab", "c"]),
        np.zeros((0, 3)),
        np.array(7.5),
        np.array([(1, 2.5)], dtype=[("id", "<i4"), ("price", "<f8")]),
    ],
    ids=lambda a: f"{a.dtype}{a.shape}",
)
def test_a_numpy_array_comes_back_with_its_dtype_shape_and_values(array: Any) -> None:
    back = through_the_channel(array)
    assert type(back) is np.ndarray
    assert (back.dtype, back.shape) == (array.dtype, array.shape)
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable  # a normal array, not a view of the message


@pytest.mark.parametrize("scalar", [np.int64(3), np.float32(0.5), np.bool_(True), np.str_("x")])
def test_a_numpy_scalar_comes_back_as_that_scalar(scalar: Any) -> None:
    back = through_the_channel(scalar)
    assert back == scalar
    assert type(back) is (str if isinstance(scalar, str) else type(scalar))


def test_an_array_of_python_objects_is_sent_as_its_marked_repr() -> None:
    back = through_the_channel(np.array([{"a": 1}, None], dtype=object))
    assert isinstance(back, OpaqueValue)
    assert back.type_name == "numpy.ndarray"
    assert "{'a': 1}" in back.text


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "1", "P", "I;16"])
def test_an_image_comes_back_as_an_image_with_its_pixels(mode: str) -> None:
    image = Image.new("RGB", (7, 5), (250, 10, 20)).convert(mode)
    image.putpixel((3, 2), 0)  # one pixel that differs
    back = through_the_channel(image)
    assert type(back) is Image.Image
    assert (back.mode, back.size) == (image.mode, image.size)
    assert back.tobytes() == image.tobytes()


def test_an_image_png_cannot_hold_is_sent_as_its_marked_repr() -> None:
    back = through_the_channel(Image.new("CMYK", (2, 2)))
    assert isinstance(back, OpaqueValue)
    assert "mode=CMYK size=2x2" in back


def test_a_dataframe_comes_back_with_its_columns_dtypes_and_index() -> None:
    frame = pd.DataFrame(
        {
            "qty": np.array([1, 2, 3], dtype=np.int32),
            "price": [1.5, float("nan"), 3.0],
            "name": ["a", None, "c"],
            "when": pd.to_datetime(["2024-01-01", "2024-01-02", None]),
            "size": pd.Categorical(["S", "M", "S"]),
            7: [True, False, True],
        },
        index=pd.Index(["x", "y", "z"], name="sku"),
    )
    back = through_the_channel(frame)
    pd.testing.assert_frame_equal(back, frame)


def test_a_series_comes_back_with_its_name_and_index() -> None:
    series = pd.Series([1.0, 2.5], index=pd.RangeIndex(10, 12), name="total")
    back = through_the_channel(series)
    pd.testing.assert_series_equal(back, series, check_index_type=False)


def test_a_rich_value_on_a_host_without_its_library_arrives_as_its_marked_repr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = json.loads(json.dumps(encode(np.arange(3))))
    monkeypatch.setitem(__import__("sys").modules, "numpy", None)  # not installed here
    back = decode_value(sent)
    assert isinstance(back, OpaqueValue)
    assert "array([0, 1, 2])" in back


def test_anything_else_is_its_marked_repr_never_a_value_of_another_type() -> None:
    class Order:
        def __repr__(self) -> str:
            return "Order(7)"

    back = through_the_channel({"order": Order(), "ok": [Order()]})
    order = back["order"]
    assert isinstance(order, OpaqueValue)
    assert order.type_name.endswith("Order")
    assert order.text == "Order(7)"
    assert str(order).startswith("[codetape: a ")  # what an agent shows, marked


# -- payloads that lie about what they are ----------------------------------------------


class Exploded(Exception):
    pass


def _explode() -> None:
    raise Exploded("the host unpickled sandbox bytes")


class _Bomb:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_explode, ())


def npy(header: dict[str, Any], body: bytes) -> dict[str, Any]:
    text = repr(header).encode("latin1")
    text += b" " * ((-(len(text) + 11)) % 64) + b"\n"
    data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + body
    return {TAG: "ndarray", "v": base64.b64encode(data).decode("ascii")}


def png_claiming(width: int, height: int) -> dict[str, Any]:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
    buffer = io.BytesIO()
    Image.new("1", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return {TAG: "image", "v": base64.b64encode(bytes(data)).decode("ascii")}


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {TAG: "tuple", "v": [value]}
    return value


FORGED: dict[str, tuple[Any, str]] = {
    "an .npy of objects": (
        npy({"descr": "|O", "fortran_order": False, "shape": (1,)}, b"\x80\x04" + b"x" * 40),
        "arrays of objects are refused",
    ),
    "an .npy of a record with an object field": (
        npy({"descr": [("a", "|O")], "fortran_order": False, "shape": (1,)}, b"x" * 8),
        "arrays of objects are refused",
    ),
    "an .npy claiming a terabyte": (
        npy({"descr": "<f8", "fortran_order": False, "shape": (1 << 37,)}, b"\x00" * 8),
        "bytes of data",
    ),
    "an .npy that is not one": ({TAG: "ndarray", "v": "bm90IG5weQ=="}, ".npy header"),
    "a 60000x60000 image": (png_claiming(60_000, 60_000), "a tagged image that is too large"),
    "an 8000x8000 image": (png_claiming(8_000, 8_000), "over the 50000000-pixel limit"),
    "a GIF as an image": (
        {TAG: "image", "v": base64.b64encode(b"GIF89a" + b"\x00" * 20).decode()},
        "not a PNG",
    ),
    "an image that is not base64": ({TAG: "image", "v": "%%%"}, "not base64"),
    "tags nested 200 deep": (nested(200), f"nested deeper than {MAX_DEPTH} levels"),
    "an unknown tag": ({TAG: "pickle", "v": "gASVAAAA"}, "an unknown tag 'pickle'"),
    "a frame with ragged columns": (
        {
            TAG: "dataframe",
            "columns": ["a", "b"],
            "data": [{"dtype": "object", "items": [1]}, {"dtype": "object", "items": [1, 2]}],
            "index": {"dtype": "int64", "items": [0]},
        },
        "columns differ in length",
    ),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_payload_that_lies_about_its_kind_is_refused_and_never_decoded(case: str) -> None:
    payload, says = FORGED[case]
    with pytest.raises(BadValue) as refused:
        decode_value(json.loads(json.dumps(payload)))
    assert says in str(refused.value)


def test_a_forged_npy_of_objects_never_runs_its_pickle() -> None:
    import pickle

    body = pickle.dumps(np.array([_Bomb()], dtype=object).tolist())  # what numpy would load
    with pytest.raises(BadValue, match="arrays of objects are refused"):
        decode_value(npy({"descr": "|O", "fortran_order": False, "shape": (1,)}, body))


def test_a_dtype_name_that_would_allocate_is_not_applied() -> None:
    forged = {
        TAG: "series",
        "data": {"dtype": "(100000,100000)f8", "items": [1.0]},
        "index": {"dtype": "int64", "items": [0]},
    }
    back = decode_value(forged)
    assert back.tolist() == [1.0]
    assert str(back.dtype) == "float64"


# -- through a real sandbox --------------------------------------------------------------


@pytest.fixture
def local_sandbox(home: Path) -> Iterator[codetape.Sandbox]:
    with pytest.warns(NoIsolationWarning):
        sandbox = codetape.Sandbox(backend="local")
    with sandbox:
        yield sandbox


def final_answer_of(sandbox: Sandbox, value: Any) -> StepResult:
    sandbox.send_variables({"value": value})
    result = sandbox.run("final_answer(value)")
    assert result.status == "ok", result.error
    assert result.has_final_answer
    return result


def test_the_final_answer_comes_back_typed_and_its_type_is_recorded_on_the_step(
    local_sandbox: codetape.Sandbox,
) -> None:
    frame = pd.DataFrame({"a": [1, 2]})
    result = final_answer_of(local_sandbox, frame)
    pd.testing.assert_frame_equal(result.final_answer, frame)
    step = codetape.Store().step(result.run_id, result.index)
    assert step.result_type == "pandas.DataFrame"
    assert step.result is not None
    assert "a" in step.result


# Code in the sandbox shares the runner's process: it can replace the encoder, so that
# what it sends for ``value`` is ``forged``.
FORGE = (
    "import sys\n"
    "values = sys.modules['codetape_values']\n"
    "real = values.encode\n"
    "values.encode = lambda v, depth=0: {forged!r} if v == {value!r} else real(v, depth)\n"
)


def test_a_forged_final_answer_fails_the_step_and_the_sandbox_goes_on(
    local_sandbox: codetape.Sandbox,
) -> None:
    forged = npy({"descr": "|O", "fortran_order": False, "shape": (1,)}, b"x" * 8)
    local_sandbox.run("kept = 41")
    result = local_sandbox.run(FORGE.format(forged=forged, value=1) + "final_answer(1)")
    assert result.status == "error"
    assert result.error is not None
    assert result.error.type == "SandboxValueError"
    assert "arrays of objects are refused" in result.error.message
    assert not result.has_final_answer
    after = local_sandbox.run("values.encode = real\nkept + 1")
    assert (after.status, after.result) == ("ok", "42")


def test_forged_tool_arguments_raise_in_the_code_and_never_reach_the_tool(home: Path) -> None:
    calls: list[Any] = []

    def save(data: Any) -> str:
        calls.append(data)
        return "saved"

    forged = png_claiming(60_000, 60_000)
    with pytest.warns(NoIsolationWarning), codetape.Sandbox(backend="local", tools=[save]) as sb:
        result = sb.run(
            FORGE.format(forged=[forged], value=[1])
            + "try:\n    save(1)\nexcept ValueError as exc:\n    said = str(exc)\n"
            + "values.encode = real\nsaid"
        )
    assert result.status == "ok", result.error
    assert result.result is not None
    assert "codetape refused the arguments of tool 'save'" in result.result
    assert calls == []


@pytest.mark.docker
def test_numpy_and_pil_answers_come_back_from_a_container(
    home: Path, scientific_image: str
) -> None:
    with codetape.Sandbox(image=scientific_image) as sb:
        array = sb.run("import numpy as np\nfinal_answer(np.arange(6).reshape(2, 3) * 1.5)")
        image = sb.run("from PIL import Image\nfinal_answer(Image.new('L', (3, 2), 9))")
        scalar = sb.run("final_answer(np.float32(2.5))")
    assert array.status == "ok", array.error
    np.testing.assert_array_equal(array.final_answer, np.arange(6).reshape(2, 3) * 1.5)
    assert array.result_type == "numpy.ndarray"
    assert isinstance(image.final_answer, Image.Image)
    assert (image.final_answer.mode, image.final_answer.size) == ("L", (3, 2))
    assert image.final_answer.getpixel((2, 1)) == 9
    assert image.result_type == "PIL.Image.Image"
    assert type(scalar.final_answer) is np.float32
