"""Small random books for property tests of the solvers (numpy-generated from a seed)."""

from __future__ import annotations

import datetime as dt

import numpy as np

from xmargin.optimiser import (
    Book,
    Ccp,
    ClearingMember,
    Customer,
    Cycle,
    Instrument,
    InstrumentKind,
    MarginModel,
    Mode,
    Position,
    ProgramRules,
    ScenarioSet,
    SolveOptions,
)

BUSINESS_DATE = dt.date(2026, 11, 24)


def random_book(
    seed: int,
    n_positions: int = 6,
    n_scenarios: int = 120,
    n_factors: int = 3,
    integral: bool = False,
    mode: Mode = Mode.JOINT,
) -> Book:
    """A book of notes, futures, an ineligible TIPS and an option on a few factors.

    Notes and futures load on neighbouring factors with opposite signs, so they partly hedge
    each other; the current allocation puts some notes in XM.
    """
    rng = np.random.default_rng(seed)
    shocks = rng.standard_t(4, (n_scenarios, n_factors)) * rng.uniform(2, 8, n_factors)
    # Scenario ids are dates, oldest first (the case format's rule), ending the day before.
    ids = tuple(
        (BUSINESS_DATE - dt.timedelta(days=n_scenarios - i)).isoformat() for i in range(n_scenarios)
    )
    instruments: dict[str, Instrument] = {}
    positions: list[Position] = []
    kinds = ["NOTE", "FUTURE", "NOTE", "FUTURE", "TIPS", "OPTION"]
    for i in range(n_positions):
        kind = kinds[i % len(kinds)] if i < len(kinds) else rng.choice(["NOTE", "FUTURE"])
        sensitivity = np.zeros(n_factors)
        factor = int(rng.integers(n_factors))
        sensitivity[factor] = -rng.uniform(2e-4, 1e-3)
        sensitivity[(factor + 1) % n_factors] = -rng.uniform(0, 3e-4)
        name = f"{kind}{i}"
        if kind in ("NOTE", "TIPS"):
            instruments[name] = Instrument(
                id=name,
                ccp=Ccp.FICC,
                kind=InstrumentKind(kind),
                maturity=dt.date(2033, 5, 15),
                coupon=4.0,
                sensitivities=sensitivity,
            )
            quantity = float(rng.integers(-40, 41) or 7) * 1e6
            in_xm = kind == "NOTE" and rng.random() < 0.5
            positions.append(Position(name, quantity, quantity if in_xm else 0.0, lot=1e6))
        elif kind == "FUTURE":
            instruments[name] = Instrument(
                id=name,
                ccp=Ccp.CME,
                kind=InstrumentKind.FUTURE,
                contract="TY",
                sensitivities=sensitivity * 1e5,
            )
            positions.append(Position(name, float(rng.integers(-400, 401) or 5), lot=1.0))
        else:
            delta = shocks @ sensitivity * 8e4
            instruments[name] = Instrument(
                id=name,
                ccp=Ccp.CME,
                kind=InstrumentKind.OPTION,
                contract="TY",
                pnl=delta + 0.002 * delta**2,
            )
            positions.append(Position(name, float(rng.integers(-50, 51) or 3), lot=1.0))
    lookback = int(rng.integers(n_scenarios // 2, n_scenarios + 1))
    stress = tuple(ids[int(j)] for j in rng.choice(n_scenarios, 2, replace=False))
    models = {
        Ccp.FICC: MarginModel(lookback=n_scenarios, confidence=0.97, horizon_days=3),
        Ccp.CME: MarginModel(
            lookback=lookback,
            confidence=float(rng.choice([0.95, 0.975, 0.99])),
            horizon_days=2,
            stress_ids=stress,
            stress_weight=float(rng.choice([0.0, 0.25])),
        ),
    }
    return Book(
        name=f"random-{seed}",
        business_date=BUSINESS_DATE,
        cycle=Cycle.EOD,
        clearing_member=ClearingMember("FCM", True, True, True),
        customer=Customer("CUST", True, "SPONSORED"),
        factors=tuple(f"f{k}" for k in range(n_factors)),
        scenarios=ScenarioSet(ids=ids, shocks=shocks),
        instruments=instruments,
        positions=tuple(positions),
        models=models,
        program=ProgramRules(savings_cap=0.8),
        options=SolveOptions(integral=integral, mode=mode),
    )
