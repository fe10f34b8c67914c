"""Proto <-> domain conversion.

Requests become case-format dicts (../shared/cases/README.md) and go through
:func:`xmargin.optimiser.parse_case`, so validation lives in one place; a
:class:`CaseValidationError` comes back with its case-format field path (``positions[2].lot``)
translated into the request's proto field path (``account.positions[2].lot``) by a
:class:`FieldPaths`. Results go the other way: domain objects -> proto messages.

Conversion-only checks (limits on sizes) raise :class:`RequestError` directly, already holding
proto paths. An enum at its zero value (``*_UNSPECIFIED``) keeps its proto name in the case
dict, so the schema refuses it naming the field: where a default would change the answer
(clearing house, instrument kind, measure, cycle) the value must be set. Every violation comes
back, not only the first; any input string echoed into a message is cut to 80 characters.

A scenario set is validated once, when it is converted (:func:`scenario_set_case`, so once at
registration for a registered set): the validated numpy form is kept and handed to
``parse_case`` (trusted by identity of its lists), never checked again per account.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf import duration_pb2

from xmargin.clients.v1 import book_pb2, common_pb2, result_pb2
from xmargin.optimiser import CaseValidationError, State
from xmargin.optimiser.case_format import (
    ScenarioData,
    Vector,
    parse_columns,
    parse_scenarios,
    trust_scenarios,
)
from xmargin.optimiser.margin import Attribution
from xmargin.optimiser.results import OptimisationResult
from xmargin.optimiser.solvers import UnknownBackendError, parse_backend_name
from xmargin.schema import clip

__all__ = [
    "CaseDict",
    "FieldPaths",
    "Limits",
    "RequestError",
    "ResolvedScenarios",
    "add_eligibility",
    "attribution_to_proto",
    "book_case",
    "columns_case",
    "describe_violation",
    "duration",
    "eligibility_reasons",
    "options_case",
    "position_columns",
    "result_to_proto",
    "rows_to_columns",
    "scenario_set_case",
    "state_to_proto",
    "validated_scenarios",
]


class RequestError(ValueError):
    """A request is invalid: ``violations`` lists (proto field path, description) pairs."""

    def __init__(self, violations: Sequence[tuple[str, str]]) -> None:
        self.violations = [(clip(path, 200), why) for path, why in violations]
        super().__init__("; ".join(f"{path}: {why}" for path, why in self.violations))


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes beyond which a request is refused with INVALID_ARGUMENT (before any work)."""

    max_scenarios: int = 20_000
    max_factors: int = 500
    max_positions: int = 20_000
    max_accounts: int = 10_000


@dataclass(frozen=True, slots=True)
class ResolvedScenarios:
    """A scenario set in case-format form, and the proto path it came from (for errors)."""

    factors: list[str]
    ids: list[str]
    shocks: list[list[float]]
    path: str
    validated: ScenarioData | None = None
    """The set as validated once (numpy), when it came through :func:`scenario_set_case`."""


# --- field paths ------------------------------------------------------------------------------

_INDEX = re.compile(r"^(\w+)\[(\d+)\](.*)$")


