"""Synthetic sample books: key-rate scenario history, Treasury and futures risk, book templates.

Everything is deterministic given a seed (one :class:`numpy.random.Generator`), and everything is
synthetic: the figures look like a Treasury market, they are not market data.

Scenarios
---------
Daily moves (bp) of the ten key-rate yields ``UST_0.25Y ... UST_30Y`` on S business days (weekdays)
ending on the business date, oldest first. Tenor k on day t moves by

    x[t, k] = sigma_k * m_t * (sum_f beta[k, f] * z[t, f] + gamma_k * e[t, k]) + stress[t, k]

- sigma_k: the target daily volatility of tenor k (:data:`TARGET_DAILY_VOL_BP`, 4 to 7.5 bp).
- beta: loadings on level, slope and curvature (rows scaled so sum_f beta^2 + gamma^2 = 1, so
  each tenor's variance is sigma_k^2 before regimes and stress).
- z, e: independent Student-t draws with :data:`STUDENT_T_DOF` degrees of freedom, scaled to unit
  variance (fat tails: excess kurtosis 6 / (nu - 4) for each draw).
- m_t: a volatility regime (calm, normal, turbulent) that follows a persistent Markov chain,
  normalised so that mean(m_t^2) = 1 over the path; stressed windows multiply it further.
- stress: stylised moves of the March 2020 dash for cash and the March 2023 bank failures on the
  dates of :data:`STRESS_DAYS` that fall inside the history.

Risk of instruments
-------------------
Sensitivities are USD per unit per +1 bp of each key rate (negative for a long bond position), on
the stylised zero curve :data:`ZERO_CURVE` (continuous compounding, linear between key tenors,
flat outside). A cash flow CF at time t is worth CF * exp(-z(t) t); its PV01 -t * CF *
exp(-z(t) t) * 1e-4 is split between the two key tenors around t by linear-interpolation weights.

- Notes and bonds: semi-annual coupons c/2 per unit par and the principal at maturity.
- Bond futures: the cheapest-to-deliver (CTD) bond's sensitivity times face / CF per contract,
  CF the conversion factor (price per unit at a 6% yield, CME's formula).
- SR3 (USD 25 per bp) and ZQ (USD 41.67 per bp): the price is 100 minus the forward rate
  f(t1, t2) = (z2 t2 - z1 t1) / (t2 - t1) over the reference period, so a long contract has
  d f / d z_j = (t2 w_j(t2) - t1 w_j(t1)) / (t2 - t1) times -USD per bp.
- Options on futures: full P&L vectors, the Bachelier (normal-model) price of the option
  repriced on the future's scenario move with one day less to expiry.
- TIPS: 0.6 times the nominal PV01 of their cash flows (a real-yield beta); bills and STRIPS:
  one cash flow.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

from .case_format import book_to_dict, parse_case
from .eligibility import Rulebook, default_rulebook, instrument_eligibility
from .model import (
    Book,
    Ccp,
    ClearingMember,
    Customer,
    Cycle,
    FactorVector,
    Instrument,
    InstrumentKind,
    MarginModel,
    Measure,
    Position,
    ProgramRules,
    ScenarioMatrix,
    ScenarioSet,
    SolveOptions,
)

__all__ = [
    "DEFAULT_BUSINESS_DATE",
    "FACTORS",
    "KEY_TENORS",
    "SAMPLE_BOOK_RESOURCE",
    "STRESS_DAYS",
    "TARGET_DAILY_VOL_BP",
    "ZERO_CURVE",
    "business_days",
    "generate_book",
    "generate_case",
    "generate_scenarios",
    "load_sample_book",
    "sample_book_path",
]

KEY_TENORS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 20.0, 30.0)
"""Key-rate tenors in years."""
FACTORS: tuple[str, ...] = tuple(f"UST_{tenor:g}Y" for tenor in KEY_TENORS)
TARGET_DAILY_VOL_BP: FactorVector = np.array([4.0, 4.5, 5.0, 6.5, 7.0, 7.5, 7.5, 7.0, 6.5, 6.5])
"""The daily volatility (bp) each key rate's moves are built to have, before stress days."""
ZERO_CURVE: FactorVector = np.array([3.90, 3.80, 3.60, 3.50, 3.50, 3.60, 3.80, 4.10, 4.60, 4.70])
"""Stylised zero yields (%, continuous compounding) at the key tenors, used to price."""
STUDENT_T_DOF = 5.0
DEFAULT_BUSINESS_DATE = dt.date(2026, 11, 24)
SAMPLE_BOOK_RESOURCE = "data/sample-book.json"
"""The bundled sample book: ``generate_case(40, 1260, seed=SAMPLE_SEED)``."""
SAMPLE_SEED = 20261124

YEAR_DAYS = 365.25
BP = 1e-4
TRADING_DAYS = 252

# Volatility regimes: multipliers of the daily vol and a persistent Markov chain between them.
REGIME_MULTIPLIERS = np.array([0.7, 1.0, 1.6])
REGIME_TRANSITIONS = np.array(
    [
        [0.985, 0.015, 0.000],
        [0.010, 0.980, 0.010],
        [0.000, 0.040, 0.960],
    ]
)
STRESS_WINDOWS: tuple[tuple[dt.date, dt.date, float], ...] = (
    (dt.date(2020, 3, 2), dt.date(2020, 4, 3), 2.5),
    (dt.date(2023, 3, 8), dt.date(2023, 3, 31), 2.0),
)
"""(first day, last day, extra volatility multiplier) of the stressed periods."""

