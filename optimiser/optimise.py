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
from dataclasses import dataclass, field

import numpy as np

from . import cancellation
from .blas import configure_blas_threads
from .errors import InfeasibleError, SolverError, expect_type
from .margin import State, attribute, evaluate, evaluations_reused, marginal_margins
from .model import Book, Measure, SolveOptions
from .problem import PositionVector, Problem, build_problem
from .results import (
    AnswerSource,
    MarginalMargin,
    OptimisationResult,
    SolverStats,
    Status,
    all_eligible_allocation,
    transfers_between,
)
from .solvers import (
    BACKENDS,
    DEFAULT_BACKEND,
    NOT_SOLVER_ERRORS,
    BackendSpec,
    expected_solver_errors,
    parse_backend_name,
)
from .solvers.base import Backend, RawSolution, on_allowed_set, snap_to_allowed
from .solvers.local_search import exact_objective, improve, pair_move
from .warm_start import WarmStart, warm_allocation

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "all_eligible_allocation",
    "always_feasible",
    "optimise",
    "report_allocation",
    "snap_allocation",
]


def snap_allocation(problem: Problem, xm_quantity: PositionVector) -> PositionVector:
    """Clip a solver's allocation to its bounds; with whole lots move each movable position to
    the nearest allowed quantity (a lot multiple within the holding, or the whole holding).
    Removes solver round-off only; never moves a fixed position."""
    return snap_to_allowed(problem, xm_quantity)


def _has_var_model(problem: Problem) -> bool:
    return any(w.model.measure is Measure.VAR for w in problem.models.values())


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.perf_counter()


def always_feasible(problem: Problem) -> bool:
    """Whether some allocation satisfies every constraint whatever the data: without a transfer
    limit the empty XM account (fixed positions as given) is allowed; with one, the current
    allocation is, when it lies on the allowed set."""
    if problem.options.max_transfers is None:
        return True
    return bool(on_allowed_set(problem, problem.current_xm).all())


@dataclass(slots=True)
class _Attempt:
    """A solve and its provenance: the backend used, which one failed first, every failure."""

    raw: RawSolution
    used: str
    fallback_from: str | None
    failures: list[str] = field(default_factory=list)


def _run_backend(
    spec: BackendSpec,
    backend: Backend,
    problem: Problem,
    time_limit: float | None,
    reduction: bool,
    warm_start: PositionVector | None = None,
) -> RawSolution:
    """``backend``'s solve. A backend that cannot be interrupted (cvxpy: its compile alone
    outlasts a short time limit, which only its solver sees) runs, under a stop hook (see
    :mod:`.cancellation`) or a time limit, in a child process that is killed when the caller
    stops it or ``time_limit`` seconds of wall time have passed; the latter is an answer
    without an allocation (TIME_LIMIT), so the budget holds whatever the backend does."""
    outer = cancellation.current()
    if getattr(backend, "interruptible", False) or (outer is None and time_limit is None):
        return _backend_solve(backend, problem, time_limit, reduction, warm_start)
    args = (spec, problem, time_limit, reduction, warm_start)
    if time_limit is None:
        return cancellation.call_stoppably(_solve_by_spec, *args)
    deadline = time.perf_counter() + time_limit

    def out_of_time() -> bool:
        return time.perf_counter() >= deadline or (outer is not None and outer())

    try:
        with cancellation.stop_when(out_of_time):
            return cancellation.call_stoppably(_solve_by_spec, *args)
    except cancellation.SolveCancelled:
        if outer is not None and outer():
            raise  # the caller's stop, not the budget
    return RawSolution(
        Status.TIME_LIMIT,
        None,
        message=f"time limit reached: the {spec.name} solve was stopped at {time_limit:.3g} s",
    )


def _solve_by_spec(
    spec: BackendSpec,
    problem: Problem,
    time_limit: float | None,
    reduction: bool,
    warm_start: PositionVector | None = None,
) -> RawSolution:
    return _backend_solve(spec.create(), problem, time_limit, reduction, warm_start)