@dataclass(slots=True)
class FieldPaths:
    """Translate case-format field paths into proto field paths of one request.

    ``account`` is the proto path of the AccountBook (``account`` or ``accounts[3]``);
    ``positions``/``instruments`` map case indices to proto paths when the case was assembled
    from several request fields (WhatIf); ``scenarios`` is the scenario set's proto path.
    """

    account: str = "account"
    scenarios: str = "scenario_set"
    positions: list[str] = field(default_factory=list)
    instruments: list[str] = field(default_factory=list)
    factor_count: int = 0
    risk_starts: list[int] | None = None
    """Set when the account came as :class:`AccountColumns` (``account_columns``): where each
    instrument's risk vector starts in ``risk_values``; paths then name the columns."""
    echoed_positions: bool = False
    """The case's positions were made from its instruments (CheckEligibility: one per
    instrument, of its id), so a violation of a position only repeats one of its instrument
    (a missing or duplicate id): dropped, not reported at a path the request does not have."""

    def translate(self, case_path: str) -> str:
        head, _, rest = case_path.partition(".")
        match = _INDEX.match(case_path)
        if match is not None and match.group(1) in ("positions", "instruments"):
            name, index, tail = match.group(1), int(match.group(2)), match.group(3)
            table = self.positions if name == "positions" else self.instruments
            if self.risk_starts is not None and not table:
                return self._column_path(name, index, tail)
            base = table[index] if index < len(table) else self._in_account(f"{name}[{index}]")
            return base + self._instrument_tail(tail) if name == "instruments" else base + tail
        if case_path in ("positions", "instruments"):  # the list as a whole (too long)
            return self._list_path(case_path)
        if head in ("business_date", "cycle"):
            return f"run.{case_path}"
        if head in ("clearing_member", "customer", "name"):  # the AccountBook's fields
            return self._in_account(case_path)
        if case_path.startswith("factors"):
            return f"{self.scenarios}.{case_path}"
        if head == "scenarios":
            return self._scenario_path(rest)
        if head == "models":
            model, _, tail = rest.partition(".")
            return f"models.{model.lower()}" + (f".{tail}" if tail else "")
        return case_path.strip("<>")

    def _list_path(self, name: str) -> str:
        """The request's field holding the case's ``positions`` or ``instruments``: its last
        entry's list where the case was assembled from several (WhatIf: the one that took it
        over a limit), the account's rows or columns otherwise."""
        table = self.positions if name == "positions" else self.instruments
        if table:
            return table[-1].rpartition("[")[0]
        if self.risk_starts is not None:
            column = "position_instrument" if name == "positions" else "instrument_id"
            return f"account_columns.{column}"
        return self._in_account(name)

    def _column_path(self, name: str, index: int, tail: str) -> str:
        """``instruments[3].coupon`` -> ``account_columns.coupon[3]``; a vector's element
        ``instruments[3].pnl[7]`` -> its entry of ``account_columns.risk_values``."""
        assert self.risk_starts is not None
        field_name = tail.lstrip(".").partition("[")[0].partition(".")[0]
        if name == "instruments" and field_name in ("sensitivities", "pnl"):
            element = re.match(r"^\.\w+\[(\d+)\]", tail)
            if element is not None and index < len(self.risk_starts):
                flat = self.risk_starts[index] + int(element.group(1))
                return f"account_columns.risk_values[{flat}]"
            return f"account_columns.risk[{index}]"
        renamed = {"instruments": "instrument_id", "positions": "position_instrument"}
        if not field_name or field_name in ("id", "instrument"):
            field_name = renamed[name]
        return f"account_columns.{field_name}[{index}]"

    def _in_account(self, path: str) -> str:
        return f"{self.account}.{path}" if self.account else path

    @staticmethod
    def _instrument_tail(tail: str) -> str:
        # sensitivities[k] -> sensitivities.values[k]: the vectors are wrapper messages.
        for vector in (".sensitivities", ".pnl"):
            if tail.startswith(vector):
                return vector + ".values" + tail[len(vector) :]
        return tail

    def _scenario_path(self, rest: str) -> str:
        cell = re.match(r"^shocks\[(\d+)\]\[(\d+)\]$", rest)
        if cell is not None and self.factor_count:
            flat = int(cell.group(1)) * self.factor_count + int(cell.group(2))
            return f"{self.scenarios}.shocks[{flat}]"
        row = re.match(r"^shocks\[(\d+)\]$", rest)
        if row is not None:
            return f"{self.scenarios}.shocks"
        return f"{self.scenarios}.{rest}" if rest else self.scenarios

    def error(self, error: CaseValidationError) -> RequestError:
        """Every violation of ``error`` with the request's proto paths."""
        return RequestError(
            [
                (self.translate(v.path), describe_violation(v.value, v.message))
                for v in error.violations
                if not (self.echoed_positions and v.path.startswith("positions["))
            ]
        )


def describe_violation(value: object, reason: str) -> str:
    """``reason (got value)``, the value cut to 80 characters; a string's control characters
    escaped (``\\x00``), never echoed raw."""
    if value is None:
        return reason
    shown = str(value) if isinstance(value, str | int | float) else repr(value)
    if not shown.isprintable():
        shown = shown.encode("unicode_escape").decode("ascii")
    return f"{reason} (got {clip(shown)})"


# --- enums ------------------------------------------------------------------------------------


_NAMES: dict[tuple[int, int], str] = {}


def _enum_name(enum: Any, value: int, prefix: str) -> str:
    """The case-format name of a proto enum value (CCP_FICC -> FICC); the zero value
    (CCP_UNSPECIFIED) and unknown numbers keep their proto spelling, so that the schema refuses
    them naming the field."""
    key = (id(enum), value)
    name = _NAMES.get(key)
    if name is None:
        try:
            name = str(enum.Name(value))
        except ValueError:
            return f"<{value}>"
        name = name if value == 0 else name.removeprefix(prefix)
        _NAMES[key] = name
    return name


def cycle_name(cycle: int) -> str:
    return _enum_name(common_pb2.Cycle, cycle, "CYCLE_")


# --- request -> case dict ---------------------------------------------------------------------


def scenario_set_case(
    message: book_pb2.ScenarioSet, path: str, limits: Limits
) -> ResolvedScenarios:
    """Reshape a proto scenario set (flat shocks) into case-format rows, checking sizes."""
    factors, ids, shocks = list(message.factors), list(message.ids), message.shocks
    violations = []
    if len(ids) > limits.max_scenarios:
        violations.append((f"{path}.ids", f"at most {limits.max_scenarios} scenarios"))
    if len(factors) > limits.max_factors:
        violations.append((f"{path}.factors", f"at most {limits.max_factors} factors"))
    if not violations and len(shocks) != len(ids) * len(factors):
        violations.append(
            (
                f"{path}.shocks",
                f"must hold {len(ids)} x {len(factors)} = {len(ids) * len(factors)} values "
                f"(scenarios x factors, row-major), got {len(shocks)}",
            )
        )
    if violations:
        raise RequestError(violations)
    return validated_scenarios(factors, ids, np.array(shocks, dtype=np.float64), path)


def validated_scenarios(
    factors: list[str], ids: list[str], shocks: npt.NDArray[np.float64], path: str
) -> ResolvedScenarios:
    """Validate a scenario set once (S x K ``shocks``) and keep it validated: :func:`parse_case`
    then takes it for every account that uses these lists (``trust_scenarios``)."""
    paths = FieldPaths(scenarios=path, factor_count=len(factors))
    try:
        validated = parse_scenarios(factors, ids, shocks)
    except CaseValidationError as error:
        raise paths.error(error) from error
    rows: list[list[float]] = validated.scenarios.shocks.tolist()
    trust_scenarios(validated, factors, ids, rows)
    return ResolvedScenarios(factors, ids, rows, path, validated)


