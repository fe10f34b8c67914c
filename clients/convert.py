"""Case files and dicts -> request messages; response messages -> plain dataclasses.

Pure Python over the generated stubs: no numpy, no solver. A case dict is the case file format
v1 (../shared/cases/README.md), checked against its one schema (:mod:`xmargin.schema`, pydantic
only) before anything is sent: :func:`check_case` raises :class:`InvalidRequestError` listing
every violation by its case-format path. Nothing is coerced: ``"pinned": "false"`` or
``"measure": "CVaR"`` is an error, never true or ES.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2
from pydantic import TypeAdapter, ValidationError

from xmargin.schema import (
    BOUNDS,
    CaseBody,
    CaseV1,
    ScenarioSetDoc,
    Violation,
    check,
    clip,
    parse_json,
)
from xmargin.schema.case_v1 import Instrument, Position, violations_of

from .errors import FieldViolation, InvalidRequestError
from .v1 import book_pb2, common_pb2, result_pb2, service_pb2

__all__ = [
    "AccountFailure",
    "BatchItem",
    "CaseLike",
    "EligibilityAnswer",
    "MarginAnswer",
    "MarginFigures",
    "OptimiseAnswer",
    "TradeImpact",
    "TransferLine",
    "WhatIfAnswer",
    "account_book",
    "account_columns",
    "check_allocation",
    "check_case",
    "check_scenario_set",
    "check_trades",
    "load_case_dict",
    "margin_figures",
    "models_message",
    "optimise_answer",
    "options_message",
    "run_context",
    "scenario_set_message",
]

CaseLike = Mapping[str, Any] | str | Path
"""A case: its dict, or the path of a case file."""


def load_case_dict(case: CaseLike) -> Mapping[str, Any]:
    if isinstance(case, str | Path):
        loaded: Mapping[str, Any] = parse_json(Path(case).read_text())
        return loaded
    return case


# --- checks before sending ----------------------------------------------------------------------


def invalid(violations: Sequence[Violation], where: str = "") -> InvalidRequestError:
    """The error of a request refused before sending (case-format paths)."""
    found = [
        FieldViolation(
            f"{where}{v.path}",
            v.message if v.value is None else f"{v.message} (got {clip(repr(v.value))})",
        )
        for v in violations
    ]
    summary = "; ".join(f"{v.field}: {v.description}" for v in found[:5])
    more = f"; and {len(found) - 5} more" if len(found) > 5 else ""
    return InvalidRequestError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"invalid request (not sent): {summary}{more}",
        violations=found,
        reason="INVALID_ARGUMENT",
    )


def check_case(case: Mapping[str, Any], *, scenarios: bool | None = None, where: str = "") -> None:
    """Check ``case`` against case format v1; ``scenarios``: whether it carries the scenario set
    the request sends (None: when it has ``factors`` or ``scenarios``; False: a registered set is
    referred to, and any ``factors``/``scenarios`` of the case are not sent, so not checked).
    Raises :class:`InvalidRequestError` naming every bad field."""
    if scenarios is None:
        scenarios = "factors" in case or "scenarios" in case
    if not scenarios:
        case = {k: v for k, v in case.items() if k not in ("factors", "scenarios")}
    found = check(CaseV1 if scenarios else CaseBody, case)
    if found:
        raise invalid(found, where)


def check_scenario_set(data: Mapping[str, Any]) -> None:
    """Check the ``factors`` and ``scenarios`` of ``data`` (a case, or just those two keys)."""
    picked = {k: data[k] for k in ("factors", "scenarios") if k in data}
    found = check(ScenarioSetDoc, picked)
    if found:
        raise invalid(found)


def check_allocation(allocation: Mapping[str, Any]) -> None:
    """An allocation maps instrument ids to XM quantities: JSON numbers, finite, in range."""
    found = [
        Violation(f"allocation[{clip(str(key))}]", value, "must be a finite number within 1e11")
        for key, value in allocation.items()
        if isinstance(value, bool)
        or not isinstance(value, int | float)
        or not abs(value) <= BOUNDS["ficc_quantity"]
    ]
    if found:
        raise invalid(found)


_INSTRUMENTS = TypeAdapter(list[Instrument])
_TRADES = TypeAdapter(list[Position])


def check_trades(
    trades: Sequence[Mapping[str, Any]], instruments: Sequence[Mapping[str, Any]]
) -> None:
    """Check what-if trades (positions) and added instruments against the schema."""
    found: list[Violation] = []
    for adapter, values, where in (
        (_TRADES, trades, "add_trades"),
        (_INSTRUMENTS, instruments, "add_instruments"),
    ):
        try:
            adapter.validate_python(list(values))
        except ValidationError as error:
            found += [
                Violation(f"{where}{v.path}", v.value, v.message)
                for v in violations_of(CaseBody, error)
            ]
    if found:
        raise invalid(found)


# --- case -> request --------------------------------------------------------------------------


def run_context(
    case: Mapping[str, Any] | None = None,
    *,
    business_date: str | None = None,
    cycle: str | None = None,
    run_number: int = 1,
    request_id: str | None = None,
) -> common_pb2.RunContext:
    """The run stamp: from the case's business date and cycle unless given; a fresh request
    id (uuid4) unless given."""
    case = case or {}
    cycle_name = cycle or case.get("cycle") or "EOD"
    return common_pb2.RunContext(
        business_date=business_date or str(case.get("business_date", "")),
        cycle=_enum(common_pb2.Cycle, "CYCLE_", cycle_name, "cycle"),
        run_number=run_number,
        request_id=request_id or uuid.uuid4().hex,
    )


@functools.cache
def _enum_numbers(enum: Any, prefix: str) -> dict[str, int]:
    """The enum's non-zero values by their case-format name (``NOTE`` for INSTRUMENT_KIND_NOTE)."""
    return {v.name.removeprefix(prefix): v.number for v in enum.DESCRIPTOR.values if v.number}