def _backend_solve(
    backend: Backend,
    problem: Problem,
    time_limit: float | None,
    reduction: bool,
    warm_start: PositionVector | None,
) -> RawSolution:
    """``backend.solve``, given ``warm_start`` only when there is one (a backend written
    before warm starts takes three arguments)."""
    if warm_start is None:
        return backend.solve(problem, time_limit, reduction)
    return backend.solve(problem, time_limit, reduction, warm_start=warm_start)


def _solve_with_fallback(
    problem: Problem,
    backend_name: str,
    deadline: float | None,
    reduction: bool = True,
    warm_start: PositionVector | None = None,
) -> _Attempt:
    """The first backend's answer, else the next one's, all within one wall-clock deadline.

    The chain is the requested backend, then each other family of ``solvers.BACKENDS`` with its
    defaults. A backend whose capabilities refuse the problem (e.g. whole lots to a solver
    without MIP) is skipped; an expected solver error (``solvers.expected_solver_errors``), an
    error status, or "infeasible" on a problem that always has a feasible allocation is a
    failure to fall back from; each is recorded with its reason. Any other exception is a bug
    and propagates. With no time left the answer has no allocation (status TIME_LIMIT) and the
    caller keeps the current one."""
    requested = parse_backend_name(backend_name)  # UnknownBackendError: a CaseValidationError
    chain = [requested] + [BackendSpec(family) for family in BACKENDS if family != requested.family]
    failures: list[str] = []
    for spec in chain:
        name = spec.name
        cancellation.check()  # a stopped solve starts no (uninterruptible) fallback
        backend = spec.create()  # the first cvxpy backend imports cvxpy: seconds
        refusal = backend.capabilities.refusal(problem)
        if refusal is not None:
            failures.append(f"{name}: skipped, {refusal}")
            continue
        remaining = _remaining(deadline)
        if remaining is not None and remaining <= 0:
            failures.append(f"{name}: not run, the time limit was spent")
            break
        try:
            raw = _run_backend(spec, backend, problem, remaining, reduction, warm_start)
        except expected_solver_errors(spec) as error:
            if isinstance(error, NOT_SOLVER_ERRORS):
                raise
            failures.append(f"{name}: {type(error).__name__}: {error}")
            continue
        if raw.status is Status.INFEASIBLE:
            if not always_feasible(problem):
                raise InfeasibleError(
                    f"no allocation satisfies the constraints ({name}: {raw.message})",
                    "relax options.max_transfers, unpin positions or allow continuous allocation",
                )
            failures.append(
                f"{name}: reported infeasible, but the current allocation is feasible "
                f"(numerical failure: {raw.message})"
            )
            continue
        if raw.xm_quantity is not None and raw.status in (Status.OPTIMAL, Status.TIME_LIMIT):
            fallback_from = requested.name if spec != requested else None
            return _Attempt(raw, name, fallback_from, failures)
        failures.append(f"{name}: {raw.status.value} {raw.message}")
        if raw.status is Status.TIME_LIMIT:
            break  # the budget is spent: no other backend gets a fresh one
    remaining = _remaining(deadline)
    if remaining is not None and remaining <= 0:
        stopped = RawSolution(Status.TIME_LIMIT, None, message="time limit before any answer")
        return _Attempt(stopped, requested.name, None, failures)
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
    return exact_objective(problem, snap_allocation(problem, raw.xm_quantity))


