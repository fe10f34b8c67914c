"""The exact-VaR phase's window MILP (solvers.var_window_mip) against the independent MILP."""

from __future__ import annotations

import dataclasses
import importlib
import math
import time

import numpy as np
import pytest

from tests.optimiser.independent_milp import solve_independent
from xmargin.bench.var_gap import var_book
from xmargin.optimiser import SolveOptions, cancellation, optimise
from xmargin.optimiser.margin import var_window_losses
from xmargin.optimiser.model import Book, Ccp, Measure
from xmargin.optimiser.problem import PositionVector, Problem, build_problem
from xmargin.optimiser.results import transfers_between
from xmargin.optimiser.solvers import var_window_mip
from xmargin.optimiser.solvers.base import on_allowed_set
from xmargin.optimiser.solvers.local_search import exact_objective
from xmargin.optimiser.solvers.var_window_mip import (
    candidate_scenarios,
    improve_by_window_mip,
    solve_window_mip,
)


def _optimum(book, problem, integral: bool) -> float:  # type: ignore[no-untyped-def]
    return min(
        solve_independent(book, problem.eligible, integral, reduction, time_limit=120.0)[0]
        for reduction in (True, False)
    )


def test_over_the_whole_window_the_milp_is_the_exact_var_problem() -> None:
    """With every window scenario a candidate the window MILP is the exact-VaR problem: on
    book 112 (7 positions, 100 scenarios, FICC VaR 99%, continuous), from the current
    allocation, its better branch's answer is the independent MILP's optimum (both measured
    8,294,593.07 USD; here to a relative 1e-6)."""
    book = dataclasses.replace(var_book(112), options=SolveOptions(integral=False))
    problem = build_problem(book)
    every = {
        name: np.ones(losses.size, dtype=bool)
        for name, losses in var_window_losses(problem, problem.current_xm).items()
    }
    answers = [
        solve_window_mip(problem, problem.current_xm, every, reduction, time.perf_counter() + 120)
        for reduction in (True, False)
    ]
    found = min(answer.objective for answer in answers if answer is not None)
    assert found == pytest.approx(_optimum(book, problem, False), rel=1e-6)


def _first_path_end(book: Book) -> tuple[Problem, PositionVector, float]:
    """The problem, and the end of the exact-VaR phase's first path (local search, majorant
    rounds, local search; no deadline: deterministic) from the ES stand-in's answer (the same
    book with every model measuring ES)."""
    stand_in = dataclasses.replace(
        book,
        models={
            ccp: dataclasses.replace(model, measure=Measure.ES)
            for ccp, model in book.models.items()
        },
    )
    problem = build_problem(book)
    phase = importlib.import_module("xmargin.optimiser.optimise")
    end, value, _ = phase._var_search_path(
        problem, optimise(stand_in).allocation, ("search", "majorant", "search"), math.inf
    )
    return problem, end, value


def test_the_window_milp_leaves_the_basin_the_phases_paths_end_in() -> None:
    """Book 102 (14 positions, 100 scenarios, FICC and CME VaR 99%, continuous): the first
    path from the ES stand-in's answer ends 4.7e-4 above the independent MILP's optimum (the
    whole phase without the window MILP ended there in every measurement of 2026-12-02); the
    MILP over the f + 6 largest losses of each VaR figure at that end reaches it (8e-14
    measured, 0.2 s). Held here to 1e-6, against more than 1e-4 for the end."""
    book = dataclasses.replace(var_book(102), options=SolveOptions(integral=False))
    problem, end, value = _first_path_end(book)
    optimum = _optimum(book, problem, False)
    assert value > optimum * (1 + 1e-4)
    answer = improve_by_window_mip(problem, end, value, time.perf_counter() + 60, True)
    assert answer is not None
    assert optimum * (1 - 1e-6) <= answer.objective <= optimum * (1 + 1e-6)