def _enum(enum: Any, prefix: str, name: str | None, field: str = "") -> Any:
    """The proto enum value named ``prefix + name`` (0, unspecified, when ``name`` is absent);
    a name the enum does not have is an error, never 0."""
    if name is None:
        return 0
    if isinstance(name, str) and (number := _enum_numbers(enum, prefix).get(name)) is not None:
        return number  # the case-format spelling: one dict look-up
    value = enum.DESCRIPTOR.values_by_name.get(f"{prefix}{name}".upper())
    if not isinstance(name, str) or value is None:
        names = ", ".join(k.removeprefix(prefix) for k in enum.keys()[1:])
        raise invalid(
            [Violation(field or prefix.lower().strip("_"), name, f"must be one of {names}")]
        )
    return int(value.number)


def instrument_message(
    data: Mapping[str, Any], out: book_pb2.Instrument | None = None
) -> book_pb2.Instrument:
    """The instrument as its message; filled into ``out`` when given (a field of a bigger
    message: no copy)."""
    message = book_pb2.Instrument() if out is None else out
    get = data.get
    message.id = str(get("id", ""))
    message.ccp = _enum(common_pb2.Ccp, "CCP_", get("ccp"), "ccp")
    message.kind = _enum(book_pb2.InstrumentKind, "INSTRUMENT_KIND_", get("kind"), "kind")
    for name in ("contract", "maturity", "collateral_maturity"):
        if value := get(name):
            setattr(message, name, str(value))
    if (collateral_kind := get("collateral_kind")) is not None:
        message.collateral_kind = _enum(
            book_pb2.InstrumentKind, "INSTRUMENT_KIND_", collateral_kind
        )
    if (coupon := get("coupon")) is not None:
        message.coupon = float(coupon)
    if (sensitivities := get("sensitivities")) is not None:
        message.sensitivities.values.extend(sensitivities)
    elif (pnl := get("pnl")) is not None:
        message.pnl.values.extend(pnl)
    return message


def position_message(
    data: Mapping[str, Any], out: book_pb2.Position | None = None
) -> book_pb2.Position:
    """The position as its message; filled into ``out`` when given."""
    message = book_pb2.Position() if out is None else out
    get = data.get
    message.instrument = str(get("instrument", ""))
    message.quantity = float(get("quantity", 0.0))
    message.xm_quantity = float(get("xm_quantity", 0.0))
    message.pinned = bool(get("pinned", False))
    if (lot := get("lot")) is not None:
        message.lot = float(lot)
    return message