def _solve(
    problem: Problem,
    backend_name: str,
    deadline: float | None,
    warm_start: PositionVector | None = None,
) -> _Attempt:
    """The better of the XM rule's two convex branches (see solvers.base), by exact total."""
    first = _solve_with_fallback(problem, backend_name, deadline, warm_start=warm_start)
    if not needs_no_reduction_branch(problem) or first.raw.xm_quantity is None:
        return first
    try:
        second = _solve_with_fallback(
            problem, backend_name, deadline, reduction=False, warm_start=warm_start
        )
    except SolverError as error:
        first.failures.append(f"branch without XM reduction: {error}")
        return first  # the first branch's answer stands
    failures = first.failures + second.failures
    if second.raw.xm_quantity is None:
        first.failures = failures
        first.raw.status = Status.TIME_LIMIT
        return first
    raw, other = first.raw, second.raw
    better = _exact_objective(problem, other) < _exact_objective(problem, raw)
    chosen = second if better else first
    combined = RawSolution(
        status=Status.OPTIMAL
        if raw.status is other.status is Status.OPTIMAL
        else Status.TIME_LIMIT,
        xm_quantity=chosen.raw.xm_quantity,
        objective=min(raw.objective, other.objective),
        bound=min(raw.bound, other.bound),
        iterations=raw.iterations + other.iterations,
        cuts=raw.cuts + other.cuts,
        build_seconds=raw.build_seconds + other.build_seconds,
        solve_seconds=raw.solve_seconds + other.solve_seconds,
        rounds=raw.rounds + other.rounds,
        lp_seconds=raw.lp_seconds + other.lp_seconds,
        evaluation_seconds=raw.evaluation_seconds + other.evaluation_seconds,
        message=f"{chosen.raw.message}; branch {'without' if better else 'with'} XM reduction",
    )
    return _Attempt(combined, chosen.used, chosen.fallback_from, failures)


VAR_SEARCH_SECONDS = 2.0
"""The exact-VaR improvement phase runs at most this long, or as long as the solve took if that
is longer, and never past the time limit. (Its moves out of a basin go on while they find
lower totals: bounded by the time limit alone, a 300-position VaR book through the server,
whose default deadline is 300 s, took 48 s where this bound gives 2 s.)"""


VAR_PHASE_RESERVE = 0.25
"""The share of a time limit kept for the exact-VaR phase where a model measures VaR: the ES
stand-in's solve must end by the rest. (Without it a whole-lot stand-in could spend the whole
limit and leave the phase none: a 30 x 750 book, both models VaR, 20 s limit, under load,
answered the stand-in's total where the phase, given time, found 0.26% lower.)"""


PATHS_SHARE = 0.5
"""The share of the exact-VaR phase's time its paths may take at first where the window MILP
follows (:mod:`.solvers.var_window_mip`; on a 2-core machine at load 5 the paths alone took the
whole 2 s budget and left the MILP none); paths it cuts run in the time the MILP and the escapes
leave."""

WINDOW_MIP_SHARE = 0.6
"""The share of the exact-VaR phase's time left after its paths that the window MILP may take;
the exclusion exchanges and pair moves go on in the rest (and in what it leaves)."""


def _var_phase_deadline(started: float, deadline: float | None) -> float:
    """When the exact-VaR phase stops: max(VAR_SEARCH_SECONDS, the time since ``started``)
    from now, or the solve's ``deadline`` if that comes first (``time.perf_counter()``
    values)."""
    now = time.perf_counter()
    own = now + max(VAR_SEARCH_SECONDS, now - started)
    return own if deadline is None else min(own, deadline)


def optimise(
    book_or_problem: Book | Problem,
    options: SolveOptions | None = None,
    backend: str | None = None,
    should_stop: Callable[[], bool] | None = None,
    warm_start: WarmStart | OptimisationResult | None = None,
) -> OptimisationResult:
    """Find the XM quantities that minimise the customer's total margin.

    The answer is the best, by exact objective (total + transfer cost), of the solver's
    allocation, the result of the exact-VaR improvement phase where a model measures VaR, and
    the current allocation: never worse than holding still. ``stats.source`` says which, and
    ``options.time_limit`` is one wall-clock budget for all of it, fallback included.

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
    warm_start
        The previous cycle's answer for the same customer (a result, or a
        :class:`~.warm_start.WarmStart` of its allocation by position id): the solve starts from
        it. Positions may have changed; the answer is the same as without it, only sooner.
    """
    expect_type(book_or_problem, (Book, Problem), "book_or_problem")
    expect_type(options, (SolveOptions, type(None)), "options")
    expect_type(backend, (str, type(None)), "backend")
    expect_type(warm_start, (WarmStart, OptimisationResult, type(None)), "warm_start")
    if should_stop is not None and not callable(should_stop):
        raise TypeError(f"should_stop: must be callable, got {type(should_stop).__name__}")
    if should_stop is not None:
        with cancellation.stop_when(should_stop):
            return optimise(book_or_problem, options, backend, warm_start=warm_start)
    with evaluations_reused():  # what the solver evaluated is reported, not evaluated again
        return _optimise(book_or_problem, options, backend, warm_start)


