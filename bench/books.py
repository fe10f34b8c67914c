"""Benchmark books: the sample generator's accounts at any size, on a shared scenario history.

The sample generator fills one book from a finite universe of instruments (its pool of note
CUSIPs runs out near 1,100 notes, and a book of about 1,900 positions never completes), so a
bigger book is composed of sub-books of at most :data:`GENERATOR_CHUNK` positions with distinct
seeds on the same scenario set; the instruments of the second and later sub-books get a suffix
(``-2``, ``-3``, ...) so that every position is its own instrument.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from xmargin.optimiser.model import Book, Instrument, Position, ScenarioSet, SolveOptions
from xmargin.optimiser.sample import generate_book, generate_scenarios

__all__ = [
    "GENERATOR_CHUNK",
    "REFERENCE_FACTORS",
    "REFERENCE_POSITIONS",
    "REFERENCE_SCENARIOS",
    "REFERENCE_SEED",
    "make_book",
    "with_pnl_vectors",
]

REFERENCE_POSITIONS = 300
REFERENCE_SCENARIOS = 2520
REFERENCE_FACTORS = 10
REFERENCE_SEED = 20261124
GENERATOR_CHUNK = 1500
"""The largest book the benchmark asks the sample generator for in one call."""
SEED_STRIDE = 7919


def _suffixed(book: Book, suffix: str) -> tuple[dict[str, Instrument], list[Position]]:
    instruments = {
        f"{key}{suffix}": dataclasses.replace(instrument, id=f"{instrument.id}{suffix}")
        for key, instrument in book.instruments.items()
    }
    positions = [
        dataclasses.replace(position, instrument=f"{position.instrument}{suffix}")
        for position in book.positions
    ]
    return instruments, positions


def make_book(
    positions: int,
    scenarios: int,
    seed: int,
    integral: bool = False,
    scenario_set: ScenarioSet | None = None,
) -> Book:
    """A generated account of exactly ``positions`` positions on ``scenarios`` scenarios.

    ``scenario_set`` shares one history between accounts (by default it is generated from
    ``seed``). Books above :data:`GENERATOR_CHUNK` positions are composed of sub-books (see the
    module docstring).
    """
    if scenario_set is None:
        scenario_set = generate_scenarios(scenarios, seed)
    chunks = max(1, math.ceil(positions / GENERATOR_CHUNK))
    sizes = [positions // chunks + (1 if k < positions % chunks else 0) for k in range(chunks)]
    books = [
        generate_book(size, scenarios, seed + SEED_STRIDE * k, scenario_set=scenario_set)
        for k, size in enumerate(sizes)
    ]
    first = books[0]
    instruments = dict(first.instruments)
    all_positions = list(first.positions)
    for k, book in enumerate(books[1:], start=2):
        extra_instruments, extra_positions = _suffixed(book, f"-{k}")
        instruments.update(extra_instruments)
        all_positions.extend(extra_positions)
    return dataclasses.replace(
        first,
        name=f"bench-{positions}x{scenarios}-seed{seed}" + ("-integral" if integral else ""),
        instruments=instruments,
        positions=tuple(all_positions),
        options=SolveOptions(integral=integral),
    )


def with_pnl_vectors(book: Book, share: float, seed: int, noise: float = 0.0) -> Book:
    """``book`` with ``share`` of its instruments given by sensitivities (chosen at random) given
    as full P&L vectors instead: p = shocks @ d, plus, with ``noise``, independent normal noise
    of ``noise`` times the vector's standard deviation (what full revaluation adds beyond the
    factors: the book then has no low-rank structure)."""
    rng = np.random.default_rng(seed)
    shocks = book.scenarios.shocks
    keys = sorted(k for k, i in book.instruments.items() if i.sensitivities is not None)
    chosen = rng.choice(len(keys), round(share * len(keys)), replace=False)
    instruments = dict(book.instruments)
    for j in sorted(chosen.tolist()):
        instrument = instruments[keys[j]]
        assert instrument.sensitivities is not None
        pnl = shocks @ instrument.sensitivities
        if noise > 0:
            pnl = pnl + noise * pnl.std() * rng.standard_normal(pnl.size)
        instruments[keys[j]] = dataclasses.replace(instrument, sensitivities=None, pnl=pnl)
    return dataclasses.replace(book, instruments=instruments)
