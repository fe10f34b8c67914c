"""The sample-book generator: its scenarios meet the targets it claims, books are valid cases."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from tests.conftest import assert_tree_close
from xmargin.optimiser import (
    Ccp,
    InstrumentKind,
    book_to_dict,
    build_problem,
    evaluate,
    evaluate_eligibility,
    parse_case,
)
from xmargin.optimiser.sample import (
    BOND_FUTURES,
    FACTORS,
    SAMPLE_SEED,
    STRESS_DAYS,
    TARGET_DAILY_VOL_BP,
    Catalogue,
    cash_flows,
    conversion_factor,
    generate_book,
    generate_case,
    generate_scenarios,
    key_rate_weights,
    load_sample_book,
    sample_book_path,
)

SEEDS = (1, 2, 3)
VOL_BAND = 0.25  # realised daily vol within 25% of the target on a long history


@pytest.fixture(scope="module", params=SEEDS)
def long_history(request: pytest.FixtureRequest) -> np.ndarray:
    return generate_scenarios(2520, request.param).shocks


def test_scenario_ids_are_weekdays_ending_on_the_business_date() -> None:
    business_date = dt.date(2026, 11, 24)
    scenarios = generate_scenarios(300, 5, business_date)
    days = [dt.date.fromisoformat(i) for i in scenarios.ids]
    assert days[-1] == business_date
    assert days == sorted(days) and len(set(days)) == len(days)
    assert all(day.weekday() < 5 for day in days)
    assert scenarios.shocks.shape == (300, len(FACTORS))


def test_daily_vol_by_tenor_within_band_of_target(long_history: np.ndarray) -> None:
    realised = long_history.std(axis=0)
    ratio = realised / TARGET_DAILY_VOL_BP
    assert np.all(np.abs(ratio - 1.0) < VOL_BAND), dict(zip(FACTORS, ratio.round(3), strict=True))
    assert np.all((realised > 3.0) & (realised < 9.0))  # "roughly 4 to 8 bp a day"


def test_moves_have_fat_tails(long_history: np.ndarray) -> None:
    centred = long_history - long_history.mean(axis=0)
    excess_kurtosis = (centred**4).mean(axis=0) / centred.var(axis=0) ** 2 - 3.0
    assert np.all(excess_kurtosis > 0.5), excess_kurtosis


def test_curve_moves_are_correlated_like_a_yield_curve(long_history: np.ndarray) -> None:
    correlation = np.corrcoef(long_history.T)
    two, five, ten, thirty = (FACTORS.index(f"UST_{t}Y") for t in (2, 5, 10, 30))
    assert correlation[five, ten] > correlation[two, thirty] > 0.3
    assert correlation[five, ten] > 0.8


def test_volatility_clusters_in_regimes(long_history: np.ndarray) -> None:
    """The size of the moves is autocorrelated when volatility comes in regimes; for
    independent draws the lag-one autocorrelation would be about 0 (+- 0.02 on 2,520 days)."""
    size = np.abs(long_history).mean(axis=1)
    size = size - size.mean()
    lag_one = float(size[1:] @ size[:-1] / (size @ size))
    assert lag_one > 0.06


def test_stress_days_dominate_their_history() -> None:
    scenarios = generate_scenarios(2520, 11)
    row_of = {i: row for row, i in enumerate(scenarios.ids)}
    stress_rows = [row_of[d.isoformat()] for d in STRESS_DAYS if d.isoformat() in row_of]
    assert stress_rows, "a ten-year history must include March 2020 and March 2023"
    size = np.abs(scenarios.shocks).max(axis=1)
    assert np.median(size[stress_rows]) > np.quantile(size, 0.95)


def test_scenarios_are_deterministic_by_seed() -> None:
    first, again, other = (generate_scenarios(500, seed).shocks for seed in (8, 8, 9))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_books_are_deterministic_by_seed() -> None:
    assert generate_case(25, 300, 4) == generate_case(25, 300, 4)
    assert generate_case(25, 300, 4) != generate_case(25, 300, 5)


@pytest.mark.parametrize(
    ("positions", "scenarios", "seed"), [(4, 50, 0), (40, 500, 1), (150, 300, 2)]
)
def test_generated_books_parse_and_mix_eligible_with_ineligible(
    positions: int, scenarios: int, seed: int
) -> None:
    book = generate_book(positions, scenarios, seed)
    reparsed = parse_case(json.loads(json.dumps(book_to_dict(book))))
    assert len(reparsed.positions) == positions
    assert reparsed.scenarios.size == scenarios
    eligible = [e.eligible for e in evaluate_eligibility(reparsed)]
    assert any(eligible) and not all(eligible)
    ccps = {reparsed.instruments[p.instrument].ccp for p in reparsed.positions}
    assert ccps == {Ccp.FICC, Ccp.CME}
    # The current allocation: FICC legs partly in XM, futures not.
    for position in reparsed.positions:
        if reparsed.instruments[position.instrument].ccp is Ccp.CME:
            assert position.xm_quantity == 0
    if positions >= 40:
        assert any(p.xm_quantity != 0 for p in reparsed.positions)
    # Round trip through the case format keeps every figure.
    problem, reproblem = build_problem(book), build_problem(reparsed)
    assert evaluate(problem, problem.current_xm).total == pytest.approx(
        evaluate(reproblem, reproblem.current_xm).total, rel=1e-12
    )


def test_models_are_ficc_es_3_day_on_all_and_cme_es_2_day_on_a_shorter_lookback() -> None:
    book = generate_book(10, 800, 3)
    ficc, cme = book.models[Ccp.FICC], book.models[Ccp.CME]
    assert (ficc.lookback, ficc.horizon_days, ficc.confidence) == (800, 3.0, 0.99)
    assert cme.lookback < 800 and cme.horizon_days == 2.0 and cme.confidence == 0.99


def test_integral_flag_reaches_the_solve_options() -> None:
    assert generate_book(8, 100, 1, integral=True).options.integral
    assert not generate_book(8, 100, 1).options.integral


def test_bond_sensitivities_are_negative_and_grow_with_maturity() -> None:
    on = dt.date(2026, 11, 24)
    dv01 = [
        cash_flows(dt.date(2026 + years, 11, 15), 4.0, on).key_rate_pv01().sum()
        for years in (2, 5, 10, 30)
    ]
    assert all(d < 0 for d in dv01)
    assert dv01 == sorted(dv01, reverse=True)
    # A 10-year 4% note: about 0.08 price points per bp per 100 par, i.e. 8e-4 per unit par.
    assert 6e-4 < -dv01[2] < 9e-4


def test_key_rate_weights_sum_to_one_and_interpolate() -> None:
    weights = key_rate_weights([0.1, 2.0, 4.0, 40.0])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    three, five = FACTORS.index("UST_3Y"), FACTORS.index("UST_5Y")
    assert weights[2, three] == pytest.approx(0.5) and weights[2, five] == pytest.approx(0.5)


def test_conversion_factor_is_one_for_a_six_percent_coupon_and_below_one_under_it() -> None:
    assert conversion_factor(6.0, 120) == pytest.approx(1.0, abs=1e-12)
    assert conversion_factor(4.0, 78) < 1.0 < conversion_factor(7.0, 78)


def test_futures_sensitivity_is_ctd_times_face_over_conversion_factor() -> None:
    catalogue = Catalogue(
        dt.date(2026, 11, 24), generate_scenarios(50, 0), np.random.default_rng(0)
    )
    for contract, spec in BOND_FUTURES.items():
        ctd, factor, _ = catalogue.cheapest_to_deliver(contract)
        future = catalogue.bond_future(contract)
        assert ctd.sensitivities is not None and future.sensitivities is not None
        np.testing.assert_allclose(future.sensitivities, ctd.sensitivities * spec.face / factor)
    sofr = catalogue.sofr_future(1)
    assert sofr.sensitivities is not None
    assert sofr.sensitivities.sum() == pytest.approx(-25.0, rel=1e-9)  # USD 25 per bp


def test_options_are_full_pnl_vectors_with_convexity() -> None:
    scenarios = generate_scenarios(400, 3)
    catalogue = Catalogue(dt.date(2026, 11, 24), scenarios, np.random.default_rng(3))
    call = catalogue.future_option("TY", call=True, moneyness_points=0.0)
    future = catalogue.bond_future("TY", offset=1)
    assert (
        call.kind is InstrumentKind.OPTION and call.pnl is not None and call.sensitivities is None
    )
    assert future.sensitivities is not None
    futures_pnl = scenarios.shocks @ future.sensitivities
    # A long call gains with the future and is convex: a quadratic fit has a positive curvature.
    curvature, slope, _ = np.polyfit(futures_pnl, call.pnl, 2)
    assert 0.2 < slope < 0.8 and curvature > 0


def test_bundled_sample_book() -> None:
    book = load_sample_book()
    assert len(book.positions) == 40 and book.scenarios.size == 1260
    assert len(sample_book_path().read_bytes()) < 1_500_000
    eligible = [e.eligible for e in evaluate_eligibility(book)]
    assert any(eligible) and not all(eligible)
    kinds = {book.instruments[p.instrument].kind for p in book.positions}
    assert {InstrumentKind.NOTE, InstrumentKind.FUTURE, InstrumentKind.OPTION} <= kinds


def test_bundled_sample_book_is_the_generators_output() -> None:
    """The bundled file is ``xmargin sample --positions 40 --scenarios 1260 --seed SAMPLE_SEED``;
    regenerate it with that command if the generator changes."""
    bundled = json.loads(sample_book_path().read_text())
    # to 1e-12 relative: another OpenBLAS kernel moves the last bit of some figures
    assert_tree_close(json.loads(json.dumps(generate_case(40, 1260, SAMPLE_SEED))), bundled)


def test_big_books_get_unique_identifiers() -> None:
    """Past ~1,200 notes the 2 free characters after a 6-character CUSIP prefix run out; the
    generator must still finish, with every instrument id unique."""
    book = generate_book(2500, 60, seed=5)
    assert len(book.positions) == 2500
    ids = [position.instrument for position in book.positions]
    assert len(set(ids)) == len(ids)
