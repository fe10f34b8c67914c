"""Properties of the margin maths (margin-model.md) on generated books, with hypothesis.

Books are built directly from the dataclasses of ``model.py``: K in 1..4 factors, S in 20..200
scenarios, random lookback, confidence, horizon, measure, optional stress set and weight and
optional add-ons, FICC and CME positions given by sensitivities or by P&L vectors.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import CASES_DIR
from tests.optimiser.books import random_book
from xmargin.optimiser import (
    Book,
    CaseValidationError,
    Ccp,
    ClearingMember,
    Customer,
    Cycle,
    Instrument,
    InstrumentKind,
    MarginModel,
    Measure,
    Position,
    ProgramRules,
    ScenarioSet,
    build_problem,
    evaluate,
    load_case,
)
from xmargin.optimiser.margin import (
    FIGURES,
    account_quantities,
    attribute,
    expected_shortfall,
    marginal_margins,
    model_margin,
    model_slopes,
    state_at,
    tail_weights,
    value_at_risk,
    xm_margin,
)
from xmargin.optimiser.problem import ModelWindow, Problem, tail_count

Vector = npt.NDArray[np.float64]

PROPERTY_SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
REL = 1e-9
NON_NEGATIVE_FIGURES = (
    "total",
    "ficc_standalone",
    "cme_standalone",
    "xm",
    "S_F",
    "S_C",
    "C_F",
    "C_C",
    "ficc_collects",
    "cme_collects",
)


@dataclass(frozen=True)
class Generated:
    """A generated problem and a seeded source of portfolios on it."""

    problem: Problem
    seed: int

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


# --- the strategy ----------------------------------------------------------------------------


@st.composite
def margin_models(
    draw: st.DrawFn,
    ids: tuple[str, ...],
    n_factors: int,
    rng: np.random.Generator,
    measures: tuple[Measure, ...],
    zero_thresholds: bool,
) -> MarginModel:
    n_scenarios = len(ids)
    lookback = draw(st.integers(1, n_scenarios))
    confidence = draw(st.floats(0.5, 0.999))
    horizon = draw(st.floats(0.5, 10.0))
    measure = draw(st.sampled_from(measures))
    stress_ids: tuple[str, ...] = ()
    weight = 0.0
    if draw(st.booleans()):
        rows = draw(st.lists(st.integers(0, n_scenarios - 1), min_size=1, max_size=5, unique=True))
        stress_ids = tuple(ids[row] for row in rows)
        weight = draw(st.floats(0.0, 1.0))
    rate = threshold = None
    if draw(st.booleans()):
        rate = rng.uniform(0.0, 2.0, n_factors)
        threshold = np.zeros(n_factors) if zero_thresholds else rng.uniform(0.0, 50.0, n_factors)
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


@st.composite
def generated(
    draw: st.DrawFn,
    measures: tuple[Measure, ...] = (Measure.ES, Measure.VAR),
    zero_thresholds: bool = False,
) -> Generated:
    n_factors = draw(st.integers(1, 4))
    n_scenarios = draw(st.integers(20, 200))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    factors = tuple(f"F{k}" for k in range(n_factors))
    start = dt.date(2026, 1, 1)
    ids = tuple((start + dt.timedelta(days=s)).isoformat() for s in range(n_scenarios))
    shocks = 5.0 * rng.standard_t(df=4, size=(n_scenarios, n_factors))

    instruments: list[Instrument] = []
    n_ficc = draw(st.integers(1, 3))
    n_cme = draw(st.integers(1, 3))
    n_pnl = draw(st.integers(0, 2))
    for j in range(n_ficc):
        instruments.append(
            Instrument(
                id=f"NOTE{j}",
                ccp=Ccp.FICC,
                kind=InstrumentKind.NOTE,
                maturity=dt.date(2034, 5, 15),
                sensitivities=rng.normal(0.0, 1.0, n_factors),
            )
        )
    for j in range(n_cme):
        instruments.append(
            Instrument(
                id=f"FUT{j}",
                ccp=Ccp.CME,
                kind=InstrumentKind.FUTURE,
                contract="TY",
                sensitivities=rng.normal(0.0, 1.0, n_factors),
            )
        )
    drift = draw(st.sampled_from([0.0, 0.0, 3.0, -3.0]))
    for j in range(n_pnl):
        instruments.append(
            Instrument(
                id=f"OPT{j}",
                ccp=Ccp.CME if j % 2 == 0 else Ccp.FICC,
                kind=InstrumentKind.OPTION if j % 2 == 0 else InstrumentKind.BOND,
                contract="TY" if j % 2 == 0 else None,
                maturity=None if j % 2 == 0 else dt.date(2046, 11, 15),
                pnl=rng.normal(drift, 5.0, n_scenarios),
            )
        )
    positions = []
    for instrument in instruments:
        quantity = float(rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 100.0))
        positions.append(Position(instrument=instrument.id, quantity=quantity))

    models = {
        ccp: draw(margin_models(ids, n_factors, rng, measures, zero_thresholds)) for ccp in Ccp
    }
    book = Book(
        name="generated",
        business_date=dt.date(2026, 11, 24),
        cycle=Cycle.EOD,
        clearing_member=ClearingMember("FCM", True, True, True),
        customer=Customer("C", True, "SPONSORED"),
        factors=factors,
        scenarios=ScenarioSet(ids=ids, shocks=shocks),
        instruments={instrument.id: instrument for instrument in instruments},
        positions=tuple(positions),
        models=models,
        program=ProgramRules(savings_cap=draw(st.floats(0.0, 1.0))),
    )
    return Generated(problem=build_problem(book), seed=seed)


# --- helpers ---------------------------------------------------------------------------------


def margin(problem: Problem, window: ModelWindow, quantities: Vector) -> float:
    return model_margin(window, problem.losses(quantities), problem.exposure.T @ quantities).margin


def magnitude(problem: Problem, window: ModelWindow, quantities: Vector) -> float:
    """A bound on the size of the terms inside M, to scale float tolerances."""
    size = window.scale * float(np.max(np.abs(problem.losses(quantities))))
    if window.model.addon_rate is not None:
        size += float(window.model.addon_rate @ np.abs(problem.exposure.T @ quantities))
    return size


def slack(problem: Problem, window: ModelWindow, *portfolios: Vector) -> float:
    return REL * (1.0 + sum(magnitude(problem, window, q) for q in portfolios))


def random_portfolio(problem: Problem, rng: np.random.Generator) -> Vector:
    return rng.normal(0.0, 50.0, problem.n_positions) * rng.integers(0, 2, problem.n_positions)


def random_allocation(problem: Problem, rng: np.random.Generator) -> Vector:
    """An XM allocation with 0 <= y/q <= 1, often at the ends (0 where not eligible, which
    evaluate refuses)."""
    fraction = rng.choice([0.0, 1.0, rng.uniform()], size=problem.n_positions)
    fraction = np.where(rng.uniform(size=problem.n_positions) < 0.5, fraction, rng.uniform())
    return np.where(problem.eligible, fraction * problem.quantity, 0.0)


def rockafellar_uryasev(losses: Vector, n_tail: float) -> float:
    """min_t t + 1/n_tail * sum max(0, L - t), scanning t over the loss values."""
    candidates = losses[:, None]
    values = candidates[:, 0] + np.maximum(0.0, losses[None, :] - candidates).sum(axis=1) / n_tail
    return float(values.min())


# --- each model's margin: sublinear on ES, homogeneous on ES and VaR --------------------------


@PROPERTY_SETTINGS
@given(generated(measures=(Measure.ES,), zero_thresholds=True))
def test_es_margin_is_subadditive(case: Generated) -> None:
    problem, rng = case.problem, case.rng()
    for _ in range(3):
        a, b = random_portfolio(problem, rng), random_portfolio(problem, rng)
        for window in problem.models.values():
            both = margin(problem, window, a + b)
            apart = margin(problem, window, a) + margin(problem, window, b)
            assert both <= apart + slack(problem, window, a, b), window.ccp


@PROPERTY_SETTINGS
@given(generated(measures=(Measure.ES,)), st.floats(0.0, 1.0))
def test_es_margin_is_convex_with_addon_thresholds(case: Generated, weight: float) -> None:
    """Thresholds break homogeneity but not convexity (what keeps the problem an LP)."""
    problem, rng = case.problem, case.rng()
    a, b = random_portfolio(problem, rng), random_portfolio(problem, rng)
    for window in problem.models.values():
        mixed = margin(problem, window, weight * a + (1.0 - weight) * b)
        chord = weight * margin(problem, window, a) + (1.0 - weight) * margin(problem, window, b)
        assert mixed <= chord + slack(problem, window, a, b)


@PROPERTY_SETTINGS
@given(generated(zero_thresholds=True), st.floats(0.01, 100.0))
def test_margin_is_positively_homogeneous(case: Generated, factor: float) -> None:
    """M(c a) = c M(a) for c > 0, under ES and under VaR."""
    problem, rng = case.problem, case.rng()
    a = random_portfolio(problem, rng)
    for window in problem.models.values():
        scaled = margin(problem, window, factor * a)
        expected = factor * margin(problem, window, a)
        assert scaled == pytest.approx(expected, rel=1e-9, abs=factor * slack(problem, window, a))


def test_var_is_not_subadditive() -> None:
    """Why subadditivity is checked on ES only: two one-scenario losses, alpha = 0.99, N = 100."""
    losses_a = np.zeros(100)
    losses_a[0] = 100.0
    losses_b = np.zeros(100)
    losses_b[1] = 100.0
    n_tail = tail_count(0.99, 100)
    assert n_tail == 1.0
    assert value_at_risk(losses_a, n_tail) == 0.0
    assert value_at_risk(losses_b, n_tail) == 0.0
    assert value_at_risk(losses_a + losses_b, n_tail) == 100.0
    es_sum = expected_shortfall(losses_a, n_tail) + expected_shortfall(losses_b, n_tail)
    assert expected_shortfall(losses_a + losses_b, n_tail) <= es_sum


# --- the XM rule -----------------------------------------------------------------------------


def check_xm_rule(S_F: float, S_C: float, C_F: float, C_C: float, cap: float) -> None:
    figures = xm_margin(S_F, S_C, C_F, C_C, cap)
    standalone = S_F + S_C
    tol = REL * (1.0 + standalone + C_F + C_C)
    assert figures.margin <= standalone + tol
    assert figures.margin >= (1.0 - cap) * standalone - tol
    assert 0.0 <= figures.r <= cap
    assert figures.margin >= 0.0
    if standalone > 0:
        equivalent = min(standalone, max(C_F, C_C, (1.0 - cap) * standalone))
        assert figures.margin == pytest.approx(equivalent, rel=1e-12, abs=tol)
        assert figures.cap_binding == (min(figures.r_F, figures.r_C) >= cap)
    else:
        assert figures.margin == 0.0
        assert figures.r == 0.0
    assert figures.ficc_collects + figures.cme_collects == pytest.approx(figures.margin, abs=tol)
    swapped = xm_margin(S_F, S_C, C_C, C_F, cap)
    assert swapped.margin == figures.margin
    assert swapped.r == figures.r
    assert (swapped.r_F, swapped.r_C) == (figures.r_C, figures.r_F)
    assert swapped.cap_binding == figures.cap_binding


money = st.floats(0.0, 1e9, allow_nan=False, allow_infinity=False)


@PROPERTY_SETTINGS
@given(money, money, money, money, st.floats(0.0, 1.0))
def test_xm_rule_bounds_and_symmetry(
    S_F: float, S_C: float, C_F: float, C_C: float, cap: float
) -> None:
    check_xm_rule(S_F, S_C, C_F, C_C, cap)


@pytest.mark.parametrize(
    ("S_F", "S_C", "C_F", "C_C", "cap"),
    [
        (343.24, 0.0, 10.0, 20.0, 0.8),  # the published sample: the cap binds
        (100.0, 50.0, 200.0, 10.0, 0.8),  # combined worse than apart: no reduction
        (100.0, 50.0, 60.0, 90.0, 0.8),  # the more conservative clearing house applies
        (0.0, 0.0, 5.0, 5.0, 0.8),  # no standalone risk: XM margin 0
        (100.0, 0.0, 100.0, 100.0, 0.0),  # cap 0: never a reduction
        (100.0, 100.0, 0.0, 0.0, 1.0),  # cap 1: all of it
    ],
)
def test_xm_rule_on_edge_cases(S_F: float, S_C: float, C_F: float, C_C: float, cap: float) -> None:
    check_xm_rule(S_F, S_C, C_F, C_C, cap)


def test_xm_rule_published_sample() -> None:
    figures = xm_margin(343.24, 0.0, 10.0, 20.0, 0.8)
    assert figures.cap_binding
    assert figures.margin == pytest.approx(0.2 * 343.24)


@PROPERTY_SETTINGS
@given(generated())
def test_evaluated_xm_margin_within_bounds(case: Generated) -> None:
    problem, rng = case.problem, case.rng()
    cap = problem.savings_cap
    for _ in range(3):
        state = evaluate(problem, random_allocation(problem, rng))
        xm = state.xm
        standalone = xm.S_F + xm.S_C
        tol = REL * (1.0 + standalone)
        assert xm.margin <= standalone + tol
        assert xm.margin >= (1.0 - cap) * standalone - tol
        # the XM figures are the exact rule applied to the evaluated parts
        again = xm_margin(xm.S_F, xm.S_C, xm.C_F, xm.C_C, cap)
        assert again.margin == xm.margin
        # swapping which clearing house has the lower combined margin changes nothing
        swapped = xm_margin(xm.S_F, xm.S_C, xm.C_C, xm.C_F, cap)
        assert swapped.margin == xm.margin
        assert swapped.r == xm.r


@PROPERTY_SETTINGS
@given(generated())
def test_swapping_the_two_models_swaps_the_combined_margins(case: Generated) -> None:
    """C_F and C_C are the two models on the same XM portfolio: swap the models, they swap."""
    problem, rng = case.problem, case.rng()
    book = problem.book
    swapped_book = dataclasses.replace(
        book, models={Ccp.FICC: book.models[Ccp.CME], Ccp.CME: book.models[Ccp.FICC]}
    )
    swapped_problem = build_problem(swapped_book)
    allocation = random_allocation(problem, rng)
    one = evaluate(problem, allocation).xm
    two = evaluate(swapped_problem, allocation).xm
    assert (two.C_F, two.C_C) == (one.C_C, one.C_F)
    assert min(two.C_F, two.C_C) == min(one.C_F, one.C_C)


# --- never negative --------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(generated())
def test_margins_are_never_negative(case: Generated) -> None:
    problem, rng = case.problem, case.rng()
    for allocation in (np.zeros(problem.n_positions), problem.quantity.copy()):
        allocation = allocation * problem.eligible
        summary = evaluate(problem, allocation).summary()
        for key in NON_NEGATIVE_FIGURES:
            assert summary[key] >= 0.0, key
    for _ in range(3):
        state = evaluate(problem, random_allocation(problem, rng))
        summary = state.summary()
        for key in NON_NEGATIVE_FIGURES:
            assert summary[key] >= 0.0, key
        assert 0.0 <= float(summary["r"]) <= problem.savings_cap
        for name, figures in state.models.items():
            assert figures.margin >= 0.0, name
            assert figures.addons >= 0.0, name
        portfolio = random_portfolio(problem, rng)
        for window in problem.models.values():
            assert margin(problem, window, portfolio) >= 0.0
            assert margin(problem, window, -portfolio) >= 0.0


def test_a_portfolio_that_only_gains_has_zero_margin() -> None:
    ids = tuple(f"S{s}" for s in range(50))
    gains = np.linspace(1.0, 2.0, 50)
    book = Book(
        name="gains",
        business_date=dt.date(2026, 11, 24),
        cycle=Cycle.EOD,
        clearing_member=ClearingMember("FCM", True, True, True),
        customer=Customer("C", True, "SPONSORED"),
        factors=("F0",),
        scenarios=ScenarioSet(ids=ids, shocks=np.zeros((50, 1))),
        instruments={
            "OPT": Instrument(
                id="OPT", ccp=Ccp.CME, kind=InstrumentKind.OPTION, contract="TY", pnl=gains
            )
        },
        positions=(Position(instrument="OPT", quantity=10.0),),
        models={ccp: MarginModel(lookback=50, confidence=0.9, horizon_days=2.0) for ccp in Ccp},
    )
    problem = build_problem(book)
    window = problem.models[Ccp.CME]
    figures = model_margin(window, problem.losses(problem.quantity), np.zeros(1))
    assert figures.es < 0.0
    assert figures.margin == 0.0
    assert evaluate(problem, np.zeros(1)).total == 0.0
    # and the mirror image is margined: the floor is the only thing that clipped
    assert margin(problem, window, -problem.quantity) > 0.0


# --- ES, VaR and n_tail ----------------------------------------------------------------------

loss_values = st.one_of(
    st.integers(-50, 50).map(float),  # ties
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)


@PROPERTY_SETTINGS
@given(st.lists(loss_values, min_size=20, max_size=200), st.floats(0.5, 0.999), st.data())
def test_es_equals_rockafellar_uryasev(
    values: list[float], confidence: float, data: st.DataObject
) -> None:
    losses = np.array(values)
    n_tail = tail_count(confidence, losses.size)
    es = expected_shortfall(losses, n_tail)
    scale = 1.0 + float(np.max(np.abs(losses)))
    assert es == pytest.approx(rockafellar_uryasev(losses, n_tail), rel=1e-9, abs=1e-9 * scale)
    # ES is the minimum: any other t gives at least ES
    t = data.draw(st.floats(-2e6, 2e6))
    at_t = t + float(np.maximum(0.0, losses - t).sum()) / n_tail
    assert at_t >= es - 1e-9 * scale
    # the tail weights are a probability vector capped at 1/n_tail
    weights = tail_weights(losses, n_tail)
    assert weights.sum() == pytest.approx(1.0)
    assert np.all(weights >= 0.0)
    assert np.all(weights <= 1.0 / n_tail + 1e-12)
    # ES lies between VaR and the worst loss
    var = value_at_risk(losses, n_tail)
    assert var - 1e-9 * scale <= es <= float(losses.max()) + 1e-9 * scale
    assert var == float(np.sort(losses)[::-1][math.floor(n_tail)])


@PROPERTY_SETTINGS
@given(generated(measures=(Measure.ES,)))
def test_model_es_on_its_window_equals_rockafellar_uryasev(case: Generated) -> None:
    problem, rng = case.problem, case.rng()
    portfolio = random_portfolio(problem, rng)
    losses = problem.losses(portfolio)
    for window in problem.models.values():
        figures = model_margin(window, losses, problem.exposure.T @ portfolio)
        in_window = losses[window.window]
        assert in_window.size == window.model.lookback
        assert np.array_equal(in_window, losses[-window.model.lookback :])  # the most recent
        scale = 1.0 + float(np.max(np.abs(in_window)))
        assert figures.es == pytest.approx(
            rockafellar_uryasev(in_window, window.n_tail), rel=1e-9, abs=1e-9 * scale
        )


def test_n_tail_snapping_examples() -> None:
    assert (1.0 - 0.99) * 1000 != 10.0  # the float product is not whole...
    assert tail_count(0.99, 1000) == 10.0  # ...but n_tail is
    assert tail_count(0.99, 2500) == 25.0
    assert tail_count(0.975, 30) == pytest.approx(0.75)
    assert tail_count(0.99, 750) == pytest.approx(7.5)


def test_var_and_es_at_whole_n_tail() -> None:
    """N = 1000, alpha = 0.99: ES is the mean of exactly the 10 largest; N = 2500: VaR is the
    26th largest loss."""
    rng = np.random.default_rng(7)
    losses = rng.permutation(np.arange(1000.0))
    n_tail = tail_count(0.99, 1000)
    assert expected_shortfall(losses, n_tail) == pytest.approx(np.mean(np.arange(990.0, 1000.0)))
    assert value_at_risk(losses, n_tail) == 989.0
    losses = rng.permutation(np.arange(2500.0))
    assert value_at_risk(losses, tail_count(0.99, 2500)) == 2500.0 - 26.0


@PROPERTY_SETTINGS
@given(st.integers(1, 5000), st.data())
def test_n_tail_snaps_to_whole_numbers(n_scenarios: int, data: st.DataObject) -> None:
    whole = data.draw(st.integers(1, n_scenarios - 1)) if n_scenarios > 1 else 0
    if whole:
        confidence = 1.0 - whole / n_scenarios
        assert tail_count(confidence, n_scenarios) == float(whole)
    confidence = data.draw(st.floats(0.5, 0.9999))
    n_tail = tail_count(confidence, n_scenarios)
    raw = (1.0 - confidence) * n_scenarios
    assert abs(n_tail - raw) <= 1e-9
    if n_tail != round(n_tail):
        assert n_tail == raw


@PROPERTY_SETTINGS
@given(st.integers(1, 50), st.integers(2, 20), st.integers(0, 2**32 - 1))
def test_es_at_whole_n_tail_is_the_mean_of_the_worst(whole: int, multiple: int, seed: int) -> None:
    n_scenarios = whole * multiple
    losses = np.random.default_rng(seed).normal(0.0, 1e5, n_scenarios)
    n_tail = tail_count(1.0 - whole / n_scenarios, n_scenarios)
    worst = np.sort(losses)[::-1]
    assert expected_shortfall(losses, n_tail) == pytest.approx(float(worst[:whole].mean()))
    assert value_at_risk(losses, n_tail) == float(worst[whole])


# --- attribution -----------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(generated())
def test_attribution_adds_up(case: Generated) -> None:
    problem, rng = case.problem, case.rng()
    allocation = random_allocation(problem, rng)
    attribution = attribute(problem, allocation)
    state = evaluate(problem, allocation)
    model_of = {
        "ficc_standalone": ("ficc_standalone", Ccp.FICC),
        "cme_standalone": ("cme_standalone", Ccp.CME),
        "xm_ficc_model": ("C_F", Ccp.FICC),
        "xm_cme_model": ("C_C", Ccp.CME),
    }
    assert set(attribution.shares) == set(model_of)
    for account, shares in attribution.shares.items():
        total = attribution.totals[account]
        size = 1.0 + float(np.abs(shares).sum())
        assert float(shares.sum()) == pytest.approx(total, rel=1e-9, abs=1e-9 * size), account
        figures_name, ccp = model_of[account]
        window = problem.models[ccp]
        expected = window.scale * state.models[figures_name].es
        assert total == pytest.approx(expected, rel=1e-9, abs=1e-9 * size), account
    # a position outside an account has no share of it
    standalone = problem.quantity - allocation
    held_standalone = np.where(problem.is_ficc, standalone, 0.0)
    assert np.all(attribution.shares["ficc_standalone"][held_standalone == 0.0] == 0.0)
    assert np.all(attribution.shares["xm_ficc_model"][allocation == 0.0] == 0.0)


def test_marginal_margins_of_a_portfolio_neutral_to_the_stress_scenarios() -> None:
    """An exposure almost orthogonal to both CME stress scenarios, 1e9-1e11 USD gross: the
    stress loss sits at rounding level, where the state's figures (one matrix product) and
    the slopes' own losses (another) disagree in the last bits. The slopes must not depend on
    which product the figures came from (this raised a zero-size max before)."""
    checked = 0
    for seed in range(60):
        book = random_book(seed, n_positions=12, n_scenarios=120)
        if book.models[Ccp.CME].stress_weight == 0:
            continue
        problem = build_problem(book)
        window = problem.models[Ccp.CME]
        if window.stress_rows.size < 2:
            continue
        stress_shocks = problem.shocks[window.stress_rows[:2]]
        direction = np.linalg.svd(stress_shocks)[2][-1]  # orthogonal to both
        rng = np.random.default_rng(seed)
        for scale in (1e9, 1e10, 1e11):
            quantity, *_ = np.linalg.lstsq(problem.exposure.T, direction * scale, rcond=None)
            quantity[problem.pnl_columns] = 0.0
            quantity += rng.normal(size=quantity.size) * 1e-3
            state = state_at(problem, quantity)  # quantities built for the test, not held
            for slopes in marginal_margins(problem, state):  # NaN: ineligible in XM
                assert np.all(np.isfinite(slopes[~np.isnan(slopes)]))
            held = account_quantities(problem, quantity)
            for name, ccp, account in FIGURES:
                if ccp is Ccp.CME:
                    given = model_slopes(problem, window, held[account], state.models[name])
                    fresh = model_slopes(problem, window, held[account])
                    np.testing.assert_allclose(given, fresh, rtol=1e-9, atol=1e-9)
            checked += 1
    assert checked >= 10


def _case_03() -> Problem:
    return build_problem(load_case(CASES_DIR / "03-mixed-ineligible-hedges.json"))


@pytest.mark.parametrize(
    "allocation, field",
    [
        (lambda q, e: np.full(q.size, np.nan), "xm_quantity[0]"),
        (lambda q, e: np.where(np.arange(q.size) == 0, np.inf, 0.0), "xm_quantity[0]"),
        (lambda q, e: 2.0 * q, "xm_quantity[0]"),  # beyond the holding
        (lambda q, e: -q, "xm_quantity[0]"),  # the other sign
        (lambda q, e: np.where(e, 0.0, q), "xm_quantity[1]"),  # not eligible, in XM
        (lambda q, e: q[:-1], "xm_quantity"),  # one short
        (lambda q, e: [str(x) for x in q], "xm_quantity"),  # strings were read as numbers
        (lambda q, e: np.ones(q.size, dtype=bool), "xm_quantity"),  # booleans as 1.0
        (lambda q, e: None, "xm_quantity"),
    ],
    ids=[
        "nan",
        "inf",
        "twice the holding",
        "other sign",
        "ineligible",
        "short",
        "strings",
        "booleans",
        "None",
    ],
)
def test_evaluate_and_attribute_refuse_an_allocation_the_contract_does_not_allow(
    allocation: object, field: str
) -> None:
    """Each was answered with a figure (nan, or a margin of a state no customer can hold)."""
    problem = _case_03()
    assert not problem.eligible[1]  # the TIPS
    given_ = allocation(problem.quantity, problem.eligible)  # type: ignore[operator]
    for function in (evaluate, attribute):
        with pytest.raises(CaseValidationError) as caught:
            function(problem, given_)
        assert caught.value.field == field, caught.value
    within = np.where(problem.eligible, problem.quantity * (1 + 1e-12), 0.0)  # round-off: taken
    assert math.isfinite(evaluate(problem, within).total)