def account_book(
    case: Mapping[str, Any], out: book_pb2.AccountBook | None = None, *, rows: bool = True
) -> book_pb2.AccountBook:
    """The account part of a case: member, customer, instruments, positions (without these
    two unless ``rows``: they then go as :func:`account_columns`). Filled into ``out`` when
    given (a request's ``account``): every instrument and position is built in place, never
    copied (a copy of a 300-instrument book costs more than building it)."""
    message = book_pb2.AccountBook() if out is None else out
    member = case.get("clearing_member", {})
    customer = case.get("customer", {})
    message.name = str(case.get("name", ""))
    message.clearing_member.CopyFrom(
        book_pb2.ClearingMember(
            id=str(member.get("id", "")),
            bd_fcm=bool(member.get("bd_fcm", False)),
            cme_clearing_member=bool(member.get("cme_clearing_member", False)),
            ficc_netting_member=bool(member.get("ficc_netting_member", False)),
        )
    )
    message.customer.CopyFrom(
        book_pb2.Customer(
            id=str(customer.get("id", "")),
            xm_enrolled=bool(customer.get("xm_enrolled", False)),
            ficc_account_type=str(customer.get("ficc_account_type", "")),
        )
    )
    if not rows:
        return message
    add_instrument = message.instruments.add
    for instrument in case.get("instruments", []):
        instrument_message(instrument, add_instrument())
    add_position = message.positions.add
    for position in case.get("positions", []):
        position_message(position, add_position())
    return message


def _filled(column: Any, values: list[Any]) -> None:
    """Put ``values`` into the repeated field ``column`` unless every one is its default
    (falsy): an empty column stands for all defaults."""
    if any(values):
        column.extend(values)


def account_columns(
    case: Mapping[str, Any], out: book_pb2.AccountColumns | None = None
) -> book_pb2.AccountColumns:
    """The case's instruments and positions as columns (``OptimiseRequest.account_columns``):
    the values :func:`instrument_message` and :func:`position_message` put in one message each,
    in one packed list per field; a column whose values are all the default is left empty."""
    message = book_pb2.AccountColumns() if out is None else out
    instruments = case.get("instruments", [])
    positions = case.get("positions", [])
    ccp_numbers = _enum_numbers(common_pb2.Ccp, "CCP_")
    kind_numbers = _enum_numbers(book_pb2.InstrumentKind, "INSTRUMENT_KIND_")

    def number(numbers: dict[str, int], enum: Any, prefix: str, name: Any, field: str) -> int:
        found = numbers.get(name) if isinstance(name, str) else None
        return found if found is not None else int(_enum(enum, prefix, name, field))

    ids, ccps, kinds, risk, counts = [], [], [], [], []
    add_values = message.risk_values.extend  # each vector in turn: no list of all the values
    contracts, maturities, has_coupon, coupons, collateral_maturities, collateral_kinds = (
        [],
        [],
        [],
        [],
        [],
        [],
    )
    for data in instruments:
        get = data.get
        ids.append(str(get("id", "")))
        ccps.append(number(ccp_numbers, common_pb2.Ccp, "CCP_", get("ccp"), "ccp"))
        kinds.append(
            number(kind_numbers, book_pb2.InstrumentKind, "INSTRUMENT_KIND_", get("kind"), "kind")
        )
        contracts.append(str(value) if (value := get("contract")) else "")
        maturities.append(str(value) if (value := get("maturity")) else "")
        collateral_maturities.append(str(value) if (value := get("collateral_maturity")) else "")
        collateral_kind = get("collateral_kind")
        collateral_kinds.append(
            0
            if collateral_kind is None
            else _enum(book_pb2.InstrumentKind, "INSTRUMENT_KIND_", collateral_kind)
        )
        coupon = get("coupon")
        has_coupon.append(coupon is not None)
        coupons.append(0.0 if coupon is None else float(coupon))
        if (vector := get("sensitivities")) is not None:
            risk.append(book_pb2.RISK_VECTOR_SENSITIVITIES)
        elif (vector := get("pnl")) is not None:
            risk.append(book_pb2.RISK_VECTOR_PNL)
        else:
            vector = ()
            risk.append(book_pb2.RISK_VECTOR_UNSPECIFIED)
        counts.append(len(vector))
        add_values(vector)
    message.instrument_id.extend(ids)
    for column, entries in (
        (message.ccp, ccps),
        (message.kind, kinds),
        (message.contract, contracts),
        (message.maturity, maturities),
        (message.has_coupon, has_coupon),
        (message.collateral_maturity, collateral_maturities),
        (message.collateral_kind, collateral_kinds),
        (message.risk, risk),
        (message.risk_count, counts),
    ):
        _filled(column, entries)
    if any(has_coupon):
        message.coupon.extend(coupons)
    held, quantities, xm_quantities, has_lot, lots, pinned = [], [], [], [], [], []
    for data in positions:
        get = data.get
        held.append(str(get("instrument", "")))
        quantities.append(float(get("quantity", 0.0)))
        xm_quantities.append(float(get("xm_quantity", 0.0)))
        pinned.append(bool(get("pinned", False)))
        lot = get("lot")
        has_lot.append(lot is not None)
        lots.append(1.0 if lot is None else float(lot))
    message.position_instrument.extend(held)
    _filled(message.quantity, quantities)
    _filled(message.xm_quantity, xm_quantities)
    _filled(message.pinned, pinned)
    _filled(message.has_lot, has_lot)
    if any(has_lot):
        message.lot.extend(lots)
    return message


