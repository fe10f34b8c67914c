"""An answer called optimal is checked against allowed allocations found by an independent MILP
of margin-model.md (scipy.optimize.milp, full Rockafellar-Uryasev, not the project's solvers):
each witness below is an allowed allocation whose exact total lies below what HiGHS's MIP once
called optimal. The witness is evaluated by the exact evaluator; nothing else is taken from it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from xmargin.bench.books import with_pnl_vectors
from xmargin.optimiser import AnswerSource, Book, Ccp, SolveOptions, evaluate, optimise
from xmargin.optimiser.sample import generate_book
from xmargin.optimiser.solvers.base import on_allowed_set


def _stress_only_ficc_book() -> Book:
    """7 positions on 100 scenarios, 60% of the instruments as P&L vectors; FICC's margin is
    its one stress scenario alone (stress_weight 1): whole lots, 6 integer columns."""
    book = with_pnl_vectors(generate_book(7, 100, 30), 0.6, 30, noise=0.2)
    ficc = dataclasses.replace(book.models[Ccp.FICC], stress_ids=("2026-09-01",), stress_weight=1.0)
    return dataclasses.replace(book, models={**book.models, Ccp.FICC: ficc}, options=SolveOptions())


# Whole lots in XM of the witness (every other position: none).
WITNESS_LOTS = {
    "91282CPG0": 13,
    "91282CCK5": 119,
    "91282CK34": -53,
    "FVZ6": -616,
    "TNZ6": -1668,
    "TYZ6": 1105,
}


@pytest.mark.slow
def test_a_whole_lot_optimum_lies_below_an_allowed_allocation() -> None:
    """HiGHS 1.16's MIP presolve called this book's whole-lot MIP optimal 2.8e-6 above the
    witness (its dual bound at its own answer; presolve off finds lower): a claim is now solved
    again without MIP presolve. The time limit leaves the proof room on a loaded machine (the
    default tail budget would stop it honestly unproven)."""
    book = _stress_only_ficc_book()
    result = optimise(book, options=dataclasses.replace(book.options, time_limit=300.0))
    problem = result.problem
    lots = [WITNESS_LOTS.get(position, 0) for position in problem.position_ids]
    witness = np.array(lots, dtype=float) * problem.lot
    assert on_allowed_set(problem, witness).all()
    assert result.stats.source is AnswerSource.OPTIMUM
    assert on_allowed_set(problem, result.allocation).all()
    witness_total = evaluate(problem, witness).total
    assert result.optimised.total <= witness_total * (1 + 1e-9)
    assert result.stats.bound <= result.optimised.total * (1 + 1e-9)