def _optimise(
    book_or_problem: Book | Problem,
    options: SolveOptions | None,
    backend: str | None,
    warm_start: WarmStart | OptimisationResult | None,
) -> OptimisationResult:
    """:func:`optimise` under its stop hook, if any."""
    configure_blas_threads()  # one BLAS thread per solve unless $XMARGIN_BLAS_THREADS says so
    started = time.perf_counter()
    if isinstance(book_or_problem, Book):
        problem = build_problem(book_or_problem, options=options)
    elif options is not None and options != book_or_problem.options:
        problem = book_or_problem.with_options(options)
    else:
        problem = book_or_problem
    backend_name = backend or problem.options.backend or DEFAULT_BACKEND
    limit = problem.options.time_limit
    deadline = None if limit is None else started + limit
    solve_deadline = deadline
    if limit is not None and _has_var_model(problem):  # the exact-VaR phase's time kept
        solve_deadline = started + (1.0 - VAR_PHASE_RESERVE) * limit
    attempt = _solve(problem, backend_name, solve_deadline, warm_allocation(problem, warm_start))
    raw = attempt.raw
    notes: list[str] = []
    current = evaluate(problem, problem.current_xm)  # evaluated once: compared and reported
    current_objective = _objective(problem, current)
    optimised: State | None = None
    if raw.xm_quantity is not None:
        allocation = snap_allocation(problem, raw.xm_quantity)
        optimised = evaluate(problem, allocation)
        objective = _objective(problem, optimised)
        source = AnswerSource.OPTIMUM if raw.status is Status.OPTIMAL else AnswerSource.BEST_FOUND
    else:
        allocation, objective, source = problem.current_xm, math.inf, AnswerSource.CURRENT
    var_gap = stand_in_total = None
    if _has_var_model(problem) and raw.xm_quantity is not None:
        assert optimised is not None
        stand_in_total, solved = optimised.total, allocation
        allocation, objective, source = _improve_var(
            problem, allocation, objective, source, started, deadline, notes
        )
        if allocation is not solved:
            optimised = None  # the local search moved it: evaluated below
    if current_objective <= objective:
        if raw.xm_quantity is None or current_objective < objective:
            notes.append(
                "kept the current allocation: "
                + (
                    "the time limit stopped the solver before it found an allocation"
                    if raw.xm_quantity is None
                    else f"nothing found was lower (best found {objective:,.2f} USD against "
                    f"{current_objective:,.2f} USD now)"
                )
            )
        allocation, source, optimised = problem.current_xm, AnswerSource.CURRENT, current
    if optimised is None:
        optimised = evaluate(problem, allocation)
    if _has_var_model(problem):
        stand_in = evaluate(problem, allocation, es_for_var=True)
        var_gap = optimised.total - stand_in.total
        notes.append(
            "a VaR model was optimised through ES at the same confidence; reported figures are "
            f"exact VaR, {var_gap:+.2f} USD from the ES stand-in's total at this allocation; "
            "not proven optimal under VaR (the status is the stand-in's)"
        )
    if raw.status is Status.TIME_LIMIT and source is not AnswerSource.CURRENT:
        notes.append(f"not proven optimal: {raw.message}")
    stats = SolverStats(
        backend=attempt.used,
        status=raw.status,
        objective=raw.objective,
        bound=raw.bound,
        build_seconds=raw.build_seconds,
        solve_seconds=raw.solve_seconds,
        iterations=raw.iterations,
        cuts=raw.cuts,
        message=raw.message,
        fallback_from=attempt.fallback_from,
        source=source,
        failures=attempt.failures,
        rounds=raw.rounds,
        lp_seconds=raw.lp_seconds,
        evaluation_seconds=raw.evaluation_seconds,
    )
    if attempt.fallback_from is not None:
        notes.append(
            f"backend {attempt.fallback_from} failed; the answer is from {attempt.used} "
            f"({'; '.join(attempt.failures)})"
        )
    if raw.xm_quantity is not None and source is AnswerSource.OPTIMUM:
        _check_against_solver(problem, optimised, raw, notes)
    return report_allocation(
        problem,
        allocation,
        stats,
        notes=notes,
        var_gap=var_gap,
        optimised=optimised,
        stand_in_total=stand_in_total,
        current=current,
    )


