"""JSON-ready values: numpy unwrapped, NaN and infinity as null; canonical text and its hash.

The one home of :func:`jsonable` (the CLI, the batch runner, the audit store and the server use it).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import orjson
from pydantic_core import to_json

__all__ = [
    "VOLATILE_RESULT_KEYS",
    "canonical_json",
    "compact_json",
    "json_and_text",
    "jsonable",
    "sha256_of",
    "strip_volatile",
]

VOLATILE_RESULT_KEYS = (
    ("solver", "build_seconds"),
    ("solver", "solve_seconds"),
    ("solver", "lp_seconds"),
    ("solver", "evaluation_seconds"),
)
"""Timings in a result that differ between two runs of the same request."""


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays unwrapped, NaN and infinity as null."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def json_and_text(value: Any) -> tuple[Any, str]:
    """``value`` as plain JSON values and as compact JSON text (:func:`compact_json`),
    converting only when needed: data that is already plain (a result's ``to_dict()``) is
    encoded once and not walked."""
    text = _plain_json(value)
    if text is not None:
        return value, text
    clean = jsonable(value)
    return clean, compact_json(clean)


def compact_json(value: Any) -> str:
    """JSON text for storage, encoded in compiled code (orjson): keys in their given order, no
    spaces, each float as its shortest text that reads back to the same float (as
    ``json.dumps`` writes it, give or take the exponent's form: ``1e-07`` is ``1e-7``), numpy
    arrays and scalars unwrapped (``tolist()``, as :func:`jsonable` does), NaN and infinity as
    null (as :func:`jsonable` makes them). 20-30x faster than ``json.dumps`` on long float
    vectors, 2-3x faster than pydantic-core's ``to_json`` (an account's P&L vectors: ~8 ->
    ~3.4 ms). Not for hashing: :func:`canonical_json` sorts keys.

    It takes exactly what ``json.dumps(jsonable(value))`` takes (a date, a set, bytes, ...:
    TypeError, though orjson would write some of them) and gives the same data: orjson writes
    only values made of JSON's own types (:func:`_json_native`); anything else, and what orjson
    refuses (a lone surrogate in a string, an integer beyond 64 bits, nesting deeper than its
    limit: data of an account that fails validation, still to be stored), is written by
    ``json.dumps``."""
    dtypes: set[np.dtype[Any]] = set()
    if _json_native(value, dtypes):
        # numpy arrays written by orjson itself where its text is tolist()'s (no Python float
        # per element: an account's P&L vectors ~2x faster); else each through tolist()
        exact = all(map(_orjson_writes_as_listed, dtypes))
        option = orjson.OPT_SERIALIZE_NUMPY if exact else 0
        try:
            return orjson.dumps(value, default=_numpy_value, option=option).decode()
        except TypeError:  # orjson.JSONEncodeError
            pass
    return json.dumps(jsonable(value), separators=(",", ":"), allow_nan=False)


def _orjson_writes_as_listed(dtype: np.dtype[Any]) -> bool:
    """Whether orjson's own numpy writer (``OPT_SERIALIZE_NUMPY``) gives the same text as
    orjson on ``tolist()`` for arrays and scalars of ``dtype``: native-endian float64 (the
    same shortest float text), integers and booleans; not float32 or float16 (written as
    their own shortest text, not as the float64 ``tolist()`` makes of them)."""
    return dtype.isnative and (dtype.kind in "biu" or dtype == np.float64)


_NATIVE_TYPES = frozenset({str, int, float, bool, type(None)})
_STR = frozenset({str})
_LEAF_TYPES = _NATIVE_TYPES | {np.ndarray}
_NUMPY_KINDS = frozenset("biufU")  # bool, integers, floats, strings: their tolist() is native


def _json_native(value: Any, dtypes: set[np.dtype[Any]] | None = None) -> bool:
    """Whether ``value`` is made only of what ``json.dumps`` writes after :func:`jsonable` and
    orjson and pydantic-core write the same: dicts with ``str`` keys, lists, tuples, strings,
    numbers, booleans, None, and numpy arrays and scalars of booleans, numbers or strings.

    A walk without recursion; the members of a container are checked at once in C
    (``set(map(type, ...))``), and so are those of a list of lists or of dicts (a scenario
    matrix, a list of instruments), so that long vectors of numbers cost no Python loop. A
    container met again (shared, or a cycle) is walked once: a cycle then ends the walk, and
    the encoders and ``json.dumps`` refuse it. ``dtypes``, when given, collects the dtypes
    of the numpy values met."""
    pending = [value]
    walked: set[int] = set()
    while pending:
        item = pending.pop()
        if type(item) in _NATIVE_TYPES:
            continue
        if isinstance(item, dict | list | tuple):
            if id(item) in walked:
                continue
            walked.add(id(item))
        if isinstance(item, dict):
            if not set(map(type, item)) <= _STR:
                return False
            members: Collection[Any] = item.values()
        elif isinstance(item, list | tuple):
            members = item
        elif isinstance(item, np.ndarray | np.generic):
            if item.dtype.kind not in _NUMPY_KINDS:
                return False
            if dtypes is not None:
                dtypes.add(item.dtype)
            continue
        elif isinstance(item, str | int | float):  # subclasses: IntEnum, StrEnum, ...
            continue
        else:
            return False
        if _leaves_native(members, dtypes) or _grandchildren_native(members, dtypes):
            continue
        pending.extend(members)
    return True


def _leaves_native(members: Collection[Any], dtypes: set[np.dtype[Any]] | None = None) -> bool:
    """Whether ``members`` are all native scalars or numpy arrays of a native kind (one C
    pass over their types; a Python one over the arrays only, when there are any; their
    dtypes added to ``dtypes``)."""
    kinds = set(map(type, members))
    if kinds <= _NATIVE_TYPES:
        return True
    if not kinds <= _LEAF_TYPES:
        return False
    found = {a.dtype for a in members if type(a) is np.ndarray}
    if not all(dtype.kind in _NUMPY_KINDS for dtype in found):
        return False
    if dtypes is not None:
        dtypes |= found
    return True


def _grandchildren_native(
    members: Collection[Any], dtypes: set[np.dtype[Any]] | None = None
) -> bool:
    """Whether ``members``, all lists or all dicts (a scenario matrix, a list of instruments),
    hold only native leaves (:func:`_leaves_native`) under ``str`` keys: the level below
    checked in one pass. False also means "walk them one by one"."""
    kinds = set(map(type, members))
    if kinds == {list}:
        return _leaves_native(list(itertools.chain.from_iterable(members)), dtypes)
    if kinds == {dict}:
        keys = set(map(type, itertools.chain.from_iterable(members)))
        values = list(itertools.chain.from_iterable(map(dict.values, members)))
        return keys <= _STR and _leaves_native(values, dtypes)
    return False


def _numpy_value(value: Any) -> Any:
    """A numpy array or scalar as plain values (the encoders' hook for types they lack)."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _plain_json(value: Any) -> str | None:
    """``value``'s compact JSON text when it is plain JSON data (finite floats, string keys,
    no numpy values); None when it needs :func:`jsonable` first (or is not JSON data)."""
    if not _json_native(value):
        return None
    try:
        text = to_json(value, inf_nan_mode="constants")
    except ValueError:  # numpy values, a lone surrogate, deep nesting
        return None
    if b"NaN" in text or b"Infinity" in text:  # maybe a float to make null (or a string)
        return None
    return text.decode()


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, no NaN: equal data gives equal text (and equal hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def sha256_of(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def strip_volatile(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result without its timings, for comparing two runs of one request."""
    out = json.loads(json.dumps(result))
    for section, key in VOLATILE_RESULT_KEYS:
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    return out
