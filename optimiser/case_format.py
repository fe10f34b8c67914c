"""Reader and writer of the case file format v1 (../shared/cases/README.md).

The format's one schema is :mod:`xmargin.schema` (types, units, ranges, closed vocabularies,
strict dates, unknown keys refused with the nearest known key suggested); ``parse_case`` checks
a document against it, then checks the rules across fields (vector lengths, references,
eligibility), and only then builds a :class:`Book`. A bad case raises one
:class:`CaseValidationError` listing every violation (``positions[2].xm_quantity`` and the value
found), and nothing is half-loaded. The server passes a scenario set it validated once, at
registration (:func:`parse_scenarios`), and vectors it read straight from the request into
numpy (``vectors``), so neither is checked again per account.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import TypeAdapter, ValidationError

from xmargin.schema import (
    BOUNDS,
    CASE_FORMAT,
    CaseBody,
    CaseV1,
    SchemaError,
    Violation,
    body_in_columns,
    clip,
    parse_json,
    validate_body,
    validate_case,
    validated_columns,
)
from xmargin.schema.case_v1 import Id, IsoDate, field_defaults, violations_of
from xmargin.schema.case_v1 import Instrument as SchemaInstrument
from xmargin.schema.case_v1 import Position as SchemaPosition

from .eligibility import EligibilityJudge, Rulebook, default_rulebook
from .errors import CaseValidationError, expect_type
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

__all__ = [
    "CASE_FORMAT",
    "InstrumentRow",
    "PositionRow",
    "ScenarioData",
    "Vector",
    "book_to_dict",
    "load_case",
    "parse_case",
    "parse_columns",
    "parse_scenarios",
    "trust_scenarios",
    "vectors_in_bounds",
]

Vector = tuple[Literal["sensitivities", "pnl"], npt.NDArray[np.float64]]
"""An instrument's risk vector read straight into numpy (not yet checked)."""


def load_case(path: str | Path, rulebook: Rulebook | None = None) -> Book:
    """Read and validate a case file."""
    expect_type(rulebook, (Rulebook, type(None)), "rulebook")
    try:
        data = parse_json(Path(path).read_text())
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, a 5,000-digit number
        raise CaseValidationError(
            "<file>", None, f"{path}: not valid JSON: {clip(str(error))}"
        ) from error
    except RecursionError as error:
        raise CaseValidationError("<file>", None, f"{path}: nested too deeply") from error
    return parse_case(data, rulebook)


@dataclass(frozen=True, slots=True, eq=False)
class ScenarioData:
    """A validated scenario set: the factor names and the scenarios (numpy)."""

    factors: tuple[str, ...]
    scenarios: ScenarioSet


class _Violations:
    """Collects violations; ``raise_if_any`` raises them all as one error."""

    def __init__(self) -> None:
        self.found: list[Violation] = []

    def add(self, path: str, value: object, message: str) -> None:
        self.found.append(
            Violation(path, clip(value) if isinstance(value, str) else value, message)
        )

    def raise_if_any(self) -> None:
        if self.found:
            raise CaseValidationError.of(self.found)


def vectors_in_bounds(vectors: Mapping[int, Any]) -> bool:
    """Whether every vector is finite and within its bound (one bulk check; on failure each
    is checked alone, naming the bad elements)."""
    for kind, bound in (("sensitivities", "sensitivity"), ("pnl", "pnl")):
        chosen = [v[1] for v in vectors.values() if v[0] == kind]
        if chosen:
            values = np.concatenate(chosen)
            if values.size and not (
                values.min() >= -BOUNDS[bound] and values.max() <= BOUNDS[bound]
            ):  # NaN fails both comparisons
                return False
    return True


