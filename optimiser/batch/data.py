"""The data of a batch: shared inputs, accounts, groups, and each account's outcome."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..jsonvalues import jsonable, sha256_of

__all__ = [
    "AccountError",
    "AccountOutcome",
    "AccountSolver",
    "BatchAccount",
    "BatchGroup",
    "SharedInputs",
    "result_totals",
]


@dataclass(frozen=True, slots=True, eq=False)
class SharedInputs:
    """What every account of a group shares (JSON-ready case parts), and its content hash."""

    data: dict[str, Any]
    sha256: str

    @classmethod
    def of(cls, data: Mapping[str, Any], from_json: bool = False) -> SharedInputs:
        """``from_json``: the data was read from JSON, so it needs no cleaning (faster)."""
        if from_json:
            try:
                return cls(dict(data), sha256_of(data))
            except ValueError:  # NaN or infinity: JSON reads them, canonical JSON has null
                pass
        clean = jsonable(dict(data))
        return cls(clean, sha256_of(clean))

    @property
    def business_date(self) -> str:
        return str(self.data.get("business_date", ""))

    @property
    def cycle(self) -> str:
        return str(self.data.get("cycle", "EOD"))


@dataclass(frozen=True, slots=True)
class BatchAccount:
    """One account's own case parts. ``account`` (its customer id) keys the audit store;
    ``label`` says where it came from (``accounts[3]`` or a file path)."""

    account: str
    data: dict[str, Any]
    label: str

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled compactly (to a pool or Dask worker): the instruments' float64 vectors
        travel as one array, so pickling costs a memory copy instead of one numpy object per
        instrument (a reference account's 300: ~2.3 -> ~0.4 ms to pickle, ~1.2 -> ~0.5 ms to
        load). The account read back holds the same values, each vector a view of that one
        array (:func:`_unpack_account`)."""
        return _unpack_account, (self.account, self.label, *_pack_vectors(self.data))


_VECTOR_KEYS = ("sensitivities", "pnl")


def _pack_vectors(
    data: dict[str, Any],
) -> tuple[dict[str, Any], list[tuple[int, str, int]], np.ndarray | None]:
    """``data`` with each instrument's 1-D float64 numpy vector set to None, where they were
    (instrument index, key, length), and the vectors end to end in one array (None without
    vectors). ``data`` itself is not changed: the instruments holding a vector are copied."""
    instruments = data.get("instruments")
    if type(instruments) is not list:
        return data, [], None
    places: list[tuple[int, str, int]] = []
    vectors: list[np.ndarray] = []
    items = list(instruments)
    for index, item in enumerate(items):
        if type(item) is not dict:
            continue
        copied = None
        for key in _VECTOR_KEYS:
            vector = item.get(key)
            if type(vector) is np.ndarray and vector.dtype == np.float64 and vector.ndim == 1:
                if copied is None:
                    copied = items[index] = dict(item)
                copied[key] = None
                places.append((index, key, len(vector)))
                vectors.append(vector)
    if not vectors:
        return data, [], None
    return {**data, "instruments": items}, places, np.concatenate(vectors)


def _unpack_account(
    account: str,
    label: str,
    data: dict[str, Any],
    places: list[tuple[int, str, int]],
    vectors: np.ndarray | None,
) -> BatchAccount:
    """The account :meth:`BatchAccount.__reduce__` packed: each vector put back in its place
    (a view of ``vectors``, which the unpickling made anew for this account alone)."""
    if vectors is not None:
        instruments = data["instruments"]
        start = 0
        for index, key, length in places:
            instruments[index][key] = vectors[start : start + length]
            start += length
    return BatchAccount(account, data, label)


@dataclass(frozen=True, slots=True)
class BatchGroup:
    """Accounts that share one :class:`SharedInputs`."""

    shared: SharedInputs
    accounts: list[BatchAccount]


@dataclass(frozen=True, slots=True)
class AccountError:
    """Why an account failed: the exception type, its message and, for bad input, the field."""

    type: str
    message: str
    field: str | None = None
    advice: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "field": self.field}


@dataclass(frozen=True, slots=True)
class AccountOutcome:
    """One account's answer (``result``, the JSON of ``OptimisationResult.to_dict()``) or its
    failure (``error``); ``index`` is its place in the list given to the engine."""

    index: int
    account: str
    label: str
    result: dict[str, Any] | None = None
    error: AccountError | None = None
    seconds: float = 0.0
    code_version: str = ""
    """The xmargin version of the process that solved it (a Dask worker may differ)."""
    payload: bytes | None = None
    """An :data:`AccountSolver` hook's own encoding of the answer (the gRPC server's proto)."""
    result_json: str | None = None
    """``result`` as compact JSON (:func:`~xmargin.optimiser.jsonvalues.compact_json`), made
    once where the account was solved: the audit store writes this text as it is."""

    @property
    def ok(self) -> bool:
        return self.error is None


def result_totals(result: Mapping[str, Any]) -> tuple[float, float, float]:
    """(baseline, current, optimised) total margin of a result's ``to_dict()``."""
    return (
        float(result["baseline"]["total"]),
        float(result["current"]["total"]),
        float(result["optimised"]["total"]),
    )


AccountSolver = Callable[[int, BatchAccount, Mapping[str, Any], "str | None"], AccountOutcome]
"""What an engine runs per account: ``solve(index, account, shared, backend)``;
:func:`~xmargin.optimiser.batch.accounts.solve_account` by default. Process and Dask engines
pickle it to their workers, so a replacement must be picklable (a module-level function or an
instance of a module's class)."""