def scenario_set_message(
    factors: Sequence[str], ids: Sequence[str], shocks: Sequence[Sequence[float]]
) -> book_pb2.ScenarioSet:
    """A scenario set; ``shocks`` as S rows of K factor moves (flattened row-major)."""
    message = book_pb2.ScenarioSet(factors=list(factors), ids=list(ids))
    for row in shocks:
        message.shocks.extend(row)
    return message


def case_scenario_set(case: Mapping[str, Any]) -> book_pb2.ScenarioSet:
    scenarios = case.get("scenarios", {})
    return scenario_set_message(
        case.get("factors", []), scenarios.get("ids", []), scenarios.get("shocks", [])
    )


def _model(data: Mapping[str, Any]) -> book_pb2.MarginModel:
    measure = data.get("measure", "ES")
    if measure not in ("ES", "VaR"):
        raise invalid([Violation("models.measure", measure, "must be one of ES or VaR")])
    message = book_pb2.MarginModel(
        confidence=float(data.get("confidence", 0.0)),
        horizon_days=float(data.get("horizon_days", 0.0)),
        measure=book_pb2.MEASURE_VAR if measure == "VaR" else book_pb2.MEASURE_ES,
        stress_ids=[str(s) for s in data.get("stress_ids", [])],
        stress_weight=float(data.get("stress_weight", 0.0)),
        addon_rate=[float(v) for v in data.get("addon_rate") or []],
        addon_threshold=[float(v) for v in data.get("addon_threshold") or []],
    )
    if data.get("lookback") is not None:
        message.lookback = int(data["lookback"])
    return message


def models_message(case: Mapping[str, Any]) -> book_pb2.Models:
    models = case.get("models", {})
    message = book_pb2.Models()
    if "FICC" in models:
        message.ficc.CopyFrom(_model(models["FICC"]))
    if "CME" in models:
        message.cme.CopyFrom(_model(models["CME"]))
    return message


def program_message(case: Mapping[str, Any]) -> book_pb2.ProgramRules:
    message = book_pb2.ProgramRules()
    cap = case.get("program", {}).get("savings_cap")
    if cap is not None:
        message.savings_cap = float(cap)
    return message


def options_message(options: Mapping[str, Any]) -> book_pb2.SolveOptions:
    message = book_pb2.SolveOptions(
        continuous=not bool(options.get("integral", True)),
        transfer_cost=float(options.get("transfer_cost", 0.0)),
        mode=_enum(
            book_pb2.AllocationMode, "ALLOCATION_MODE_", options.get("mode"), "options.mode"
        ),
        backend=str(options.get("backend") or ""),
    )
    if options.get("max_transfers") is not None:
        message.max_transfers = int(options["max_transfers"])
    if options.get("time_limit") is not None:
        message.time_limit.FromNanoseconds(int(float(options["time_limit"]) * 1e9))
    return message