def _objective(problem: Problem, state: State) -> float:
    """total(x) + transfer cost of an evaluated allocation (``exact_objective`` without
    evaluating it again)."""
    return state.total + problem.transfer_cost(state.xm_quantity)


STOP_WINDOW = "the window MILP proved its window at the best end"
"""A stop reason of the exact-VaR phase (:attr:`VarPhase.stop`): every path run, and the window
MILP's bound at the best end within MIP_GAP of it (nothing lower in its window, see
:meth:`.solvers.var_window_mip.WindowSearch.exhausted`). Not a proof of the exact optimum: on
the 72 solves of ``bench/var_gap.py``'s seeds 100-123 and 200-211, in the 49 where the MILP
ended at its optimum no exchange or pair move after it lowered the end (they took 0.15-1.5 s;
bench/results/2026-12-02-var-s26)."""
STOP_ESCAPES = "no exclusion exchange or pair move lowers the best end"
"""A stop reason: every path run and no escape from the best end's basin found."""
STOP_BUDGET = "the budget was spent"
"""A stop reason: the phase's deadline came first."""


@dataclass(slots=True)
class VarPhase:
    """What the exact-VaR phase found and did: its best end and exact objective, each step that
    lowered it, the paths run (of ``paths_total``), the window MILP searches, the escapes, and
    why it stopped (``STOP_WINDOW``, ``STOP_ESCAPES`` or ``STOP_BUDGET``)."""

    xm_quantity: PositionVector
    objective: float
    starts: int
    paths_total: int
    found_by: list[str] = field(default_factory=list)
    paths: int = 0
    windows: int = 0
    escapes: dict[str, int] = field(
        default_factory=lambda: {"exclusion exchanges": 0, "pair moves": 0}
    )
    stop: str = STOP_BUDGET

    def offer(self, x: PositionVector, value: float, how: str) -> bool:
        """Take ``x`` if its exact objective ``value`` is lower than the best's (beyond
        round-off); whether it was."""
        if value >= self.objective - 1e-9 * max(1.0, abs(self.objective)):
            return False
        self.xm_quantity, self.objective = x, value
        self.found_by.append(how)
        return True


