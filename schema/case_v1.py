"""Case format v1 (../shared/cases/README.md) as one pydantic v2 model: every key, its type,
unit and allowed range; required keys have no default, optional ones document theirs.

Structural rules live here (types, ranges, closed vocabularies, strict ``YYYY-MM-DD`` dates,
unknown keys refused); rules across fields (vector lengths, references between instruments,
positions and scenarios, eligibility) are checked by ``xmargin.optimiser.case_format`` after
this schema passes. Validation is strict: nothing is coerced (``"false"`` is not a boolean,
``1`` is not ``true``, ``"1.5"`` is not a number), NaN and infinities are refused.

Why pydantic: measured on the reference account (300 positions x 2,520 scenarios x 10 factors,
the full case dict), pydantic-core reports every violation with its location and exports JSON
Schema; msgspec is faster but stops at the first error (numbers in the commit that added this).
"""

from __future__ import annotations

import difflib
import functools
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import core_schema

__all__ = [
    "BOUNDS",
    "CASE_FORMAT",
    "DATE_PATTERN",
    "FICC_ACCOUNT_TYPES",
    "MAX_ECHO",
    "CaseBody",
    "CaseV1",
    "ScenarioSetDoc",
    "SchemaError",
    "Violation",
    "body_in_columns",
    "check",
    "clip",
    "json_schema",
    "rows_as_columns",
    "schema_path",
    "validate_body",
    "validate_case",
    "validated_columns",
    "violations_of",
]

CASE_FORMAT = "xmargin-case/1"

