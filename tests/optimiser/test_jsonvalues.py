"""compact_json, the audit store's encoder: what it writes reads back as the data it was given."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import json
import pathlib
import struct
import uuid
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xmargin.optimiser.jsonvalues import compact_json, json_and_text, jsonable

EDGE_FLOATS = [
    0.0,
    -0.0,
    5e-324,  # the smallest subnormal
    2.2250738585072014e-308,
    1.7976931348623157e308,
    0.1,
    1e-7,
    1e16,
    123456789012345680.0,
    -2.5e-310,
]


def _same_bits(a: float, b: float) -> bool:
    return struct.pack("<d", a) == struct.pack("<d", b)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=200))
def test_every_finite_float_reads_back_bit_for_bit(values: list[float]) -> None:
    back = json.loads(compact_json(values + EDGE_FLOATS))
    assert len(back) == len(values) + len(EDGE_FLOATS)
    assert all(_same_bits(a, b) for a, b in zip(values + EDGE_FLOATS, back, strict=True))


def test_numpy_values_and_non_finite_floats_read_back_as_jsonable_makes_them() -> None:
    data = {
        "vector": np.array([1.5, np.nan, -np.inf]),
        "count": np.int64(3),
        "flag": np.bool_(True),
        "single": np.float32(0.25),
        "singles": np.array([0.1, 1e-7], dtype=np.float32),  # as float64, as tolist() gives
        "plain": [float("nan"), 2.0, {"inner": float("inf")}],
        "tuple": (1, "a"),
        "huge": 2**70,  # beyond 64 bits
        "strings": np.array(["a", "b"]),
    }
    assert json.loads(compact_json(data)) == jsonable(data)
    assert json.loads(compact_json(data))["vector"] == [1.5, None, None]


@pytest.mark.parametrize(
    "dtype", [np.float64, np.int64, np.int32, np.uint8, np.bool_, np.float32, ">f8"]
)
def test_numpy_arrays_are_written_as_the_text_of_their_lists(dtype: Any) -> None:
    """Arrays (the P&L vectors of an account) give the very text their ``tolist()`` gives,
    whichever writer compact_json picks for them (orjson's own for float64, integers and
    booleans), also beside an array of another dtype and inside lists of dicts."""
    rng = np.random.default_rng(7)
    floats = rng.standard_normal(2000) * 10.0 ** rng.integers(-300, 300, 2000)
    values = np.concatenate([floats, EDGE_FLOATS, [np.nan, np.inf, -np.inf]])
    if np.dtype(dtype).kind in "biu":
        values = rng.integers(-1000, 1000, 500)
    with np.errstate(over="ignore"):  # float32: the float64s beyond its range become +-inf
        array = values.astype(dtype)
    data = {
        "instruments": [{"id": "A", "pnl": array}, {"id": "B", "pnl": array[:3]}],
        "scalar": array[0],
        "strided": array[::2],
        "other": np.array([0.1, 1e-7], dtype=np.float32),
    }
    listed = {
        "instruments": [{"id": "A", "pnl": array.tolist()}, {"id": "B", "pnl": array[:3].tolist()}],
        "scalar": array[0].item(),
        "strided": array[::2].tolist(),
        "other": [float(np.float32(0.1)), float(np.float32(1e-7))],
    }
    for value, plain in ((data, listed), ({"only": array}, {"only": array.tolist()})):
        assert compact_json(value) == compact_json(plain)


def test_a_string_that_looks_like_nan_is_kept_as_it_is() -> None:
    data = {"id": "NaN-Infinity", "values": [1.0, 2.0]}
    assert json.loads(compact_json(data)) == data


def test_json_and_text_gives_plain_values_and_their_text() -> None:
    data = {"total": np.float64(2.0), "rows": [{"a": np.int64(1), "b": float("nan")}]}
    value, text = json_and_text(data)
    assert value == {"total": 2.0, "rows": [{"a": 1, "b": None}]}
    assert json.loads(text) == value
    plain = {"b": [0.1, 0.2], "a": "x"}
    value, text = json_and_text(plain)
    assert value is plain and json.loads(text) == plain


class _Colour(enum.Enum):
    RED = 1


@dataclasses.dataclass
class _Point:
    x: int = 1


NOT_JSON = [
    dt.date(2026, 12, 1),
    dt.datetime(2026, 12, 1, 12, 0),
    dt.time(12, 0),
    dt.timedelta(days=1),
    {1, 2},
    frozenset({1}),
    b"bytes",
    bytearray(b"bytes"),
    decimal.Decimal("1.5"),
    uuid.UUID(int=7),
    _Colour.RED,
    _Point(),
    pathlib.PurePosixPath("/tmp"),
    collections.deque([1]),
    1j,
    np.complex128(1j),
    np.array([1j]),
    np.datetime64("2026-12-01"),
    np.array([dt.date(2026, 12, 1)], dtype=object),
    object(),
]
"""What pydantic-core writes (all but object()) and json.dumps refuses, even after jsonable."""


def _dumps(value: Any) -> str:
    return json.dumps(jsonable(value), separators=(",", ":"), allow_nan=False)


@pytest.mark.parametrize("value", NOT_JSON, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("where", ["alone", "in a dict", "deep in a list of lists", "in rows"])
def test_what_json_dumps_refuses_is_refused(value: Any, where: str) -> None:
    data = {
        "alone": value,
        "in a dict": {"id": "x", "values": [1.0, 2.0], "odd": value},
        "deep in a list of lists": [[1.0, 2.0], [3.0, value]],
        "in rows": [{"a": 1.0}, {"a": value}],
    }[where]
    with pytest.raises(TypeError):
        _dumps(data)
    with pytest.raises(TypeError):
        compact_json(data)
    with pytest.raises(TypeError):
        json_and_text(data)


def _cycles() -> list[Any]:
    in_dict: dict[str, Any] = {"values": [1.0]}
    in_dict["self"] = in_dict
    in_list: list[Any] = [1.0]
    in_list.append([2.0, in_list])
    return [in_dict, in_list]


@pytest.mark.parametrize("make", [0, 1], ids=["dict", "list"])
def test_a_cycle_is_refused_as_json_dumps_refuses_it(make: int) -> None:
    """A container that holds itself raises (RecursionError, as json.dumps after jsonable);
    the walk that judges what pydantic-core may write must not loop for ever on it."""
    with pytest.raises(RecursionError):
        _dumps(_cycles()[make])
    with pytest.raises(RecursionError):
        compact_json(_cycles()[make])
    with pytest.raises(RecursionError):
        json_and_text(_cycles()[make])


def test_a_shared_container_is_written_at_each_place() -> None:
    shared = [1.0, 2.5]
    data = {"a": shared, "b": {"c": shared}}
    assert json.loads(compact_json(data)) == json.loads(_dumps(data))


class _Level(enum.IntEnum):
    HIGH = 2


class _Name(enum.StrEnum):
    CME = "CME"


class _Float(float):
    pass


JSON_EDGES = [
    {1: "int key", 2.5: "float key", None: "none key"},
    {True: "bool key"},
    {(1, 2): "tuple key"},
    _Level.HIGH,
    _Name.CME,
    _Float(0.5),
    10**30,
    np.str_("s"),
    np.array(["a", "b"]),
    np.array([[1, 2], [3, 4]], dtype=np.int32),
    [[1.0, None], [True, "x"]],
    [{"a": np.float64(1.0)}, {"b": [np.int8(1)]}],
]
"""What json.dumps writes after jsonable, some of it in types pydantic-core writes otherwise."""


@pytest.mark.parametrize("value", JSON_EDGES, ids=repr)
def test_what_json_dumps_writes_is_written_as_the_same_data(value: Any) -> None:
    assert json.loads(compact_json(value)) == json.loads(_dumps(value))
    assert json.loads(json_and_text(value)[1]) == json.loads(_dumps(value))


_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=4)
    | st.dates()
    | st.frozensets(st.integers(), max_size=2)
    | st.binary(max_size=3)
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=20,
)


@given(_VALUES)
def test_compact_json_takes_and_writes_what_json_dumps_does(value: Any) -> None:
    try:
        expected = json.loads(_dumps(value))
    except TypeError:
        with pytest.raises(TypeError):
            compact_json(value)
        return
    assert json.loads(compact_json(value)) == expected