def _check_vector(
    out: _Violations, values: npt.NDArray[np.float64], bound: float, where: str, low: float | None
) -> None:
    """Finite, within [low or -bound, bound]: every bad element named (the first 20)."""
    low = -bound if low is None else low
    bad = ~(np.isfinite(values) & (values >= low) & (values <= bound))
    if not bad.any():
        return
    for flat in np.flatnonzero(bad)[:20]:
        index = np.unravel_index(flat, values.shape)
        path = where + "".join(f"[{int(i)}]" for i in index)
        value = float(values[index])
        if not np.isfinite(value):  # the schema's wording, element by element
            why = "must be finite (no NaN or infinity)"
        else:
            why = f"must be <= {bound:g}" if value > bound else f"must be >= {low:g}"
        out.add(path, value, why)
    if int(bad.sum()) > 20:
        out.add(where, f"<{int(bad.sum())} values>", "more values out of range")


_LABELS = TypeAdapter(list[Id])
_DATES = TypeAdapter(list[IsoDate])


def _labels(out: _Violations, adapter: TypeAdapter[Any], values: Any, where: str) -> None:
    try:
        adapter.validate_python(values, strict=True)
    except ValidationError as error:
        for v in violations_of(CaseBody, error):
            out.add(
                f"{where}{v.path}" if v.path.startswith("[") else f"{where}.{v.path}",
                v.value,
                v.message,
            )


def parse_scenarios(factors: Sequence[str], ids: Sequence[str], shocks: Any) -> ScenarioData:
    """Validate a scenario set once: ``factors`` (K unique names), ``ids`` (S dates, strictly
    increasing) and ``shocks`` (S x K bp; S rows, or S*K values row-major as numpy)."""
    out = _Violations()
    _labels(out, _LABELS, list(factors), "factors")
    _labels(out, _DATES, list(ids), "scenarios.ids")
    if not factors:
        out.add("factors", [], "must name at least one factor")
    if len(factors) > BOUNDS["max_factors"]:
        out.add("factors", f"<{len(factors)} names>", f"at most {BOUNDS['max_factors']:g}")
    if not ids:
        out.add("scenarios.ids", [], "must hold at least one scenario")
    if len(ids) > BOUNDS["max_scenarios"]:
        out.add("scenarios.ids", f"<{len(ids)} ids>", f"at most {BOUNDS['max_scenarios']:g}")
    out.raise_if_any()
    if len(set(factors)) != len(factors):
        seen: set[str] = set()
        for k, name in enumerate(factors):
            if name in seen:
                out.add(f"factors[{k}]", name, "duplicate factor name")
            seen.add(name)
    for i in range(1, len(ids)):
        if ids[i] <= ids[i - 1]:  # YYYY-MM-DD strings order as dates
            out.add(f"scenarios.ids[{i}]", ids[i], f"must come after {ids[i - 1]} (oldest first)")
            break
    n, k = len(ids), len(factors)
    if isinstance(shocks, np.ndarray):
        matrix = np.asarray(shocks, dtype=np.float64)
        if matrix.size != n * k:
            out.add("scenarios.shocks", f"<{matrix.size} values>", f"must hold {n} x {k} values")
            out.raise_if_any()
        matrix = matrix.reshape(n, k)
    else:
        rows = list(shocks) if isinstance(shocks, list | tuple) else None
        if rows is None or len(rows) != n:
            shown = f"<{len(rows)} rows>" if rows is not None else type(shocks).__name__
            out.add("scenarios.shocks", shown, f"must have {n} rows (one per scenario)")
        else:
            for i, row in enumerate(rows):
                if not isinstance(row, list | tuple) or len(row) != k:
                    out.add(f"scenarios.shocks[{i}]", "<row>", f"must have {k} values")
        out.raise_if_any()
        matrix = np.array(rows, dtype=np.float64).reshape(n, k)
    _check_vector(out, matrix, BOUNDS["shock"], "scenarios.shocks", None)
    out.raise_if_any()
    return ScenarioData(tuple(factors), ScenarioSet(ids=tuple(ids), shocks=matrix))


_TRUSTED: OrderedDict[int, tuple[ScenarioData, list[str], list[str], list[Any]]] = OrderedDict()
_TRUSTED_LOCK = threading.Lock()
_TRUSTED_MAX = 16