def test_the_phase_gives_the_window_milp_its_share_of_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In ``optimise`` the MILP runs once, from the paths' best end, with a deadline inside
    the phase's (max(2 s, the solve's time)); what it answers is taken only when lower."""
    phase = importlib.import_module("xmargin.optimiser.optimise")
    deadlines: list[float] = []
    calls: list[tuple[float, float]] = []
    unbounded = phase._var_phase_deadline
    monkeypatch.setattr(
        phase,
        "_var_phase_deadline",
        lambda started, deadline: deadlines.append(unbounded(started, deadline)) or deadlines[-1],
    )
    real = var_window_mip.improve_by_window_mip

    def spy(problem, x, value, deadline, both):  # type: ignore[no-untyped-def]
        calls.append((deadline, value))
        return real(problem, x, value, deadline, both)

    monkeypatch.setattr(var_window_mip, "improve_by_window_mip", spy)
    book = dataclasses.replace(var_book(102), options=SolveOptions(integral=False))
    result = optimise(book)
    assert len(calls) == 1 and len(deadlines) == 1
    assert calls[0][0] <= deadlines[0]
    assert exact_objective(result.problem, result.allocation) <= calls[0][1]


@pytest.mark.parametrize("integral", [False, True])
def test_the_window_milps_answer_is_allowed_lower_and_judged_exactly(integral: bool) -> None:
    """Under a transfer limit of 2 (whole lots or not) the MILP's answer is on the allowed
    set, moves at most 2 positions, and its reported objective is the exact evaluator's,
    below the start's (the current allocation, which is not optimal here)."""
    book = var_book(13)
    options = SolveOptions(integral=integral, max_transfers=2)
    problem = build_problem(book, options=options)
    start = problem.current_xm
    value = exact_objective(problem, start)
    answer = improve_by_window_mip(problem, start, value, time.perf_counter() + 60, True)
    assert answer is not None
    assert answer.objective < value
    assert answer.objective == pytest.approx(
        exact_objective(problem, answer.xm_quantity), rel=1e-12
    )
    assert on_allowed_set(problem, answer.xm_quantity).all()
    assert len(transfers_between(problem, start, answer.xm_quantity)) <= 2


def test_a_stop_ends_the_window_milp() -> None:
    """The stop hook interrupts HiGHS's branch and bound (its interrupt callbacks) and the solve
    raises SolveCancelled instead of answering."""
    problem = build_problem(var_book(102), options=SolveOptions(integral=True))
    candidates = candidate_scenarios(problem, [problem.current_xm])
    with cancellation.stop_when(lambda: True), pytest.raises(cancellation.SolveCancelled):
        solve_window_mip(problem, problem.current_xm, candidates, True, time.perf_counter() + 60)


def test_the_window_milp_keeps_to_its_deadline_and_skips_large_books(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No time left: no MILP is built (None); more positions than MAX_POSITIONS: not tried."""
    problem = build_problem(var_book(102), options=SolveOptions(integral=False))
    start = problem.current_xm
    value = exact_objective(problem, start)
    assert improve_by_window_mip(problem, start, value, time.perf_counter() - 1.0, True) is None
    assert improve_by_window_mip(problem, start, value, time.perf_counter() + 60, True) is not None
    monkeypatch.setattr(var_window_mip, "MAX_POSITIONS", problem.n_positions - 1)
    assert improve_by_window_mip(problem, start, value, time.perf_counter() + 60, True) is None


def test_under_a_transfer_limit_in_whole_lots_the_window_milp_narrows_a_5_percent_gap() -> None:
    """A varied book (test_claimed_optima: coarse lots, FICC add-ons, CME stress; seed 5) with
    FICC's model measuring VaR, whole lots, at most 3 transfers (the class of gap an outside
    check found): the first path from the ES stand-in's answer ends 5.2% above the
    independent MILP's optimum (the whole phase without the window MILP did too, measured
    2026-12-02); the MILP from that end lands 1.4e-3 above it. Held here to a tenth of the
    end's gap, on the allowed set, within the limit."""
    from tests.optimiser.test_claimed_optima import _varied_book

    book = _varied_book(5)
    models = {
        ccp: dataclasses.replace(model, measure=Measure.VAR) if ccp is Ccp.FICC else model
        for ccp, model in book.models.items()
    }
    book = dataclasses.replace(
        book, models=models, options=SolveOptions(integral=True, max_transfers=3)
    )
    problem, end, value = _first_path_end(book)
    optimum = _optimum(book, problem, True)
    assert value > optimum * (1 + 1e-2)
    answer = improve_by_window_mip(problem, end, value, time.perf_counter() + 60, True)
    assert answer is not None
    assert optimum * (1 - 1e-6) <= answer.objective
    assert answer.objective - optimum <= 0.1 * (value - optimum)
    assert len(transfers_between(problem, problem.current_xm, answer.xm_quantity)) <= 3
    assert on_allowed_set(problem, answer.xm_quantity).all()