def var_phase(
    problem: Problem, allocation: PositionVector, objective: float, deadline: float
) -> VarPhase:
    """The exact-VaR improvement phase from the allowed ``allocation`` (exact objective
    ``objective``) until ``deadline`` (a ``time.perf_counter()`` value). From each of the ES
    stand-in's answer and the allowed references (current, all eligible in XM, empty XM), best
    first, two paths: local search on the exact objective (:mod:`.solvers.local_search`),
    majorise-minimise from its end (:mod:`.solvers.var_majorant`) and local search again; and
    majorise-minimise, then local search (under a transfer limit: from the stand-in's answer
    only, its majorant rounds moving only the positions already moved,
    :func:`.solvers.var_majorant.within_the_limit`; on generated 12 x 150 books with a limit of
    2 or 3 this closed 4 of 9 gaps to the independent MILP's optimum, e.g. 2.3e-4 to 3.1e-5
    and 9.7e-6 to 7e-16). Then, on books of at most :data:`.solvers.var_window_mip.MAX_POSITIONS`
    positions, the window MILP (:mod:`.solvers.var_window_mip`: VaR exact over every exclusion
    set among each figure's f + 6 largest losses at the best end, HiGHS's branch and bound from
    that end) for :data:`WINDOW_MIP_SHARE` of the time left, its answer judged exactly and taken,
    after local search, only when lower; there the paths get :data:`PATHS_SHARE` of the budget
    at first. Then, while the budget lasts, moves out of the best end's basin, each followed by
    majorise-minimise and local search: an exclusion-set exchange
    (:func:`.solvers.var_majorant.exchange`) or, when none lowers the end, a pair move
    (:func:`.solvers.local_search.pair_move`).

    It stops before its deadline when it can no longer improve: where the window MILP, solved
    to its optimum, bounds its window at the best end (:data:`STOP_WINDOW`; a window MILP that
    was proven and lowered the end is solved again at the new end, and after an escape that
    lowered it), or where no escape lowers the best end (:data:`STOP_ESCAPES`); either only
    once every path has run (paths cut by their share run in the time the MILP and the escapes
    leave). The answer is the best exact objective found, never above ``objective``."""
    from .solvers.var_majorant import exchange  # the highs backend: loaded when first asked
    from .solvers.var_window_mip import MAX_POSITIONS, search_window

    windowed = problem.n_positions <= MAX_POSITIONS and bool(problem.movable.any())
    paths_deadline = deadline
    if windowed:  # the window MILP follows: time kept for it
        now = time.perf_counter()
        paths_deadline = now + PATHS_SHARE * (deadline - now)
    starts = [(allocation, objective)]
    if problem.options.max_transfers is None:  # the references are allowed allocations
        for reference in (
            all_eligible_allocation(problem),
            np.where(problem.movable, 0.0, problem.current_xm),
        ):
            starts.append((reference, exact_objective(problem, reference)))
    routes: tuple[tuple[str, ...], ...] = (("search", "majorant", "search"), ("majorant", "search"))
    queue = [
        (start, route) for start, _ in sorted(starts, key=lambda item: item[1]) for route in routes
    ]
    phase = VarPhase(allocation, objective, len(starts), len(queue))

    def run_paths(until: float) -> bool:
        """The queued paths until ``until``; whether one lowered the best end."""
        lowered = False
        while queue and time.perf_counter() < until:
            start, route = queue.pop(0)
            x, value, steps = _var_search_path(problem, start, route, until)
            phase.paths += 1
            if phase.offer(x, value, steps):
                lowered = True
                if phase.windows == 0 and sum(phase.escapes.values()) == 0:
                    phase.found_by = [steps]  # the best path's steps alone
        return lowered

    both_branches = needs_no_reduction_branch(problem)
    run_paths(paths_deadline)
    window_due, window_proven = windowed, False
    while time.perf_counter() < deadline:
        if window_due:
            window_due = False
            now = time.perf_counter()
            search = search_window(
                problem,
                phase.xm_quantity,
                phase.objective,
                now + WINDOW_MIP_SHARE * (deadline - now),
                both_branches,
            )
            phase.windows += 1
            window_proven = search.proven
            if search.answer is not None:
                found = improve(problem, search.answer.xm_quantity, deadline)
                lowered = phase.offer(
                    found.xm_quantity, found.objective, f"the window MILP ({search.answer.status})"
                )
                # a small model: again at the new end (not at the same end: the same answer)
                window_due = window_proven and lowered
                continue
            if search.exhausted(phase.objective):
                if run_paths(deadline):  # time back to the paths cut by their share
                    window_due = True
                    continue
                if not queue:
                    phase.stop = STOP_WINDOW
                    break
        escaped = exchange(problem, phase.xm_quantity, phase.objective, deadline)
        kind = "exclusion exchanges"
        if escaped is None:
            pair = pair_move(problem, phase.xm_quantity, deadline)
            escaped = (pair.xm_quantity, pair.objective) if pair.moves else None
            kind = "pair moves"
        if escaped is None:
            if time.perf_counter() >= deadline:
                break
            if run_paths(deadline):
                window_due = windowed and window_proven
                continue
            if not queue:
                phase.stop = STOP_ESCAPES
            break
        x, value, _ = min(
            (*escaped, ""),
            _var_search_path(problem, escaped[0], ("majorant", "search"), deadline),
            key=lambda item: item[1],
        )
        phase.xm_quantity, phase.objective = x, value  # lower than the end by construction
        phase.escapes[kind] += 1
        window_due = windowed and window_proven
    return phase