STRESS_DAYS: dict[dt.date, dict[float, float]] = {
    # March 2020: the rally into the crash, then the dash for cash sells the long end.
    dt.date(2020, 3, 9): {0.25: -25.0, 2.0: -20.0, 10.0: -25.0, 30.0: -30.0},
    dt.date(2020, 3, 10): {0.25: 5.0, 2.0: 12.0, 10.0: 22.0, 30.0: 25.0},
    dt.date(2020, 3, 12): {0.25: -8.0, 2.0: 2.0, 10.0: 6.0, 30.0: 10.0},
    dt.date(2020, 3, 13): {0.25: -5.0, 2.0: 8.0, 10.0: 12.0, 30.0: 12.0},
    dt.date(2020, 3, 16): {0.25: -30.0, 2.0: -13.0, 10.0: -22.0, 30.0: -25.0},
    dt.date(2020, 3, 18): {0.25: -5.0, 2.0: 5.0, 10.0: 19.0, 30.0: 17.0},
    dt.date(2020, 3, 19): {0.25: -3.0, 2.0: 0.0, 10.0: 6.0, 30.0: 7.0},
    # March 2023: bank failures, the front end rallies most.
    dt.date(2023, 3, 9): {0.25: -3.0, 2.0: -18.0, 10.0: -10.0, 30.0: -7.0},
    dt.date(2023, 3, 10): {0.25: -6.0, 2.0: -30.0, 10.0: -21.0, 30.0: -12.0},
    dt.date(2023, 3, 13): {0.25: -25.0, 2.0: -55.0, 10.0: -20.0, 30.0: -7.0},
    dt.date(2023, 3, 14): {0.25: -5.0, 2.0: 25.0, 10.0: 10.0, 30.0: 5.0},
    dt.date(2023, 3, 15): {0.25: -10.0, 2.0: -35.0, 10.0: -14.0, 30.0: -5.0},
    dt.date(2023, 3, 17): {0.25: -5.0, 2.0: -30.0, 10.0: -13.0, 30.0: -5.0},
}
"""Stylised key-rate moves (bp, at a few tenors, interpolated in log tenor) on stress days."""


# --- scenarios ------------------------------------------------------------------------------


def business_days(count: int, last: dt.date) -> list[dt.date]:
    """The ``count`` weekdays ending on ``last`` (a weekday), oldest first."""
    if last.weekday() >= 5:
        raise ValueError(f"business date {last.isoformat()} is a weekend day")
    days: list[dt.date] = []
    day = last
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day -= dt.timedelta(days=1)
    return days[::-1]


def _factor_loadings() -> tuple[npt.NDArray[np.float64], FactorVector]:
    """Loadings beta (K, 3) on level, slope, curvature and idiosyncratic weights gamma (K,),
    scaled so that each row has sum beta^2 + gamma^2 = 1."""
    x = np.log(np.array(KEY_TENORS))
    level = np.ones_like(x)
    slope = (x - x.mean()) / (x.max() - x.min()) * 2.0  # -1 at the short end, +1 at the long
    curvature = 1.0 - ((x - math.log(5.0)) / (x.max() - x.min()) * 2.5) ** 2
    factor_sd = np.array([1.0, 0.45, 0.25])
    beta = np.column_stack([level, slope, curvature]) * factor_sd
    # The bill end is driven more by policy expectations than by the curve factors.
    idiosyncratic = np.where(np.array(KEY_TENORS) < 1.0, 0.55, 0.18)
    norm = np.sqrt((beta**2).sum(axis=1) + idiosyncratic**2)
    return beta / norm[:, None], idiosyncratic / norm


def factor_correlation() -> npt.NDArray[np.float64]:
    """Correlation of the key-rate moves implied by the loadings: beta beta' + diag(gamma^2)."""
    beta, gamma = _factor_loadings()
    return beta @ beta.T + np.diag(gamma**2)


def target_covariance() -> npt.NDArray[np.float64]:
    """Daily covariance (bp^2) of the key-rate moves outside stress: D R D, D = diag(sigma)."""
    return np.outer(TARGET_DAILY_VOL_BP, TARGET_DAILY_VOL_BP) * factor_correlation()


