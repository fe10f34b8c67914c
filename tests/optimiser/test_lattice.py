"""Lattice columns of the whole-lot MIP (optimiser.solvers.lattice): LLL gives a unimodular,
reduced change of basis, and the full-range MIP with the columns w = V k finds the same
optimum as without them."""

from __future__ import annotations

import time

import numpy as np
import pytest

from xmargin.optimiser import SolveOptions, build_problem
from xmargin.optimiser.margin import account_figures
from xmargin.optimiser.sample import generate_book
from xmargin.optimiser.solvers import highs_backend
from xmargin.optimiser.solvers.base import on_allowed_set
from xmargin.optimiser.solvers.lattice import inverse_unimodular, lll_reduce


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lll_gives_a_unimodular_reduced_basis(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # A knapsack-like lattice: identity over one long row, whose short vectors are the
    # integer combinations that nearly cancel in that row.
    m = 12
    weights = rng.integers(10_000, 100_000, size=m)
    basis = np.vstack((np.eye(m), 1_000.0 * weights[None, :]))
    u = lll_reduce(basis)
    v = inverse_unimodular(u)
    assert v is not None  # V U = I exactly, in integers
    assert abs(round(np.linalg.det(u.astype(float)))) == 1
    reduced = basis @ u
    r = np.linalg.qr(reduced, mode="r")
    mu = r / np.diag(r)[:, None]
    assert np.all(np.abs(np.triu(mu, 1)) <= 0.5 + 1e-9)  # size reduced
    for k in range(1, m):  # Lovasz condition, delta = 0.99
        assert 0.99 * r[k - 1, k - 1] ** 2 <= r[k - 1, k] ** 2 + r[k, k] ** 2 + 1e-6
    lengths = np.linalg.norm(reduced, axis=0)
    assert lengths.min() < 0.01 * np.linalg.norm(basis, axis=0).min()


def _full_range_mip(problem, lattice: bool):  # type: ignore[no-untyped-def]
    """The continuous phase, then the full-range whole-lot MIP from scratch (no local boxes),
    with or without lattice columns."""
    model = highs_backend._CuttingPlaneModel(problem)
    loop = highs_backend._Loop(None, time.perf_counter())
    model._cutting_loop(loop, integral=False)
    continuous_x = loop.best_x
    assert continuous_x is not None
    loop.best_x, loop.best_upper = None, np.inf
    model._set_integral()
    if lattice:
        assert model._lattice_applies()
        model._add_lattice_columns(continuous_x)
        assert model.lattice_inverse is not None
    model._cutting_loop(loop, integral=True)
    return model, loop


@pytest.mark.parametrize("seed", [3, 7, 11])
def test_lattice_columns_find_the_same_whole_lot_optimum(seed: int) -> None:
    book = generate_book(14, 250, seed)
    problem = build_problem(book, options=SolveOptions(integral=True))
    plain_model, plain = _full_range_mip(problem, lattice=False)
    model, found = _full_range_mip(problem, lattice=True)
    assert found.status is plain.status is highs_backend.Status.OPTIMAL
    assert found.best_x is not None and plain.best_x is not None
    assert np.all(on_allowed_set(problem, found.best_x))
    tolerance = 2 * highs_backend.MIP_GAP * max(1.0, abs(plain.best_upper))
    assert abs(found.best_upper - plain.best_upper) <= tolerance
    # the objective is the exact evaluator's, and never above the current allocation's
    figures = list(account_figures(problem, found.best_x, es_for_var=True).values())
    assert found.best_upper == pytest.approx(model._convex_objective(figures, found.best_x))
    current = model._convex_objective(
        list(account_figures(problem, problem.current_xm, es_for_var=True).values()),
        problem.current_xm,
    )
    assert found.best_upper <= current + 1e-9 * abs(current)
    # the MIP's lattice columns are V k at its last solution, whole numbers
    solution = np.asarray(model.highs.getSolution().col_value)
    k = solution[model.lot_columns]
    assert model.lattice_inverse is not None
    w = solution[model.lattice_columns]
    assert np.allclose(w, model.lattice_inverse @ k, atol=1e-6)
    assert np.allclose(k, np.round(k), atol=1e-6)


def test_lattice_only_for_small_books_without_a_transfer_limit() -> None:
    book = generate_book(14, 250, 3)
    limited = build_problem(book, options=SolveOptions(integral=True, max_transfers=3))
    assert not highs_backend._CuttingPlaneModel(limited)._lattice_applies()
    continuous = build_problem(book, options=SolveOptions(integral=False))
    assert not highs_backend._CuttingPlaneModel(continuous)._lattice_applies()
    large = build_problem(
        generate_book(highs_backend.LATTICE_MAX_POSITIONS + 30, 250, 3),
        options=SolveOptions(integral=True),
    )
    assert large.movable.sum() > highs_backend.LATTICE_MAX_POSITIONS
    assert not highs_backend._CuttingPlaneModel(large)._lattice_applies()
