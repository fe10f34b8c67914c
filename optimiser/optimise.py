"""``optimise``: solve for the XM allocation, then report it through the exact evaluator.

The backend's answer is snapped onto the allowed set (bounds, lot multiples), evaluated exactly
for the three states (baseline, current, optimised) and the all-eligible-in-XM reference, and
turned into transfers, marginal margins and ES attribution. A backend that fails hands over to
the other one; when both fail a typed error says what to change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from . import cancellation
from .errors import CaseValidationError, InfeasibleError, SolverError
from .margin import State, attribute, evaluate, marginal_margins
from .model import Book, Measure, SolveOptions
from .problem import PositionVector, Problem, build_problem
from .results import MarginalMargin, OptimisationResult, SolverStats, Status, transfers_between
from .solvers.base import Backend, RawSolution, allocation_bounds
from .solvers.highs_backend import HighsBackend

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "make_backend",
    "optimise",
    "report_allocation",
    "snap_allocation",
]


def _cvxpy_backend(solver: str = "HIGHS") -> Backend:
    # cvxpy takes half a second to import: only when the reference path is asked for.
    from .solvers.cvxpy_backend import CvxpyBackend

    return CvxpyBackend(solver)


BACKENDS: dict[str, Callable[[], Backend]] = {"highs": HighsBackend, "cvxpy": _cvxpy_backend}
DEFAULT_BACKEND = "highs"


def make_backend(name: str) -> Backend:
    """``highs``, ``cvxpy`` or ``cvxpy:SOLVER`` (any installed cvxpy solver)."""
    base, _, solver = name.partition(":")
    if base == "cvxpy" and solver:
        return _cvxpy_backend(solver.upper())
    if base not in BACKENDS or solver:
        raise ValueError(f"unknown backend {name!r}; use one of {sorted(BACKENDS)} or cvxpy:SOLVER")
    return BACKENDS[base]()


def snap_allocation(problem: Problem, xm_quantity: PositionVector) -> PositionVector:
    """Clip a solver's allocation to its bounds; in integral mode round movable positions to
    whole lots. Removes solver round-off only; never moves a fixed position."""
    lower, upper = allocation_bounds(problem)
    snapped = np.clip(xm_quantity, lower, upper)
    if problem.options.integral:
        lots = np.round(snapped / problem.lot)
        snapped = np.where(problem.movable, lots * problem.lot, snapped)
    else:
        # Values within a relative 1e-9 of a bound are that bound.
        tolerance = 1e-9 * np.maximum(1.0, np.abs(problem.quantity))
        snapped = np.where(np.abs(snapped - lower) <= tolerance, lower, snapped)
        snapped = np.where(np.abs(snapped - upper) <= tolerance, upper, snapped)
    return np.where(problem.movable, snapped, problem.current_xm)


def _has_var_model(problem: Problem) -> bool:
    return any(w.model.measure is Measure.VAR for w in problem.models.values())


def _run_backend(
    name: str, problem: Problem, time_limit: float | None, reduction: bool
) -> RawSolution:
    """``name``'s solve. Under a stop hook (see :mod:`.cancellation`) a backend that cannot be
    interrupted runs in a child process that is killed when the caller stops it."""
    interruptible = getattr(BACKENDS.get(name.partition(":")[0]), "interruptible", False)
    if interruptible or cancellation.current() is None:
        return make_backend(name).solve(problem, time_limit, reduction)
    return cancellation.call_stoppably(_solve_by_name, name, problem, time_limit, reduction)


def _solve_by_name(
    name: str, problem: Problem, time_limit: float | None, reduction: bool
) -> RawSolution:
    return make_backend(name).solve(problem, time_limit, reduction)


def _solve_with_fallback(
    problem: Problem, backend_name: str, time_limit: float | None, reduction: bool = True
) -> tuple[RawSolution, str, str | None]:
    try:
        make_backend(backend_name)
    except ValueError as error:
        raise CaseValidationError("options.backend", backend_name, str(error)) from error
    order = [backend_name] + [name for name in BACKENDS if name != backend_name.partition(":")[0]]
    failures: list[str] = []
    for name in order:
        cancellation.check()  # a stopped solve starts no (uninterruptible) fallback
        try:
            raw = _run_backend(name, problem, time_limit, reduction)
        except Exception as error:  # a backend crash is a failure to fall back from
            failures.append(f"{name}: {type(error).__name__}: {error}")
            continue
        if raw.status is Status.INFEASIBLE:
            raise InfeasibleError(
                f"no allocation satisfies the constraints ({name}: {raw.message})",
                "relax options.max_transfers, unpin positions or allow continuous allocation",
            )
        if raw.xm_quantity is not None and raw.status in (Status.OPTIMAL, Status.TIME_LIMIT):
            fallback_from = backend_name if name != backend_name else None
            return raw, name, fallback_from
        failures.append(f"{name}: {raw.status.value} {raw.message}")
    raise SolverError(
        "every backend failed: " + "; ".join(failures),
        "raise options.time_limit, switch to continuous allocation, or check the inputs' scale",
    )


def needs_no_reduction_branch(problem: Problem) -> bool:
    """Whether the XM rule's branch without reduction (XM margin S_F + S_C) can beat the convex
    branch. It cannot when the XM account can be emptied at no cost and every margin is
    subadditive (margin-model.md): then that branch is at best the baseline, which the convex
    branch reaches with an empty XM account."""
    options = problem.options
    fixed_in_xm = bool(np.any(problem.current_xm[~problem.movable] != 0))
    thresholds = any(
        window.has_addons
        and window.model.addon_threshold is not None
        and bool(np.any(window.model.addon_threshold > 0))
        for window in problem.models.values()
    )
    return (
        fixed_in_xm or options.transfer_cost > 0 or options.max_transfers is not None or thresholds
    )


def _exact_objective(problem: Problem, raw: RawSolution) -> float:
    assert raw.xm_quantity is not None
    allocation = snap_allocation(problem, raw.xm_quantity)
    return evaluate(problem, allocation).total + problem.transfer_cost(allocation)


def _solve(
    problem: Problem, backend_name: str, time_limit: float | None
) -> tuple[RawSolution, str, str | None]:
    """The better of the XM rule's two convex branches (see solvers.base), by exact total."""
    started = time.perf_counter()
    raw, used, fallback_from = _solve_with_fallback(problem, backend_name, time_limit)
    if not needs_no_reduction_branch(problem):
        return raw, used, fallback_from
    remaining = (
        None if time_limit is None else max(0.0, time_limit - (time.perf_counter() - started))
    )
    try:
        other, other_used, other_fallback = _solve_with_fallback(
            problem, backend_name, remaining, reduction=False
        )
    except SolverError:
        return raw, used, fallback_from  # the first branch's answer stands
    better = _exact_objective(problem, other) < _exact_objective(problem, raw)
    chosen, chosen_used, chosen_fallback = (
        (other, other_used, other_fallback) if better else (raw, used, fallback_from)
    )
    return (
        RawSolution(
            status=Status.OPTIMAL
            if raw.status is other.status is Status.OPTIMAL
            else Status.TIME_LIMIT,
            xm_quantity=chosen.xm_quantity,
            objective=min(raw.objective, other.objective),
            bound=min(raw.bound, other.bound),
            iterations=raw.iterations + other.iterations,
            cuts=raw.cuts + other.cuts,
            build_seconds=raw.build_seconds + other.build_seconds,
            solve_seconds=raw.solve_seconds + other.solve_seconds,
            message=f"{chosen.message}; branch {'without' if better else 'with'} XM reduction",
        ),
        chosen_used,
        chosen_fallback,
    )