def _unit_student_t(rng: np.random.Generator, shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
    """Student-t draws scaled to unit variance: t * sqrt((nu - 2) / nu)."""
    return rng.standard_t(STUDENT_T_DOF, size=shape) * math.sqrt(
        (STUDENT_T_DOF - 2.0) / STUDENT_T_DOF
    )


def _regime_path(rng: np.random.Generator, length: int) -> FactorVector:
    """Volatility multipliers m_t of a Markov chain of regimes, scaled to mean(m^2) = 1."""
    cumulative = np.cumsum(REGIME_TRANSITIONS, axis=1)
    uniforms = rng.random(length)
    states = np.empty(length, dtype=np.intp)
    state = 1
    for t in range(length):
        state = int(np.searchsorted(cumulative[state], uniforms[t]))
        states[t] = min(state, len(REGIME_MULTIPLIERS) - 1)
    path = REGIME_MULTIPLIERS[states]
    return path / math.sqrt(float(np.mean(path**2)))


def _interpolate_anchors(anchors: dict[float, float]) -> FactorVector:
    tenors = sorted(anchors)
    return np.interp(np.log(KEY_TENORS), np.log(tenors), [anchors[t] for t in tenors])


def generate_scenarios(
    scenarios: int,
    seed: int | np.random.Generator,
    business_date: dt.date = DEFAULT_BUSINESS_DATE,
) -> ScenarioSet:
    """S daily key-rate moves (bp) ending on ``business_date``, ids the ISO dates, oldest first.

    See the module docstring for the model. Values are rounded to 1e-4 bp so that a book
    written to a case file and read back is the same book.
    """
    if scenarios < 1:
        raise ValueError("scenarios must be at least 1")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    days = business_days(scenarios, business_date)
    beta, gamma = _factor_loadings()
    factor_draws = _unit_student_t(rng, (scenarios, beta.shape[1]))
    idiosyncratic_draws = _unit_student_t(rng, (scenarios, len(KEY_TENORS)))
    multiplier = _regime_path(rng, scenarios)
    for first, last, extra in STRESS_WINDOWS:
        in_window = np.array([first <= day <= last for day in days])
        multiplier = np.where(in_window, multiplier * extra, multiplier)
    unit_moves = factor_draws @ beta.T + idiosyncratic_draws * gamma
    shocks: ScenarioMatrix = TARGET_DAILY_VOL_BP * multiplier[:, None] * unit_moves
    for row, day in enumerate(days):
        if day in STRESS_DAYS:
            # On a named stress day the stylised move dominates; the draw is a third of it.
            shocks[row] = shocks[row] / 3.0 + _interpolate_anchors(STRESS_DAYS[day])
    return ScenarioSet(ids=tuple(day.isoformat() for day in days), shocks=np.round(shocks, 4))


# --- bond maths -----------------------------------------------------------------------------


def _years(start: dt.date, end: dt.date) -> float:
    return (end - start).days / YEAR_DAYS


def _add_months(day: dt.date, months: int) -> dt.date:
    month_index = day.year * 12 + day.month - 1 + months
    year, month = divmod(month_index, 12)
    month += 1
    last_day = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
    return dt.date(year, month, min(day.day, last_day))


def key_rate_weights(times: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Linear-interpolation weights w (len(times), K) of each time on the key tenors."""
    t = np.atleast_1d(np.asarray(times, dtype=float))
    tenors = np.array(KEY_TENORS)
    weights = np.zeros((t.size, tenors.size))
    clipped = np.clip(t, tenors[0], tenors[-1])
    upper = np.clip(np.searchsorted(tenors, clipped, side="left"), 1, tenors.size - 1)
    lower = upper - 1
    share = (clipped - tenors[lower]) / (tenors[upper] - tenors[lower])
    rows = np.arange(t.size)
    weights[rows, lower] = 1.0 - share
    weights[rows, upper] += share
    return weights


def zero_rate(times: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """z(t) as a decimal: the key zero yields interpolated linearly, flat outside."""
    return key_rate_weights(times) @ (ZERO_CURVE / 100.0)


@dataclass(frozen=True, slots=True)
class CashFlows:
    times: npt.NDArray[np.float64]
    amounts: npt.NDArray[np.float64]

    @property
    def price(self) -> float:
        """Dirty price per unit par: sum CF exp(-z(t) t)."""
        return float(self.amounts @ np.exp(-zero_rate(self.times) * self.times))

    def key_rate_pv01(self) -> FactorVector:
        """d price / d key rate per +1 bp: -sum_cf w(t) t CF exp(-z(t) t) 1e-4."""
        discounted = self.amounts * np.exp(-zero_rate(self.times) * self.times)
        return -(key_rate_weights(self.times).T @ (self.times * discounted)) * BP


def cash_flows(
    maturity: dt.date, coupon_percent: float, on: dt.date, frequency_months: int = 6
) -> CashFlows:
    """Remaining coupons (coupon_percent / 100 / 2 per unit par) and the principal after ``on``."""
    dates = []
    day = maturity
    step = 0
    while day > on:
        dates.append(day)
        step += 1
        day = _add_months(maturity, -frequency_months * step)
    dates.reverse()
    times = np.array([_years(on, d) for d in dates])
    amounts = np.full(times.size, coupon_percent / 100.0 * frequency_months / 12.0)
    if coupon_percent == 0.0:
        amounts[:] = 0.0
    amounts[-1] += 1.0
    return CashFlows(times=times, amounts=amounts)


def conversion_factor(coupon_percent: float, months_to_maturity: int) -> float:
    """CME conversion factor: the price per unit par at a 6% yield (semi-annual), with the
    remaining term already rounded down (to months or quarters), n whole years and z months:

        v = z if z < 7 else z - 6,  a = 1.03^(-v/6),  b = (c/2) (6 - v)/6,
        d = 1.03^(-2n) if z < 7 else 1.03^(-(2n+1)),  e = (c/0.06)(1 - d),
        CF = a (c/2 + d + e) - b                                   (c the coupon as a decimal)
    """
    coupon = coupon_percent / 100.0
    years, months = divmod(months_to_maturity, 12)
    v = months if months < 7 else months - 6
    a = 1.03 ** (-v / 6.0)
    b = coupon / 2.0 * (6 - v) / 6.0
    d = 1.03 ** (-2 * years) if months < 7 else 1.03 ** (-(2 * years + 1))
    e = coupon / 0.06 * (1.0 - d)
    return a * (coupon / 2.0 + d + e) - b


# --- instrument catalogue -------------------------------------------------------------------

MONTH_CODES = "FGHJKMNQUVXZ"


@dataclass(frozen=True, slots=True)
class BondFutureSpec:
    """A Treasury future: face per contract, the CTD's remaining term and the CF rounding."""

    contract: str
    face: float
    ctd_years: float
    round_months: int  # 1: to whole months (TU, Z3N, FV); 3: to quarters (the others)
    option_prefix: str


BOND_FUTURES: dict[str, BondFutureSpec] = {
    spec.contract: spec
    for spec in (
        BondFutureSpec("TU", 200_000.0, 1.80, 1, "OZT"),
        BondFutureSpec("Z3N", 100_000.0, 2.80, 1, "OZ3"),
        BondFutureSpec("FV", 100_000.0, 4.20, 1, "OZF"),
        BondFutureSpec("TY", 100_000.0, 6.60, 3, "OZN"),
        BondFutureSpec("TN", 100_000.0, 9.45, 3, "OTN"),
        BondFutureSpec("US", 100_000.0, 15.2, 3, "OZB"),
        BondFutureSpec("TWE", 100_000.0, 19.3, 3, "OTW"),
        BondFutureSpec("UB", 100_000.0, 25.3, 3, "OUB"),
    )
}
SR3_USD_PER_BP = 25.0
ZQ_USD_PER_BP = 4_167.0 / 100.0


def _cusip_check_digit(base: str) -> str:
    """The ninth character of a CUSIP (the modulus-10 double-add-double check digit)."""
    total = 0
    for position, char in enumerate(base, start=1):
        value = int(char) if char.isdigit() else ord(char) - ord("A") + 10
        if position % 2 == 0:
            value *= 2
        total += value // 10 + value % 10
    return str((10 - total % 10) % 10)


def _third_wednesday(year: int, month: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(2 - first.weekday()) % 7 + 14)


def _contract_month_code(year: int, month: int) -> str:
    return f"{MONTH_CODES[month - 1]}{year % 10}"


def _quarterly_months(after: dt.date, count: int) -> list[tuple[int, int]]:
    """The next ``count`` March/June/September/December months whose IMM date is after ``after``."""
    months: list[tuple[int, int]] = []
    year, month = after.year, after.month
    while len(months) < count:
        if month % 3 == 0 and _third_wednesday(year, month) > after:
            months.append((year, month))
        month += 1
        if month > 12:
            year, month = year + 1, 1
    return months


def _normal_cdf(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _normal_pdf(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.exp(-0.5 * x**2) / math.sqrt(2.0 * math.pi)


def bachelier_price(
    forward: npt.NDArray[np.float64], strike: float, vol: float, expiry: float, call: bool
) -> npt.NDArray[np.float64]:
    """Normal-model option price: (F - K) N(d) + s n(d) for a call, (K - F) N(-d) + s n(d)
    for a put, s = vol sqrt(T), d = (F - K) / s."""
    spread = vol * math.sqrt(max(expiry, 1e-8))
    d = (forward - strike) / spread
    if call:
        intrinsic = (forward - strike) * _normal_cdf(d)
    else:
        intrinsic = (strike - forward) * _normal_cdf(-d)
    return intrinsic + spread * _normal_pdf(d)


class Catalogue:
    """The instruments a generated book can hold on one business date, built on demand.

    Every instrument is made once per id, so templates that reach for the same future share it.
    """

    def __init__(self, business_date: dt.date, scenarios: ScenarioSet, rng: np.random.Generator):
        self.business_date = business_date
        self.scenarios = scenarios
        self.rng = rng
        self.instruments: dict[str, Instrument] = {}
        self._cusips: set[str] = set()
        quarterly = _quarterly_months(business_date, 12)
        self.front_month = quarterly[0]
        self.quarterly = quarterly
        self._ctd: dict[tuple[str, tuple[int, int]], tuple[Instrument, float, float]] = {}

    # identifiers
    def _new_cusip(self, prefix: str) -> str:
        """A fresh CUSIP starting with ``prefix``; once 64 draws in a row collide (the few free
        characters after a long prefix run out in big books), the prefix gives up a character."""
        alphabet = list("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ")
        collisions = 0
        while True:
            body = prefix + "".join(self.rng.choice(alphabet, 8 - len(prefix)))
            cusip = body + _cusip_check_digit(body)
            if cusip not in self._cusips:
                self._cusips.add(cusip)
                return cusip
            collisions += 1
            if collisions % 64 == 0 and len(prefix) > 2:
                prefix = prefix[:-1]

    def _register(self, instrument: Instrument) -> Instrument:
        self.instruments.setdefault(instrument.id, instrument)
        return self.instruments[instrument.id]

    def _snap_maturity(self, years: float) -> dt.date:
        """A Treasury-like maturity (the 15th or the last day of a month) ``years`` ahead."""
        target = self.business_date + dt.timedelta(days=round(years * YEAR_DAYS))
        if target.day <= 22:
            return target.replace(day=15)
        return _add_months(target.replace(day=1), 1) - dt.timedelta(days=1)

    def _coupon_for(self, years: float) -> float:
        """An on-the-run-like coupon: the curve yield rounded to 1/8, sometimes an old low one."""
        if self.rng.random() < 0.25:
            return float(self.rng.choice([0.625, 1.25, 1.875, 2.375]))
        par_yield = float(zero_rate([years])[0]) * 100.0
        return round((par_yield + self.rng.normal(0.0, 0.25)) * 8.0) / 8.0

    # FICC securities
    def security(
        self, kind: InstrumentKind, years: float, coupon: float | None = None
    ) -> Instrument:
        """A new note, bond, bill, TIPS or STRIPS maturing ``years`` after the business date."""
        maturity = self._snap_maturity(years)
        if kind is InstrumentKind.BILL:
            coupon, prefix, flows = 0.0, "912797", cash_flows(maturity, 0.0, self.business_date)
        elif kind is InstrumentKind.STRIPS:
            coupon, prefix = None, "912803"
            flows = cash_flows(maturity, 0.0, self.business_date)
        else:
            coupon = self._coupon_for(years) if coupon is None else coupon
            if kind is InstrumentKind.TIPS:
                coupon = float(self.rng.choice([0.125, 0.625, 1.25, 1.75, 2.125]))
            prefix = "912810" if kind is InstrumentKind.BOND else "91282C"
            if kind is InstrumentKind.TIPS:
                prefix = "912828"
            flows = cash_flows(maturity, coupon, self.business_date)
        sensitivities = flows.key_rate_pv01()
        if kind is InstrumentKind.TIPS:
            sensitivities = 0.6 * sensitivities
        return self._register(
            Instrument(
                id=self._new_cusip(prefix),
                ccp=Ccp.FICC,
                kind=kind,
                maturity=maturity,
                coupon=coupon,
                sensitivities=sensitivities,
            )
        )

    def note(self, years: float) -> Instrument:
        """A fixed-coupon note (up to 10 years) or bond (longer)."""
        kind = InstrumentKind.NOTE if years <= 10.0 else InstrumentKind.BOND
        return self.security(kind, years)

    def repo(self, collateral: Instrument, term_days: int) -> Instrument:
        """Sponsored repo on ``collateral``: the collateral's rate risk per unit, a short term."""
        assert collateral.maturity is not None and collateral.sensitivities is not None
        return self._register(
            Instrument(
                id=f"RP-{collateral.id}",
                ccp=Ccp.FICC,
                kind=InstrumentKind.REPO,
                maturity=self.business_date + dt.timedelta(days=term_days),
                collateral_maturity=collateral.maturity,
                collateral_kind=collateral.kind,
                sensitivities=collateral.sensitivities.copy(),
            )
        )

    # CME futures and options
    def _delivery_month(self, offset: int) -> tuple[int, int]:
        return self.quarterly[offset]

    def cheapest_to_deliver(
        self, contract: str, offset: int = 0
    ) -> tuple[Instrument, float, float]:
        """The CTD note or bond of a bond future, its conversion factor and futures price."""
        key = (contract, self._delivery_month(offset))
        if key not in self._ctd:
            spec = BOND_FUTURES[contract]
            year, month = key[1]
            delivery = dt.date(year, month, 1)
            years = _years(self.business_date, delivery) + spec.ctd_years
            bond = self.note(years)
            assert bond.maturity is not None and bond.coupon is not None
            term_months = (bond.maturity.year - delivery.year) * 12 + (
                bond.maturity.month - delivery.month
            )
            term_months -= term_months % spec.round_months
            factor = conversion_factor(bond.coupon, term_months)
            flows = cash_flows(bond.maturity, bond.coupon, self.business_date)
            futures_price = flows.price * 100.0 / factor
            self._ctd[key] = (bond, factor, futures_price)
        return self._ctd[key]

    def bond_future(self, contract: str, offset: int = 0) -> Instrument:
        """A bond future: sensitivity per contract = CTD sensitivity * face / CF."""
        spec = BOND_FUTURES[contract]
        year, month = self._delivery_month(offset)
        future_id = f"{contract}{_contract_month_code(year, month)}"
        if future_id in self.instruments:
            return self.instruments[future_id]
        ctd, factor, _ = self.cheapest_to_deliver(contract, offset)
        assert ctd.sensitivities is not None
        return self._register(
            Instrument(
                id=future_id,
                ccp=Ccp.CME,
                kind=InstrumentKind.FUTURE,
                contract=contract,
                sensitivities=ctd.sensitivities * spec.face / factor,
            )
        )

    def _rate_future(
        self, contract: str, start: dt.date, end: dt.date, usd_per_bp: float, code: str
    ) -> Instrument:
        future_id = f"{contract}{code}"
        if future_id in self.instruments:
            return self.instruments[future_id]
        t1, t2 = _years(self.business_date, start), _years(self.business_date, end)
        weights = key_rate_weights([t1, t2])
        forward_sensitivity = (t2 * weights[1] - t1 * weights[0]) / (t2 - t1)
        return self._register(
            Instrument(
                id=future_id,
                ccp=Ccp.CME,
                kind=InstrumentKind.FUTURE,
                contract=contract,
                sensitivities=-usd_per_bp * forward_sensitivity,
            )
        )

    def sofr_future(self, offset: int) -> Instrument:
        """Three-month SOFR future on the ``offset``-th quarterly IMM period (USD 25 per bp)."""
        year, month = self.quarterly[offset]
        start = _third_wednesday(year, month)
        end_year, end_month = divmod(year * 12 + month - 1 + 3, 12)
        end = _third_wednesday(end_year, end_month + 1)
        code = _contract_month_code(year, month)
        return self._rate_future("SR3", start, end, SR3_USD_PER_BP, code)

    def fed_funds_future(self, offset: int) -> Instrument:
        """30-day Fed Funds future on the ``offset``-th calendar month after this one."""
        start = _add_months(self.business_date.replace(day=1), offset + 1)
        end = _add_months(start, 1)
        code = _contract_month_code(start.year, start.month)
        return self._rate_future("ZQ", start, end, ZQ_USD_PER_BP, code)

    def future_option(self, contract: str, call: bool, moneyness_points: float) -> Instrument:
        """An option on the second quarterly bond future, as a full P&L vector per contract.

        P&L[s] = face/100 * (V(F0 + dF[s], T - 1/252) - V(F0, T)), V the Bachelier price,
        dF[s] = (d_future @ shock[s]) / (face/100) the future's price move in points, and the
        normal vol from the target covariance: sqrt(d' Sigma d * 252) / (face/100).
        """
        spec = BOND_FUTURES[contract]
        future = self.bond_future(contract, offset=1)
        _, _, futures_price = self.cheapest_to_deliver(contract, offset=1)
        year, month = self.quarterly[1]
        strike = round((futures_price + moneyness_points) * 2.0) / 2.0
        option_id = (
            f"{spec.option_prefix}{_contract_month_code(year, month)}"
            f"{'C' if call else 'P'}{strike:g}"
        )
        if option_id in self.instruments:
            return self.instruments[option_id]
        assert future.sensitivities is not None
        point_value = spec.face / 100.0
        expiry_day = _add_months(dt.date(year, month, 1), -1) + dt.timedelta(days=20)
        expiry = max(_years(self.business_date, expiry_day), 2.0 / TRADING_DAYS)
        sensitivities = future.sensitivities
        daily_sd_usd = math.sqrt(float(sensitivities @ target_covariance() @ sensitivities))
        vol_points = daily_sd_usd * math.sqrt(TRADING_DAYS) / point_value
        price_moves = (self.scenarios.shocks @ future.sensitivities) / point_value
        today = bachelier_price(np.array([futures_price]), strike, vol_points, expiry, call)[0]
        tomorrow = bachelier_price(
            futures_price + price_moves, strike, vol_points, expiry - 1.0 / TRADING_DAYS, call
        )
        pnl = np.round(point_value * (tomorrow - today), 2)
        return self._register(
            Instrument(
                id=option_id, ccp=Ccp.CME, kind=InstrumentKind.OPTION, contract=contract, pnl=pnl
            )
        )


# --- book templates -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leg:
    """One leg a template adds: ``quantity`` of ``instrument``, ``xm_share`` of it in XM now."""

    instrument: Instrument
    quantity: float
    xm_share: float = 0.0


Template = Callable[[Catalogue, np.random.Generator], list[Leg]]

PAR_LOT = 1_000_000.0


def _par(rng: np.random.Generator, low_mm: int, high_mm: int) -> float:
    """A par amount in whole millions between ``low_mm`` and ``high_mm``."""
    return float(rng.integers(low_mm, high_mm + 1)) * PAR_LOT


def _dv01(instrument: Instrument) -> float:
    assert instrument.sensitivities is not None
    return float(instrument.sensitivities.sum())


def _hedge_contracts(cash: Instrument, par: float, future: Instrument, noise: float) -> float:
    """Whole contracts whose total DV01 offsets ``par`` of ``cash``, off by a relative ``noise``."""
    return float(-round(par * _dv01(cash) / _dv01(future) * (1.0 + noise)))


def _ficc_xm_share(rng: np.random.Generator) -> float:
    """How much of an eligible FICC leg already sits in XM: none, half or all of it."""
    return float(rng.choice([0.0, 0.5, 1.0], p=[0.3, 0.2, 0.5]))


def basis_trade(catalogue: Catalogue, rng: np.random.Generator) -> list[Leg]:
    """Long the CTD, short par / face * CF futures (the classic cash-futures basis)."""
    contract = str(rng.choice(list(BOND_FUTURES), p=[0.15, 0.05, 0.2, 0.25, 0.1, 0.1, 0.05, 0.1]))
    ctd, factor, _ = catalogue.cheapest_to_deliver(contract)
    future = catalogue.bond_future(contract)
    par = _par(rng, 50, 500)
    contracts = -round(par / BOND_FUTURES[contract].face * factor * (1.0 + rng.normal(0, 0.02)))
    return [Leg(ctd, par, _ficc_xm_share(rng)), Leg(future, float(contracts))]


def repo_basis_trade(catalogue: Catalogue, rng: np.random.Generator) -> list[Leg]:
    """Sponsored repo on the CTD, hedged with the future (a repo-financed basis position)."""
    contract = str(rng.choice(["FV", "TY", "TN", "US"]))
    ctd, factor, _ = catalogue.cheapest_to_deliver(contract)
    repo = catalogue.repo(ctd, term_days=int(rng.choice([30, 60, 91])))
    par = _par(rng, 50, 300)
    contracts = -round(par / BOND_FUTURES[contract].face * factor)
    return [Leg(repo, par, _ficc_xm_share(rng)), Leg(catalogue.bond_future(contract), contracts)]


def curve_trade(catalogue: Catalogue, rng: np.random.Generator) -> list[Leg]:
    """A DV01-neutral steepener or flattener: cash at one tenor against a future at another."""
    pairs = [(2.0, "TY"), (2.5, "US"), (5.0, "UB"), (9.0, "TU"), (20.0, "FV"), (7.0, "US")]
    years, contract = pairs[int(rng.integers(len(pairs)))]
    cash = catalogue.note(years * float(rng.uniform(0.9, 1.15)))
    future = catalogue.bond_future(contract)
    direction = 1.0 if rng.random() < 0.5 else -1.0
    par = direction * _par(rng, 50, 400)
    return [
        Leg(cash, par, _ficc_xm_share(rng)),
        Leg(future, _hedge_contracts(cash, par, future, float(rng.normal(0, 0.05)))),
    ]


def butterfly(catalogue: Catalogue, rng: np.random.Generator) -> list[Leg]:
    """2s5s10s or 5s10s30s in cash: belly short, wings long with half its DV01 each, and one
    of the three legs hedged in futures."""
    tenors = [(5.0, 2.0, 10.0), (10.0, 5.0, 30.0)][int(rng.integers(2))]  # belly, wings
    hedge_contract = {2.0: "TU", 5.0: "FV", 10.0: "TN", 30.0: "UB"}
    belly, short_wing, long_wing = (catalogue.note(y * rng.uniform(0.95, 1.05)) for y in tenors)
    belly_par = -_par(rng, 100, 400)
    belly_dv01 = belly_par * _dv01(belly)
    legs = [Leg(belly, belly_par, _ficc_xm_share(rng))]
    for wing in (short_wing, long_wing):
        wing_par = round(-0.5 * belly_dv01 / _dv01(wing) / PAR_LOT) * PAR_LOT
        legs.append(Leg(wing, wing_par, _ficc_xm_share(rng)))
    hedged = int(rng.integers(3))
    future = catalogue.bond_future(hedge_contract[tenors[hedged]])
    legs.append(
        Leg(future, _hedge_contracts(legs[hedged].instrument, legs[hedged].quantity, future, 0.0))
    )
    return legs


def mixed_with_ineligible_hedges(catalogue: Catalogue, rng: np.random.Generator) -> list[Leg]:
    """An eligible note and future, partly hedged by TIPS, STRIPS, a bill, a short note or
    options: positions that must stay standalone but offset risk there."""
    years = float(rng.uniform(4.0, 12.0))
    note = catalogue.note(years)
    par = _par(rng, 100, 400)
    contract = "TY" if years < 8.5 else "TN"
    future = catalogue.bond_future(contract)
    legs = [Leg(note, par, _ficc_xm_share(rng) if rng.random() < 0.5 else 0.0)]
    choice = int(rng.integers(4))
    if choice == 0:
        tips = catalogue.security(InstrumentKind.TIPS, years * rng.uniform(0.9, 1.1))
        legs.append(Leg(tips, -round(0.5 * par * _dv01(note) / _dv01(tips) / PAR_LOT) * PAR_LOT))
    elif choice == 1:
        strips = catalogue.security(InstrumentKind.STRIPS, years * rng.uniform(0.7, 1.0))
        legs.append(
            Leg(strips, -round(0.4 * par * _dv01(note) / _dv01(strips) / PAR_LOT) * PAR_LOT)
        )
    elif choice == 2:
        bill = catalogue.security(InstrumentKind.BILL, float(rng.uniform(0.1, 0.9)))
        legs.append(Leg(bill, _par(rng, 100, 500)))
        sofr = catalogue.sofr_future(int(rng.integers(0, 3)))
        legs.append(Leg(sofr, -float(rng.integers(100, 800))))
    else:
        call = bool(rng.random() < 0.5)
        option = catalogue.future_option(contract, call, float(rng.choice([-2.0, 0.0, 2.0])))
        legs.append(Leg(option, float(rng.integers(200, 2000)) * (-1.0 if call else 1.0)))
    # The eligible future comes last, so even a small book keeps an ineligible hedge.
    legs.append(Leg(future, _hedge_contracts(note, 0.6 * par, future, 0.0)))
    return legs


def front_end_hedge(catalogue: Catalogue, rng: np.random.Generator) -> list[Leg]:
    """Bills or a note inside a year (ineligible) hedged with a SOFR or Fed Funds strip."""
    if rng.random() < 0.5:
        cash = catalogue.security(InstrumentKind.BILL, float(rng.uniform(0.2, 0.95)))
    else:
        cash = catalogue.note(float(rng.uniform(0.3, 0.95)))
    par = _par(rng, 200, 1000)
    legs = [Leg(cash, par)]
    strip = [catalogue.sofr_future(i) for i in range(int(rng.integers(1, 4)))]
    if rng.random() < 0.5:
        strip.append(catalogue.fed_funds_future(int(rng.integers(0, 3))))
    cash_dv01 = par * _dv01(cash)
    for future in strip:
        legs.append(Leg(future, float(-round(cash_dv01 / len(strip) / _dv01(future)))))
    return legs


def options_overlay(catalogue: Catalogue, rng: np.random.Generator) -> list[Leg]:
    """A long cash bond hedged with short futures and a collar of options on the future."""
    contract = str(rng.choice(["FV", "TY", "US"]))
    ctd, factor, _ = catalogue.cheapest_to_deliver(contract)
    par = _par(rng, 50, 300)
    contracts = -round(par / BOND_FUTURES[contract].face * factor * 0.7)
    width = float(rng.choice([1.0, 2.0, 3.0]))
    return [
        Leg(ctd, par, _ficc_xm_share(rng)),
        Leg(catalogue.bond_future(contract), float(contracts)),
        Leg(catalogue.future_option(contract, False, -width), float(rng.integers(100, 1000))),
        Leg(catalogue.future_option(contract, True, width), -float(rng.integers(100, 1000))),
    ]


TEMPLATES: dict[str, tuple[Template, float]] = {
    "basis": (basis_trade, 0.30),
    "repo_basis": (repo_basis_trade, 0.05),
    "curve": (curve_trade, 0.20),
    "butterfly": (butterfly, 0.15),
    "mixed": (mixed_with_ineligible_hedges, 0.15),
    "front_end": (front_end_hedge, 0.08),
    "options": (options_overlay, 0.07),
}
"""Book templates and how often each is drawn."""


def _template_sequence(rng: np.random.Generator) -> Iterator[str]:
    """A basis trade, then a book with ineligible hedges, then templates drawn by weight."""
    yield "basis"
    yield "mixed"
    names = list(TEMPLATES)
    weights = np.array([TEMPLATES[name][1] for name in names])
    while True:
        yield names[int(rng.choice(len(names), p=weights / weights.sum()))]


# --- books ----------------------------------------------------------------------------------


def default_models(scenarios: int) -> dict[Ccp, MarginModel]:
    """FICC: ES 99% over 3 days on every scenario; CME: ES 99% over 2 days on the latest
    three quarters of them (a shorter lookback), as in the worked cases."""
    return {
        Ccp.FICC: MarginModel(
            lookback=scenarios, confidence=0.99, horizon_days=3.0, measure=Measure.ES
        ),
        Ccp.CME: MarginModel(
            lookback=max(1, (3 * scenarios) // 4),
            confidence=0.99,
            horizon_days=2.0,
            measure=Measure.ES,
        ),
    }


def generate_book(
    positions: int,
    scenarios: int,
    seed: int,
    business_date: dt.date = DEFAULT_BUSINESS_DATE,
    integral: bool = False,
    scenario_set: ScenarioSet | None = None,
    name: str | None = None,
) -> Book:
    """A customer book of exactly ``positions`` positions on ``scenarios`` daily scenarios.

    Templates (basis trades, curve trades, butterflies, books with ineligible hedges, front-end
    hedges, option overlays) add legs until the book holds ``positions`` instruments; a leg
    on an instrument already held adds to that position. Eligible FICC legs are partly in XM
    (none, half or all), futures are not. ``scenario_set`` reuses a scenario history (several
    accounts on one date); by default it is ``generate_scenarios(scenarios, seed, business_date)``.
    The first two templates are a basis trade and a book with ineligible hedges, so a book of
    four or more positions holds both eligible and ineligible ones.
    """
    if positions < 1:
        raise ValueError("positions must be at least 1")
    rng = np.random.default_rng(seed)
    scenario_rng, book_rng = rng.spawn(2)
    if scenario_set is None:
        scenario_set = generate_scenarios(scenarios, scenario_rng, business_date)
    elif scenario_set.size != scenarios:
        raise ValueError(f"scenario_set has {scenario_set.size} scenarios, not {scenarios}")
    if scenario_set.ids[-1] != business_date.isoformat():
        raise ValueError("scenario_set must end on the business date")
    catalogue = Catalogue(business_date, scenario_set, book_rng)
    member = ClearingMember(
        "FCM-SAMPLE", bd_fcm=True, cme_clearing_member=True, ficc_netting_member=True
    )
    customer = Customer(f"CUST-{seed}", xm_enrolled=True, ficc_account_type="SPONSORED")
    rulebook = default_rulebook(business_date)

    held: dict[str, list[float]] = {}  # instrument id -> [quantity, xm quantity]
    templates = _template_sequence(book_rng)
    attempts = 0
    while len(held) < positions:
        attempts += 1
        if attempts > 100 * positions + 100:
            raise RuntimeError("could not fill the book; the templates keep netting out")
        for leg in TEMPLATES[next(templates)][0](catalogue, book_rng):
            _add_leg(held, leg, positions, rulebook, member, customer, business_date)

    lot = {Ccp.FICC: PAR_LOT, Ccp.CME: 1.0}
    book_positions = tuple(
        Position(
            instrument=instrument_id,
            quantity=quantity,
            xm_quantity=xm_quantity,
            lot=lot[catalogue.instruments[instrument_id].ccp],
        )
        for instrument_id, (quantity, xm_quantity) in held.items()
    )
    instruments = {i: catalogue.instruments[i] for i in held}
    return Book(
        name=name or f"sample-{positions}x{scenarios}-seed{seed}",
        business_date=business_date,
        cycle=Cycle.EOD,
        clearing_member=member,
        customer=customer,
        factors=FACTORS,
        scenarios=scenario_set,
        instruments=instruments,
        positions=book_positions,
        models=default_models(scenarios),
        program=ProgramRules(savings_cap=0.8),
        options=SolveOptions(integral=integral),
    )


def _add_leg(
    held: dict[str, list[float]],
    leg: Leg,
    limit: int,
    rulebook: Rulebook,
    member: ClearingMember,
    customer: Customer,
    business_date: dt.date,
) -> None:
    """Add a leg to the book: a new position while there is room, or onto a held one unless
    that would flip or close it. Only eligible legs keep an XM share (in whole lots)."""
    instrument = leg.instrument
    if leg.quantity == 0:
        return
    lot = PAR_LOT if instrument.ccp is Ccp.FICC else 1.0
    eligibility = instrument_eligibility(rulebook, member, customer, instrument, business_date)
    eligible = eligibility.eligible
    xm = round(leg.quantity * leg.xm_share / lot) * lot if eligible else 0.0
    if instrument.id not in held:
        if len(held) < limit:
            held[instrument.id] = [leg.quantity, xm]
        return
    quantity, xm_quantity = held[instrument.id]
    merged = quantity + leg.quantity
    if merged * quantity <= 0:
        return
    merged_xm = xm_quantity + xm
    if merged_xm * merged < 0:
        merged_xm = 0.0
    if abs(merged_xm) > abs(merged):
        merged_xm = merged
    held[instrument.id] = [merged, merged_xm]


def generate_case(
    positions: int,
    scenarios: int,
    seed: int,
    business_date: dt.date = DEFAULT_BUSINESS_DATE,
    integral: bool = False,
) -> dict[str, Any]:
    """The case-file (format v1) form of :func:`generate_book`."""
    return book_to_dict(generate_book(positions, scenarios, seed, business_date, integral))


def sample_book_path() -> Any:
    """The bundled sample case file (an importlib.resources Traversable)."""
    return resources.files("xmargin.optimiser") / SAMPLE_BOOK_RESOURCE


def load_sample_book() -> Book:
    """The bundled sample book: 40 positions, 1,260 scenarios (see :data:`SAMPLE_BOOK_RESOURCE`)."""
    return parse_case(json.loads(sample_book_path().read_text()))
