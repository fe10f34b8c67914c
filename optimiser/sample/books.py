"""Book templates (basis, curve, butterfly, ...) and the generator of whole sample books."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from ..case_format import book_to_dict, parse_case
from ..eligibility import Rulebook, default_rulebook, instrument_eligibility
from ..model import (
    Book,
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
    SolveOptions,
)
from .instruments import BOND_FUTURES, Catalogue
from .scenarios import DEFAULT_BUSINESS_DATE, FACTORS, generate_scenarios

SAMPLE_BOOK_RESOURCE = "data/sample-book.json"
"""The bundled sample book: ``generate_case(40, 1260, seed=SAMPLE_SEED)``."""
SAMPLE_SEED = 20261124


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