def optimise(
    book_or_problem: Book | Problem,
    options: SolveOptions | None = None,
    backend: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> OptimisationResult:
    """Find the XM quantities that minimise the customer's total margin.

    Parameters
    ----------
    book_or_problem
        A validated book, or a problem built from one.
    options
        Overrides the book's own solve options.
    backend
        ``highs`` (default, the fast path), ``cvxpy`` or ``cvxpy:SOLVER``; overrides
        ``options.backend``.
    should_stop
        Checked while solving; once it returns True the solve stops and raises
        :class:`~.cancellation.SolveCancelled` (see :mod:`.cancellation`).
    """
    if should_stop is not None:
        with cancellation.stop_when(should_stop):
            return optimise(book_or_problem, options, backend)
    if isinstance(book_or_problem, Book):
        problem = build_problem(book_or_problem, options=options)
    elif options is not None and options != book_or_problem.options:
        problem = book_or_problem.with_options(options)
    else:
        problem = book_or_problem
    backend_name = backend or problem.options.backend or DEFAULT_BACKEND
    raw, used, fallback_from = _solve(problem, backend_name, problem.options.time_limit)
    assert raw.xm_quantity is not None
    allocation = snap_allocation(problem, raw.xm_quantity)
    optimised = evaluate(problem, allocation)
    notes: list[str] = []
    var_gap = None
    if _has_var_model(problem):
        stand_in = evaluate(problem, allocation, es_for_var=True)
        var_gap = optimised.total - stand_in.total
        notes.append(
            "a VaR model was optimised through ES at the same confidence; reported figures are "
            f"exact VaR, {var_gap:+.2f} USD from the ES stand-in's total at this allocation"
        )
    stats = SolverStats(
        backend=used,
        status=raw.status,
        objective=raw.objective,
        bound=raw.bound,
        build_seconds=raw.build_seconds,
        solve_seconds=raw.solve_seconds,
        iterations=raw.iterations,
        cuts=raw.cuts,
        message=raw.message,
        fallback_from=fallback_from,
    )
    if fallback_from is not None:
        notes.append(f"backend {fallback_from} failed; the answer is from {used}")
    _check_against_solver(problem, optimised, raw, notes)
    return report_allocation(
        problem, allocation, stats, notes=notes, var_gap=var_gap, optimised=optimised
    )


def report_allocation(
    problem: Problem,
    allocation: PositionVector,
    stats: SolverStats,
    notes: list[str] | None = None,
    var_gap: float | None = None,
    optimised: State | None = None,
) -> OptimisationResult:
    """The answer for an allocation, every figure from the exact evaluator: the optimised,
    baseline, current and all-eligible states, transfers, marginal margins and attribution.
    (Also how a stored allocation is reported again without solving.)"""
    optimised = optimised or evaluate(problem, allocation)
    in_xm, in_standalone = marginal_margins(problem, optimised)
    return OptimisationResult(
        problem=problem,
        status=stats.status,
        allocation=allocation,
        baseline=evaluate(problem, np.zeros(problem.n_positions)),
        current=evaluate(problem, problem.current_xm),
        optimised=optimised,
        all_eligible=evaluate(problem, np.where(problem.eligible, problem.quantity, 0.0)),
        transfers=transfers_between(problem, problem.current_xm, allocation),
        marginal=MarginalMargin(in_xm=in_xm, in_standalone=in_standalone),
        attribution=attribute(problem, allocation),
        stats=stats,
        transfer_cost=problem.transfer_cost(allocation),
        var_gap=var_gap,
        notes=list(notes or []),
    )


def _check_against_solver(
    problem: Problem, optimised: State, raw: RawSolution, notes: list[str]
) -> None:
    """The exact total (plus transfer cost) never exceeds the convex objective by more than
    round-off unless rounding to lots moved it; say so when it does."""
    if math.isnan(raw.objective) or _has_var_model(problem):
        return
    exact = optimised.total + problem.transfer_cost(optimised.xm_quantity)
    if exact > raw.objective + 1e-6 * max(1.0, abs(raw.objective)):
        notes.append(
            f"exact total {exact:.2f} exceeds the solver objective {raw.objective:.2f}: "
            "the allocation was adjusted after the solve"
        )