def member_case(message: book_pb2.ClearingMember) -> dict[str, Any]:
    return {
        "id": message.id,
        "bd_fcm": message.bd_fcm,
        "cme_clearing_member": message.cme_clearing_member,
        "ficc_netting_member": message.ficc_netting_member,
    }


def customer_case(message: book_pb2.Customer) -> dict[str, Any]:
    return {
        "id": message.id,
        "xm_enrolled": message.xm_enrolled,
        "ficc_account_type": message.ficc_account_type,
    }


def instrument_case(message: book_pb2.Instrument, risk: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": message.id,
        "ccp": _enum_name(common_pb2.Ccp, message.ccp, "CCP_"),
        "kind": _enum_name(book_pb2.InstrumentKind, message.kind, "INSTRUMENT_KIND_"),
    }
    if message.contract:
        out["contract"] = message.contract
    if message.maturity:
        out["maturity"] = message.maturity
    if message.HasField("coupon"):
        out["coupon"] = message.coupon
    if message.collateral_maturity:
        out["collateral_maturity"] = message.collateral_maturity
    if message.collateral_kind:
        out["collateral_kind"] = _enum_name(
            book_pb2.InstrumentKind, message.collateral_kind, "INSTRUMENT_KIND_"
        )
    if risk:
        which = message.WhichOneof("risk")
        if which == "sensitivities":
            out["sensitivities"] = list(message.sensitivities.values)
        elif which == "pnl":
            out["pnl"] = np.array(message.pnl.values, dtype=np.float64).tolist()  # 2x list()
    return out


def _packed_rows(packed: list[bytes], n_factors: int) -> npt.NDArray[np.float64] | None:
    """The rows of ``packed`` (each a serialised :class:`Sensitivities` of ``n_factors``
    values) as one (rows, K) matrix, read from the wire bytes in one step; None when any is
    not exactly that (unknown fields kept from the request, say): then read value by value.

    A ``Sensitivities`` holding only its K values serialises to the field's tag (field 1,
    length-delimited: 0x0A), the varint byte count 8K, then the K doubles little-endian."""
    if not packed or n_factors < 1:
        return None
    size = 8 * n_factors
    head = bytearray([0x0A])
    while size >= 0x80:
        head.append(0x80 | (size & 0x7F))
        size >>= 7
    head.append(size)
    width = len(head) + 8 * n_factors
    joined = b"".join(packed)
    if len(joined) != width * len(packed):
        return None
    raw = np.frombuffer(joined, dtype=np.uint8).reshape(len(packed), width)
    if not (raw[:, : len(head)] == np.frombuffer(bytes(head), dtype=np.uint8)).all():
        return None
    return raw[:, len(head) :].copy().view("<f8").astype(np.float64, copy=False)


def _instruments_with_vectors(
    instruments: Sequence[book_pb2.Instrument], n_factors: int
) -> tuple[list[dict[str, Any]], dict[int, Vector]]:
    """The instruments' case dicts without their risk vectors, and every vector in numpy by
    instrument index, in one pass: the sensitivities of K values as rows of one matrix (read
    from their wire bytes in one step, :func:`_packed_rows`), the rest one by one."""
    cases: list[dict[str, Any]] = []
    out: dict[int, Vector] = {}
    rows: list[int] = []
    packed: list[bytes] = []
    for index, instrument in enumerate(instruments):
        cases.append(instrument_case(instrument, risk=False))
        which = instrument.WhichOneof("risk")
        if which == "sensitivities":
            sensitivities = instrument.sensitivities
            if len(sensitivities.values) == n_factors:
                rows.append(index)
                packed.append(sensitivities.SerializeToString())
            else:
                out[index] = "sensitivities", np.array(sensitivities.values, dtype=np.float64)
        elif which == "pnl":
            out[index] = "pnl", np.array(instrument.pnl.values, dtype=np.float64)
    if rows:
        matrix = _packed_rows(packed, n_factors)
        if matrix is None:
            flat = [v for index in rows for v in instruments[index].sensitivities.values]
            matrix = np.array(flat, dtype=np.float64).reshape(len(rows), n_factors)
        for row, index in enumerate(rows):
            out[index] = ("sensitivities", matrix[row])
    return cases, out


def _column(values: Sequence[Any], count: int, name: str, what: str) -> list[Any] | None:
    """The list of ``values``, which must hold ``count`` entries (one per ``what``) or none
    (then None: every entry is the row field's default)."""
    if not values:
        return None
    if len(values) != count:
        raise RequestError(
            [
                (
                    f"account_columns.{name}",
                    f"must hold {count} entries (one per {what}) or none, got {len(values)}",
                )
            ]
        )
    return list(values)