def optimise_request(
    case: Mapping[str, Any],
    run: common_pb2.RunContext,
    *,
    scenarios: bool = True,
    columns: bool = False,
    **option_overrides: Any,
) -> service_pb2.OptimiseRequest:
    """The Optimise request of ``case``; ``scenarios``: whether it carries the case's scenario
    set (False: the caller refers to a registered set, so none is built); ``columns``: the
    instruments and positions go as ``account_columns`` instead of rows (only for a server
    that reads them: an older one would see an empty book)."""
    options = {**case.get("options", {}), **option_overrides}
    request = service_pb2.OptimiseRequest(
        run=run,
        models=models_message(case),
        program=program_message(case),
        options=options_message(options),
    )
    account_book(case, request.account, rows=not columns)
    if columns:
        account_columns(case, request.account_columns)
    if scenarios:
        request.scenario_set.CopyFrom(case_scenario_set(case))
    return request


# --- response -> plain data -------------------------------------------------------------------


def _seconds(value: duration_pb2.Duration) -> float:
    return value.seconds + value.nanos / 1e9


@dataclass(frozen=True, slots=True)
class MarginFigures:
    """One allocation's margin (USD): the figures of margin-model.md under the case format's
    names (``S_F`` etc.), plus each model's parts per portfolio."""

    total: float
    ficc_standalone: float
    cme_standalone: float
    xm: float
    S_F: float
    S_C: float
    C_F: float
    C_C: float
    r_F: float
    r_C: float
    r: float
    cap_binding: bool
    ficc_collects: float
    cme_collects: float
    xm_quantities: tuple[float, ...] = ()
    model_figures: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def margin_figures(message: result_pb2.MarginState) -> MarginFigures:
    return MarginFigures(
        total=message.total,
        ficc_standalone=message.ficc_standalone,
        cme_standalone=message.cme_standalone,
        xm=message.xm,
        S_F=message.s_f,
        S_C=message.s_c,
        C_F=message.c_f,
        C_C=message.c_c,
        r_F=message.r_f,
        r_C=message.r_c,
        r=message.r,
        cap_binding=message.cap_binding,
        ficc_collects=message.ficc_collects,
        cme_collects=message.cme_collects,
        xm_quantities=tuple(message.xm_quantities),
        model_figures={
            name: {
                "es": f.es,
                "var": f.var,
                "stress": f.stress,
                "addons": f.addons,
                "margin": f.margin,
            }
            for name, f in sorted(message.model_figures.items())
        },
    )


def _enum_names(enum: Any, prefix: str) -> dict[int, str]:
    """The enum's names by value, without ``prefix`` (the inverse of :func:`_enum_numbers`)."""
    return {v.number: v.name.removeprefix(prefix) for v in enum.DESCRIPTOR.values}


_REASONS = _enum_names(common_pb2.EligibilityReason, "ELIGIBILITY_REASON_")
_ACCOUNTS = _enum_names(common_pb2.MarginAccount, "MARGIN_ACCOUNT_")
_STATUSES = _enum_names(result_pb2.SolveStatus, "SOLVE_STATUS_")


def _name(names: dict[int, str], enum: Any, value: int) -> str:
    """``value``'s name from ``names`` (one of the tables above); ValueError for a value the
    enum lacks, as ``enum.Name`` raises."""
    name = names.get(value)
    return str(enum.Name(value)) if name is None else name  # Name raises ValueError


def _reasons(values: Sequence[common_pb2.EligibilityReason.ValueType]) -> tuple[str, ...]:
    if not values:
        return ()
    return tuple([_name(_REASONS, common_pb2.EligibilityReason, v) for v in values])


@dataclass(frozen=True, slots=True)
class TransferLine:
    instrument: str
    from_account: str
    to_account: str
    quantity: float
    lots: float


@dataclass(frozen=True, slots=True)
class OptimiseAnswer:
    """One account's optimisation, as plain data."""

    name: str
    status: str
    baseline: MarginFigures
    current: MarginFigures
    optimised: MarginFigures
    all_eligible: MarginFigures
    allocation: dict[str, float]
    current_allocation: dict[str, float]
    eligible: dict[str, bool]
    reasons: dict[str, tuple[str, ...]]
    transfers: list[TransferLine]
    marginal_margin: dict[str, dict[str, float]]
    attribution: dict[str, dict[str, float]]
    solver: dict[str, Any]
    savings: float
    transfer_cost: float
    var_gap: float | None
    notes: list[str]
    relaxation: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _account_name(value: common_pb2.MarginAccount.ValueType) -> str:
    return _name(_ACCOUNTS, common_pb2.MarginAccount, value)