def trust_scenarios(
    validated: ScenarioData, factors: list[str], ids: list[str], shocks: list[Any]
) -> None:
    """Let :func:`parse_case` take ``validated`` for a case whose ``factors``,
    ``scenarios.ids`` and ``scenarios.shocks`` are these very list objects (identity, not
    equality): a scenario set validated once (the server's registered sets) is not checked
    again per account. The caller must never change the lists afterwards. The 16 sets used
    last are kept (and their lists with them)."""
    with _TRUSTED_LOCK:
        _TRUSTED[id(shocks)] = (validated, factors, ids, shocks)
        _TRUSTED.move_to_end(id(shocks))
        while len(_TRUSTED) > _TRUSTED_MAX:
            _TRUSTED.popitem(last=False)


def _trusted(data: Any) -> ScenarioData | None:
    """The validated set of ``data``'s scenario lists, if :func:`trust_scenarios` has it."""
    if not isinstance(data, Mapping):
        return None
    scenarios, factors = data.get("scenarios"), data.get("factors")
    shocks = scenarios.get("shocks") if isinstance(scenarios, Mapping) else None
    with _TRUSTED_LOCK:
        entry = _TRUSTED.get(id(shocks))
        if entry is None or entry[3] is not shocks:
            return None
        _TRUSTED.move_to_end(id(shocks))
    validated, known_factors, known_ids, _ = entry
    assert isinstance(scenarios, Mapping)
    if factors is not known_factors or scenarios.get("ids") is not known_ids:
        return None
    if set(scenarios) != {"ids", "shocks"}:
        return None
    return validated


# --- the rules across fields, on a document that passed the schema ----------------------------


def _model(
    out: _Violations, data: Any, where: str, scenarios: ScenarioSet, n_factors: int
) -> MarginModel:
    n_scenarios = scenarios.size
    lookback = n_scenarios if data.lookback is None else data.lookback
    if lookback > n_scenarios:
        out.add(f"{where}.lookback", lookback, f"must be between 1 and the {n_scenarios} scenarios")
    else:
        n_tail = tail_count(data.confidence, lookback)
        if not 0.0 < n_tail or int(n_tail) >= lookback:
            out.add(
                f"{where}.confidence",
                data.confidence,
                f"leaves a tail of {n_tail:g} of the {lookback} scenarios; the tail"
                " (1 - confidence) x lookback must be above 0 and leave at least one scenario out",
            )
    known = set(scenarios.ids) if data.stress_ids else set()
    for i, stress_id in enumerate(data.stress_ids):
        if stress_id not in known:
            out.add(f"{where}.stress_ids[{i}]", stress_id, "unknown scenario id")
    if data.stress_weight > 0 and not data.stress_ids:
        out.add(f"{where}.stress_weight", data.stress_weight, "needs stress_ids when positive")
    rate = threshold = None
    if (data.addon_rate is None) != (data.addon_threshold is None):
        missing = "addon_rate" if data.addon_rate is None else "addon_threshold"
        out.add(f"{where}.{missing}", None, "is required with the other add-on vector")
    elif data.addon_rate is not None and data.addon_threshold is not None:
        for name, values in (
            ("addon_rate", data.addon_rate),
            ("addon_threshold", data.addon_threshold),
        ):
            if len(values) != n_factors:
                out.add(
                    f"{where}.{name}", f"<{len(values)} values>", f"must have {n_factors} values"
                )
        rate = np.array(data.addon_rate, dtype=np.float64)
        threshold = np.array(data.addon_threshold, dtype=np.float64)
    return MarginModel(
        lookback=lookback,
        confidence=data.confidence,
        horizon_days=data.horizon_days,
        measure=Measure(data.measure),
        stress_ids=tuple(data.stress_ids),
        stress_weight=data.stress_weight,
        addon_rate=rate,
        addon_threshold=threshold,
    )


_CCPS = {ccp.value: ccp for ccp in Ccp}
_KINDS = {kind.value: kind for kind in InstrumentKind}
_KINDS_OF = {Ccp.FICC: FICC_KINDS, Ccp.CME: CME_KINDS}


def _date(text: str | None) -> dt.date | None:
    return None if text is None else dt.date.fromisoformat(text)