def _risk_vectors(
    columns: book_pb2.AccountColumns, count: int, numpy_vectors: bool
) -> tuple[list[tuple[str, Any] | None], list[int]]:
    """Each instrument's risk vector of ``columns`` (its name and values: numpy, or a list
    unless ``numpy_vectors``; None for RISK_VECTOR_UNSPECIFIED), and where each starts in
    ``risk_values``."""
    kinds = _column(columns.risk, count, "risk", "instrument") or [0] * count
    counts = _column(columns.risk_count, count, "risk_count", "instrument") or [0] * count
    if sum(counts) != len(columns.risk_values):
        raise RequestError(
            [
                (
                    "account_columns.risk_values",
                    f"must hold the {sum(counts)} values risk_count adds up to,"
                    f" got {len(columns.risk_values)}",
                )
            ]
        )
    values = np.array(columns.risk_values, dtype=np.float64)
    vectors: list[tuple[str, Any] | None] = []
    starts: list[int] = []
    start = 0
    for index, (kind, size) in enumerate(zip(kinds, counts, strict=True)):
        starts.append(start)
        if kind not in _RISK_NAMES:
            raise RequestError([(f"account_columns.risk[{index}]", f"unknown value {kind}")])
        if kind == book_pb2.RISK_VECTOR_UNSPECIFIED:
            if size:
                raise RequestError(
                    [(f"account_columns.risk_count[{index}]", "must be 0 where risk is unset")]
                )
            vectors.append(None)
            continue
        part = values[start : start + size]
        vectors.append((_RISK_NAMES[kind], part if numpy_vectors else part.tolist()))
        start += size
    return vectors, starts


_RISK_NAMES = {
    book_pb2.RISK_VECTOR_UNSPECIFIED: "",
    book_pb2.RISK_VECTOR_SENSITIVITIES: "sensitivities",
    book_pb2.RISK_VECTOR_PNL: "pnl",
}


def _refuse_unread(
    values: list[float] | None,
    present: list[bool] | None,
    name: str,
    flag: str,
    defaults: tuple[float, ...],
) -> None:
    """Refuse an entry of the optional column ``name`` (coupon, lot) that is not read, its
    ``flag`` being false, yet holds something other than ``defaults`` (0, or the field's
    default): a value the rows could only mean as set, which would otherwise be dropped
    without a word (a lot of 1e6 read as the default 1)."""
    if values is None:
        return
    violations = [
        (
            f"account_columns.{name}[{index}]",
            describe_violation(
                value,
                f"is read only where {flag}[{index}] is true; elsewhere it must be "
                + " or ".join(f"{d:g}" for d in defaults),
            ),
        )
        for index, value in enumerate(values)
        if not (present is not None and present[index]) and value not in defaults
    ]
    if violations:
        raise RequestError(violations)


def _names(enum: Any, values: list[int], prefix: str) -> list[str]:
    """The case-format name of each of ``values`` (:func:`_enum_name`, once per distinct one)."""
    table = {value: _enum_name(enum, value, prefix) for value in set(values)}
    return [table[value] for value in values]


InstrumentColumns = dict[str, list[Any]]
"""Columns by :class:`~xmargin.optimiser.case_format.InstrumentRow` field (None: absent)."""
PositionColumns = dict[str, list[Any]]
"""Columns by :class:`~xmargin.optimiser.case_format.PositionRow` field."""


def read_columns(
    columns: book_pb2.AccountColumns, limits: Limits, numpy_vectors: bool
) -> tuple[InstrumentColumns, PositionColumns, list[tuple[str, Any] | None], list[int]]:
    """The instruments' and positions' values of ``columns``, one list per field, as the case
    dicts of the same values sent as rows would hold them (None where a dict has no key):
    every refusal of the columns' shape raised here. Also each instrument's risk vector (its
    name and values, numpy when ``numpy_vectors``; None when unset) and where each starts in
    ``risk_values`` (for :class:`FieldPaths`)."""
    count, held = len(columns.instrument_id), len(columns.position_instrument)
    if count > limits.max_positions:
        raise RequestError(
            [("account_columns.instrument_id", f"at most {limits.max_positions} instruments")]
        )
    if held > limits.max_positions:
        raise RequestError(
            [("account_columns.position_instrument", f"at most {limits.max_positions} positions")]
        )

    def per_instrument(values: Sequence[Any], name: str) -> list[Any] | None:
        return _column(values, count, name, "instrument")

    ccps = _names(common_pb2.Ccp, per_instrument(columns.ccp, "ccp") or [0] * count, "CCP_")
    kinds = _names(
        book_pb2.InstrumentKind,
        per_instrument(columns.kind, "kind") or [0] * count,
        "INSTRUMENT_KIND_",
    )
    contracts = per_instrument(columns.contract, "contract")
    maturities = per_instrument(columns.maturity, "maturity")
    has_coupon = per_instrument(columns.has_coupon, "has_coupon")
    coupons = per_instrument(columns.coupon, "coupon")
    if has_coupon is not None and any(has_coupon) and coupons is None:
        raise RequestError([("account_columns.coupon", "must hold a coupon per instrument")])
    _refuse_unread(coupons, has_coupon, "coupon", "has_coupon", (0.0,))
    collateral_maturities = per_instrument(columns.collateral_maturity, "collateral_maturity")
    collateral_kinds = per_instrument(columns.collateral_kind, "collateral_kind")
    vectors, starts = _risk_vectors(columns, count, numpy_vectors)
    absent: list[Any] = [None] * count
    instruments: InstrumentColumns = {
        "id": list(columns.instrument_id),
        "ccp": ccps,
        "kind": kinds,
        "contract": absent if contracts is None else [c or None for c in contracts],
        "maturity": absent if maturities is None else [m or None for m in maturities],
        "coupon": (
            absent
            if has_coupon is None
            else [c if h else None for c, h in zip(coupons or absent, has_coupon, strict=True)]
        ),
        "collateral_maturity": (
            absent if collateral_maturities is None else [m or None for m in collateral_maturities]
        ),
        "collateral_kind": (
            absent
            if collateral_kinds is None
            else [
                _enum_name(book_pb2.InstrumentKind, k, "INSTRUMENT_KIND_") if k else None
                for k in collateral_kinds
            ]
        ),
    }

    def per_position(values: Sequence[Any], name: str) -> list[Any] | None:
        return _column(values, held, name, "position")

    quantities = per_position(columns.quantity, "quantity") or [0.0] * held
    xm_quantities = per_position(columns.xm_quantity, "xm_quantity") or [0.0] * held
    pinned = per_position(columns.pinned, "pinned") or [False] * held
    has_lot = per_position(columns.has_lot, "has_lot")
    lots = per_position(columns.lot, "lot")
    if has_lot is not None and any(has_lot) and lots is None:
        raise RequestError([("account_columns.lot", "must hold a lot per position")])
    _refuse_unread(lots, has_lot, "lot", "has_lot", (0.0, 1.0))
    positions: PositionColumns = {
        "instrument": list(columns.position_instrument),
        "quantity": quantities,
        "xm_quantity": xm_quantities,
        "lot": (
            [None] * held
            if has_lot is None
            else [lot if h else None for lot, h in zip(lots or [None] * held, has_lot, strict=True)]
        ),
        "pinned": pinned,
    }
    return instruments, positions, vectors, starts