def _improve_var(
    problem: Problem,
    allocation: PositionVector,
    objective: float,
    source: AnswerSource,
    started: float,
    deadline: float | None,
    notes: list[str],
) -> tuple[PositionVector, float, AnswerSource]:
    """:func:`var_phase` for at most max(``VAR_SEARCH_SECONDS``, the solve's own time) and within
    the deadline (:func:`_var_phase_deadline`); its best end, said in ``notes`` where it moved
    the stand-in's answer. (Each path ends at a stationary point; on generated VaR books each
    path and start found the best end on some book and a worse one on others.)"""
    phase = var_phase(problem, allocation, objective, _var_phase_deadline(started, deadline))
    if phase.xm_quantity is allocation:
        return (
            allocation,
            objective,
            (AnswerSource.STAND_IN if source is AnswerSource.OPTIMUM else source),
        )
    escapes = [f"{count} {kind}" for kind, count in phase.escapes.items() if count]
    found_by = phase.found_by + escapes
    notes.append(
        f"exact-VaR search: {objective:,.2f} USD at the ES stand-in's answer, "
        f"{phase.objective:,.2f} USD after {', '.join(found_by)} (from {phase.starts} starts; "
        f"stopped: {phase.stop})"
    )
    return phase.xm_quantity, phase.objective, AnswerSource.LOCAL_SEARCH


def _var_search_path(
    problem: Problem, start: PositionVector, path: tuple[str, ...], deadline: float
) -> tuple[PositionVector, float, str]:
    """One path of the exact-VaR phase: each step ("search": local search, "majorant":
    majorise-minimise) from where the last ended; the end, its exact objective and what moved."""
    from .solvers.var_majorant import descend  # the highs backend: loaded when first asked

    x, value, done = start, exact_objective(problem, start), []
    for step in path:
        if step == "search":
            search = improve(problem, x, deadline)
            x, value = search.xm_quantity, search.objective
            if search.moves:
                done.append(f"{search.moves} local moves")
        else:
            descent = descend(problem, x, deadline)
            x, value = descent.xm_quantity, descent.objective
            if descent.improved:
                done.append(f"{descent.improved} majorant rounds")
    return x, value, ", ".join(done) or "no move"


def report_allocation(
    problem: Problem,
    allocation: PositionVector,
    stats: SolverStats,
    notes: list[str] | None = None,
    var_gap: float | None = None,
    optimised: State | None = None,
    stand_in_total: float | None = None,
    current: State | None = None,
) -> OptimisationResult:
    """The answer for an allocation, every figure from the exact evaluator: the optimised,
    baseline, current and all-eligible states, transfers, marginal margins and attribution.
    (Also how a stored allocation is reported again without solving.) ``optimised`` and
    ``current``: the states of ``allocation`` and of the current allocation when the caller
    has evaluated them already."""
    optimised = optimised or evaluate(problem, allocation)
    in_xm, in_standalone = marginal_margins(problem, optimised)
    return OptimisationResult(
        problem=problem,
        status=stats.status,
        allocation=allocation,
        baseline=evaluate(problem, np.zeros(problem.n_positions)),
        current=current or evaluate(problem, problem.current_xm),
        optimised=optimised,
        all_eligible=evaluate(problem, all_eligible_allocation(problem)),
        transfers=transfers_between(problem, problem.current_xm, allocation),
        marginal=MarginalMargin(in_xm=in_xm, in_standalone=in_standalone),
        attribution=attribute(problem, allocation, optimised.models),
        stats=stats,
        transfer_cost=problem.transfer_cost(allocation),
        var_gap=var_gap,
        notes=list(notes or []),
        stand_in_total=stand_in_total,
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