def _instrument(
    out: _Violations,
    data: Any,
    index: int,
    vector: Vector | None,
    checked_in_bulk: bool,
    n_factors: int,
    n_scenarios: int,
) -> Instrument:
    """The instrument ``instruments[index]`` (schema-checked ``data``) and the rules across
    its fields: kind of its clearing house, exactly one risk vector of the right length,
    contract for CME, collateral for REPO only, maturity for FICC securities."""
    ccp = _CCPS[data.ccp]
    where = f"instruments[{index}]"
    kind = _KINDS[data.kind]
    if kind not in _KINDS_OF[ccp]:
        out.add(f"{where}.kind", data.kind, f"is not a {ccp} instrument kind")
    given_sensitivities, given_pnl = data.sensitivities, data.pnl
    name: Literal["sensitivities", "pnl"] | None = None
    if vector is not None:
        if given_sensitivities is None and given_pnl is None:
            name = vector[0]
    elif given_sensitivities is not None:
        if given_pnl is None:
            name = "sensitivities"
    elif given_pnl is not None:
        name = "pnl"
    sensitivities = pnl = None
    if name is None:
        out.add(f"{where}.sensitivities", None, "give exactly one of sensitivities or pnl")
    else:
        length = n_factors if name == "sensitivities" else n_scenarios
        if vector is not None:
            values = vector[1]
            if not checked_in_bulk:
                bound = BOUNDS["sensitivity" if name == "sensitivities" else "pnl"]
                _check_vector(out, values, bound, f"{where}.{name}", None)
        else:
            values = np.array(getattr(data, name), dtype=np.float64)
        if len(values) != length:
            out.add(
                f"{where}.{name}",
                f"<{len(values)} values>",
                f"must have {length} values",
            )
        if name == "sensitivities":
            sensitivities = values
        else:
            pnl = values
    contract = data.contract
    if ccp is Ccp.CME and contract is None:
        out.add(f"{where}.contract", None, "is required for CME instruments")
    collateral_maturity, collateral_kind = data.collateral_maturity, data.collateral_kind
    if kind is InstrumentKind.REPO:
        if collateral_maturity is None:
            out.add(f"{where}.collateral_maturity", None, "is required for REPO")
        if collateral_kind is None:
            out.add(f"{where}.collateral_kind", None, "is required for REPO")
    else:
        if collateral_maturity is not None:
            out.add(f"{where}.collateral_maturity", collateral_maturity, "is for REPO only")
        if collateral_kind is not None:
            out.add(f"{where}.collateral_kind", collateral_kind, "is for REPO only")
        if ccp is Ccp.FICC and data.maturity is None:
            out.add(f"{where}.maturity", None, "is required for FICC securities")
    return Instrument(
        id=data.id,
        ccp=ccp,
        kind=kind,
        contract=contract,
        maturity=_date(data.maturity),
        coupon=data.coupon,
        collateral_maturity=_date(collateral_maturity),
        collateral_kind=None if collateral_kind is None else _KINDS[collateral_kind],
        sensitivities=sensitivities,
        pnl=pnl,
    )


def _options(data: Any) -> SolveOptions:
    defaults = SolveOptions()
    return SolveOptions(
        integral=defaults.integral if data.integral is None else data.integral,
        transfer_cost=data.transfer_cost,
        max_transfers=data.max_transfers,
        mode=Mode(data.mode),
        time_limit=data.time_limit,
        backend=data.backend,
    )


def _schema(check: Any, data: Any) -> Any:
    try:
        return check(data)
    except SchemaError as error:
        raise CaseValidationError.of(error.violations) from None
    except RecursionError:
        raise CaseValidationError("<case>", None, "nested too deeply") from None


_FLOAT64 = np.dtype(np.float64)