def columns_case(
    columns: book_pb2.AccountColumns, limits: Limits, numpy_vectors: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[int, Vector] | None, list[int]]:
    """The instruments' and positions' case dicts of ``columns``: exactly the dicts that
    :func:`instrument_case` and :func:`position_case` make of the same values sent as rows.
    ``numpy_vectors``: the risk vectors come back apart, in numpy by instrument index (as
    :func:`_instruments_with_vectors` gives them), else as lists in the dicts. Also where each
    instrument's vector starts in ``risk_values`` (for :class:`FieldPaths`)."""
    instrument_columns, position_columns, vectors, starts = read_columns(
        columns, limits, numpy_vectors
    )
    instruments, positions = column_dicts(instrument_columns, position_columns)
    if numpy_vectors:
        return instruments, positions, _by_index(vectors), starts
    for out, vector in zip(instruments, vectors, strict=True):
        if vector is not None:
            out[vector[0]] = vector[1]
    return instruments, positions, None, starts


def _by_index(vectors: list[tuple[str, Any] | None]) -> dict[int, Vector]:
    """The vectors that are set, by instrument index."""
    return {i: vector for i, vector in enumerate(vectors) if vector is not None}  # type: ignore[misc]


def column_dicts(
    instruments: InstrumentColumns, positions: PositionColumns
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The instruments' and positions' case dicts of :func:`read_columns`'s columns: one
    dict per row, without the keys whose value is absent (None)."""
    return _rows(instruments), _rows(positions)


def _rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(columns)
    return [
        {name: value for name, value in zip(names, values, strict=True) if value is not None}
        for values in zip(*columns.values(), strict=True)
    ]


class CaseDict(dict[str, Any]):
    """A case dict from :func:`book_case` with what ``parse_case`` takes beside it: the
    instruments' risk vectors read into numpy, by instrument index (then absent from the
    instrument dicts); for an account sent as columns, its instruments and positions as
    :func:`read_columns` reads them (then the dict's lists are empty: :func:`parse` hands the
    columns to ``parse_columns``, and makes the rows only for a case that fails it)."""

    vectors: dict[int, Vector] | None = None
    vectors_checked: bool = False
    """Whether ``vectors_in_bounds`` was found true of ``vectors`` (not checked again)."""
    columns: tuple[InstrumentColumns, PositionColumns] | None = None

    def with_rows(self) -> CaseDict:
        """The case with the instruments and positions of its ``columns`` as dicts (the
        dicts :func:`columns_case` makes), its other values the same objects."""
        if self.columns is None:
            return self
        instruments, positions = column_dicts(*self.columns)
        out = CaseDict({**self, "instruments": instruments, "positions": positions})
        out.vectors, out.vectors_checked = self.vectors, self.vectors_checked
        return out


def position_case(message: book_pb2.Position) -> dict[str, Any]:
    out: dict[str, Any] = {
        "instrument": message.instrument,
        "quantity": message.quantity,
        "xm_quantity": message.xm_quantity,
        "pinned": message.pinned,
    }
    if message.HasField("lot"):
        out["lot"] = message.lot
    return out


def model_case(message: book_pb2.MarginModel) -> dict[str, Any]:
    out: dict[str, Any] = {
        "confidence": message.confidence,
        "horizon_days": message.horizon_days,
        "measure": {book_pb2.MEASURE_ES: "ES", book_pb2.MEASURE_VAR: "VaR"}.get(
            message.measure, _enum_name(book_pb2.Measure, message.measure, "MEASURE_")
        ),
    }
    if message.HasField("lookback"):
        out["lookback"] = message.lookback
    if message.stress_ids:
        out["stress_ids"] = list(message.stress_ids)
    if message.stress_weight:
        out["stress_weight"] = message.stress_weight
    if message.addon_rate or message.addon_threshold:
        out["addon_rate"] = list(message.addon_rate)
        out["addon_threshold"] = list(message.addon_threshold)
    return out


def options_case(message: book_pb2.SolveOptions) -> dict[str, Any]:
    if message.integral and message.continuous:  # whole lots and the relaxation at once
        raise RequestError(
            [("options.continuous", "contradicts options.integral (whole lots): send one")]
        )
    out: dict[str, Any] = {
        "integral": not message.continuous,
        "transfer_cost": message.transfer_cost,
        "mode": _enum_name(book_pb2.AllocationMode, message.mode, "ALLOCATION_MODE_"),
    }
    if message.mode == book_pb2.ALLOCATION_MODE_UNSPECIFIED:
        out["mode"] = "JOINT"  # the documented default; JOINT never gives a higher total
    if message.HasField("max_transfers"):
        out["max_transfers"] = message.max_transfers
    if message.HasField("time_limit"):
        limit = message.time_limit
        if limit.seconds < 0 or limit.nanos < 0 or limit.nanos >= 1_000_000_000:
            raise RequestError([("options.time_limit", "must be a valid positive duration")])
        out["time_limit"] = limit.seconds + limit.nanos / 1e9
    if message.backend:
        out["backend"] = message.backend
    return out


def book_case(
    run: common_pb2.RunContext,
    account: book_pb2.AccountBook,
    scenarios: ResolvedScenarios,
    models: book_pb2.Models | None,
    program: book_pb2.ProgramRules | None,
    options: book_pb2.SolveOptions | None,
    paths: FieldPaths,
    limits: Limits,
    numpy_vectors: bool = False,
    columns: book_pb2.AccountColumns | None = None,
    rows_on_demand: bool = False,
) -> CaseDict:
    """The case-format dict of one account's request; ``columns``: its instruments and
    positions as columns (``OptimiseRequest.account_columns``; the account's rows then empty).
    ``numpy_vectors``: the instruments' risk vectors go to ``parse_case`` as numpy arrays
    (``CaseDict.vectors``; checked there against the schema's bounds) instead of as lists in
    the dict: ~10x cheaper for pnl vectors, but the dict is then not a whole case (not for the
    batch engines or the audit). ``rows_on_demand`` (with ``columns`` and ``numpy_vectors``):
    the instruments and positions stay columns (``CaseDict.columns``, the dict's lists empty)
    for :func:`parse`, which makes the rows only for a case that fails the schema."""
    check_run(run)
    if len(account.positions) > limits.max_positions:
        raise RequestError(
            [(f"{paths.account}.positions", f"at most {limits.max_positions} positions")]
        )
    if len(account.instruments) > limits.max_positions:
        raise RequestError(
            [(f"{paths.account}.instruments", f"at most {limits.max_positions} instruments")]
        )
    vectors = None
    instruments: list[dict[str, Any]]
    positions: list[dict[str, Any]]
    if columns is not None:
        if account.instruments or account.positions:
            raise RequestError(
                [
                    (
                        "account_columns",
                        "give the account's instruments and positions as rows or as"
                        " columns, not both",
                    )
                ]
            )
        if rows_on_demand and numpy_vectors:  # rows made only if needed: CaseDict.with_rows
            instrument_columns, position_columns, column_vectors, paths.risk_starts = read_columns(
                columns, limits, numpy_vectors
            )
            instruments, positions = [], []
            vectors = _by_index(column_vectors)
        else:
            instruments, positions, vectors, paths.risk_starts = columns_case(
                columns, limits, numpy_vectors
            )
    else:
        if numpy_vectors:
            instruments, vectors = _instruments_with_vectors(
                account.instruments, len(scenarios.factors)
            )
        else:
            instruments = [instrument_case(i) for i in account.instruments]
        positions = [position_case(p) for p in account.positions]
    case = CaseDict(
        {
            "name": account.name or account.customer.id,
            "business_date": run.business_date,
            "cycle": cycle_name(run.cycle),
            "clearing_member": member_case(account.clearing_member),
            "customer": customer_case(account.customer),
            "factors": scenarios.factors,
            "scenarios": {"ids": scenarios.ids, "shocks": scenarios.shocks},
            "instruments": instruments,
            "positions": positions,
            "models": {},
        }
    )
    case.vectors = vectors
    if columns is not None and rows_on_demand and numpy_vectors:
        case.columns = instrument_columns, position_columns
    paths.scenarios = scenarios.path
    paths.factor_count = len(scenarios.factors)
    if models is not None:
        if models.HasField("ficc"):
            case["models"]["FICC"] = model_case(models.ficc)
        if models.HasField("cme"):
            case["models"]["CME"] = model_case(models.cme)
    if program is not None and program.HasField("savings_cap"):
        case["program"] = {"savings_cap": program.savings_cap}
    if options is not None:
        case["options"] = options_case(options)
    return case


def check_run(run: common_pb2.RunContext) -> None:
    """The run stamp every request carries: a business date and a cycle."""
    violations = []
    if not run.business_date:
        violations.append(("run.business_date", "is required (YYYY-MM-DD)"))
    if run.cycle not in (common_pb2.CYCLE_ITD, common_pb2.CYCLE_EOD):
        violations.append(("run.cycle", "must be CYCLE_ITD or CYCLE_EOD"))
    if len(run.request_id) > 200:
        violations.append(("run.request_id", "at most 200 characters"))
    if violations:
        raise RequestError(violations)


def check_backend(name: str | None, paths: FieldPaths | None = None) -> None:
    """Refuse a backend name that ``solvers.parse_backend_name`` refuses (the one check every
    entry point shares), as a :class:`RequestError` on the request's options.backend."""
    if name is None:
        return
    try:
        parse_backend_name(name)
    except UnknownBackendError as error:
        raise (paths or FieldPaths()).error(error) from error


def parse(case: dict[str, Any], paths: FieldPaths, parser: Callable[..., Any]) -> Any:
    """Run ``parser`` (parse_case) on ``case``, translating its error into proto paths; a
    :class:`CaseDict`'s numpy vectors go with it, and its columns (an account sent as
    columns) go to ``parse_columns`` first: the same schema and rules without a dict or a
    schema model per row; only a case that fails the schema is made into rows and parsed."""
    vectors = getattr(case, "vectors", None)
    checked = getattr(case, "vectors_checked", False)
    try:
        if isinstance(case, CaseDict) and case.columns is not None:
            book = parse_columns(case, *case.columns, vectors or {}, vectors_checked=checked)
            if book is not None:
                return book
            case = case.with_rows()  # refused as the same account sent as rows is refused
        if not vectors:
            return parser(case)
        return parser(case, vectors=vectors, vectors_checked=checked)
    except CaseValidationError as error:
        raise paths.error(error) from error


# --- domain -> proto --------------------------------------------------------------------------


def duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    if math.isfinite(seconds) and seconds >= 0:
        out.FromNanoseconds(round(seconds * 1e9))
    return out


def state_to_proto(
    state: State, out: result_pb2.MarginState | None = None
) -> result_pb2.MarginState:
    """The margin state as its proto message; filled into ``out`` when given (a result's
    ``baseline`` ...), so nothing is built twice or copied."""
    if out is None:
        out = result_pb2.MarginState()
    xm = state.xm
    out.total = state.total
    out.ficc_standalone = state.ficc_standalone
    out.cme_standalone = state.cme_standalone
    out.xm = xm.margin
    out.s_f = xm.S_F
    out.s_c = xm.S_C
    out.c_f = xm.C_F
    out.c_c = xm.C_C
    out.r_f = xm.r_F
    out.r_c = xm.r_C
    out.r = xm.r
    out.cap_binding = xm.cap_binding
    out.ficc_collects = state.ficc_collects
    out.cme_collects = state.cme_collects
    out.xm_quantities.extend(np.asarray(state.xm_quantity, dtype=np.float64).tolist())
    for name, figures in state.models.items():
        message = out.model_figures[name]
        message.es = figures.es
        message.var = figures.var
        message.stress = figures.stress
        message.addons = figures.addons
        message.margin = figures.margin
    return out


def attribution_to_proto(attribution: Attribution) -> list[result_pb2.AccountAttribution]:
    out = []
    for account, shares in attribution.shares.items():
        values = np.asarray(shares, dtype=np.float64).tolist()
        total = attribution.totals.get(account)
        out.append(
            result_pb2.AccountAttribution(
                account=account,
                shares=values,
                total=math.fsum(values) if total is None else total,
            )
        )
    return out


@functools.cache
def _reason(code: str) -> common_pb2.EligibilityReason.ValueType:
    try:
        return common_pb2.EligibilityReason.Value(f"ELIGIBILITY_REASON_{code}")
    except ValueError:
        return common_pb2.ELIGIBILITY_REASON_UNSPECIFIED


def eligibility_reasons(reasons: Iterable[Any]) -> list[common_pb2.EligibilityReason.ValueType]:
    """Reason codes (``Reason`` or their names) as ``EligibilityReason`` values; a code the
    proto lacks as ``ELIGIBILITY_REASON_UNSPECIFIED``."""
    return [_reason(str(r)) for r in reasons]


def add_eligibility(out: Any, ids: Iterable[str], eligibility: Iterable[Any]) -> None:
    """One ``PositionEligibility`` per (id, eligibility) pair, added in place to ``out`` (a
    repeated field: nothing built twice or copied)."""
    add = out.add
    for pid, e in zip(ids, eligibility, strict=True):
        if e.reasons:
            add(instrument=pid, eligible=e.eligible, reasons=eligibility_reasons(e.reasons))
        else:  # most positions: nothing to look up
            add(instrument=pid, eligible=e.eligible)


_STATUS = {
    "OPTIMAL": result_pb2.SOLVE_STATUS_OPTIMAL,
    "TIME_LIMIT": result_pb2.SOLVE_STATUS_TIME_LIMIT,
    "INFEASIBLE": result_pb2.SOLVE_STATUS_INFEASIBLE,
    "ERROR": result_pb2.SOLVE_STATUS_ERROR,
}
_ACCOUNT = {
    "FICC_STANDALONE": common_pb2.MARGIN_ACCOUNT_FICC_STANDALONE,
    "CME_STANDALONE": common_pb2.MARGIN_ACCOUNT_CME_STANDALONE,
    "XM": common_pb2.MARGIN_ACCOUNT_XM,
}


def _position_rows(result: OptimisationResult, out: result_pb2.OptimiseResult) -> None:
    """The answer's per-position figures as rows: one allocation, marginal_margin and
    eligibility message per position, added in place to ``out``."""
    problem = result.problem
    ids = problem.position_ids
    add_allocation = out.allocation.add
    for pid, quantity, current, xm, eligible, movable in zip(
        ids,
        problem.quantity.tolist(),
        problem.current_xm.tolist(),
        np.asarray(result.allocation, dtype=np.float64).tolist(),
        np.asarray(problem.eligible, dtype=bool).tolist(),
        np.asarray(problem.movable, dtype=bool).tolist(),
        strict=True,
    ):
        add_allocation(
            instrument=pid,
            quantity=quantity,
            current_xm_quantity=current,
            xm_quantity=xm,
            eligible=eligible,
            movable=movable,
        )
    add_marginal = out.marginal_margin.add
    for pid, in_xm, in_standalone in zip(
        ids,
        np.asarray(result.marginal.in_xm, dtype=np.float64).tolist(),
        np.asarray(result.marginal.in_standalone, dtype=np.float64).tolist(),
        strict=True,
    ):
        add_marginal(instrument=pid, in_xm=in_xm, in_standalone=in_standalone)
    add_eligibility(out.eligibility, problem.position_ids, problem.eligibility)


def position_columns(result: OptimisationResult, out: result_pb2.PositionColumns) -> None:
    """The answer's per-position figures as columns, filled into ``out``: one packed list per
    field (a few extends instead of three messages per position); the values of
    :func:`_position_rows`."""
    problem = result.problem
    out.instrument.extend(problem.position_ids)
    out.quantity.extend(problem.quantity.tolist())
    out.current_xm_quantity.extend(problem.current_xm.tolist())
    out.xm_quantity.extend(np.asarray(result.allocation, dtype=np.float64).tolist())
    out.eligible.extend(np.asarray(problem.eligible, dtype=bool).tolist())
    out.movable.extend(np.asarray(problem.movable, dtype=bool).tolist())
    out.marginal_in_xm.extend(np.asarray(result.marginal.in_xm, dtype=np.float64).tolist())
    out.marginal_in_standalone.extend(
        np.asarray(result.marginal.in_standalone, dtype=np.float64).tolist()
    )
    out.reason_counts.extend([len(e.reasons) for e in problem.eligibility])
    out.reasons.extend(eligibility_reasons(r for e in problem.eligibility for r in e.reasons))


def rows_to_columns(out: result_pb2.OptimiseResult) -> None:
    """Move ``out``'s per-position rows (allocation, marginal_margin, eligibility) into its
    ``position_columns``: the same values as :func:`position_columns` writes (for an answer
    read back from its recorded bytes)."""
    allocation, marginal, eligibility = out.allocation, out.marginal_margin, out.eligibility
    columns = out.position_columns
    columns.instrument.extend([a.instrument for a in allocation])
    columns.quantity.extend([a.quantity for a in allocation])
    columns.current_xm_quantity.extend([a.current_xm_quantity for a in allocation])
    columns.xm_quantity.extend([a.xm_quantity for a in allocation])
    columns.eligible.extend([a.eligible for a in allocation])
    columns.movable.extend([a.movable for a in allocation])
    columns.marginal_in_xm.extend([m.in_xm for m in marginal])
    columns.marginal_in_standalone.extend([m.in_standalone for m in marginal])
    columns.reason_counts.extend([len(e.reasons) for e in eligibility])
    columns.reasons.extend([r for e in eligibility for r in e.reasons])
    for name in ("allocation", "marginal_margin", "eligibility"):
        out.ClearField(name)


def result_to_proto(
    result: OptimisationResult,
    out: result_pb2.OptimiseResult | None = None,
    *,
    columnar: bool = False,
) -> result_pb2.OptimiseResult:
    """The answer as its proto message; each array read into Python floats once. Filled into
    ``out`` when given (a response's ``result``): the per-position messages are built in
    place, never copied. ``columnar``: the per-position figures go into ``position_columns``
    (:func:`position_columns`) instead of the rows of allocation, marginal_margin and
    eligibility (:func:`_position_rows`)."""
    problem = result.problem
    stats = result.stats
    if out is None:
        out = result_pb2.OptimiseResult()
    out.name = problem.book.name
    out.status = _STATUS.get(str(result.status), result_pb2.SOLVE_STATUS_ERROR)
    state_to_proto(result.baseline, out.baseline)
    state_to_proto(result.current, out.current)
    state_to_proto(result.optimised, out.optimised)
    state_to_proto(result.all_eligible, out.all_eligible)
    if columnar:
        position_columns(result, out.position_columns)
    else:
        _position_rows(result, out)
    add_transfer = out.transfers.add
    for t in result.transfers:
        add_transfer(
            instrument=t.instrument,
            from_account=_ACCOUNT[str(t.from_account)],
            to_account=_ACCOUNT[str(t.to_account)],
            quantity=t.quantity,
            lots=t.lots,
        )
    out.attribution.extend(attribution_to_proto(result.attribution))
    out.solver_stats.CopyFrom(
        result_pb2.SolverStats(
            backend=stats.backend,
            status=_STATUS.get(str(stats.status), result_pb2.SOLVE_STATUS_ERROR),
            objective=stats.objective,
            bound=stats.bound,
            gap=stats.gap,
            build_time=duration(stats.build_seconds),
            solve_time=duration(stats.solve_seconds),
            iterations=max(0, int(stats.iterations)),
            cuts=max(0, int(stats.cuts)),
            message=stats.message,
            fallback_from=stats.fallback_from or "",
            source=result_pb2.AnswerSource.Value(f"ANSWER_SOURCE_{stats.source.value}"),
            failures=list(stats.failures),
            rounds=max(0, int(stats.rounds)),
            lp_time=duration(stats.lp_seconds),
            evaluation_time=duration(stats.evaluation_seconds),
        )
    )
    out.relaxation = result.relaxation
    out.savings = result.savings
    out.transfer_cost = result.transfer_cost
    out.notes.extend(result.notes)
    if result.var_gap is not None:
        out.var_gap = result.var_gap
    if result.stand_in_total is not None:
        out.stand_in_total = result.stand_in_total
    return out