def _status_name(value: result_pb2.SolveStatus.ValueType) -> str:
    return _name(_STATUSES, result_pb2.SolveStatus, value)


@dataclass(frozen=True, slots=True)
class _PositionFigures:
    """The per-position parts of an answer, by instrument id in position order."""

    ids: list[str]
    allocation: dict[str, float]
    current_allocation: dict[str, float]
    eligible: dict[str, bool]
    reasons: dict[str, tuple[str, ...]]
    marginal_margin: dict[str, dict[str, float]]


def _from_rows(message: result_pb2.OptimiseResult) -> _PositionFigures:
    """The per-position figures from the rows (allocation, eligibility, marginal_margin)."""
    ids: list[str] = []
    allocation: dict[str, float] = {}
    current_allocation: dict[str, float] = {}
    for a in message.allocation:  # one pass over each repeated field
        ids.append(a.instrument)
        allocation[a.instrument] = a.xm_quantity
        current_allocation[a.instrument] = a.current_xm_quantity
    eligible: dict[str, bool] = {}
    reasons: dict[str, tuple[str, ...]] = {}
    for e in message.eligibility:
        eligible[e.instrument] = e.eligible
        reasons[e.instrument] = _reasons(e.reasons)
    marginal = {
        m.instrument: {"in_xm": m.in_xm, "in_standalone": m.in_standalone}
        for m in message.marginal_margin
    }
    return _PositionFigures(ids, allocation, current_allocation, eligible, reasons, marginal)


def _from_columns(columns: result_pb2.PositionColumns) -> _PositionFigures:
    """The per-position figures from ``position_columns``: the same dicts as
    :func:`_from_rows` makes of the rows (position i's reasons are the ``reason_counts[i]``
    entries of ``reasons`` after those of the positions before it)."""
    ids = list(columns.instrument)
    reasons: dict[str, tuple[str, ...]] = dict.fromkeys(ids, ())
    codes, start = list(columns.reasons), 0
    for pid, count in zip(ids, columns.reason_counts, strict=True):
        if count:
            reasons[pid] = _reasons(codes[start : start + count])
            start += count
    marginal = {
        pid: {"in_xm": in_xm, "in_standalone": in_standalone}
        for pid, in_xm, in_standalone in zip(
            ids, columns.marginal_in_xm, columns.marginal_in_standalone, strict=True
        )
    }
    return _PositionFigures(
        ids,
        dict(zip(ids, columns.xm_quantity, strict=True)),
        dict(zip(ids, columns.current_xm_quantity, strict=True)),
        dict(zip(ids, columns.eligible, strict=True)),
        reasons,
        marginal,
    )


def optimise_answer(message: result_pb2.OptimiseResult) -> OptimiseAnswer:
    """The answer as plain data, from its per-position columns when the server sent them
    (``OptimiseRequest.columnar_result``), else from its rows: the same answer either way."""
    if message.HasField("position_columns"):
        positions = _from_columns(message.position_columns)
    else:
        positions = _from_rows(message)
    ids = positions.ids
    stats = message.solver_stats
    return OptimiseAnswer(
        name=message.name,
        status=_status_name(message.status),
        baseline=margin_figures(message.baseline),
        current=margin_figures(message.current),
        optimised=margin_figures(message.optimised),
        all_eligible=margin_figures(message.all_eligible),
        allocation=positions.allocation,
        current_allocation=positions.current_allocation,
        eligible=positions.eligible,
        reasons=positions.reasons,
        transfers=[
            TransferLine(
                t.instrument,
                _account_name(t.from_account),
                _account_name(t.to_account),
                t.quantity,
                t.lots,
            )
            for t in message.transfers
        ],
        marginal_margin=positions.marginal_margin,
        attribution={
            a.account: dict(zip(ids, a.shares, strict=False)) for a in message.attribution
        },
        solver={
            "backend": stats.backend,
            "status": _status_name(stats.status),
            "objective": stats.objective,
            "bound": stats.bound,
            "gap": stats.gap,
            "build_seconds": _seconds(stats.build_time),
            "solve_seconds": _seconds(stats.solve_time),
            "iterations": stats.iterations,
            "cuts": stats.cuts,
            "message": stats.message,
            "fallback_from": stats.fallback_from or None,
            "source": result_pb2.AnswerSource.Name(stats.source).removeprefix("ANSWER_SOURCE_"),
            "failures": list(stats.failures),
            "rounds": stats.rounds,
            "lp_seconds": _seconds(stats.lp_time),
            "evaluation_seconds": _seconds(stats.evaluation_time),
        },
        savings=message.savings,
        transfer_cost=message.transfer_cost,
        var_gap=message.var_gap if message.HasField("var_gap") else None,
        notes=list(message.notes),
        relaxation=message.relaxation,
    )


