"""Synthetic Treasury and futures instruments: bond maths, CUSIPs, option pricing, the catalogue.

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
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..model import (
    Ccp,
    FactorVector,
    Instrument,
    InstrumentKind,
    ScenarioSet,
)
from .scenarios import KEY_TENORS, target_covariance

ZERO_CURVE: FactorVector = np.array([3.90, 3.80, 3.60, 3.50, 3.50, 3.60, 3.80, 4.10, 4.60, 4.70])
"""Stylised zero yields (%, continuous compounding) at the key tenors, used to price."""
YEAR_DAYS = 365.25
BP = 1e-4
TRADING_DAYS = 252


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
        return self._future(future_id, contract, ctd.sensitivities * spec.face / factor)

    def _future(self, future_id: str, contract: str, sensitivities: FactorVector) -> Instrument:
        """A CME future with these sensitivities (USD per contract per bp), registered."""
        return self._register(
            Instrument(
                id=future_id,
                ccp=Ccp.CME,
                kind=InstrumentKind.FUTURE,
                contract=contract,
                sensitivities=sensitivities,
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
        return self._future(future_id, contract, -usd_per_bp * forward_sensitivity)

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