def _array_vectors(
    data: Any, vectors: Mapping[int, Vector] | None
) -> tuple[Any, Mapping[int, Vector] | None]:
    """``data`` without the instruments' float64 numpy vectors, and ``vectors`` with them (by
    instrument index). Any other array (another dtype or shape) becomes a list, for the schema
    to judge; ``data`` is copied only where it changes."""
    instruments = data.get("instruments") if isinstance(data, Mapping) else None
    if not isinstance(instruments, list):
        return data, vectors
    ndarray = np.ndarray
    for item in instruments:  # a plain loop: the common case (no arrays) walks every item
        # a dict first: isinstance against the Mapping ABC costs several times more
        if (isinstance(item, dict) or isinstance(item, Mapping)) and (
            isinstance(item.get("sensitivities"), ndarray) or isinstance(item.get("pnl"), ndarray)
        ):
            break
    else:
        return data, vectors
    found: dict[int, Vector] = dict(vectors or {})
    plain: list[Any] = []
    for i, item in enumerate(instruments):
        if type(item) is dict or isinstance(item, Mapping):
            item = dict(item)
            for name in ("sensitivities", "pnl"):
                values = item.get(name)
                if type(values) is ndarray:
                    dtype = values.dtype
                    if (
                        (dtype is _FLOAT64 or dtype == _FLOAT64)
                        and values.ndim == 1
                        and i not in found
                    ):
                        found[i] = (name, values.copy())  # the book keeps what was checked
                        del item[name]
                        continue
                if isinstance(values, ndarray):  # another dtype or shape, or a subclass
                    item[name] = values.tolist()
        plain.append(item)
    return {**data, "instruments": plain}, found


def parse_case(
    data: Any,
    rulebook: Rulebook | None = None,
    *,
    scenarios: ScenarioData | None = None,
    vectors: Mapping[int, Vector] | None = None,
    vectors_checked: bool = False,
) -> Book:
    """Validate a case (the parsed JSON) and build a :class:`Book`.

    ``scenarios``: a scenario set validated before (then ``data`` has no ``factors`` and
    ``scenarios``); ``vectors``: instruments' risk vectors by instrument index, read into numpy
    by the caller (then those instruments have no ``sensitivities``/``pnl`` key): checked here
    against the same bounds as the schema's. An instrument's vector may also be given in
    ``data`` as a 1-D float64 numpy array (a batch account built from a :class:`Book`); it is
    taken as one of ``vectors``, not walked element by element by the schema.
    ``vectors_checked``: the caller found :func:`vectors_in_bounds` true of ``vectors``, so
    that bulk check is not run again.
    """
    expect_type(rulebook, (Rulebook, type(None)), "rulebook")
    if scenarios is None and (scenarios := _trusted(data)) is not None:
        data = {k: v for k, v in data.items() if k not in ("factors", "scenarios")}
    given = vectors
    data, vectors = _array_vectors(data, vectors)
    vectors_checked = vectors_checked and vectors is given  # none taken from data's arrays
    in_columns = body_in_columns(CaseV1 if scenarios is None else CaseBody, data)
    doc: Any
    if in_columns is not None:  # it passes the schema: no model per instrument and position
        doc, instrument_columns, position_columns = in_columns
        instrument_rows = _rows(InstrumentRow, instrument_columns)
        position_rows = _rows(PositionRow, position_columns)
    else:
        doc = _validated(data, scenarios is None, vectors)
        instrument_rows, position_rows = doc.instruments, doc.positions
    if scenarios is None:
        scenarios = parse_scenarios(doc.factors, doc.scenarios.ids, doc.scenarios.shocks)
    vectors = vectors or {}
    checked_in_bulk = bool(vectors) and (vectors_checked or vectors_in_bounds(vectors))
    return _book(doc, instrument_rows, position_rows, scenarios, vectors, checked_in_bulk, rulebook)


def _validated(data: Any, whole: bool, vectors: Mapping[int, Vector] | None) -> Any:
    """``data`` validated against the schema (``whole``: with its scenario set); on failure
    every violation, the vectors' given apart included."""
    try:
        return _schema(validate_case if whole else validate_body, data)
    except CaseValidationError as error:  # the vectors' violations too, all at once
        found = _Violations()
        for i, (name, values) in (vectors or {}).items():
            bound = BOUNDS["sensitivity" if name == "sensitivities" else "pnl"]
            _check_vector(found, values, bound, f"instruments[{i}].{name}", None)
        if not found.found:
            raise
        raise CaseValidationError.of([*error.violations, *found.found]) from None


