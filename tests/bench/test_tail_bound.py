"""The tail-bound benchmark: the independent MILP's dual bound and the record's count."""

from __future__ import annotations

import importlib.util

import pytest

from tests.optimiser.independent_milp import independent_optimum
from xmargin.bench.tail_bound import _markdown
from xmargin.optimiser import SolveOptions, optimise
from xmargin.optimiser.sample import generate_book


def _row(seed: int, bound_above: float) -> dict[str, object]:
    return {
        "seed": seed,
        "positions": 30,
        "scenarios": 500,
        "whole_lot": {"above": 3e-6, "status": "TIME_LIMIT", "seconds": 5.0},
        "milp": {"above": 3e-6, "bound_above": bound_above, "optimal": False, "seconds": 60.0},
    }


def test_the_record_counts_books_whose_bound_clears_the_tolerance() -> None:
    markdown = _markdown([_row(1, 2.05e-6), _row(2, 1.2e-7)], 60.0, "highs")
    assert "On 1 its dual bound lies more than 1e-06 above the relaxation" in markdown
    assert "| 1 | 30 x 500 | 3.00 | TIME_LIMIT, 5.0 | 3.00 | 2.05 | limit, 60 s |" in markdown


SOLVERS = ["highs"] + (["scip"] if importlib.util.find_spec("pyscipopt") else [])


@pytest.mark.parametrize("solver", SOLVERS)
def test_the_milps_bound_lies_between_the_relaxation_and_its_proven_answer(solver: str) -> None:
    book = generate_book(8, 120, 7)
    relaxed = optimise(book, options=SolveOptions(integral=False))
    whole = optimise(book, options=SolveOptions(integral=True))
    found = independent_optimum(book, relaxed.problem.eligible, True, True, 60.0, solver=solver)
    assert found.status == "optimal"
    low = relaxed.optimised.total
    assert low * (1 - 1e-7) <= found.bound <= found.total * (1 + 1e-7)
    assert found.total == pytest.approx(whole.optimised.total, rel=1e-6)
