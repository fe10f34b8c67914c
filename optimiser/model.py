"""Typed domain objects of one customer's book on one business date.

Quantities follow the case format: FICC positions in USD par, CME positions in contracts.
Arrays are numpy float64; shapes are given by the aliases below.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from xmargin.schema import BOUNDS
from xmargin.schema import FICC_ACCOUNT_TYPES as _ACCOUNT_TYPES

from .errors import CaseValidationError

__all__ = [
    "FICC_ACCOUNT_TYPES",
    "Book",
    "Ccp",
    "ClearingMember",
    "Customer",
    "Cycle",
    "FactorVector",
    "Instrument",
    "InstrumentKind",
    "MarginModel",
    "Measure",
    "Mode",
    "Position",
    "ProgramRules",
    "ScenarioMatrix",
    "ScenarioSet",
    "ScenarioVector",
    "SolveOptions",
]

FactorVector = npt.NDArray[np.float64]
"""Shape (K,): one value per risk factor."""
ScenarioVector = npt.NDArray[np.float64]
"""Shape (S,): one value per scenario."""
ScenarioMatrix = npt.NDArray[np.float64]
"""Shape (S, K): factor moves per scenario, oldest scenario first."""


class Ccp(enum.StrEnum):
    """Clearing house."""

    FICC = "FICC"
    CME = "CME"


class InstrumentKind(enum.StrEnum):
    NOTE = "NOTE"
    BOND = "BOND"
    BILL = "BILL"
    TIPS = "TIPS"
    STRIPS = "STRIPS"
    FRN = "FRN"
    AGENCY = "AGENCY"
    MBS = "MBS"
    REPO = "REPO"
    FUTURE = "FUTURE"
    OPTION = "OPTION"


FICC_KINDS = frozenset(
    {
        InstrumentKind.NOTE,
        InstrumentKind.BOND,
        InstrumentKind.BILL,
        InstrumentKind.TIPS,
        InstrumentKind.STRIPS,
        InstrumentKind.FRN,
        InstrumentKind.AGENCY,
        InstrumentKind.MBS,
        InstrumentKind.REPO,
    }
)
CME_KINDS = frozenset({InstrumentKind.FUTURE, InstrumentKind.OPTION})


class Cycle(enum.StrEnum):
    ITD = "ITD"
    EOD = "EOD"


class Measure(enum.StrEnum):
    ES = "ES"
    VAR = "VaR"


class Mode(enum.StrEnum):
    """JOINT moves every eligible position; FICC_FIXED keeps FICC allocations as given."""

    JOINT = "JOINT"
    FICC_FIXED = "FICC_FIXED"


@dataclass(frozen=True, slots=True)
class ClearingMember:
    id: str
    bd_fcm: bool
    cme_clearing_member: bool
    ficc_netting_member: bool


FICC_ACCOUNT_TYPES = frozenset(_ACCOUNT_TYPES)
"""The closed vocabulary of ``Customer.ficc_account_type`` (the case format's): SPONSORED,
AGENT_CLEARING, OMNIBUS, PROPRIETARY, NONE; the rulebook lists the ones that qualify."""


@dataclass(frozen=True, slots=True)
class Customer:
    """A customer; ``ficc_account_type`` is one of :data:`FICC_ACCOUNT_TYPES`."""

    id: str
    xm_enrolled: bool
    ficc_account_type: str


@dataclass(frozen=True, slots=True, eq=False)
class Instrument:
    """A tradable instrument with per-unit risk: ``sensitivities`` (K,) or ``pnl`` (S,)."""

    id: str
    ccp: Ccp
    kind: InstrumentKind
    contract: str | None = None
    maturity: dt.date | None = None
    coupon: float | None = None
    collateral_maturity: dt.date | None = None
    collateral_kind: InstrumentKind | None = None
    sensitivities: FactorVector | None = None
    pnl: ScenarioVector | None = None


@dataclass(frozen=True, slots=True)
class Position:
    """A holding of ``quantity`` units, ``xm_quantity`` of them currently in XM."""

    instrument: str
    quantity: float
    xm_quantity: float = 0.0
    lot: float = 1.0
    pinned: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class ScenarioSet:
    """S scenarios of 1-day factor moves, oldest first, each with an id (usually a date)."""

    ids: tuple[str, ...]
    shocks: ScenarioMatrix

    @property
    def size(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True, eq=False)
class MarginModel:
    """One clearing house's historical-simulation model (margin-model.md)."""

    lookback: int
    confidence: float
    horizon_days: float
    measure: Measure = Measure.ES
    stress_ids: tuple[str, ...] = ()
    stress_weight: float = 0.0
    addon_rate: FactorVector | None = None
    addon_threshold: FactorVector | None = None


@dataclass(frozen=True, slots=True)
class ProgramRules:
    savings_cap: float = 0.8


@dataclass(frozen=True, slots=True)
class SolveOptions:
    """How to allocate.

    ``integral`` (the default): whole lots, every movable XM quantity a multiple of its lot
    within the holding or the whole holding; ``False`` asks for the continuous relaxation (a
    lower bound, not bookable as it stands). ``transfer_cost`` is USD per lot moved;
    ``max_transfers`` bounds the number of positions whose XM quantity changes;
    ``time_limit`` is one wall-clock budget in seconds for the whole call, fallback included.
    """

    integral: bool = True
    transfer_cost: float = 0.0
    max_transfers: int | None = None
    mode: Mode = Mode.JOINT
    time_limit: float | None = None
    backend: str | None = None

    def __post_init__(self) -> None:
        """Refuse what a case file's options could not hold (CaseValidationError at
        ``options.FIELD``), so options built in code fail here, not inside a solver. The time
        limit is any positive number of seconds: the server's is a share of the caller's
        deadline, which may exceed a case file's day."""
        bad = _bad_option(self)
        if bad is not None:
            raise CaseValidationError(f"options.{bad[0]}", getattr(self, bad[0]), bad[1])


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bad_option(options: SolveOptions) -> tuple[str, str] | None:
    """The first field of ``options`` out of its range and why, else None."""
    if not isinstance(options.integral, bool):
        return "integral", "must be true or false"
    cost = options.transfer_cost
    if not (_is_number(cost) and 0.0 <= cost <= BOUNDS["transfer_cost"]):
        return "transfer_cost", f"must be a number in [0, {BOUNDS['transfer_cost']:g}] USD per lot"
    limit = options.max_transfers
    if limit is not None and not (isinstance(limit, int) and not isinstance(limit, bool)):
        return "max_transfers", "must be a whole number or None"
    if limit is not None and not 0 <= limit <= BOUNDS["max_positions"]:
        return "max_transfers", f"must be in [0, {BOUNDS['max_positions']:g}]"
    if not isinstance(options.mode, Mode):
        return "mode", "must be a Mode (Mode.JOINT or Mode.FICC_FIXED)"
    seconds = options.time_limit
    if seconds is not None and not (_is_number(seconds) and 0.0 < seconds < math.inf):
        return "time_limit", "must be a positive finite number of seconds or None"
    if options.backend is not None and not (isinstance(options.backend, str) and options.backend):
        return "backend", "must be a backend name (highs, cvxpy, cvxpy:SOLVER) or None"
    return None


@dataclass(frozen=True, slots=True, eq=False)
class Book:
    """One customer's positions, scenarios, models and rules on one business date."""

    name: str
    business_date: dt.date
    cycle: Cycle
    clearing_member: ClearingMember
    customer: Customer
    factors: tuple[str, ...]
    scenarios: ScenarioSet
    instruments: dict[str, Instrument]
    positions: tuple[Position, ...]
    models: dict[Ccp, MarginModel]
    program: ProgramRules = field(default_factory=ProgramRules)
    options: SolveOptions = field(default_factory=SolveOptions)