def _book(
    doc: Any,
    instrument_rows: Sequence[Any],
    position_rows: Sequence[Any],
    scenarios: ScenarioData,
    vectors: Mapping[int, Vector],
    checked_in_bulk: bool,
    rulebook: Rulebook | None,
) -> Book:
    """The rules across fields of a document that passed the schema, and its :class:`Book`:
    ``doc`` gives the shared parts (date, member, customer, models, program, options), the rows
    its instruments and positions (schema models, or :class:`InstrumentRow` and
    :class:`PositionRow`: the same attributes)."""
    out = _Violations()
    business_date = dt.date.fromisoformat(doc.business_date)
    factors, scenario_set = scenarios.factors, scenarios.scenarios
    member = ClearingMember(
        id=doc.clearing_member.id,
        bd_fcm=doc.clearing_member.bd_fcm,
        cme_clearing_member=doc.clearing_member.cme_clearing_member,
        ficc_netting_member=doc.clearing_member.ficc_netting_member,
    )
    customer = Customer(
        id=doc.customer.id,
        xm_enrolled=doc.customer.xm_enrolled,
        ficc_account_type=doc.customer.ficc_account_type,
    )
    instruments: dict[str, Instrument] = {}
    n_factors, n_scenarios = len(factors), scenario_set.size
    for i, item in enumerate(instrument_rows):
        instrument = _instrument(
            out, item, i, vectors.get(i), checked_in_bulk, n_factors, n_scenarios
        )
        if instrument.id in instruments:
            out.add(f"instruments[{i}].id", instrument.id, "duplicate instrument id")
        instruments[instrument.id] = instrument
    models = {
        ccp: _model(
            out, getattr(doc.models, ccp.value), f"models.{ccp.value}", scenario_set, len(factors)
        )
        for ccp in Ccp
    }
    try:
        rulebook = rulebook or default_rulebook(business_date)
    except CaseValidationError as error:
        out.found += error.violations
        out.raise_if_any()
        raise
    positions: list[Position] = []
    held: set[str] = set()
    cme_bound = BOUNDS["cme_quantity"]
    judge = EligibilityJudge(rulebook, member, customer, business_date)
    cme = Ccp.CME
    for i, item in enumerate(position_rows):
        instrument_id = item.instrument
        position_instrument = instruments.get(instrument_id)
        if position_instrument is None:
            out.add(f"positions[{i}].instrument", instrument_id, "unknown instrument")
        elif instrument_id in held:
            out.add(
                f"positions[{i}].instrument",
                instrument_id,
                "duplicate position in one instrument",
            )
        held.add(instrument_id)
        quantity, xm_quantity, lot = item.quantity, item.xm_quantity, item.lot
        if position_instrument is not None and position_instrument.ccp is cme:
            for field, value in (
                ("quantity", quantity),
                ("xm_quantity", xm_quantity),
                ("lot", lot),
            ):
                if abs(value) > cme_bound:
                    out.add(f"positions[{i}].{field}", value, f"must be <= {cme_bound:g} contracts")
                elif value != math.floor(value):  # futures trade in whole contracts
                    out.add(f"positions[{i}].{field}", value, "must be a whole number of contracts")
        if xm_quantity != 0:
            if xm_quantity * quantity < 0 or abs(xm_quantity) > abs(quantity):
                out.add(
                    f"positions[{i}].xm_quantity",
                    xm_quantity,
                    f"must have the sign of quantity {quantity:g} and not exceed it",
                )
            elif position_instrument is not None:
                eligibility = judge(position_instrument)
                if not eligibility.eligible:
                    reasons = ", ".join(eligibility.reasons)
                    out.add(
                        f"positions[{i}].xm_quantity",
                        xm_quantity,
                        f"position is not eligible for XM ({reasons}) so must be 0",
                    )
        positions.append(Position(instrument_id, quantity, xm_quantity, lot, item.pinned))
    out.raise_if_any()
    return Book(
        name=doc.name,
        business_date=business_date,
        cycle=Cycle(doc.cycle),
        clearing_member=member,
        customer=customer,
        factors=factors,
        scenarios=scenario_set,
        instruments=instruments,
        positions=tuple(positions),
        models=models,
        program=ProgramRules(savings_cap=doc.program.savings_cap),
        options=_options(doc.options),
    )


