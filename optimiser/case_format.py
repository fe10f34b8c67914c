"""Reader and writer of the case file format v1 (../shared/cases/README.md).

``parse_case`` validates everything before it builds anything, so a bad case raises one
:class:`CaseValidationError` naming the field (``positions[2].xm_quantity``) and the value, and
nothing is half-loaded.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .eligibility import Rulebook, default_rulebook, instrument_eligibility
from .errors import CaseValidationError
from .model import (
    CME_KINDS,
    FICC_KINDS,
    Book,
    Ccp,
    ClearingMember,
    Customer,
    Cycle,
    Instrument,
    InstrumentKind,
    MarginModel,
    Measure,
    Mode,
    Position,
    ProgramRules,
    ScenarioSet,
    SolveOptions,
)
from .problem import tail_count

__all__ = ["CASE_FORMAT", "book_to_dict", "load_case", "parse_case"]

CASE_FORMAT = "xmargin-case/1"
E = TypeVar("E")


def load_case(path: str | Path, rulebook: Rulebook | None = None) -> Book:
    """Read and validate a case file."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise CaseValidationError("<file>", str(path), f"not valid JSON: {error}") from error
    return parse_case(data, rulebook)


# --- small typed readers: each names the field it reads -------------------------------------


def _require(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise CaseValidationError(f"{where}{key}", None, "is required")
    return data[key]


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CaseValidationError(where, value, "must be an object")
    return value


def _list(value: Any, where: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise CaseValidationError(where, value, "must be a list")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise CaseValidationError(where, value, "must be a non-empty string")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise CaseValidationError(where, value, "must be true or false")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CaseValidationError(where, value, "must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise CaseValidationError(where, value, "must be finite (no NaN or infinity)")
    return number


def _date(value: Any, where: str) -> dt.date:
    try:
        return dt.date.fromisoformat(_string(value, where))
    except ValueError as error:
        raise CaseValidationError(where, value, "must be an ISO date YYYY-MM-DD") from error


def _enum(kind: type[E], value: Any, where: str) -> E:
    try:
        return kind(value)  # type: ignore[call-arg]
    except ValueError as error:
        allowed = ", ".join(str(v) for v in kind)  # type: ignore[attr-defined]
        raise CaseValidationError(where, value, f"must be one of {allowed}") from error


_JSON_NUMBER_TYPES = frozenset({float, int})


def _all_json_numbers(items: Sequence[Any]) -> bool:
    """Whether every item is an int or float (numpy would also take "0.5" and true)."""
    return set(map(type, items)) <= _JSON_NUMBER_TYPES


def _vector(value: Any, length: int, where: str) -> np.ndarray:
    items = _list(value, where)
    if len(items) != length:
        raise CaseValidationError(where, f"<{len(items)} values>", f"must have {length} values")
    if _all_json_numbers(items):  # the fast path; the slow one names the bad element
        vector = np.array(items, dtype=float)
        if np.all(np.isfinite(vector)):
            return vector
    return np.array([_number(v, f"{where}[{i}]") for i, v in enumerate(items)], dtype=float)


def _matrix(value: Any, rows: int, columns: int, where: str) -> np.ndarray:
    items = _list(value, where)
    if len(items) != rows:
        raise CaseValidationError(where, f"<{len(items)} rows>", f"must have {rows} rows")
    # numpy would turn "0.5" and true into numbers: only JSON numbers take the fast path
    numeric = all(isinstance(row, list) and _all_json_numbers(row) for row in items)
    try:
        matrix = np.array(items, dtype=float) if numeric else None
    except (TypeError, ValueError):
        matrix = None
    if matrix is None or matrix.shape != (rows, columns):
        for i, row in enumerate(items):
            _vector(row, columns, f"{where}[{i}]")
        raise CaseValidationError(where, "<matrix>", f"must be {rows} x {columns} numbers")
    if not np.all(np.isfinite(matrix)):
        i, k = np.argwhere(~np.isfinite(matrix))[0]
        raise CaseValidationError(f"{where}[{i}][{k}]", items[i][k], "must be finite")
    return matrix


# --- sections --------------------------------------------------------------------------------


def _parse_model(
    data: Mapping[str, Any], where: str, scenario_ids: tuple[str, ...], n_factors: int
) -> MarginModel:
    n_scenarios = len(scenario_ids)
    lookback = data.get("lookback", n_scenarios)
    if isinstance(lookback, bool) or not isinstance(lookback, int):
        raise CaseValidationError(f"{where}.lookback", lookback, "must be a whole number")
    if not 1 <= lookback <= n_scenarios:
        raise CaseValidationError(
            f"{where}.lookback", lookback, f"must be between 1 and the {n_scenarios} scenarios"
        )
    confidence = _number(_require(data, "confidence", f"{where}."), f"{where}.confidence")
    if not 0.0 < confidence < 1.0:
        raise CaseValidationError(f"{where}.confidence", confidence, "must lie in (0, 1)")
    n_tail = tail_count(confidence, lookback)
    if not 0.0 < n_tail or math.floor(n_tail) >= lookback:
        raise CaseValidationError(
            f"{where}.confidence",
            confidence,
            f"leaves a tail of {n_tail:g} of the {lookback} scenarios; the tail (1 - confidence)"
            " x lookback must be above 0 and leave at least one scenario out",
        )
    horizon = _number(_require(data, "horizon_days", f"{where}."), f"{where}.horizon_days")
    if horizon <= 0:
        raise CaseValidationError(f"{where}.horizon_days", horizon, "must be positive")
    measure = _enum(Measure, data.get("measure", "ES"), f"{where}.measure")
    known = set(scenario_ids)
    stress_ids = tuple(
        _string(v, f"{where}.stress_ids[{i}]")
        for i, v in enumerate(_list(data.get("stress_ids", []), f"{where}.stress_ids"))
    )
    for i, stress_id in enumerate(stress_ids):
        if stress_id not in known:
            raise CaseValidationError(f"{where}.stress_ids[{i}]", stress_id, "unknown scenario id")
    weight = _number(data.get("stress_weight", 0.0), f"{where}.stress_weight")
    if not 0.0 <= weight <= 1.0:
        raise CaseValidationError(f"{where}.stress_weight", weight, "must lie in [0, 1]")
    if weight > 0 and not stress_ids:
        raise CaseValidationError(
            f"{where}.stress_weight", weight, "needs stress_ids when positive"
        )
    rate = threshold = None
    if "addon_rate" in data or "addon_threshold" in data:
        rate = _vector(data.get("addon_rate"), n_factors, f"{where}.addon_rate")
        threshold = _vector(data.get("addon_threshold"), n_factors, f"{where}.addon_threshold")
        for name, values in (("addon_rate", rate), ("addon_threshold", threshold)):
            if np.any(values < 0):
                k = int(np.argmax(values < 0))
                raise CaseValidationError(f"{where}.{name}[{k}]", values[k], "must be >= 0")
    return MarginModel(
        lookback=lookback,
        confidence=confidence,
        horizon_days=horizon,
        measure=measure,
        stress_ids=stress_ids,
        stress_weight=weight,
        addon_rate=rate,
        addon_threshold=threshold,
    )


def _parse_instrument(
    data: Mapping[str, Any], where: str, n_factors: int, n_scenarios: int
) -> Instrument:
    ccp = _enum(Ccp, _require(data, "ccp", f"{where}."), f"{where}.ccp")
    kind = _enum(InstrumentKind, _require(data, "kind", f"{where}."), f"{where}.kind")
    if kind not in (FICC_KINDS if ccp is Ccp.FICC else CME_KINDS):
        raise CaseValidationError(f"{where}.kind", str(kind), f"is not a {ccp} instrument kind")
    has_sens, has_pnl = "sensitivities" in data, "pnl" in data
    if has_sens == has_pnl:
        raise CaseValidationError(
            f"{where}.sensitivities", None, "give exactly one of sensitivities or pnl"
        )
    sensitivities = (
        _vector(data["sensitivities"], n_factors, f"{where}.sensitivities") if has_sens else None
    )
    pnl = _vector(data["pnl"], n_scenarios, f"{where}.pnl") if has_pnl else None
    contract = data.get("contract")
    if ccp is Ccp.CME:
        contract = _string(_require(data, "contract", f"{where}."), f"{where}.contract")
    maturity = _date(data["maturity"], f"{where}.maturity") if "maturity" in data else None
    collateral_maturity = collateral_kind = None
    if kind is InstrumentKind.REPO:
        collateral_maturity = _date(
            _require(data, "collateral_maturity", f"{where}."), f"{where}.collateral_maturity"
        )
        collateral_kind = _enum(
            InstrumentKind,
            _require(data, "collateral_kind", f"{where}."),
            f"{where}.collateral_kind",
        )
    elif ccp is Ccp.FICC and maturity is None:
        raise CaseValidationError(f"{where}.maturity", None, "is required for FICC securities")
    coupon = _number(data["coupon"], f"{where}.coupon") if "coupon" in data else None
    return Instrument(
        id=_string(_require(data, "id", f"{where}."), f"{where}.id"),
        ccp=ccp,
        kind=kind,
        contract=contract,
        maturity=maturity,
        coupon=coupon,
        collateral_maturity=collateral_maturity,
        collateral_kind=collateral_kind,
        sensitivities=sensitivities,
        pnl=pnl,
    )


def _parse_position(data: Mapping[str, Any], where: str) -> Position:
    quantity = _number(_require(data, "quantity", f"{where}."), f"{where}.quantity")
    xm_quantity = _number(data.get("xm_quantity", 0.0), f"{where}.xm_quantity")
    lot = _number(data.get("lot", 1.0), f"{where}.lot")
    if lot <= 0:
        raise CaseValidationError(f"{where}.lot", lot, "must be positive")
    if xm_quantity != 0 and (xm_quantity * quantity < 0 or abs(xm_quantity) > abs(quantity)):
        raise CaseValidationError(
            f"{where}.xm_quantity",
            xm_quantity,
            f"must have the sign of quantity {quantity:g} and not exceed it",
        )
    return Position(
        instrument=_string(_require(data, "instrument", f"{where}."), f"{where}.instrument"),
        quantity=quantity,
        xm_quantity=xm_quantity,
        lot=lot,
        pinned=_bool(data.get("pinned", False), f"{where}.pinned"),
    )


def _parse_options(data: Mapping[str, Any]) -> SolveOptions:
    where = "options"
    max_transfers = data.get("max_transfers")
    if max_transfers is not None and (
        isinstance(max_transfers, bool) or not isinstance(max_transfers, int) or max_transfers < 0
    ):
        raise CaseValidationError(f"{where}.max_transfers", max_transfers, "must be a whole >= 0")
    cost = _number(data.get("transfer_cost", 0.0), f"{where}.transfer_cost")
    if cost < 0:
        raise CaseValidationError(f"{where}.transfer_cost", cost, "must be >= 0")
    time_limit = data.get("time_limit")
    if time_limit is not None:
        time_limit = _number(time_limit, f"{where}.time_limit")
        if time_limit <= 0:
            raise CaseValidationError(f"{where}.time_limit", time_limit, "must be positive")
    backend = data.get("backend")
    if backend is not None:
        backend = _string(backend, f"{where}.backend")
    return SolveOptions(
        integral=_bool(data.get("integral", True), f"{where}.integral"),
        transfer_cost=cost,
        max_transfers=max_transfers,
        mode=_enum(Mode, data.get("mode", "JOINT"), f"{where}.mode"),
        time_limit=time_limit,
        backend=backend,
    )


def parse_case(data: Any, rulebook: Rulebook | None = None) -> Book:
    """Validate a case (the parsed JSON) and build a :class:`Book`."""
    data = _mapping(data, "<case>")
    case_format = data.get("format", CASE_FORMAT)
    if case_format != CASE_FORMAT:
        raise CaseValidationError("format", case_format, f"must be {CASE_FORMAT!r}")
    business_date = _date(_require(data, "business_date", ""), "business_date")
    cycle = _enum(Cycle, data.get("cycle", "EOD"), "cycle")

    member_data = _mapping(_require(data, "clearing_member", ""), "clearing_member")
    member = ClearingMember(
        id=_string(_require(member_data, "id", "clearing_member."), "clearing_member.id"),
        **{
            key: _bool(member_data.get(key, False), f"clearing_member.{key}")
            for key in ("bd_fcm", "cme_clearing_member", "ficc_netting_member")
        },
    )
    customer_data = _mapping(_require(data, "customer", ""), "customer")
    customer = Customer(
        id=_string(_require(customer_data, "id", "customer."), "customer.id"),
        xm_enrolled=_bool(customer_data.get("xm_enrolled", False), "customer.xm_enrolled"),
        ficc_account_type=str(customer_data.get("ficc_account_type", "")),
    )

    factors = tuple(
        _string(v, f"factors[{i}]")
        for i, v in enumerate(_list(_require(data, "factors", ""), "factors"))
    )
    if not factors:
        raise CaseValidationError("factors", [], "must name at least one factor")
    if len(set(factors)) != len(factors):
        raise CaseValidationError("factors", list(factors), "has duplicate names")
    scenario_data = _mapping(_require(data, "scenarios", ""), "scenarios")
    ids = tuple(
        _string(v, f"scenarios.ids[{i}]")
        for i, v in enumerate(_list(_require(scenario_data, "ids", "scenarios."), "scenarios.ids"))
    )
    if not ids:
        raise CaseValidationError("scenarios.ids", [], "must hold at least one scenario")
    seen: set[str] = set()
    for i, scenario_id in enumerate(ids):
        if scenario_id in seen:
            raise CaseValidationError(f"scenarios.ids[{i}]", scenario_id, "duplicate scenario id")
        seen.add(scenario_id)
    shocks = _matrix(
        _require(scenario_data, "shocks", "scenarios."), len(ids), len(factors), "scenarios.shocks"
    )
    scenarios = ScenarioSet(ids=ids, shocks=shocks)

    instruments: dict[str, Instrument] = {}
    for i, item in enumerate(_list(_require(data, "instruments", ""), "instruments")):
        where = f"instruments[{i}]"
        instrument = _parse_instrument(_mapping(item, where), where, len(factors), len(ids))
        if instrument.id in instruments:
            raise CaseValidationError(f"{where}.id", instrument.id, "duplicate instrument id")
        instruments[instrument.id] = instrument

    models_data = _mapping(_require(data, "models", ""), "models")
    models = {
        ccp: _parse_model(
            _mapping(_require(models_data, ccp.value, "models."), f"models.{ccp.value}"),
            f"models.{ccp.value}",
            ids,
            len(factors),
        )
        for ccp in Ccp
    }
    program_data = _mapping(data.get("program", {}), "program")
    cap = _number(program_data.get("savings_cap", 0.8), "program.savings_cap")
    if not 0.0 <= cap <= 1.0:
        raise CaseValidationError("program.savings_cap", cap, "must lie in [0, 1]")
    options = _parse_options(_mapping(data.get("options", {}), "options"))

    rulebook = rulebook or default_rulebook(business_date)
    positions: list[Position] = []
    held: set[str] = set()
    for i, item in enumerate(_list(_require(data, "positions", ""), "positions")):
        where = f"positions[{i}]"
        position = _parse_position(_mapping(item, where), where)
        if position.instrument not in instruments:
            raise CaseValidationError(
                f"{where}.instrument", position.instrument, "unknown instrument"
            )
        if position.instrument in held:
            raise CaseValidationError(
                f"{where}.instrument", position.instrument, "duplicate position in one instrument"
            )
        held.add(position.instrument)
        if position.xm_quantity != 0:
            eligibility = instrument_eligibility(
                rulebook, member, customer, instruments[position.instrument], business_date
            )
            if not eligibility.eligible:
                reasons = ", ".join(eligibility.reasons)
                raise CaseValidationError(
                    f"{where}.xm_quantity",
                    position.xm_quantity,
                    f"position is not eligible for XM ({reasons}) so must be 0",
                )
        positions.append(position)

    return Book(
        name=str(data.get("name", "")),
        business_date=business_date,
        cycle=cycle,
        clearing_member=member,
        customer=customer,
        factors=factors,
        scenarios=scenarios,
        instruments=instruments,
        positions=tuple(positions),
        models=models,
        program=ProgramRules(savings_cap=cap),
        options=options,
    )


def _model_to_dict(model: MarginModel) -> dict[str, Any]:
    out: dict[str, Any] = {
        "lookback": model.lookback,
        "confidence": model.confidence,
        "horizon_days": model.horizon_days,
        "measure": model.measure.value,
    }
    if model.stress_ids:
        out["stress_ids"] = list(model.stress_ids)
        out["stress_weight"] = model.stress_weight
    if model.addon_rate is not None and model.addon_threshold is not None:
        out["addon_rate"] = model.addon_rate.tolist()
        out["addon_threshold"] = model.addon_threshold.tolist()
    return out


def _instrument_to_dict(instrument: Instrument) -> dict[str, Any]:
    out: dict[str, Any] = {"id": instrument.id, "ccp": instrument.ccp.value}
    out["kind"] = instrument.kind.value
    if instrument.contract is not None:
        out["contract"] = instrument.contract
    if instrument.maturity is not None:
        out["maturity"] = instrument.maturity.isoformat()
    if instrument.coupon is not None:
        out["coupon"] = instrument.coupon
    if instrument.collateral_maturity is not None:
        out["collateral_maturity"] = instrument.collateral_maturity.isoformat()
    if instrument.collateral_kind is not None:
        out["collateral_kind"] = instrument.collateral_kind.value
    if instrument.sensitivities is not None:
        out["sensitivities"] = instrument.sensitivities.tolist()
    if instrument.pnl is not None:
        out["pnl"] = instrument.pnl.tolist()
    return out


def book_to_dict(book: Book) -> dict[str, Any]:
    """The case-file form of ``book`` (the inverse of :func:`parse_case`)."""
    options = book.options
    option_data: dict[str, Any] = {
        "integral": options.integral,
        "transfer_cost": options.transfer_cost,
        "mode": options.mode.value,
    }
    if options.max_transfers is not None:
        option_data["max_transfers"] = options.max_transfers
    if options.time_limit is not None:
        option_data["time_limit"] = options.time_limit
    if options.backend is not None:
        option_data["backend"] = options.backend
    return {
        "format": CASE_FORMAT,
        "name": book.name,
        "business_date": book.business_date.isoformat(),
        "cycle": book.cycle.value,
        "clearing_member": {
            "id": book.clearing_member.id,
            "bd_fcm": book.clearing_member.bd_fcm,
            "cme_clearing_member": book.clearing_member.cme_clearing_member,
            "ficc_netting_member": book.clearing_member.ficc_netting_member,
        },
        "customer": {
            "id": book.customer.id,
            "xm_enrolled": book.customer.xm_enrolled,
            "ficc_account_type": book.customer.ficc_account_type,
        },
        "factors": list(book.factors),
        "scenarios": {
            "ids": list(book.scenarios.ids),
            "shocks": book.scenarios.shocks.tolist(),
        },
        "instruments": [_instrument_to_dict(i) for i in book.instruments.values()],
        "positions": [
            {
                "instrument": p.instrument,
                "quantity": p.quantity,
                "xm_quantity": p.xm_quantity,
                "lot": p.lot,
                "pinned": p.pinned,
            }
            for p in book.positions
        ],
        "models": {ccp.value: _model_to_dict(model) for ccp, model in book.models.items()},
        "program": {"savings_cap": book.program.savings_cap},
        "options": option_data,
    }