MAX_ECHO = 80
"""Characters of any input string echoed into an error message or a log line."""


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis when cut)."""
    return text if len(text) <= limit else text[:limit] + "…"


class DuplicateKeyError(ValueError):
    """A JSON object names one key twice."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"duplicate key {clip(key)!r} in one object")
        out[key] = value
    return out


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` of a case, batch or scenario file, refusing an object that names a key
    twice (plain ``json.loads`` keeps the last value without a word, so ``{"quantity": 1,
    "quantity": 5e8}`` would be read as 5e8). Raises ``ValueError`` (as ``json.loads`` does for
    text that is not JSON)."""
    return json.loads(text, object_pairs_hook=_unique_keys)


# --- bounds: chosen from the field, one place ---------------------------------------------------

BOUNDS: dict[str, float] = {
    # USD par: the largest single Treasury positions are tens of billions.
    "ficc_quantity": 1e11,
    # contracts: open interest of the largest Treasury future is a few million contracts.
    "cme_quantity": 1e7,
    # USD per unit per +1bp: a contract's DV01 is ~1e2..1e4; per USD par ~1e-4..1e-3.
    "sensitivity": 1e6,
    # USD per unit per scenario (1-day P&L of one contract or one USD par).
    "pnl": 1e8,
    # bp per day: the largest daily Treasury moves are tens of bp.
    "shock": 1e4,
    # percent per year.
    "coupon": 100.0,
    # bp of margin per USD/bp of net exposure beyond the threshold.
    "addon_rate": 1e4,
    # USD/bp of net exposure.
    "addon_threshold": 1e13,
    # days.
    "horizon_days": 250.0,
    # USD per lot moved.
    "transfer_cost": 1e6,
    # seconds (one day).
    "time_limit": 86_400.0,
    "max_scenarios": 20_000,
    "max_factors": 500,
    "max_positions": 20_000,
}

FICC_ACCOUNT_TYPES = ("SPONSORED", "AGENT_CLEARING", "OMNIBUS", "PROPRIETARY", "NONE")
"""How the customer's FICC activity is cleared: sponsored membership, the agent clearing
service, an omnibus account, the member's own (proprietary) account, or NONE (no FICC
account). The rulebook says which qualify for cross-margining."""

FICC_KINDS = ("NOTE", "BOND", "BILL", "TIPS", "STRIPS", "FRN", "AGENCY", "MBS", "REPO")
CME_KINDS = ("FUTURE", "OPTION")

# Years 1900-2199: a year can always be added (the rulebook's maturity rule) and no calendar
# date a clearing house uses falls outside.
DATE_PATTERN = r"^(19|20|21)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
_DATE_RULE = "a date YYYY-MM-DD between 1900-01-01 and 2199-12-31"


# The calendar dates among DATE_PATTERN's strings (no 31 April, 29 February in leap years only:
# every fourth year but 1900 and 2100; 2000 is one). A second pattern, checked after
# DATE_PATTERN passes, in pydantic-core like the first: no Python call per date.
CALENDAR_PATTERN = (
    r"^(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    r"|(?:(?:19|20|21)(?:0[48]|[2468][048]|[13579][26])|2000)-02-29)$"
)


class _CalendarDay:
    """A string that passed DATE_PATTERN must then match CALENDAR_PATTERN (a chain of two
    pydantic-core string checks; the JSON Schema shows the first, as before)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.chain_schema(
            [handler(source), core_schema.str_schema(pattern=CALENDAR_PATTERN)]
        )


IsoDate = Annotated[
    str,
    StringConstraints(pattern=DATE_PATTERN),
    _CalendarDay(),
    Field(json_schema_extra={"format": "date"}),
]
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f]*$"
"""No control character (U+0000-U+001F, U+007F) in an id or name: a NUL cannot be stored in a
PostgreSQL audit store (the run would fail there and pass on SQLite), and a newline or escape
would forge lines in logs and tables."""
ID_PATTERN = r"^[^\s\x00-\x1f\x7f]([^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$"
"""An id: no control character, and no blank (any Unicode white space) at either end: ids are
matched exactly (a position's instrument, an exclusion, a stored run's key), so " TYZ6" would
be another instrument than "TYZ6", and a blank id names nothing."""
ID_RULE = "must not hold control characters (U+0000-U+001F, U+007F) nor begin or end with a blank"
Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN)]
Name = Annotated[str, StringConstraints(max_length=200, pattern=NO_CONTROL_PATTERN)]


def _number(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Any:
    """A float in [low, high] (open at the ends asked)."""
    return Field(
        gt=low if low_open else None,
        ge=None if low_open else low,
        lt=high if high_open else None,
        le=None if high_open else high,
    )


def _symmetric(bound: float) -> Any:
    return Field(ge=-bound, le=bound)


Quantity = Annotated[float, _symmetric(BOUNDS["ficc_quantity"])]
Sensitivity = Annotated[float, _symmetric(BOUNDS["sensitivity"])]
Pnl = Annotated[float, _symmetric(BOUNDS["pnl"])]
Shock = Annotated[float, _symmetric(BOUNDS["shock"])]
AddonRate = Annotated[float, _number(0.0, BOUNDS["addon_rate"])]
AddonThreshold = Annotated[float, _number(0.0, BOUNDS["addon_threshold"])]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, frozen=True, hide_input_in_errors=False
    )


class ClearingMember(_Strict):
    """The clearing member (the dually registered BD/FCM) carrying the customer."""

    id: Id = Field(description="Clearing member id, 1-64 characters.")
    bd_fcm: bool = Field(False, description="Dually registered broker-dealer and FCM.")
    cme_clearing_member: bool = Field(False, description="Clearing member of CME.")
    ficc_netting_member: bool = Field(False, description="Netting member of FICC.")


class Customer(_Strict):
    id: Id = Field(description="Customer id, 1-64 characters.")
    xm_enrolled: bool = Field(False, description="Enrolled in the cross-margining program.")
    ficc_account_type: Literal["SPONSORED", "AGENT_CLEARING", "OMNIBUS", "PROPRIETARY", "NONE"] = (
        Field(
            description="How the customer's FICC activity is cleared (required; NONE when it has "
            "no FICC account). The rulebook lists the types that qualify for XM."
        )
    )


class Scenarios(_Strict):
    ids: list[IsoDate] = Field(
        min_length=1,
        max_length=int(BOUNDS["max_scenarios"]),
        description="S scenario dates (YYYY-MM-DD), strictly increasing (oldest first), "
        "1-20,000 of them.",
    )
    shocks: list[list[Shock]] = Field(
        description="S rows of K factor moves, bp over one day, each in [-1e4, 1e4]."
    )


class Instrument(_Strict):
    id: Id = Field(description="Instrument id (CUSIP, ticker), 1-64 characters, unique.")
    ccp: Literal["FICC", "CME"] = Field(description="Clearing house.")
    kind: Literal[
        "NOTE",
        "BOND",
        "BILL",
        "TIPS",
        "STRIPS",
        "FRN",
        "AGENCY",
        "MBS",
        "REPO",
        "FUTURE",
        "OPTION",
    ] = Field(description="FICC: NOTE ... REPO; CME: FUTURE or OPTION.")
    contract: Id | None = Field(None, description="CME contract code (TY, US, ...); CME only.")
    maturity: IsoDate | None = Field(
        None, description="Maturity date; required for FICC securities (not REPO)."
    )
    coupon: Annotated[float, _number(0.0, BOUNDS["coupon"])] | None = Field(
        None, description="Coupon, percent per year, in [0, 100]."
    )
    collateral_maturity: IsoDate | None = Field(
        None, description="REPO only (required): maturity of the collateral security."
    )
    collateral_kind: (
        Literal["NOTE", "BOND", "BILL", "TIPS", "STRIPS", "FRN", "AGENCY", "MBS"] | None
    ) = Field(None, description="REPO only (required): kind of the collateral security.")
    sensitivities: list[Sensitivity] | None = Field(
        None,
        description="K values, USD per unit (1 USD par, or 1 contract) per +1bp of each "
        "factor, each in [-1e6, 1e6]. Exactly one of sensitivities and pnl.",
    )
    pnl: list[Pnl] | None = Field(
        None,
        description="S values, USD per unit per scenario, each in [-1e8, 1e8]. Exactly one "
        "of sensitivities and pnl.",
    )


class Position(_Strict):
    instrument: Id = Field(description="Id of an instrument of the case; one position each.")
    quantity: Quantity = Field(
        description="Units held, signed: FICC USD par, |q| <= 1e11; CME contracts, |q| <= 1e7."
    )
    xm_quantity: Quantity = Field(
        0.0,
        description="Units currently in the XM account: same sign as quantity, not larger; "
        "must be 0 for a position that is not eligible.",
    )
    lot: Annotated[float, _number(0.0, BOUNDS["ficc_quantity"], low_open=True)] = Field(
        1.0,
        description="Transfer increment in units, > 0 (FICC <= 1e11 USD, CME <= 1e7 "
        "contracts); futures 1 contract.",
    )
    pinned: bool = Field(False, description="Keep the current allocation.")


class MarginModel(_Strict):
    """One clearing house's historical-simulation model (margin-model.md)."""

    lookback: Annotated[int, Field(ge=1, le=int(BOUNDS["max_scenarios"]))] | None = Field(
        None,
        description="Most recent scenarios used, 1..S (default: all S). The tail "
        "(1 - confidence) x lookback must be above 0 and leave one scenario out.",
    )
    confidence: Annotated[float, _number(0.0, 1.0, low_open=True, high_open=True)] = Field(
        description="Confidence level, in (0, 1)."
    )
    horizon_days: Annotated[float, _number(0.0, BOUNDS["horizon_days"], low_open=True)] = Field(
        description="Margin period of risk, days, in (0, 250]: losses scale by sqrt."
    )
    measure: Literal["ES", "VaR"] = Field("ES", description="ES (default) or VaR.")
    stress_ids: list[IsoDate] = Field(
        default_factory=list,
        max_length=int(BOUNDS["max_scenarios"]),
        description="Scenario dates of the stress set (each one of scenarios.ids).",
    )
    stress_weight: Annotated[float, _number(0.0, 1.0)] = Field(
        0.0, description="Weight of the stress term, in [0, 1]; needs stress_ids when > 0."
    )
    addon_rate: list[AddonRate] | None = Field(
        None,
        description="K add-on rates, bp of margin per USD/bp of net exposure beyond the "
        "threshold, each in [0, 1e4]; given with addon_threshold.",
    )
    addon_threshold: list[AddonThreshold] | None = Field(
        None,
        description="K thresholds, USD/bp of net exposure, each in [0, 1e13]; given with "
        "addon_rate.",
    )


class Models(_Strict):
    FICC: MarginModel = Field(description="FICC's model.")
    CME: MarginModel = Field(description="CME's model.")


class Program(_Strict):
    savings_cap: Annotated[float, _number(0.0, 1.0)] = Field(
        0.8, description="Largest share of the standalone margin XM may save, in [0, 1]."
    )


class Options(_Strict):
    integral: bool | None = Field(
        None,
        description="Whole lots (a MIP) or the continuous relaxation; absent: the "
        "library default (SolveOptions.integral).",
    )
    transfer_cost: Annotated[float, _number(0.0, BOUNDS["transfer_cost"])] = Field(
        0.0, description="USD per lot moved, in [0, 1e6]."
    )
    max_transfers: Annotated[int, Field(ge=0, le=int(BOUNDS["max_positions"]))] | None = Field(
        None, description="Most positions whose allocation may change, 0-20,000."
    )
    mode: Literal["JOINT", "FICC_FIXED"] = Field(
        "JOINT", description="JOINT (default) or FICC_FIXED (FICC allocations stay as given)."
    )
    time_limit: Annotated[float, _number(0.0, BOUNDS["time_limit"], low_open=True)] | None = Field(
        None, description="Seconds, in (0, 86400]; absent: no limit."
    )
    backend: Id | None = Field(None, description="Solver backend (highs, cvxpy[:SOLVER]).")


class CaseBody(_Strict):
    """A case without its scenario set (``factors``, ``scenarios``): what one account of a
    request carries when the scenario set is shared or registered."""

    format: Literal["xmargin-case/1"] = Field("xmargin-case/1", description="Format tag.")
    name: Name = Field("", description="Free text, at most 200 characters.")
    business_date: IsoDate = Field(description="Business date, YYYY-MM-DD.")
    cycle: Literal["ITD", "EOD"] = Field("EOD", description="ITD or EOD (default).")
    clearing_member: ClearingMember
    customer: Customer
    instruments: list[Instrument] = Field(max_length=int(BOUNDS["max_positions"]))
    positions: list[Position] = Field(max_length=int(BOUNDS["max_positions"]))
    models: Models
    program: Program = Field(default_factory=Program)
    options: Options = Field(default_factory=Options)
    expected: dict[str, Any] | None = Field(
        None, description="Worked cases' expected figures (not read by the parser)."
    )


class CaseV1(CaseBody):
    """One customer's book on one business date: case format v1."""

    model_config = ConfigDict(title="xmargin case format v1")

    factors: list[Id] = Field(
        min_length=1,
        max_length=int(BOUNDS["max_factors"]),
        description="K risk factor names, unique, 1-500 of them.",
    )
    scenarios: Scenarios


class ScenarioSetDoc(_Strict):
    """A scenario set on its own (what RegisterScenarioSet carries)."""

    factors: list[Id] = Field(min_length=1, max_length=int(BOUNDS["max_factors"]))
    scenarios: Scenarios


# --- violations ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    """One rule broken: the case-format path, the value found, and why."""

    path: str
    value: object
    message: str


def _format_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + clip(str(part))
    return out


def _unwrap(annotation: Any) -> Any:
    """The model class (or list element) behind Optional/Annotated wrappers."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = inner[0]
        else:
            return annotation


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            if typing.get_origin(current) is not list:
                return None
            current = typing.get_args(current)[0]
        else:
            if not (isinstance(current, type) and issubclass(current, BaseModel)):
                return None
            field = current.model_fields.get(part)
            if field is None:
                return None
            current = field.annotation
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


_TYPES = {
    "float_type": "must be a number",
    "int_type": "must be a whole number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "dict_type": "must be an object",
    "model_attributes_type": "must be an object",
    "finite_number": "must be finite (no NaN or infinity)",
    "missing": "is required",
}


def _message(root: type[BaseModel], error: Mapping[str, Any]) -> str:
    kind = error["type"]
    loc = error["loc"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        known = list(parent.model_fields) if parent is not None else []
        close = difflib.get_close_matches(str(loc[-1])[:200], known, n=1, cutoff=0.6)
        if close:
            return f"unknown key; did you mean {_format_path([*loc[:-1], close[0]])}?"
        return "unknown key" + (f" (known: {', '.join(known)})" if known else "")
    if kind in _TYPES:
        return _TYPES[kind]
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}".replace("'", "")
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == DATE_PATTERN:
        return f"must be {_DATE_RULE}"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == CALENDAR_PATTERN:
        return f"is not a calendar date (must be {_DATE_RULE})"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == NO_CONTROL_PATTERN:
        return "must not hold control characters (U+0000-U+001F, U+007F)"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == ID_PATTERN:
        return ID_RULE
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    bounds = {
        "greater_than": "must be > {gt}",
        "greater_than_equal": "must be >= {ge}",
        "less_than": "must be < {lt}",
        "less_than_equal": "must be <= {le}",
        "too_short": "must hold at least {min_length}",
        "too_long": "must hold at most {max_length}",
        "string_too_short": "must hold at least {min_length} characters",
        "string_too_long": "must hold at most {max_length} characters",
    }
    if kind in bounds:
        shown = {k: (f"{v:g}" if isinstance(v, float) else v) for k, v in ctx.items()}
        return bounds[kind].format(**shown)
    return str(error["msg"]).replace("Input should be", "must be")


def _shown(value: Any) -> object:
    if isinstance(value, str):
        return clip(value)
    if isinstance(value, Mapping | list | tuple):
        return f"<{type(value).__name__} of {len(value)}>"
    return value


def violations_of(root: type[BaseModel], error: ValidationError) -> list[Violation]:
    """Every violation of ``error`` (pydantic's), with case-format paths and clipped values."""
    return [
        Violation(
            path=_format_path(e["loc"]) or "<case>",
            value=None if e["type"] == "missing" else _shown(e.get("input")),
            message=_message(root, e),
        )
        for e in error.errors(include_url=False)
    ]


class SchemaError(ValueError):
    """The document breaks the schema; ``violations`` lists every rule it breaks."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.path}: {v.message}" for v in violations[:5]))


def validate_case(data: Any) -> CaseV1:
    """``data`` (the parsed JSON of a case) as a :class:`CaseV1`; raises
    :class:`SchemaError` listing every violation."""
    try:
        return CaseV1.model_validate(data)
    except ValidationError as error:
        raise SchemaError(violations_of(CaseV1, error)) from None


def validate_body(data: Any) -> CaseBody:
    """As :func:`validate_case`, for a case without ``factors`` and ``scenarios``."""
    try:
        return CaseBody.model_validate(data)
    except ValidationError as error:
        raise SchemaError(violations_of(CaseBody, error)) from None


def check(model: type[BaseModel], data: Any) -> list[Violation]:
    """Every violation of ``data`` against ``model`` (empty when it is valid). A case
    (:class:`CaseBody`, :class:`CaseV1`) that passes is checked in columns
    (:func:`body_in_columns`): the same rules without a model per instrument and position."""
    if model in (CaseBody, CaseV1) and body_in_columns(model, data) is not None:
        return []
    try:
        model.model_validate(data)
    except ValidationError as error:
        return violations_of(model, error)
    except RecursionError:
        return [Violation("<case>", None, "nested too deeply")]
    return []


@functools.cache
def _column_adapter(model: type[BaseModel], name: str) -> TypeAdapter[list[Any]]:
    """A list of values of the field ``name`` of ``model``: the field's own annotated type
    (constraints included) under the model's strictness, so a column is judged as the model
    judges each of its values."""
    config = model.model_config
    column: Any = list.__class_getitem__(model.model_fields[name].rebuild_annotation())
    return TypeAdapter(
        column,
        config=ConfigDict(
            strict=bool(config.get("strict", False)),
            allow_inf_nan=bool(config.get("allow_inf_nan", True)),
        ),
    )


def validated_columns(
    model: type[BaseModel], columns: Mapping[str, list[Any]]
) -> dict[str, list[Any]] | None:
    """``columns`` (field name -> one value per row, an absent one already the field's
    default) as ``model`` reads them, each column checked against its field's own type (a
    whole column at a time in pydantic-core, no model built per row); None when any value
    fails. Says only yes or no: a document with a value that fails is validated whole
    (:func:`validate_body`, :func:`check`) for its violations."""
    try:
        return {
            name: _column_adapter(model, name).validate_python(values)
            for name, values in columns.items()
        }
    except (ValidationError, RecursionError):
        return None


def field_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """The default of each optional field of ``model`` (a required one has none)."""
    return {
        name: info.get_default(call_default_factory=True)
        for name, info in model.model_fields.items()
        if not info.is_required()
    }


_MISSING = object()


def rows_as_columns(model: type[BaseModel], rows: Any) -> dict[str, list[Any]] | None:
    """``rows`` (a list of dicts, each a ``model``) as :func:`validated_columns` of every
    field, an absent value the field's default; None when ``rows`` is not a list of dicts,
    a row has a key the model does not know or lacks a required one, or a value fails."""
    if type(rows) is not list or not all(type(row) is dict for row in rows):
        return None
    fields = model.model_fields.keys()
    required = {name for name, info in model.model_fields.items() if info.is_required()}
    if not all(row.keys() <= fields and required <= row.keys() for row in rows):
        return None
    defaults = field_defaults(model)
    columns = {}
    for name in fields:
        default = defaults.get(name, _MISSING)
        columns[name] = (
            [row[name] for row in rows]
            if default is _MISSING
            else [row.get(name, default) for row in rows]
        )
    return validated_columns(model, columns)


def body_in_columns(
    model: type[CaseBody], data: Any
) -> tuple[CaseBody, dict[str, list[Any]], dict[str, list[Any]]] | None:
    """A case (``model``: :class:`CaseBody` or :class:`CaseV1`) that passes the schema, read
    without a model per instrument and position: its other parts as the model (its
    ``instruments`` and ``positions`` empty) and those two as validated columns
    (:func:`rows_as_columns`). None when anything fails, or when the case is not a dict with
    those lists: validate it whole for the violations."""
    if not isinstance(data, dict):
        return None
    instruments, positions = data.get("instruments"), data.get("positions")
    if type(instruments) is not list or type(positions) is not list:
        return None
    if max(len(instruments), len(positions)) > BOUNDS["max_positions"]:
        return None  # the lists' own bound: the model names it
    instrument_columns = rows_as_columns(Instrument, instruments)
    position_columns = rows_as_columns(Position, positions)
    if instrument_columns is None or position_columns is None:
        return None
    try:
        head = model.model_validate({**data, "instruments": [], "positions": []})
    except (ValidationError, RecursionError):
        return None
    return head, instrument_columns, position_columns


# --- the published JSON Schema ------------------------------------------------------------------

SCHEMA_FILE = "case-v1.schema.json"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of case format v1, as the model exports it."""
    schema = CaseV1.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://xmargin.dev/schema/case-v1.schema.json"
    return schema


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def schema_path() -> Any:
    """The shipped JSON Schema file (a ``importlib.resources`` traversable)."""
    return resources.files("xmargin.schema") / SCHEMA_FILE