@dataclass(frozen=True, slots=True)
class AccountFailure:
    """Why one account of a batch failed: the status it would have had alone."""

    code: str
    message: str
    reason: str
    field_violations: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One streamed account outcome of optimise_batch or optimise_stream, with the batch's
    progress (for optimise_stream, ``total`` counts the accounts the server has so far)."""

    index: int
    name: str
    answer: OptimiseAnswer | None
    failure: AccountFailure | None
    completed: int
    failed: int
    total: int

    @property
    def ok(self) -> bool:
        return self.answer is not None


def batch_item(
    message: service_pb2.OptimiseBatchResponse | service_pb2.OptimiseStreamResponse,
) -> BatchItem:
    """One account's outcome of OptimiseBatch or OptimiseStream (the same fields)."""
    failure = None
    if message.WhichOneof("outcome") == "error":
        error = message.error
        failure = AccountFailure(
            error.code,
            error.message,
            error.reason,
            [(v.field, v.description) for v in error.field_violations],
        )
    return BatchItem(
        index=message.account_index,
        name=message.account_name,
        answer=optimise_answer(message.result) if message.HasField("result") else None,
        failure=failure,
        completed=message.progress.completed,
        failed=message.progress.failed,
        total=message.progress.total,
    )


@dataclass(frozen=True, slots=True)
class MarginAnswer:
    """compute_margin: the given allocation's figures, the baseline, ES attribution."""

    state: MarginFigures
    baseline: MarginFigures
    attribution: dict[str, dict[str, float]]
    eligible: dict[str, bool]


def margin_answer(message: service_pb2.ComputeMarginResponse) -> MarginAnswer:
    ids = [e.instrument for e in message.eligibility]
    return MarginAnswer(
        state=margin_figures(message.state),
        baseline=margin_figures(message.baseline),
        attribution={
            a.account: dict(zip(ids, a.shares, strict=False)) for a in message.attribution
        },
        eligible={e.instrument: e.eligible for e in message.eligibility},
    )


@dataclass(frozen=True, slots=True)
class TradeImpact:
    instrument: str
    quantity: float
    eligible: bool
    reasons: tuple[str, ...]
    margin_change_standalone: float
    margin_change_xm: float | None
    best_placement: str
    best_margin_change: float


@dataclass(frozen=True, slots=True)
class WhatIfAnswer:
    before: MarginFigures
    after_standalone: MarginFigures
    after_best: MarginFigures
    margin_change: float
    trades: list[TradeImpact]


def what_if_answer(message: service_pb2.WhatIfResponse) -> WhatIfAnswer:
    return WhatIfAnswer(
        before=margin_figures(message.before),
        after_standalone=margin_figures(message.after_standalone),
        after_best=margin_figures(message.after_best),
        margin_change=message.margin_change,
        trades=[
            TradeImpact(
                instrument=t.instrument,
                quantity=t.quantity,
                eligible=t.eligible,
                reasons=_reasons(t.reasons),
                margin_change_standalone=t.margin_change_standalone,
                margin_change_xm=t.margin_change_xm if t.HasField("margin_change_xm") else None,
                best_placement=service_pb2.Placement.Name(t.best_placement).removeprefix(
                    "PLACEMENT_"
                ),
                best_margin_change=t.best_margin_change,
            )
            for t in message.trades
        ],
    )


@dataclass(frozen=True, slots=True)
class EligibilityAnswer:
    eligible: dict[str, bool]
    reasons: dict[str, tuple[str, ...]]
    rulebook: str


def eligibility_answer(message: service_pb2.CheckEligibilityResponse) -> EligibilityAnswer:
    return EligibilityAnswer(
        eligible={r.instrument: r.eligible for r in message.results},
        reasons={r.instrument: _reasons(r.reasons) for r in message.results},
        rulebook=message.rulebook,
    )
