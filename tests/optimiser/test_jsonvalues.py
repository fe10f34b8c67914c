"""compact_json, the audit store's encoder: what it writes reads back as the data it was given."""

from __future__ import annotations

import json
import struct

import numpy as np
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
        "plain": [float("nan"), 2.0, {"inner": float("inf")}],
        "tuple": (1, "a"),
    }
    assert json.loads(compact_json(data)) == jsonable(data)
    assert json.loads(compact_json(data))["vector"] == [1.5, None, None]


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