class InstrumentRow(NamedTuple):
    """One instrument of :func:`parse_columns`: the values a schema ``Instrument`` holds
    (None: absent), its risk vector given apart (``vectors``)."""

    id: str
    ccp: str
    kind: str
    contract: str | None
    maturity: str | None
    coupon: float | None
    collateral_maturity: str | None
    collateral_kind: str | None
    sensitivities: list[float] | None = None
    pnl: list[float] | None = None


class PositionRow(NamedTuple):
    """One position of :func:`parse_columns`: the values a schema ``Position`` holds."""

    instrument: str
    quantity: float
    xm_quantity: float
    lot: float
    pinned: bool


def _defaulted(
    model: type[Any], columns: Mapping[str, Sequence[Any]], count: int
) -> dict[str, list[Any]]:
    """A list per field of ``model`` for ``count`` rows: ``columns``' values, each absent
    one (None, or a column not given) the field's default, as the schema fills it in."""
    out: dict[str, list[Any]] = {}
    defaults = field_defaults(model)
    for name in model.model_fields:
        values = columns.get(name)
        default = defaults.get(name)  # None: required (or None by default)
        if values is None:
            out[name] = [default] * count
        elif default is None:
            out[name] = list(values)
        else:
            out[name] = [default if v is None else v for v in values]
    return out


def _rows(row: Any, columns: Mapping[str, list[Any]]) -> list[Any]:
    """The rows (``row``: :class:`InstrumentRow`, :class:`PositionRow`) of validated columns."""
    return [row(*values) for values in zip(*(columns[n] for n in row._fields), strict=True)]


def parse_columns(
    head: Mapping[str, Any],
    instruments: Mapping[str, Sequence[Any]],
    positions: Mapping[str, Sequence[Any]],
    vectors: Mapping[int, Vector],
    *,
    vectors_checked: bool = False,
    rulebook: Rulebook | None = None,
) -> Book | None:
    """The :class:`Book` of a case given as columns, when it passes the schema; None when
    anything fails it (then validate the case as rows, :func:`parse_case`, for its violations
    in their order and wording). Raises :class:`CaseValidationError` for the rules across
    fields, as :func:`parse_case` does.

    ``head``: the case without instruments and positions (both ``[]``), its scenario lists
    trusted (:func:`trust_scenarios`); ``instruments`` and ``positions``: one list per
    :class:`InstrumentRow` / :class:`PositionRow` field (None: absent, the schema's default
    then taken), the values a case's instrument and position dicts would hold; ``vectors``:
    the risk vectors by instrument index. The same schema judges them
    (:func:`xmargin.schema.validated_columns`: each column against its field's own type,
    with no model built per row) and the same rules follow."""
    scenarios = _trusted(head)
    if scenarios is None or head.get("instruments") != [] or head.get("positions") != []:
        return None
    count, held = len(instruments["id"]), len(positions["instrument"])
    if max(count, held) > BOUNDS["max_positions"]:
        return None
    instrument_columns = validated_columns(
        SchemaInstrument, _defaulted(SchemaInstrument, instruments, count)
    )
    position_columns = validated_columns(
        SchemaPosition, _defaulted(SchemaPosition, positions, held)
    )
    if instrument_columns is None or position_columns is None:
        return None
    if vectors and not (vectors_checked or vectors_in_bounds(vectors)):
        return None
    try:
        doc = validate_body({k: v for k, v in head.items() if k not in ("factors", "scenarios")})
    except (SchemaError, RecursionError):
        return None
    return _book(
        doc,
        _rows(InstrumentRow, instrument_columns),
        _rows(PositionRow, position_columns),
        scenarios,
        vectors,
        bool(vectors),
        rulebook,
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
    expect_type(book, Book, "book")
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
