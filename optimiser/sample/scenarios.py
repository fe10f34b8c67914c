"""Synthetic key-rate scenario history.

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
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import numpy.typing as npt

from ..model import (
    FactorVector,
    ScenarioMatrix,
    ScenarioSet,
)

KEY_TENORS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 20.0, 30.0)
"""Key-rate tenors in years."""
FACTORS: tuple[str, ...] = tuple(f"UST_{tenor:g}Y" for tenor in KEY_TENORS)
TARGET_DAILY_VOL_BP: FactorVector = np.array([4.0, 4.5, 5.0, 6.5, 7.0, 7.5, 7.5, 7.0, 6.5, 6.5])
"""The daily volatility (bp) each key rate's moves are built to have, before stress days."""
STUDENT_T_DOF = 5.0
DEFAULT_BUSINESS_DATE = dt.date(2026, 11, 24)

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
