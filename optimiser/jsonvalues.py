"""JSON-ready values: numpy unwrapped, NaN and infinity as null; canonical text and its hash.

The one home of :func:`jsonable` (the CLI, the batch runner, the audit store and the server use it).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
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
    """JSON text for storage, encoded in compiled code (pydantic-core): keys in their given
    order, no spaces, each float as its shortest text that reads back to the same float (as
    ``json.dumps`` writes it, give or take the exponent's form: ``1e-07`` is ``1e-7``), numpy
    arrays and scalars unwrapped, NaN and infinity as null (as :func:`jsonable` makes them).
    10-20x faster than ``json.dumps`` on long float vectors. Not for hashing:
    :func:`canonical_json` sorts keys. What pydantic-core refuses but ``json.dumps`` writes
    (a lone surrogate in a string, nesting deeper than pydantic-core's limit: data of an account
    that fails validation, still to be stored) is written by ``json.dumps``."""
    try:
        return to_json(value, inf_nan_mode="null", fallback=_numpy_value).decode()
    except ValueError:
        return json.dumps(jsonable(value), separators=(",", ":"), allow_nan=False)


def _numpy_value(value: Any) -> Any:
    """A numpy array or scalar as plain values (``compact_json``'s hook for types it lacks)."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _plain_json(value: Any) -> str | None:
    """``value``'s compact JSON text when it is plain JSON data (finite floats, string keys,
    no numpy values); None when it needs :func:`jsonable` first."""
    try:
        text = to_json(value, inf_nan_mode="constants")
    except ValueError:  # numpy values and other types JSON does not know
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
