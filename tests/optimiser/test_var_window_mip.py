"""The exact-VaR phase's window MILP (solvers.var_window_mip) against the independent MILP."""

from __future__ import annotations

import dataclasses
import importlib
import math
import time

import numpy as np
import pytest

from tests.optimiser.independent_milp import independent_optimum
from xmargin.bench.var_gap import var_book
from xmargin.optimiser import SolveOptions, cancellation, optimise
from xmargin.optimiser.margin import var_window_losses
from xmargin.optimiser.model import Book, Ccp, Measure
from xmargin.optimiser.problem import PositionVector, Problem, build_problem
from xmargin.optimiser.results import transfers_between
from xmargin.optimiser.solvers import var_window_mip
from xmargin.optimiser.solvers.base import MIP_GAP, on_allowed_set
from xmargin.optimiser.solvers.local_search import exact_objective, improve, pair_move
from xmargin.optimiser.solvers.var_majorant import exchange
from xmargin.optimiser.solvers.var_window_mip import (
    candidate_scenarios,
    search_window,
    solve_window_mip,
)


def _optimum(book, problem, integral: bool) -> float:  # type: ignore[no-untyped-def]
    return min(
        independent_optimum(book, problem.eligible, integral, reduction, time_limit=120.0).total
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
    rounds, local search; no deadline: deterministic) from the ES stand-in's answer
    (:func:`_stand_in_answer`)."""
    problem, answer, _ = _stand_in_answer(book)
    phase = importlib.import_module("xmargin.optimiser.optimise")
    end, value, _ = phase._var_search_path(
        problem, answer, ("search", "majorant", "search"), math.inf
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
    answer = search_window(problem, end, value, time.perf_counter() + 60, True).answer
    assert answer is not None
    assert optimum * (1 - 1e-6) <= answer.objective <= optimum * (1 + 1e-6)


def test_the_phase_gives_the_window_milp_its_share_of_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In ``optimise`` the MILP runs from the best end (again at a new end while it solves to
    its optimum), each time with a deadline inside the phase's (max(2 s, the solve's time));
    what it answers is taken only when lower."""
    phase = importlib.import_module("xmargin.optimiser.optimise")
    deadlines: list[float] = []
    calls: list[tuple[float, float]] = []
    unbounded = phase._var_phase_deadline
    monkeypatch.setattr(
        phase,
        "_var_phase_deadline",
        lambda started, deadline: deadlines.append(unbounded(started, deadline)) or deadlines[-1],
    )
    real = var_window_mip.search_window

    def spy(problem, x, value, deadline, both):  # type: ignore[no-untyped-def]
        calls.append((deadline, value))
        return real(problem, x, value, deadline, both)

    monkeypatch.setattr(var_window_mip, "search_window", spy)
    book = dataclasses.replace(var_book(102), options=SolveOptions(integral=False))
    result = optimise(book)
    assert calls and len(deadlines) == 1
    assert all(deadline <= deadlines[0] for deadline, _ in calls)
    assert exact_objective(result.problem, result.allocation) <= min(v for _, v in calls)


def test_the_window_milps_bound_holds_at_its_start_and_proves_the_end_it_reaches() -> None:
    """Book 102 (continuous) from the first path's end: the MILP's proven bound lies at or below
    the start's exact objective (the start's largest losses are its candidates) and its answer
    is lower, so the window is not exhausted; from that answer after local search, the MILP is
    proven at its optimum with nothing lower: exhausted, its bound within MIP_GAP."""
    book = dataclasses.replace(var_book(102), options=SolveOptions(integral=False))
    problem, end, value = _first_path_end(book)
    first = search_window(problem, end, value, time.perf_counter() + 60, True)
    assert first.answer is not None and first.answer.objective < value
    assert first.bound <= value * (1 + 1e-12)
    assert not first.exhausted(value)
    found = improve(problem, first.answer.xm_quantity, math.inf)
    second = search_window(problem, found.xm_quantity, found.objective, math.inf, True)
    assert second.proven and second.answer is None
    assert second.exhausted(found.objective)
    assert second.bound <= found.objective * (1 + 1e-12)
    assert second.bound >= found.objective * (1 - MIP_GAP) - 1e-9
    past = search_window(problem, end, value, time.perf_counter() - 1.0, True)
    assert not past.proven and past.bound == -math.inf and not past.exhausted(value)


def _stand_in_answer(book: Book) -> tuple[Problem, PositionVector, float]:
    """The problem, and the ES stand-in's answer (the same book with every model measuring ES)
    with its exact objective."""
    stand_in = dataclasses.replace(
        book,
        models={
            ccp: dataclasses.replace(model, measure=Measure.ES)
            for ccp, model in book.models.items()
        },
    )
    problem = build_problem(book)
    answer = optimise(stand_in).allocation
    return problem, answer, exact_objective(problem, answer)


def test_the_phase_stops_where_the_window_milp_bounds_its_best_end() -> None:
    """Book 103 (18 positions, continuous), the phase with a minute (its paths all run): it
    stops on the window MILP's bound at its best end, before any exchange or pair move (it ran
    them until they found none, 0.8 s measured); at that end neither finds a lower one (the
    same answer as going on)."""
    book = dataclasses.replace(var_book(103), options=SolveOptions(integral=False))
    problem, answer, value = _stand_in_answer(book)
    phase = importlib.import_module("xmargin.optimiser.optimise")
    found = phase.var_phase(problem, answer, value, time.perf_counter() + 60)
    assert found.stop == phase.STOP_WINDOW
    assert found.paths == found.paths_total == 6 and found.windows >= 1
    assert sum(found.escapes.values()) == 0
    assert found.objective <= value
    assert found.objective == pytest.approx(exact_objective(problem, found.xm_quantity), rel=1e-12)
    assert exchange(problem, found.xm_quantity, found.objective, None) is None
    assert pair_move(problem, found.xm_quantity, None).moves == 0


def test_a_phase_without_time_stops_on_its_budget_at_its_start() -> None:
    """A deadline already passed: no path, no MILP, the start kept, the budget the reason."""
    book = dataclasses.replace(var_book(103), options=SolveOptions(integral=False))
    problem, answer, value = _stand_in_answer(book)
    phase = importlib.import_module("xmargin.optimiser.optimise")
    found = phase.var_phase(problem, answer, value, time.perf_counter() - 1.0)
    assert found.stop == phase.STOP_BUDGET
    assert (found.paths, found.windows) == (0, 0)
    assert found.xm_quantity is answer and found.objective == value


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
    answer = search_window(problem, start, value, time.perf_counter() + 60, True).answer
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
    assert search_window(problem, start, value, time.perf_counter() - 1.0, True).answer is None
    assert search_window(problem, start, value, time.perf_counter() + 60, True).answer is not None
    monkeypatch.setattr(var_window_mip, "MAX_POSITIONS", problem.n_positions - 1)
    assert search_window(problem, start, value, time.perf_counter() + 60, True).answer is None


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
    answer = search_window(problem, end, value, time.perf_counter() + 60, True).answer
    assert answer is not None
    assert optimum * (1 - 1e-6) <= answer.objective
    assert answer.objective - optimum <= 0.1 * (value - optimum)
    assert len(transfers_between(problem, problem.current_xm, answer.xm_quantity)) <= 3
    assert on_allowed_set(problem, answer.xm_quantity).all()
