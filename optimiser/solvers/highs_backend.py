"""The fast path: a direct highspy formulation in factor space, solved by cutting planes.

The loss of a portfolio v in scenario s is L_s = -(shocks_s . E + pnl_s . v_pnl) with E = D'v its
K-vector of net factor exposure, so every term of the problem depends on the positions only
through E (and the few positions given as P&L vectors). ES is the maximum of linear functions,

    ES(L) = max { w . L : 0 <= w_s <= 1/n_tail, sum_s w_s = 1 },

which is also the Rockafellar-Uryasev value min_t t + 1/n_tail sum_s max(0, L_s - t). Instead of
one RU row per scenario the LP carries, per (model, portfolio) term, an epigraph variable theta
and the RU rows of a small candidate set C of tail scenarios (an active set):

    theta >= t + 1/n_tail sum_{s in C} u_s,   u_s >= L_s(v) - t,   u_s >= 0   (s in C),

each row with K + (#P&L positions) coefficients on the exposure. Over any C this is a lower
bound on ES, exact at every allocation whose tail lies in C; a set C holds every tail weighting
on it at once, so it is far stronger than Kelley's single cut theta >= w . L(v) per trial point.
C starts as the tails at the current, empty-XM and all-in-XM allocations (and at a previous
cycle's answer, see :mod:`..warm_start`); each round solves the LP with dual simplex from the
previous basis, evaluates every term exactly at the solution (and at its midpoint with the
incumbent) and adds the tail scenarios of each violated term. It stops when the exact convex
objective at the incumbent and the LP bound agree to 1e-10 relative: typically after 3-5 LPs.
Where a MIP follows (whole lots, a transfer limit) the continuous phase uses Kelley's cuts
theta >= w . L(v) instead, seeded at the same points and along the pure factor directions: the
MIP re-solves the same model with the cuts found so far and adds more.

On request (``formulation="ru"``; ``"auto"`` never chooses it, see :data:`FORMULATIONS`) the
ES terms are the direct Rockafellar-Uryasev LP instead, over each XM leg's scenario losses l_s
written once:

    theta >= t + 1/n_tail * sum_s u_s,   u_s >= L_s(v) - t,   u_s >= 0   (s in the window),

with L_s(v) an affine function of the legs' losses (XM: l_F + l_C; standalone: held - l_leg).
The same loop then checks the exact objective against the bound (one LP when it agrees).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import highspy
import numpy as np
import numpy.typing as npt
from highspy.highs import HighsCallbackEvent

from .. import cancellation
from ..margin import (
    FIGURES,
    ModelFigures,
    account_figures,
    convex_xm_margin,
    tail_weights,
    var_majorant_window,
)
from ..model import Ccp
from ..problem import ModelWindow, PositionVector, Problem
from ..results import Status
from .base import (
    MIP_GAP,
    Capabilities,
    LotGrid,
    RawSolution,
    allocation_bounds,
    lot_grid,
    problem_scale,
    snap_to_allowed,
)

__all__ = ["HighsBackend", "solve_var_majorant"]

INF = highspy.kHighsInf
Scenarios = npt.NDArray[np.int64]
"""Scenarios as rows of the scenario matrix, ascending."""


@functools.cache
def quiet_highs_banner() -> None:
    """Have HiGHS's once-per-process banner written to no console.

    HiGHS writes its banner when the first instance of a process gets a callback, and
    ``highspy.Highs()`` sets one in its constructor, before any option can be set, so the banner
    would land on stdout (in the middle of command-line JSON). A bare core instance with
    ``log_to_console`` off takes that turn instead: every later instance, ours and cvxpy's, is
    silent. HiGHS's own log settings only: no file descriptor of the host is touched. Called
    before the first solve (never at import); idempotent.
    """
    first = highspy._core._Highs()  # the core class: no callback set by its constructor
    first.setOptionValue("log_to_console", False)
    first.setCallback(lambda *_: None, None)
    first.setCallback(None, None)


def set_option(highs: highspy.Highs, name: str, value: bool | float | str) -> None:
    """``highs.setOptionValue``, its return code checked: an unknown option or a value out of
    range raises instead of leaving HiGHS's default in place silently."""
    status = highs.setOptionValue(name, value)
    if status != highspy.HighsStatus.kOk:
        raise RuntimeError(f"HiGHS option {name}={value!r}: {status.name}")


MODEL_STATUS: dict[highspy.HighsModelStatus, Status] = {
    highspy.HighsModelStatus.kNotset: Status.ERROR,
    highspy.HighsModelStatus.kLoadError: Status.ERROR,
    highspy.HighsModelStatus.kModelError: Status.ERROR,
    highspy.HighsModelStatus.kPresolveError: Status.ERROR,
    highspy.HighsModelStatus.kSolveError: Status.ERROR,
    highspy.HighsModelStatus.kPostsolveError: Status.ERROR,
    highspy.HighsModelStatus.kModelEmpty: Status.ERROR,
    highspy.HighsModelStatus.kOptimal: Status.OPTIMAL,
    highspy.HighsModelStatus.kInfeasible: Status.INFEASIBLE,
    # Every margin is bounded below by 0, so an unbounded model is a formulation error.
    highspy.HighsModelStatus.kUnboundedOrInfeasible: Status.ERROR,
    highspy.HighsModelStatus.kUnbounded: Status.ERROR,
    highspy.HighsModelStatus.kObjectiveBound: Status.OPTIMAL,  # nothing beats the incumbent
    highspy.HighsModelStatus.kObjectiveTarget: Status.TIME_LIMIT,
    highspy.HighsModelStatus.kTimeLimit: Status.TIME_LIMIT,
    highspy.HighsModelStatus.kIterationLimit: Status.TIME_LIMIT,
    highspy.HighsModelStatus.kUnknown: Status.ERROR,
    highspy.HighsModelStatus.kSolutionLimit: Status.TIME_LIMIT,
    highspy.HighsModelStatus.kInterrupt: Status.TIME_LIMIT,
    highspy.HighsModelStatus.kMemoryLimit: Status.ERROR,
    highspy.HighsModelStatus.kHighsInterrupt: Status.TIME_LIMIT,  # type: ignore[attr-defined]  # not in the stubs
}
"""Every HiGHS model status as the backend's status where the loop stops on it (a stop short of
the optimum -- a limit or an interrupt -- is TIME_LIMIT: the best allocation found so far)."""

GAP_TOLERANCE = 1e-10
RECHECK_CUTOFF = 0.999
"""While a MIP's claim is solved again without presolve, HiGHS's objective bound lies this share
of MIP_GAP below the incumbent: nothing found below it proves the incumbent to MIP_GAP."""
MIP_ABSOLUTE_GAP = 0.0
"""HiGHS's absolute MIP gap, in margin units: none. Its default (1e-6 units) exceeds MIP_GAP
wherever the objective is below one unit (a book whose total is a fraction of a position's
largest loss): an answer 3.5e-6 above the optimum was called optimal."""
FEASIBILITY_TOLERANCE = 1e-9  # margin units (HiGHS's default 1e-7 is 1e-7 * unit USD)
CUT_TOLERANCE = 10 * FEASIBILITY_TOLERANCE
MAX_ROUNDS = 500
STOP_CHECK_SECONDS = 0.1
"""Under a stop hook, how long an LP runs before HiGHS asks the hook itself (:meth:`_run_highs`)."""
FACTOR_LP_PNL_SHARE = 0.1
"""The active-set LP runs without presolve, and prices by Devex instead of dual steepest edge, when
at most this share of the positions are P&L vectors. Devex, measured in process against steepest
edge, single solves alternated (loaded 2-core machine): 0.95x on the reference account (LPs
286/63/27 simplex iterations against 269/57/25, each cheaper), 0.93-0.96x on generated books of
30-100 positions and on the reference with 10% P&L vectors, 0.96-1.02x at 1,000-3,000 positions;
1.12x at 50% P&L vectors, hence the share. Presolve off / on, CPU of model build + LPs, 3-4
generated books per size (300 x 2,520, 300 x 5,000, 1,000 x 2,520, 3,000 x 2,520) by share of
P&L vectors (with noise): 0% 0.82, 3.3% 0.87, 6.7% 0.98, 10% 0.91, 20% 1.01, 30% 1.48; the
reference account (20 of 300 positions are options given as P&L vectors) 16.6 -> 11.5 ms in its
three LPs."""
FORMULATIONS = ("auto", "cuts", "ru")
"""``"auto"``: the active set for a linear program, Kelley's cuts where a MIP follows, on any
book; ``"cuts"`` the same; ``"ru"`` the direct Rockafellar-Uryasev LP (an independent
formulation the tests hold the others to). "auto" chose RU for whole-lot books given mostly as
P&L vectors until measured against the cuts, each book in turn under a 20 s limit: over 10
generated books of P&L vectors (30-300 positions, 500 or 2,520 scenarios, with and without
noise) the cuts found the lower total on every book and proved 3 optimal (2.1-9.4 s), RU none
(and no allocation at all on the two largest noisy books) and overran the limit by up to 5 s;
under a 60 s limit on two 300 x 2,520 books (one ``bench.load.hard_case``) the cuts again found
the lower total, and RU ran to 80 s (``bench/results/pnl-whole-lots.md``)."""
LOCAL_WIDTHS = (0, 1)
"""The whole-lot local phase's boxes: the lot multiples either side of the continuous optimum,
then one lot more each way (positions at 0 or at the whole holding can then move a lot in)."""
MAX_ROUNDINGS = 64
"""The local phase's first box (each fractional position of the continuous optimum at one of
the two allowed quantities either side of it) is searched by evaluating each of its
allocations exactly instead of by a MIP when it holds at most this many (2^m for m fractional
positions), right after the active-set relaxation (``HighsBackend._rounded_relaxation``): the
exact best of the box, at a few ms per allocation. On the bench's integral-tail books of 100
and 300 positions (seeds 1000-1199) the relaxation's optimum has 3-9 fractional positions; the
box proved 21 of the 61 that the nearest rounding did not (8 of 33 at 100 positions, 13 of 28
at 300), with no Kelley cuts or MIP, in 6-250 ms for the whole box (the MIP over it in the cut
model took 0.05-0.35 s, after the Kelley phase)."""
LOCAL_SHARE = 0.5
"""Under a time limit each box of the local phase gets at most this share of the time left."""
FRACTIONAL_SHARE = 0.2
"""Between the local phase's first two boxes, a MIP over the positions the continuous optimum
holds off the allowed set, each over its whole range, the others fixed where it holds them (0
turns it off), with at most this share of the time left. The first box moves those positions a
lot at most; on the bench's seed 1013 (30 x 5,000) whole lots within 1e-6 of the continuous
bound move its 3 fractional positions 5 to 11 lots: without this box the search stopped at its
budget 5.0e-6 above the bound, unmoved in 60 s; the box finds 3.8e-7 above it in 0.05 s. Over
the bench's 200 books 18 stopped at the budget against 23
(``bench/results/2026-12-03-fractional-box``)."""
UNBOUNDED_AFTER_ABOVE = True
"""Where a full-range MIP without presolve still answers above the incumbent it was given (its
objective bound the incumbent's objective less RECHECK_CUTOFF x MIP_GAP), its later rounds run
with no objective bound instead of stopping unproven. Measured on a 60 x 500 book (seed 1188):
with the bound HiGHS 1.16 called optimal an answer 7.5e-6 above the incumbent, dual bound at
that answer, while the incumbent is feasible in the same model at its objective (the lots fixed
there) and the same model without the bound solved 2.9e-7 below it; on a 30 x 5,000 book (seed
1079) the bound's answer was 1.7e-7 above, the unbounded MIP's 1.7e-6 below. The unbounded
round's answer is an ordinary one (its dual bound a bound, its solution a trial point). On the
33 integral-tail books at the budget (seeds 1000-1199), one solve each alternated with the
current code: the 3 stopped unproven (1021, 1047, 1154) now ran on (2 proven, 1 to the budget),
4 proven within the budget against 5 (noise: the same books otherwise); on 12 books that prove
today, time ratio median 1.0 (all proven)."""
TAIL_SECONDS = 5.0
TAIL_FACTOR = 20.0
"""Without a time limit the whole-lot phase (after the continuous one) runs at most
max(TAIL_SECONDS, TAIL_FACTOR x the continuous phase's time); the answer is then the best
whole-lot allocation found, with its gap to the continuous bound."""


@dataclass(slots=True)
class _Rows:
    """Rows in compressed form, to be added to the model in one call."""

    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    indices: list[npt.NDArray[np.int64]] = field(default_factory=list)
    values: list[npt.NDArray[np.float64]] = field(default_factory=list)
    nnz: int = 0

    def add(
        self, indices: npt.ArrayLike, values: npt.ArrayLike, lower: float, upper: float
    ) -> None:
        index_array = np.asarray(indices, dtype=np.int64)
        value_array = np.asarray(values, dtype=float)
        keep = value_array != 0.0
        kept = index_array[keep]
        self.starts.append(self.nnz)
        self.indices.append(kept)
        self.values.append(value_array[keep])
        self.nnz += kept.size
        self.lower.append(lower)
        self.upper.append(upper)

    def add_block(
        self,
        indices: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
        lower: npt.NDArray[np.float64],
        upper: npt.NDArray[np.float64],
    ) -> None:
        """Rows r of ``indices[r], values[r]`` (shape (rows, entries)) between ``lower[r]`` and
        ``upper[r]``, zeros left out."""
        starts, kept_indices, kept_values = _nonzero_rows(indices, values)
        self.starts.extend((self.nnz + starts).tolist())
        self.indices.append(kept_indices.astype(np.int64))
        self.values.append(kept_values.astype(float))
        self.nnz += kept_values.size
        self.lower.extend(np.asarray(lower, dtype=float).tolist())
        self.upper.extend(np.asarray(upper, dtype=float).tolist())

    def push(self, highs: highspy.Highs) -> None:
        if not self.lower:
            return
        highs.addRows(
            len(self.lower),
            np.array(self.lower),
            np.array(self.upper),
            self.nnz,
            np.array(self.starts, dtype=np.int32),
            np.concatenate(self.indices).astype(np.int32),
            np.concatenate(self.values),
        )


def _nonzero_rows(
    indices: npt.NDArray[np.int64], values: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Rows r of ``indices[r], values[r]`` (shape (rows, entries)) in compressed form, zeros
    left out: each row's start in the kept entries, their indices and their values."""
    keep = values != 0.0
    counts = keep.sum(axis=1)
    return np.cumsum(counts) - counts, indices[keep], values[keep]


def _bound_list(bound: float | PositionVector, count: int) -> list[float]:
    """``count`` column bounds: one value for all, or one each."""
    if isinstance(bound, float | int):
        return [float(bound)] * count
    return np.broadcast_to(np.asarray(bound, dtype=float), (count,)).tolist()


@dataclass(frozen=True, slots=True)
class _Portfolio:
    """An account (or XM leg) as an affine map of the allocation variables: v = constant + sign *
    size * u on ``members``, 0 elsewhere (u: XM quantity in units of the holding)."""

    name: str
    members: npt.NDArray[np.bool_]
    constant: PositionVector  # c_i: what the account holds at k = 0
    sign: float  # +1 for XM, -1 for standalone


@dataclass(slots=True)
class _Term:
    """One margin model on one portfolio: columns theta (ES), sigma (stress), addons, margin."""

    window: ModelWindow
    portfolio: _Portfolio
    exposure_columns: npt.NDArray[np.int64]
    theta: int
    margin: int


@dataclass(slots=True)
class _FirstBox:
    """The whole-lot local phase's first box around the relaxation's optimum, searched by
    exact evaluation (:func:`_roundings`): its best allocation and that one's objective.
    Measured on 40 books of 30-300 positions it missed (bench integral tail): Kelley cuts at
    every allocation of the box before the continuous phase made the whole-lot time 1.19x
    (geomean, 11 at the budget against 9); none, 0.99x."""

    best: PositionVector
    objective: float


class HighsBackend:
    """Direct highspy model; cutting planes on the tail scenarios; warm-started dual simplex."""

    name: ClassVar[str] = "highs"
    capabilities: ClassVar[Capabilities] = Capabilities(
        lp=True, mip=True, duals=False, warm_start=True
    )
    interruptible: ClassVar[bool] = True
    """Stops within an iteration when the caller's stop hook says so (see cancellation)."""

    def __init__(self, formulation: str = "auto") -> None:
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation {formulation!r} is not one of {FORMULATIONS}")
        self.formulation = formulation

    def solve(
        self,
        problem: Problem,
        time_limit: float | None = None,
        reduction: bool = True,
        warm_start: PositionVector | None = None,
    ) -> RawSolution:
        """``warm_start``: a previous allocation whose tails join the seeds (module docstring)."""
        started = time.perf_counter()
        first_box = None
        if _rounding_may_prove(problem):
            rounded, first_box = self._rounded_relaxation(
                problem, time_limit, reduction, warm_start
            )
            if rounded is not None:
                rounded.solve_seconds = time.perf_counter() - started - rounded.build_seconds
                return rounded
        model = _CuttingPlaneModel(problem, reduction, self.formulation, warm_start)
        built = time.perf_counter()
        raw = model.run(time_limit, started, first_box)
        raw.build_seconds = built - started
        raw.solve_seconds = time.perf_counter() - built
        return raw

    def _rounded_relaxation(
        self,
        problem: Problem,
        time_limit: float | None,
        reduction: bool,
        warm_start: PositionVector | None,
    ) -> tuple[RawSolution | None, _FirstBox | None]:
        """Whole lots without a MIP where rounding proves them: the continuous relaxation by
        the active-set LP, its optimum x* moved to the allowed set, first to the nearest
        allowed quantities (``snap_to_allowed``), then each of its m fractional positions to
        the allowed quantity below or above it (:func:`_roundings`, while 2^m <=
        :data:`MAX_ROUNDINGS`); the first allocation whose exact objective f meets the
        relaxation's bound b (f - b <= MIP_GAP max(1, |f|)) is returned as optimal: b bounds
        every whole-lot answer from below. Otherwise (or when the relaxation stops short) no
        solution: the whole-lot path (Kelley's cuts and the MIP) then runs in full, given the
        best of the roundings when all were evaluated (the exact best of the local phase's
        first box), and the time here is lost but for that incumbent. A time limit reached
        among the roundings ends the solve with the best so far (TIME_LIMIT)."""
        started = time.perf_counter()
        relaxed = problem.with_options(dataclasses.replace(problem.options, integral=False))
        model = _CuttingPlaneModel(relaxed, reduction, self.formulation, warm_start)
        built = time.perf_counter()
        raw = model.run(time_limit, started)
        if raw.status is not Status.OPTIMAL or raw.xm_quantity is None:
            return None, None
        roundings = _roundings(problem, raw.xm_quantity) or [
            snap_to_allowed(problem, raw.xm_quantity)
        ]
        best, best_objective = roundings[0], np.inf
        for tried, rounded in enumerate(roundings):
            if tried and time_limit is not None and time.perf_counter() - started >= time_limit:
                # out of time: the best rounding so far, not proven (the cut model has no time)
                raw.status, finding = Status.TIME_LIMIT, "time limit reached among the roundings"
                break
            objective = model._convex_objective(model._term_figures(rounded), rounded)
            if objective < best_objective:
                best, best_objective = rounded, objective
            if _within_gap(objective, raw.bound):
                which = "rounded" if tried == 0 else "best rounding of the"
                finding = f"{which} continuous optimum meets its bound"
                break
        else:  # none meets the bound
            return None, _FirstBox(best, best_objective) if len(roundings) > 1 else None
        raw.xm_quantity, raw.objective = best, float(best_objective)
        raw.message = f"{finding} ({raw.message}, active-set LP)"
        raw.build_seconds = built - started
        raw.evaluation_seconds = model.evaluation_seconds
        return raw, None


def _lots_either_side(
    held: PositionVector, lot: PositionVector, holding: PositionVector, width: int = 0
) -> tuple[PositionVector, PositionVector]:
    """The lot multiples ``width`` lots beyond those either side of the quantities ``held``:
    below at least 0, above at most the ``holding`` (the whole holding when it is off the lot
    grid). Equal where ``held`` is on the grid and ``width`` is 0."""
    below = np.maximum(np.floor(held / lot + 1e-9) - width, 0.0) * lot
    above = np.minimum((np.ceil(held / lot - 1e-9) + width) * lot, holding)
    return below, above


def _roundings(problem: Problem, xm_quantity: PositionVector) -> list[PositionVector]:
    """The allocations of the whole-lot local phase's first box around ``xm_quantity``: each
    of the m movable positions off the allowed set at the allowed quantity below or above it
    (the lot multiples either side, or the whole holding), the others (and fine-lot positions,
    ``LotGrid.fine``) at their nearest allowed quantity (``snap_to_allowed``). The nearest
    rounding first, then by how many positions go the other way. Empty when 2^m exceeds
    :data:`MAX_ROUNDINGS`."""
    nearest = snap_to_allowed(problem, xm_quantity)
    below, above = _lots_either_side(np.abs(xm_quantity), problem.lot, np.abs(problem.quantity))
    fine = lot_grid(problem).fine  # at their nearest allowed quantity only
    fractional = np.flatnonzero(problem.movable & ~fine & (above > below))
    if 2**fractional.size > MAX_ROUNDINGS:
        return []
    sign = np.where(problem.quantity[fractional] < 0, -1.0, 1.0)
    near = nearest[fractional]
    low, high = sign * below[fractional], sign * above[fractional]
    other = np.where(np.abs(near - high) <= np.abs(near - low), low, high)
    flips = sorted(range(2**fractional.size), key=lambda flip: flip.bit_count())
    roundings = []
    for flip in flips:
        x = nearest.copy()
        x[fractional] = np.where((flip >> np.arange(fractional.size)) & 1 == 1, other, near)
        roundings.append(x)
    return roundings


def _fractional_box(
    below: PositionVector, above: PositionVector, holding: PositionVector
) -> list[tuple[PositionVector, PositionVector, float]]:
    """The box of :data:`FRACTIONAL_SHARE`, from the lot multiples either side of the continuous
    optimum (:func:`_lots_either_side`, width 0): each position between two of them over its
    whole range [0, holding], the others where they are (below = above). None when no
    position, or every one, lies between two (the full range follows)."""
    fractional = above > below
    if fractional.all() or not fractional.any():
        return []
    return [
        (np.where(fractional, 0.0, below), np.where(fractional, holding, above), FRACTIONAL_SHARE)
    ]


def _within_gap(upper: float, bound: float) -> bool:
    """Whether an allocation of objective ``upper`` is optimal to MIP_GAP given a lower bound
    ``bound``: upper - bound <= MIP_GAP max(1, |upper|)."""
    return bool(upper - bound <= MIP_GAP * max(1.0, abs(upper)))


def _rounding_may_prove(problem: Problem) -> bool:
    """Whether whole lots may be proven by the rounded relaxation alone: whole lots on some
    movable position and no transfer limit (the rounded allocation might break it)."""
    options = problem.options
    return options.integral and options.max_transfers is None and bool(problem.movable.any())


def _mip_follows(problem: Problem) -> bool:
    """Whether the continuous phase is followed by a MIP: whole lots or a transfer limit on
    some movable position."""
    options, movable = problem.options, bool(problem.movable.any())
    return movable and (options.integral or options.max_transfers is not None)


class _CuttingPlaneModel:
    def __init__(
        self,
        problem: Problem,
        reduction: bool = True,
        formulation: str = "auto",
        warm_start: PositionVector | None = None,
    ) -> None:
        self.problem = problem
        self.warm_start = warm_start
        self.reduction = reduction
        self.lp_seconds = 0.0  # inside HiGHS
        self.interruptible = False  # HiGHS asks the stop hook (_interruptible)
        self.evaluation_seconds = 0.0  # in the exact evaluator
        self.ru = formulation == "ru"  # only when asked for (FORMULATIONS)
        # Whether HiGHS presolves this model's MIPs (off for the RU rows, _set_integral; off
        # once a claim of optimality is checked, _recheck_without_presolve).
        self.mip_presolve = not self.ru
        # The active set of tail scenarios for a linear program; Kelley's cuts where a MIP
        # follows (measured on the reference account in whole lots: with the active set's rows
        # in every node LP the solve took twice as long, and Kelley cuts at its few trial points
        # left the MIP phase 7 rounds where Kelley's continuous path leaves it 1).
        self.active_set = not self.ru and not _mip_follows(problem)
        n, n_factors = problem.exposure.shape
        self.n_factors = n_factors
        # Units (base.problem_scale): the allocation column of position i is u_i = x_i / size_i,
        # every margin, loss and exposure column is in units of ``margin`` USD.
        self.size, self.margin_unit = problem_scale(problem)
        options = problem.options
        quiet_highs_banner()
        self.highs = highspy.Highs()
        set_option(self.highs, "output_flag", False)
        set_option(self.highs, "log_to_console", False)
        set_option(self.highs, "simplex_strategy", 1)  # dual simplex
        set_option(self.highs, "mip_rel_gap", MIP_GAP)
        set_option(self.highs, "mip_abs_gap", MIP_ABSOLUTE_GAP)
        for tolerance in ("primal_feasibility_tolerance", "mip_feasibility_tolerance"):
            set_option(self.highs, tolerance, FEASIBILITY_TOLERANCE)
        set_option(self.highs, "threads", 1)
        if self.active_set and problem.pnl_columns.size <= FACTOR_LP_PNL_SHARE * n:
            # Presolve would run on the first LP only (later ones start from its basis)
            set_option(self.highs, "presolve", "off")
            set_option(self.highs, "simplex_dual_edge_weight_strategy", 1)  # Devex

        cost: list[float] = []
        lower: list[float] = []
        upper: list[float] = []

        def columns(
            count: int,
            low: float | PositionVector,
            high: float | PositionVector,
            objective: float = 0.0,
        ) -> npt.NDArray[np.int64]:
            first = len(cost)
            cost.extend([objective] * count)
            lower.extend(_bound_list(low, count))
            upper.extend(_bound_list(high, count))
            return np.arange(first, first + count, dtype=np.int64)

        lower_bound, upper_bound = allocation_bounds(problem)
        lot_lower, lot_upper = lower_bound / self.size, upper_bound / self.size
        self.lots = columns(n, lot_lower, lot_upper)  # u, the allocation in holdings
        self.current_lots = problem.current_xm / self.size
        unit = self.margin_unit
        rows = _Rows()
        # Whole lots: u_i = sign_i * (lot_i * k_i + remainder_i * z_i) / size_i, k_i whole in
        # [0, kmax_i], z_i binary (only where the holding is off the lot grid), k_i >= kmax_i z_i;
        # a fine-lot position (LotGrid.fine) keeps u_i continuous, snapped at each answer.
        self.harvested: list[list[ModelFigures]] = []  # the exact figures at MIP solutions
        self.lot_columns = np.zeros(0, dtype=np.int64)
        self.whole_columns = np.zeros(0, dtype=np.int64)
        self.whole_of = np.zeros(0, dtype=np.int64)  # position of each whole-holding column
        # The positions with lot columns: movable, not fine (base.FINE_LOT_COUNT).
        self.lotted = np.zeros(0, dtype=np.int64)
        if options.integral and problem.movable.any():
            grid = self.grid
            movable_index = self.lotted = np.flatnonzero(problem.movable & ~grid.fine)
            self.lot_columns = columns(movable_index.size, 0.0, grid.kmax[movable_index])
            self.whole_of = movable_index[grid.has_remainder[movable_index]]
            self.whole_columns = columns(self.whole_of.size, 0.0, 1.0)
            whole_by_position = dict(zip(self.whole_of.tolist(), self.whole_columns, strict=True))
            for column, i in zip(self.lot_columns, movable_index.tolist(), strict=True):
                sign, size = grid.sign[i], self.size[i]
                index = [self.lots[i], column]
                value = [1.0, -sign * problem.lot[i] / size]
                if i in whole_by_position:
                    index.append(whole_by_position[i])
                    value.append(-sign * grid.remainder[i] / size)
                    rows.add([column, whole_by_position[i]], [1.0, -grid.kmax[i]], 0.0, INF)
                rows.add(index, value, 0.0, 0.0)

        ficc, quantity = problem.is_ficc, problem.quantity
        zero = np.zeros(n)
        portfolios = {
            "ficc_standalone": _Portfolio("ficc_standalone", ficc, np.where(ficc, quantity, 0), -1),
            "cme_standalone": _Portfolio("cme_standalone", ~ficc, np.where(ficc, 0, quantity), -1),
            "xm_ficc_only": _Portfolio("xm_ficc_only", ficc, zero, 1.0),
            "xm_cme_only": _Portfolio("xm_cme_only", ~ficc, zero, 1.0),
            "xm": _Portfolio("xm", np.ones(n, dtype=bool), zero, 1.0),
        }
        self.portfolios = portfolios
        has_sensitivities = np.any(problem.exposure != 0.0, axis=1)
        # Exposure columns E_P (K each). Only the XM legs carry the positions' columns:
        #   E_leg,k   = sum_{i in leg} d_ik * lot_i * k_i
        #   E_sa,k    = sum_{i in leg} d_ik * q_i - E_leg,k   (standalone = held - XM)
        #   E_xm,k    = E_xm_ficc_only,k + E_xm_cme_only,k
        if self.active_set:
            ranges = self._exposure_ranges(portfolios, has_sensitivities, lot_lower, lot_upper)
            exposure_of = {name: columns(n_factors, *ranges[name]) for name in portfolios}
        else:  # free: bounds measured to slow the whole-lot phase (12% on the reference)
            exposure_of = {name: columns(n_factors, -INF, INF) for name in portfolios}
        legs = {"xm_ficc_only": "ficc_standalone", "xm_cme_only": "cme_standalone"}
        for leg, standalone in legs.items():
            members = np.flatnonzero(portfolios[leg].members & has_sensitivities)
            held_exposure = problem.exposure[members].T @ quantity[members] / unit
            # Per factor k, in one block: row 2k the leg's E_k (its positions' columns), row
            # 2k + 1 the standalone's, E_sa,k + E_leg,k = held_k (zeros pad it, left out).
            block_index = np.zeros((2 * n_factors, max(2, 1 + members.size)), dtype=np.int64)
            block_value = np.zeros(block_index.shape)
            positions = slice(1, 1 + members.size)
            block_index[0::2, 0], block_index[0::2, positions] = (
                exposure_of[leg],
                self.lots[members],
            )
            block_value[0::2, 0] = 1.0
            block_value[0::2, positions] = -self.size[members] * problem.exposure[members].T / unit
            block_index[1::2, 0], block_index[1::2, 1] = exposure_of[standalone], exposure_of[leg]
            block_value[1::2, :2] = 1.0
            bounds = np.zeros(2 * n_factors)
            bounds[1::2] = held_exposure
            rows.add_block(block_index, block_value, bounds, bounds)
        xm_legs = [exposure_of[name] for name in ("xm", "xm_ficc_only", "xm_cme_only")]
        zero_k = np.zeros(n_factors)
        rows.add_block(
            np.column_stack(xm_legs), np.tile([1.0, -1.0, -1.0], (n_factors, 1)), zero_k, zero_k
        )

        # One term per figure of the XM rule, in the evaluator's order (margin.FIGURES).
        self.terms: list[_Term] = []
        self.tail_rows: list[tuple[int, int]] = []  # per term: its t column and its tail row
        self.candidates: list[npt.NDArray[np.bool_]] = []  # per term: C_j, over the scenarios
        for _, ccp, name in FIGURES:
            window = problem.models[ccp].as_es()
            model = window.model
            portfolio = portfolios[name]
            exposure = exposure_of[name]
            theta = int(columns(1, -INF, INF)[0])
            margin = int(columns(1, 0.0, INF)[0])
            # margin >= sqrt(h) * ((1 - w) * theta + w * sigma) + sum_k addon_k
            margin_index = [margin, theta]
            margin_value = [1.0, -window.scale * (1.0 - model.stress_weight)]
            if window.has_stress:
                sigma = int(columns(1, -INF, INF)[0])
                margin_index.append(sigma)
                margin_value.append(-window.scale * model.stress_weight)
                for s in window.stress_rows:
                    self._loss_cut(
                        rows, sigma, portfolio, exposure, problem.shocks[s], self._pnl_row(s)
                    )
            if window.has_addons:
                assert model.addon_rate is not None and model.addon_threshold is not None
                active = np.flatnonzero(model.addon_rate > 0)
                addons = columns(active.size, 0.0, INF)
                margin_index.extend(addons.tolist())
                margin_value.extend([-1.0] * active.size)
                for addon, k in zip(addons, active.tolist(), strict=True):
                    rate, threshold = model.addon_rate[k], model.addon_threshold[k]
                    rows.add([addon, exposure[k]], [1.0, -rate], -rate * threshold / unit, INF)
                    rows.add([addon, exposure[k]], [1.0, rate], -rate * threshold / unit, INF)
            rows.add(margin_index, margin_value, 0.0, INF)
            self.terms.append(_Term(window, portfolio, exposure, theta, margin))
            if self.active_set:
                # The tail row theta >= t + 1/n_tail sum_{s in C} u_s (see _add_tail_rows):
                # t and the row now, each u_s with its scenario.
                t = int(columns(1, -INF, INF)[0])
                self.tail_rows.append((t, len(rows.lower)))
                rows.add([theta, t], [1.0, -1.0], 0.0, INF)
                self.candidates.append(np.zeros(problem.shocks.shape[0], dtype=bool))
        if self.active_set:
            # Per term, for its tail rows in one block (_add_tail_rows): its exposure columns,
            # and over every P&L-vector position its coefficient sign * size / unit and its
            # held quantity c (both 0 off the term's portfolio).
            pnl_columns = problem.pnl_columns
            self.term_exposure = np.stack([term.exposure_columns for term in self.terms])
            self.tail_row_t = np.array([t for t, _ in self.tail_rows], dtype=np.int64)
            self.tail_row_index = np.array([row for _, row in self.tail_rows], dtype=np.int32)
            self.tail_row_weight = np.array([-1.0 / term.window.n_tail for term in self.terms])
            inside = np.stack([term.portfolio.members[pnl_columns] for term in self.terms])
            signs = np.array([[term.portfolio.sign] for term in self.terms])
            self.term_pnl_scale = inside * (signs * self.size[pnl_columns] / unit)
            self.term_pnl_held = (
                np.stack([term.portfolio.constant[pnl_columns] for term in self.terms]) * inside
            )

        # Objective: standalone margins + XM margin (+ transfer cost). With the reduction the
        # XM margin is z >= C_F, C_C, (1 - cap)(S_F + S_C); without it, S_F + S_C.
        cost[self.terms[0].margin] = 1.0
        cost[self.terms[1].margin] = 1.0
        s_f, s_c, c_f, c_c = (term.margin for term in self.terms[2:])
        if reduction:
            xm_margin = int(columns(1, 0.0, INF, objective=1.0)[0])
            cap = problem.savings_cap
            rows.add([xm_margin, c_f], [1.0, -1.0], 0.0, INF)
            rows.add([xm_margin, c_c], [1.0, -1.0], 0.0, INF)
            rows.add([xm_margin, s_f, s_c], [1.0, -(1.0 - cap), -(1.0 - cap)], 0.0, INF)
        else:
            cost[s_f] = cost[s_c] = 1.0

        movable = np.flatnonzero(problem.movable)
        self.movable = movable
        if options.transfer_cost > 0 and movable.size:
            per_holding = options.transfer_cost * self.size[movable] / problem.lot[movable] / unit
            moved = columns(movable.size, 0.0, INF)
            for d, value in zip(moved, per_holding, strict=True):
                cost[d] = float(value)
            for d, i in zip(moved, movable.tolist(), strict=True):
                rows.add([d, self.lots[i]], [1.0, -1.0], -self.current_lots[i], INF)
                rows.add([d, self.lots[i]], [1.0, 1.0], self.current_lots[i], INF)
        self.binaries = np.zeros(0, dtype=np.int64)
        if options.max_transfers is not None and movable.size:
            self.binaries = columns(movable.size, 0.0, 1.0)
            for b, i in zip(self.binaries, movable.tolist(), strict=True):
                span = max(abs(lot_upper[i] - lot_lower[i]), 1e-9)
                rows.add([self.lots[i], b], [1.0, -span], -INF, self.current_lots[i])
                rows.add([self.lots[i], b], [1.0, span], self.current_lots[i], INF)
            rows.add(self.binaries, np.ones(movable.size), -INF, float(options.max_transfers))

        if self.ru:
            self._rockafellar_uryasev(rows, columns, exposure_of)

        lp = highspy.HighsLp()
        lp.num_col_ = len(cost)
        lp.col_cost_ = np.array(cost)
        lp.col_lower_ = np.array(lower)
        lp.col_upper_ = np.array(upper)
        self.highs.passModel(lp)
        rows.push(self.highs)
        self.integer_columns = np.concatenate((self.lot_columns, self.whole_columns, self.binaries))
        self.needs_mip = bool(options.integral and movable.size) or self.binaries.size > 0
        if self.active_set:
            # No directional cuts here: with the seed tails they only made the first LP larger
            # (reference account: the same 3 rounds, build + LPs 37 -> 27 ms CPU; 56 generated
            # books, factors and 30% P&L vectors, 30-3,000 positions: 17% less in all).
            self._seed_tails(self._starting_points())
        elif not self.ru:  # the RU rows are exact: no seed cuts needed
            rows = _Rows()
            self._directional_cuts(rows)
            for point in self._starting_points():
                self._add_cuts(rows, self._term_figures(point), range(len(self.terms)))
            rows.push(self.highs)

    @functools.cached_property
    def grid(self) -> LotGrid:
        """The positions' lot grid (``base.lot_grid``), for whole lots only: found when first
        asked for (a continuous solve never does)."""
        return lot_grid(self.problem)

    def _exposure_ranges(
        self,
        portfolios: dict[str, _Portfolio],
        has_sensitivities: npt.NDArray[np.bool_],
        lot_lower: PositionVector,
        lot_upper: PositionVector,
    ) -> dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
        """Each portfolio's exposure range over the allocation box, in margin units: a leg's
        E_k = sum_i d_ik size_i u_i / unit lies between the sums of each term's smaller and
        larger end; standalone = held - leg, XM = both legs. Implied bounds, so the LP is the
        same; the dual simplex then starts with every exposure column at a bound instead of
        free (measured: 5-35% fewer iterations of the active-set LPs on generated books)."""
        problem, unit = self.problem, self.margin_unit
        per_unit = problem.exposure * (self.size / unit * has_sensitivities)[:, None]
        ends = np.stack((per_unit * lot_lower[:, None], per_unit * lot_upper[:, None]))
        low_each, high_each = ends.min(axis=0), ends.max(axis=0)  # (n, K)
        ranges = {}
        for leg, standalone in (
            ("xm_ficc_only", "ficc_standalone"),
            ("xm_cme_only", "cme_standalone"),
        ):
            members = portfolios[leg].members
            low, high = low_each[members].sum(axis=0), high_each[members].sum(axis=0)
            held = (
                per_unit[members & has_sensitivities].T
                @ (problem.quantity / self.size)[members & has_sensitivities]
            )
            ranges[leg] = (low, high)
            ranges[standalone] = (held - high, held - low)
        ficc, cme = ranges["xm_ficc_only"], ranges["xm_cme_only"]
        ranges["xm"] = (ficc[0] + cme[0], ficc[1] + cme[1])
        # A margin for round-off: the bounds must never cut off an allocation.
        slack = 1e-6 * (1.0 + max(float(np.abs(np.stack(r)).max()) for r in ranges.values()))
        return {name: (low - slack, high + slack) for name, (low, high) in ranges.items()}

    def _rockafellar_uryasev(
        self,
        rows: _Rows,
        columns: Callable[..., npt.NDArray[np.int64]],
        exposure_of: dict[str, npt.NDArray[np.int64]],
    ) -> None:
        """The direct RU form of every ES term (module docstring). Each XM leg's losses
        l_s = -(shocks_s . E_leg + pnl_s . v_leg) get a column per scenario (one row each, the
        only rows as long as the book); each term's rows then hold a few columns each:
        u_s + t - sum_leg c_leg l_leg,s >= held_s, theta - t - 1/n_tail sum_s u_s >= 0."""
        problem, unit = self.problem, self.margin_unit
        n_scenarios = problem.shocks.shape[0]
        first = min(window.window.start for window in problem.models.values())
        scenario_rows = np.arange(first, n_scenarios)
        count = scenario_rows.size
        pnl_columns = problem.pnl_columns
        leg_losses: dict[str, npt.NDArray[np.int64]] = {}
        for leg in ("xm_ficc_only", "xm_cme_only"):
            losses = columns(count, -INF, INF)
            leg_losses[leg] = losses
            inside = self.portfolios[leg].members[pnl_columns]
            members = pnl_columns[inside]
            index = np.hstack(
                (
                    losses[:, None],
                    np.broadcast_to(exposure_of[leg], (count, self.n_factors)),
                    np.broadcast_to(self.lots[members], (count, members.size)),
                )
            )
            value = np.hstack(
                (
                    np.ones((count, 1)),
                    problem.shocks[scenario_rows],
                    problem.pnl_vectors[scenario_rows][:, inside] * self.size[members] / unit,
                )
            )
            zero = np.zeros(count)
            rows.add_block(index, value, zero, zero)
        in_terms_of = {
            "xm_ficc_only": ((leg_losses["xm_ficc_only"], 1.0),),
            "xm_cme_only": ((leg_losses["xm_cme_only"], 1.0),),
            "xm": ((leg_losses["xm_ficc_only"], 1.0), (leg_losses["xm_cme_only"], 1.0)),
            "ficc_standalone": ((leg_losses["xm_ficc_only"], -1.0),),
            "cme_standalone": ((leg_losses["xm_cme_only"], -1.0),),
        }
        for term in self.terms:
            window = term.window
            if window.model.stress_weight >= 1.0:  # theta carries no weight
                continue
            scenarios = np.arange(n_scenarios)[window.window]
            local = scenarios - first
            size = scenarios.size
            held = problem.losses(term.portfolio.constant)[scenarios] / unit
            t = int(columns(1, -INF, INF)[0])
            excess = columns(size, 0.0, INF)
            legs = in_terms_of[term.portfolio.name]
            index = np.column_stack(
                [excess, np.full(size, t), *(losses[local] for losses, _ in legs)]
            )
            value = np.column_stack(
                [np.ones(size), np.ones(size), *(np.full(size, -sign) for _, sign in legs)]
            )
            rows.add_block(index, value, held, np.full(size, INF))
            rows.add(
                np.concatenate(([term.theta, t], excess)),
                np.concatenate(([1.0, -1.0], np.full(size, -1.0 / window.n_tail))),
                0.0,
                INF,
            )

    # --- cuts ------------------------------------------------------------------------------

    def _pnl_row(self, rows: int | npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.zeros(0) if not self.problem.pnl_columns.size else self.problem.pnl_vectors[rows]

    def _loss_cut(
        self,
        rows: _Rows,
        epigraph: int,
        portfolio: _Portfolio,
        exposure: npt.NDArray[np.int64],
        shock: npt.NDArray[np.float64],
        pnl: npt.NDArray[np.float64],
    ) -> None:
        """epigraph >= -(shock . E + pnl . v_pnl), v_pnl = c + sign * lot * k on members: one
        row, built from lists (faster than :meth:`_loss_rows` for one row)."""
        problem = self.problem
        index = [epigraph, *exposure.tolist()]
        value = [1.0, *shock.tolist()]
        lower = 0.0
        columns = problem.pnl_columns
        if columns.size:
            inside = portfolio.members[columns]
            members, weights = columns[inside], pnl[inside]
            index.extend(self.lots[members].tolist())
            scale = self.size[members] / self.margin_unit
            value.extend((weights * portfolio.sign * scale).tolist())
            lower = -float(weights @ portfolio.constant[members]) / self.margin_unit
        rows.add(index, value, lower, INF)

    def _loss_rows(
        self,
        rows: _Rows,
        epigraphs: npt.NDArray[np.int64],
        portfolio: _Portfolio,
        exposure: npt.NDArray[np.int64],
        shocks: npt.NDArray[np.float64],
        pnl: npt.NDArray[np.float64],
    ) -> None:
        """Row r: sum_e epigraphs[r, e] >= -(shocks[r] . E + pnl[r] . v_pnl), v_pnl = c + sign
        * size * u on the portfolio's members; ``shocks`` (R, K), ``pnl`` (R, m) or (R, 0)."""
        count = shocks.shape[0]
        index = [epigraphs, np.broadcast_to(exposure, (count, exposure.size))]
        value = [np.ones(epigraphs.shape), shocks]
        lower = np.zeros(count)
        columns = self.problem.pnl_columns
        if columns.size:
            inside = portfolio.members[columns]
            members, weights = columns[inside], pnl[:, inside]
            index.append(np.broadcast_to(self.lots[members], (count, members.size)))
            value.append(weights * (portfolio.sign * self.size[members] / self.margin_unit))
            lower = -(weights @ portfolio.constant[members]) / self.margin_unit
        rows.add_block(np.hstack(index), np.hstack(value), lower, np.full(count, INF))

    def _term_figures(self, xm_quantity: PositionVector) -> list[ModelFigures]:
        """Each term's model figures at an allocation, from the exact evaluator (ES for VaR)."""
        started = time.perf_counter()
        figures = list(account_figures(self.problem, xm_quantity, es_for_var=True).values())
        self.evaluation_seconds += time.perf_counter() - started
        return figures

    def _run_highs(self, integral: bool) -> int:
        """One HiGHS solve (LP or MIP) from the current basis, its time counted; returns its
        simplex iterations.

        Under a stop hook (:mod:`..cancellation`) HiGHS's interrupt callbacks ask the hook at
        every iteration and node (:meth:`_interruptible`), but a Python call at every simplex
        iteration cost 6-14% of the reference account's solve, whose LPs take milliseconds.
        So an LP first runs for at most :data:`STOP_CHECK_SECONDS` on HiGHS's clock without
        them; one still running then is resumed from its basis with them, as is every later
        solve on this model and every MIP."""
        highs = self.highs
        started = time.perf_counter()
        iterations, resume = 0, True
        if integral:
            self._interruptible()
        elif not self.interruptible and cancellation.current() is not None:
            _, set_limit = highs.getOptionValue("time_limit")
            limit = float(set_limit)  # the loop's limit, on HiGHS's clock
            set_option(highs, "time_limit", min(limit, highs.getRunTime() + STOP_CHECK_SECONDS))
            highs.run()
            iterations += int(highs.getInfo().simplex_iteration_count)
            set_option(highs, "time_limit", limit)
            resume = (
                highs.getModelStatus() == highspy.HighsModelStatus.kTimeLimit
                and highs.getRunTime() < limit
                and not cancellation.stop_requested()
            )
            if resume:
                self._interruptible()
        if resume:
            highs.run()
            iterations += int(highs.getInfo().simplex_iteration_count)
        self.lp_seconds += time.perf_counter() - started
        return iterations

    def _interruptible(self) -> None:
        """From now on HiGHS asks the stop hook in force, if any, from its interrupt callbacks
        (at every simplex iteration and MIP node): a stopped solve ends within one of them."""
        if not self.interruptible:
            self.interruptible = True
            _interrupt_when_stopped(self.highs)

    def _convex_objective(self, figures: list[ModelFigures], xm_quantity: PositionVector) -> float:
        """The convex objective: standalone margins + XM margin (convex form with the
        reduction, S_F + S_C without) + transfer cost."""
        problem = self.problem
        ficc, cme, s_f, s_c, c_f, c_c = (figure.margin for figure in figures)
        if self.reduction:
            xm_margin = convex_xm_margin(s_f, s_c, c_f, c_c, problem.savings_cap)
        else:
            xm_margin = s_f + s_c
        return ficc + cme + xm_margin + problem.transfer_cost(xm_quantity)

    def _tails(self, figures: list[ModelFigures], terms: Iterable[int]) -> dict[int, Scenarios]:
        """Each of ``terms``' tail scenarios (rows of the scenario matrix) in ``figures``,
        leaving out a term whose portfolio is empty there (all losses 0: an arbitrary tail)."""
        return {
            j: np.flatnonzero(figures[j].tail_weights) + self.terms[j].window.window.start
            for j in terms
            if figures[j].es != 0.0 or figures[j].var != 0.0
        }

    def _seed_tails(self, points: Iterable[PositionVector]) -> None:
        """The active set's first candidates: every term's tail at each of ``points``."""
        tails: dict[int, list[Scenarios]] = {}
        for point in points:
            for j, tail in self._tails(self._term_figures(point), range(len(self.terms))).items():
                tails.setdefault(j, []).append(tail)
        self._add_tail_rows({j: np.concatenate(found) for j, found in tails.items()})

    def _add_tail_rows(self, scenarios: dict[int, Scenarios]) -> int:
        """The scenarios s (rows of the scenario matrix) of ``scenarios[j]`` join term j's
        candidate set C_j, as the Rockafellar-Uryasev rows over C_j:

            u_s + t_j + shock_s . E + pnl_s . v  >=  0,   u_s >= 0,
            theta_j >= t_j + 1/n_tail * sum_{s in C_j} u_s.

        Any C_j gives a lower bound on ES (the RU value over fewer scenarios); it is exact at
        every allocation whose tail lies in C_j. Returns how many scenarios were new."""
        problem, highs = self.problem, self.highs
        terms: list[int] = []  # the terms with new scenarios, and those scenarios
        news: list[Scenarios] = []
        for j, wanted in scenarios.items():
            new = np.unique(wanted)  # ascending
            new = new[~self.candidates[j][new]]
            if new.size:
                terms.append(j)
                news.append(new)
                self.candidates[j][new] = True
        if not news:
            return 0
        sizes = [new.size for new in news]
        count = sum(sizes)
        term_of = np.repeat(terms, sizes)
        scenario = np.concatenate(news)
        # The u columns, each with its entry -1/n_tail in its term's tail row.
        first = highs.getNumCol()
        highs.addCols(
            count,
            np.zeros(count),
            np.zeros(count),
            np.full(count, INF),
            count,
            np.arange(count, dtype=np.int32),
            self.tail_row_index[term_of],
            self.tail_row_weight[term_of],
        )
        # Row s of term j: u_s + t_j + shock_s . E_j + sum_i pnl_s,i sign_j size_i / unit u_i
        # >= -pnl_s . c_j / unit, one block for every term (P&L entries off the portfolio are 0).
        index = [
            np.arange(first, first + count)[:, None],
            self.tail_row_t[term_of][:, None],
            self.term_exposure[term_of],
        ]
        value = [np.ones((count, 2)), problem.shocks[scenario]]
        lower = np.zeros(count)
        if problem.pnl_columns.size:
            pnl = problem.pnl_vectors[scenario]
            index.append(np.broadcast_to(self.lots[problem.pnl_columns], pnl.shape))
            value.append(pnl * self.term_pnl_scale[term_of])
            lower = -np.einsum("sm,sm->s", pnl, self.term_pnl_held[term_of]) / self.margin_unit
        # One addRows of the block, its zeros left out (as _Rows.add_block, without its lists).
        starts, kept_indices, kept_values = _nonzero_rows(np.hstack(index), np.hstack(value))
        highs.addRows(
            count,
            lower,
            np.full(count, INF),
            kept_values.size,
            starts.astype(np.int32),
            kept_indices.astype(np.int32),
            kept_values,
        )
        return count

    def _add_cuts(self, rows: _Rows, figures: list[ModelFigures], terms: Iterable[int]) -> int:
        """For each of ``terms``, the cut theta >= w . L(v) with w its tail weights in
        ``figures``; w is a valid ES weighting for every term of the same model, so the cut is
        added to all of them."""
        added = 0
        for j in terms:
            added += self._add_shared_cut(rows, self.terms[j].window.ccp, figures[j].tail_weights)
        return added

    def _add_shared_cut(self, rows: _Rows, ccp: Ccp, weights: npt.NDArray[np.float64]) -> int:
        problem = self.problem
        tail = np.flatnonzero(weights)
        window = problem.models[ccp].window
        window_rows = np.arange(problem.shocks.shape[0])[window][tail]
        shock = weights[tail] @ problem.shocks[window_rows]
        pnl = self._pnl_row(0)
        if problem.pnl_columns.size:
            pnl = weights[tail] @ problem.pnl_vectors[window_rows]
        added = 0
        for term in self.terms:
            if term.window.ccp is ccp:
                self._loss_cut(rows, term.theta, term.portfolio, term.exposure_columns, shock, pnl)
                added += 1
        return added

    def _directional_cuts(self, rows: _Rows) -> None:
        """ES weights depend only on the direction of the exposure E: seed every term with the
        tail weights of the pure factor directions +-e_k (one cut per direction and term)."""
        problem = self.problem
        for ccp in Ccp:
            window = problem.models[ccp]
            shocks = problem.shocks[window.window]
            directions = np.concatenate((-shocks.T, shocks.T))  # losses of E = +e_k, -e_k
            weights = tail_weights(directions, window.n_tail)  # (2K, N)
            cut_shocks = weights @ shocks
            pnl = np.zeros((weights.shape[0], 0))
            if problem.pnl_columns.size:
                pnl = weights @ problem.pnl_vectors[window.window]
            for term in self.terms:
                if term.window.ccp is ccp:
                    epigraphs = np.full((weights.shape[0], 1), term.theta)
                    self._loss_rows(
                        rows, epigraphs, term.portfolio, term.exposure_columns, cut_shocks, pnl
                    )

    def _starting_points(self) -> list[PositionVector]:
        """The seeds' trial points (their tails join the active set, or give Kelley cuts): the
        current, empty-XM and all-in-XM allocations, and the warm start's (in addition: alone,
        its tails were measured to need more rounds than these three where the current
        allocation is the previous answer)."""
        problem = self.problem
        everything = np.where(problem.movable, problem.quantity, problem.current_xm)
        points = [
            problem.current_xm,
            np.where(problem.movable, 0.0, problem.current_xm),
            everything,
        ]
        if self.warm_start is not None:
            points.append(self.warm_start)
        return points

    def _set_integral(self) -> None:
        if self.ru:  # measured: HiGHS's MIP presolve of the RU rows ran 65 s past a 20 s limit
            set_option(self.highs, "presolve", "off")
        count = self.integer_columns.size
        self.highs.changeColsIntegrality(
            count,
            self.integer_columns.astype(np.int32),
            np.array([highspy.HighsVarType.kInteger] * count),
        )

    # --- the loop ----------------------------------------------------------------------------

    def run(
        self, time_limit: float | None, started: float, first_box: _FirstBox | None = None
    ) -> RawSolution:
        """Continuous cutting planes first; then, for integral allocations, the same loop as a
        MIP: first in boxes of whole lots around the continuous optimum (a strong incumbent,
        optimal outright when it meets the continuous bound), then over the full range, started
        from that incumbent. Every MIP solution is evaluated exactly as HiGHS finds it
        (:meth:`_watch_incumbents`): one that meets the continuous bound ends the search.
        ``first_box``: the first box around the relaxation's optimum, searched already
        (``HighsBackend._rounded_relaxation``): its best is an incumbent, and the local phase
        starts at its second box."""
        loop = _Loop(time_limit, started)
        self._cutting_loop(loop, integral=False)
        if loop.status is Status.OPTIMAL and self.needs_mip:
            if time_limit is None:  # bound the integral tail (TAIL_SECONDS, TAIL_FACTOR)
                spent = time.perf_counter() - started
                loop.time_limit = spent + max(TAIL_SECONDS, TAIL_FACTOR * spent)
                loop.tail_budget = True
            continuous_bound, continuous_x = loop.lower_bound, loop.best_x
            loop.best_x, loop.best_upper = None, np.inf  # not admissible once integral
            self._set_integral()
            loop.target = continuous_bound
            self._watch_incumbents(loop)
            if self.problem.options.integral and continuous_x is not None:
                self._round_continuous(loop, continuous_x, continuous_bound)
                if first_box is not None and not loop.proven:
                    loop.offer(first_box.best, first_box.objective)
                if not loop.proven:
                    self._local_phase(loop, continuous_x, continuous_bound, first_box is not None)
            if not loop.proven:
                self._cutting_loop(loop, integral=True)
        if loop.status is Status.TIME_LIMIT and (loop.untrusted or loop.tail_budget):
            gap = (loop.best_upper - loop.lower_bound) / max(1.0, abs(loop.best_upper))
            if loop.untrusted:
                loop.message += f" ({gap:.2g} above the continuous bound)"
            else:
                loop.message = (
                    f"whole-lot search stopped at its default budget ({loop.time_limit:.1f} s; "
                    f"set time_limit for more), {gap:.2g} above the continuous bound"
                )
        if loop.best_x is None:
            failed = Status.ERROR if loop.status is Status.OPTIMAL else loop.status
            return RawSolution(
                failed,
                None,
                message=loop.message,
                rounds=loop.rounds,
                lp_seconds=self.lp_seconds,
                evaluation_seconds=self.evaluation_seconds,
            )
        return RawSolution(
            status=loop.status,
            xm_quantity=loop.best_x,
            objective=float(loop.best_upper),
            bound=float(loop.lower_bound),
            iterations=loop.iterations,
            cuts=loop.cuts,
            message=f"{loop.message} in {loop.rounds} rounds" + (" (RU LP)" if self.ru else ""),
            rounds=loop.rounds,
            lp_seconds=self.lp_seconds,
            evaluation_seconds=self.evaluation_seconds,
        )

    def _watch_incumbents(self, loop: _Loop) -> None:
        """Every improving MIP solution HiGHS finds is snapped to the allowed set, evaluated
        exactly and offered as incumbent while the MIP runs; once the incumbent meets
        ``loop.target`` (the continuous bound, a lower bound of every whole-lot answer) to
        MIP_GAP it is proven optimal and the MIP is interrupted (the cut model's own bound need
        not close: its objective underestimates the exact one)."""
        highs, problem = self.highs, self.problem

        def improving(event: HighsCallbackEvent) -> None:
            solution = np.asarray(event.data_out.mip_solution)
            x = solution[self.lots] * self.size
            if problem.options.integral:
                x = snap_to_allowed(problem, x)
            figures = self._term_figures(x)
            self.harvested.append(figures)
            loop.offer(x, self._convex_objective(figures, x))
            if loop.target is not None and loop.within_gap(loop.target):
                loop.target_met = True

        def interrupt(event: HighsCallbackEvent) -> None:
            if loop.target_met:
                event.interrupt()

        highs.cbMipImprovingSolution += improving
        highs.cbMipInterrupt += interrupt

    def _round_continuous(
        self, loop: _Loop, continuous_x: PositionVector, continuous_bound: float
    ) -> None:
        """The continuous optimum moved to the nearest allowed quantities: the first incumbent
        (and the MIP's start), optimal outright when it meets the continuous bound."""
        problem = self.problem
        rounded = snap_to_allowed(problem, continuous_x)
        limit = problem.options.max_transfers
        if limit is not None and np.count_nonzero(rounded != problem.current_xm) > limit:
            return
        loop.offer(rounded, self._convex_objective(self._term_figures(rounded), rounded))
        loop.lower_bound = continuous_bound
        if loop.within_gap(continuous_bound):
            loop.proven, loop.message = True, "rounded continuous optimum meets its bound"
        else:
            self._start_from(rounded)

    def _local_phase(
        self,
        loop: _Loop,
        continuous_x: PositionVector,
        continuous_bound: float,
        first_box_searched: bool = False,
    ) -> None:
        """MIPs in boxes of allowed quantities around the continuous optimum, each
        :data:`LOCAL_WIDTHS` lots wider than the lot multiples either side of it (or the whole
        holding), each started from the best so far; optimal outright once the best total
        meets the continuous bound (a lower bound of every integral answer). The first box,
        where it holds at most :data:`MAX_ROUNDINGS` allocations, by exact evaluation of each
        (:meth:`_every_rounding`), or not at all when ``first_box_searched``; before the
        second, the fractional positions over their whole ranges (:func:`_fractional_box`)."""
        highs, problem, movable = self.highs, self.problem, self.movable
        lots = self.lots[movable]
        index = lots.astype(np.int32)
        lp = highs.getLp()
        lower = np.asarray(lp.col_lower_)[lots]
        upper = np.asarray(lp.col_upper_)[lots]
        size, lot, sign = self.size[movable], problem.lot[movable], self.grid.sign[movable]
        held, holding = np.abs(continuous_x[movable]), np.abs(problem.quantity[movable])
        widths: tuple[int, ...] = LOCAL_WIDTHS
        if LOCAL_WIDTHS[0] == 0 and (
            first_box_searched or self._every_rounding(loop, continuous_x)
        ):
            if loop.within_gap(continuous_bound):
                loop.proven, loop.message = True, "best rounding meets the continuous bound"
                return
            if loop.status is not Status.OPTIMAL or loop.best_x is None:
                return
            self._start_from(loop.best_x)
            widths = LOCAL_WIDTHS[1:]
        # (below, above, share of the time left): quantities per movable position
        boxes: list[tuple[PositionVector, PositionVector, float]] = []
        first_wide = next((width for width in widths if width > 0), None)
        for width in widths:
            if width == first_wide and FRACTIONAL_SHARE > 0:
                boxes += _fractional_box(*_lots_either_side(held, lot, holding), holding)
            below, above = _lots_either_side(held, lot, holding, width)
            boxes.append((below, above, LOCAL_SHARE))
        for below, above, share in boxes:
            ends = np.stack((sign * below, sign * np.maximum(above, below))) / size
            local_lower = np.maximum(lower, ends.min(axis=0))
            local_upper = np.maximum(np.minimum(upper, ends.max(axis=0)), local_lower)
            highs.changeColsBounds(index.size, index, local_lower, local_upper)
            deadline, remaining = loop.time_limit, loop.remaining()
            if deadline is not None and remaining is not None and remaining > 0:  # leave time
                loop.time_limit = deadline - (1.0 - share) * remaining
            self._cutting_loop(loop, integral=True, local=True)
            highs.changeColsBounds(index.size, index, lower, upper)
            loop.lower_bound = continuous_bound  # the local bound holds only inside the box
            loop.time_limit = deadline
            still = loop.remaining()
            if loop.status is Status.TIME_LIMIT and still is not None and still > 0:
                loop.status, loop.message = Status.OPTIMAL, "local phase stopped at its share"
            if loop.proven or loop.status is not Status.OPTIMAL:
                return
            if loop.best_x is not None:  # none: the box is infeasible under a transfer limit
                if loop.within_gap(continuous_bound):
                    loop.proven = True
                    return
                self._start_from(loop.best_x)

    def _every_rounding(self, loop: _Loop, continuous_x: PositionVector) -> bool:
        """The local phase's first box by exact evaluation: every allocation of
        :func:`_roundings` offered to ``loop`` until one meets ``loop.target``; Kelley cuts
        added at the best. False (nothing done) when the box is too large or under a transfer
        limit (a rounding might break it): the box's MIP then searches it."""
        if self.problem.options.max_transfers is not None:
            return False
        roundings = _roundings(self.problem, continuous_x)
        if not roundings:
            return False
        best: list[ModelFigures] | None = None
        for x in roundings:
            if (remaining := loop.remaining()) is not None and remaining <= 0:
                loop.stop(Status.TIME_LIMIT, "time limit reached")
                break
            figures = self._term_figures(x)
            value = self._convex_objective(figures, x)
            if value < loop.best_upper:
                best = figures
            loop.offer(x, value)
            if loop.target is not None and loop.within_gap(loop.target):
                break
        if best is not None:
            rows = _Rows()
            loop.cuts += self._add_cuts(rows, best, range(len(self.terms)))
            rows.push(self.highs)
        return True

    def _recheck_without_presolve(self, loop: _Loop) -> bool:
        """Whether a full-range MIP's claim of optimality is to be solved again first: once,
        when HiGHS presolved the MIP that made it. HiGHS 1.16's MIP presolve returns "optimal"
        answers with better ones cut off and its dual bound at its own answer (a 7-position
        book: 2.8e-6 above an allocation the same cut model holds, 6 integer columns, presolve
        off finds it; 6.8e-5 on a 20-position book); so presolve goes off for the rest of the
        solve, the bound falls back to the continuous one (a valid bound) and the loop solves
        the MIP again under the incumbent: its answer, or nothing below the incumbent, is the
        proof."""
        if not self.mip_presolve:
            return False
        self.mip_presolve = False
        set_option(self.highs, "presolve", "off")
        loop.lower_bound = -np.inf if loop.target is None else loop.target
        return True

    def _start_from(self, xm_quantity: PositionVector) -> None:
        """Give HiGHS an allowed allocation as its MIP start: u, and k, z of whole lots."""
        problem, movable = self.problem, np.flatnonzero(self.problem.movable)
        grid = self.grid
        index = [self.lots[movable]]
        value = [xm_quantity[movable] / self.size[movable]]
        if self.lot_columns.size:
            held = np.abs(xm_quantity)
            whole = (grid.remainder > 0) & (held > grid.kmax * problem.lot + 0.5 * grid.remainder)
            lots = np.where(whole, grid.kmax, np.round(held / problem.lot))
            index += [self.lot_columns, self.whole_columns]
            value += [lots[self.lotted], whole[self.whole_of].astype(float)]
        columns = np.concatenate(index).astype(np.int32)
        highs = self.highs
        highs.setSolution(columns.size, columns, np.concatenate(value))

    def _cutting_loop(self, loop: _Loop, integral: bool, local: bool = False) -> None:
        """The cutting-plane loop on the current model (LP or MIP).

        Each round solves, evaluates every term exactly at the solution, keeps the best
        allocation as incumbent and, for each term whose ES exceeds its theta, adds its tail
        scenarios to the term's active set (a linear program) or its Kelley cut (where a MIP
        follows, and in the MIP). In the continuous phase it also does so at the midpoint of
        incumbent and solution (in-out separation). A local phase that is infeasible (a
        transfer limit) just ends.
        """
        highs, problem, unit = self.highs, self.problem, self.margin_unit
        theta_columns = [term.theta for term in self.terms]
        tolerance = MIP_GAP if integral else GAP_TOLERANCE
        unbounded = False  # after an answer above the incumbent: no objective bound (below)
        while True:
            cancellation.check()  # the caller is gone: stop between rounds
            loop.rounds += 1
            remaining = loop.remaining()
            if remaining is not None:
                if remaining <= 0:
                    loop.stop(Status.TIME_LIMIT, "time limit reached")
                    return
                # HiGHS (1.16) checks an LP's time limit against its run clock, summed over
                # every run of this instance, and a MIP's against the run alone.
                limit = remaining if integral else highs.getRunTime() + remaining
                set_option(highs, "time_limit", limit)
            given = loop.best_upper  # the incumbent HiGHS is given (the callback may lower it)
            cutoff = given
            if integral and unbounded:
                set_option(highs, "objective_bound", INF)
                cutoff = np.inf
            elif integral and loop.best_x is not None:
                # Prune every node that cannot beat the incumbent's exact objective; while a
                # claim is checked without presolve, every node that cannot beat it by MIP_GAP
                # (only such an allocation would overturn the claim).
                if not local and not self.mip_presolve:
                    cutoff = given - RECHECK_CUTOFF * MIP_GAP * max(1.0, abs(given))
                set_option(highs, "objective_bound", float(cutoff) / unit)
            iterations = self._run_highs(integral)
            cancellation.check()  # stopped inside HiGHS or between its slices (_run_highs)
            model_status = highs.getModelStatus()
            if integral and loop.target_met:
                assert loop.target is not None
                loop.lower_bound = max(loop.lower_bound, loop.target)
                loop.proven, loop.message = True, "incumbent meets the continuous bound"
                return
            if model_status in _NOTHING_BETTER and loop.best_x is not None:
                if not local and self._recheck_without_presolve(loop):
                    continue
                # nothing below the objective bound: the incumbent, to HiGHS's gap (its dual
                # bound is then +inf, or the cut-off)
                bound = float(highs.getInfo().mip_dual_bound) * unit
                loop.lower_bound = max(loop.lower_bound, min(bound, cutoff))
                loop.message = "incumbent proven optimal"
                return
            info = highs.getInfo()
            loop.iterations += iterations
            if model_status == highspy.HighsModelStatus.kInfeasible:
                if not local:
                    loop.stop(Status.INFEASIBLE, "infeasible")
                return
            timed_out = model_status == highspy.HighsModelStatus.kTimeLimit
            has_point = model_status == highspy.HighsModelStatus.kOptimal or (
                timed_out and integral and info.primal_solution_status == 2
            )
            if not has_point:
                if timed_out:
                    loop.stop(Status.TIME_LIMIT, "time limit reached")
                else:
                    loop.stop(MODEL_STATUS[model_status], highs.modelStatusToString(model_status))
                return
            if integral and not timed_out and _mip_answer_above(info, given / unit):
                # HiGHS called optimal a solution above the incumbent it was given (its
                # objective bound and MIP start), so its search did not hold that incumbent
                # and its bound proves nothing: measured on a 30-position book, it then
                # called optimal an allocation 3e-6 above one another run found, with a bound
                # above its own answer. The box (local) ends; the full range is solved again
                # without presolve (which found that allocation), then, should that answer
                # above too, without the objective bound (:data:`UNBOUNDED_AFTER_ABOVE`).
                if not local and self._recheck_without_presolve(loop):
                    continue
                if (
                    not local
                    and UNBOUNDED_AFTER_ABOVE
                    and not unbounded
                    and loop.best_x is not None
                ):
                    # once: an unbounded round answering above its MIP start proves nothing
                    unbounded = True
                    self._start_from(loop.best_x)
                    continue
                if not local:
                    loop.untrusted = True
                    loop.stop(
                        Status.TIME_LIMIT,
                        "stopped unproven: HiGHS's MIP answered above the incumbent it was "
                        "given, so its bound was not taken",
                    )
                return
            solution = np.asarray(highs.getSolution().col_value)
            x = solution[self.lots] * self.size
            if integral and problem.options.integral:
                x = snap_to_allowed(problem, x)
            figures = self._term_figures(x)
            previous_best = loop.best_x
            loop.offer(x, self._convex_objective(figures, x))
            if integral and loop.target is not None and loop.within_gap(loop.target):
                # the continuous bound proves it, whatever the MIP's own bound says
                loop.lower_bound = max(loop.lower_bound, loop.target)
                loop.proven, loop.message = True, "incumbent meets the continuous bound"
                return
            if timed_out:
                loop.stop(Status.TIME_LIMIT, "time limit reached")
                return
            if integral:  # nodes pruned at the cut-off bound nothing beyond it
                loop.lower_bound = min(unit * float(info.mip_dual_bound), cutoff)
                if loop.target is not None:  # the continuous bound holds for every answer
                    loop.lower_bound = max(loop.lower_bound, loop.target)
            else:
                loop.lower_bound = unit * float(info.objective_function_value)
            if loop.best_upper - loop.lower_bound <= tolerance * max(1.0, abs(loop.best_upper)):
                if integral and not local and self._recheck_without_presolve(loop):
                    continue
                loop.message = "converged"
                return
            thetas = solution[theta_columns] * unit
            # A MIP's rows hold to its feasibility tolerance in scaled units: a cut violated by
            # less would come back every round at the same point.
            floor = CUT_TOLERANCE * unit if integral else 0.0
            violated = [
                j
                for j, figure in enumerate(figures)
                if figure.es > thetas[j] + max(1e-9 * max(1.0, abs(figure.es)), floor)
            ]
            rows = _Rows()
            if self.active_set:
                loop.cuts += self._add_tail_rows(self._tails(figures, violated))
            else:
                loop.cuts += self._add_cuts(rows, figures, violated)
                for found in self.harvested:  # the MIP's improving solutions (_watch_incumbents)
                    loop.cuts += self._add_cuts(rows, found, range(len(self.terms)))
                self.harvested.clear()
            if not integral and previous_best is not None and violated:
                middle = 0.5 * (previous_best + x)
                middle_figures = self._term_figures(middle)
                loop.offer(middle, self._convex_objective(middle_figures, middle))
                if self.active_set:
                    loop.cuts += self._add_tail_rows(self._tails(middle_figures, violated))
                else:
                    loop.cuts += self._add_cuts(rows, middle_figures, violated)
            rows.push(highs)
            if not violated:
                # No cut to add, so the incumbent is optimal only if it meets the bound: where
                # it does not, the solver's objective disagrees with its own solution (HiGHS
                # 1.16's presolved MIP reported 11.03 M for a solution whose costs sum to
                # 12.06 M, the optimum 11.98 M): solved again without presolve, else unproven.
                if integral and not local and self._recheck_without_presolve(loop):
                    continue
                if not local and not loop.within_gap(loop.lower_bound):
                    loop.untrusted = True
                    loop.stop(
                        Status.TIME_LIMIT,
                        "stopped unproven: no cut left to add, yet the incumbent lies above "
                        "the solver's bound",
                    )
                    return
                loop.message = "no violated cut left"
                return
            if loop.rounds >= MAX_ROUNDS:
                loop.stop(Status.TIME_LIMIT, f"stopped after {MAX_ROUNDS} rounds")
                return


class _VarMajorantModel(_CuttingPlaneModel):
    """The continuous problem with each VaR figure replaced by its majorant at a point
    (:func:`..margin.var_majorant_window`): the largest loss of its window outside
    ``excluded[name]`` (:func:`..margin.var_exclusions`), an ES over a tail of one scenario, so
    the same active-set loop solves it. Each term has its own exclusions, so only the active set
    (per-term candidate scenarios) serves, never Kelley's cuts shared across a model's terms:
    no whole lots and no transfer limit here."""

    def __init__(
        self, problem: Problem, excluded: dict[str, npt.NDArray[np.bool_]], reduction: bool
    ) -> None:
        assert not _mip_follows(problem), "the majorant is solved continuous, without a limit"
        self.excluded = excluded  # read by _term_figures while the base class seeds its rows
        models = {ccp: var_majorant_window(window) for ccp, window in problem.models.items()}
        super().__init__(dataclasses.replace(problem, models=models), reduction)

    def _term_figures(self, xm_quantity: PositionVector) -> list[ModelFigures]:
        """Each term's figures under the majorant: its excluded scenarios left out."""
        started = time.perf_counter()
        figures = account_figures(self.problem, xm_quantity, excluded=self.excluded)
        self.evaluation_seconds += time.perf_counter() - started
        return list(figures.values())


def solve_var_majorant(
    problem: Problem,
    excluded: dict[str, npt.NDArray[np.bool_]],
    reduction: bool,
    time_limit: float | None,
) -> RawSolution:
    """The continuous minimum of the VaR majorant (:class:`_VarMajorantModel`) on one branch of
    the XM rule (``reduction``), by the active-set loop; ``problem`` without a transfer limit."""
    started = time.perf_counter()
    relaxed = problem.with_options(dataclasses.replace(problem.options, integral=False))
    return _VarMajorantModel(relaxed, excluded, reduction).run(time_limit, started)


def _interrupt_when_stopped(highs: highspy.Highs) -> None:
    """With a stop hook in force (:mod:`..cancellation`), HiGHS's simplex, IPM and MIP
    interrupt callbacks ask it at every check, so a stopped solve ends within one iteration or
    node; the loop then raises SolveCancelled."""
    should_stop = cancellation.current()
    if should_stop is None:
        return

    def interrupt(event: HighsCallbackEvent) -> None:
        if should_stop():
            event.interrupt()

    highs.cbSimplexInterrupt += interrupt
    highs.cbIpmInterrupt += interrupt
    highs.cbMipInterrupt += interrupt


def _mip_answer_above(info: highspy.HighsInfo, given: float) -> bool:
    """Whether HiGHS's MIP answered a solution whose objective (margin units) lies above
    ``given``, the incumbent's objective it was given: then it did not search from that
    incumbent and its optimality says nothing about it."""
    answer = float(info.objective_function_value)
    return bool(np.isfinite(given) and answer > given + 1e-9 * max(1.0, abs(given)))


_NOTHING_BETTER = (
    highspy.HighsModelStatus.kObjectiveBound,
    highspy.HighsModelStatus.kInfeasible,
)


@dataclass(slots=True)
class _Loop:
    """The state of the cutting-plane loop across its phases."""

    time_limit: float | None
    started: float
    status: Status = Status.OPTIMAL
    message: str = "converged"
    best_x: PositionVector | None = None
    best_upper: float = np.inf
    lower_bound: float = -np.inf
    proven: bool = False
    rounds: int = 0
    iterations: int = 0
    cuts: int = 0
    tail_budget: bool = False  # the time limit is the default integral-tail budget
    target: float | None = None  # a valid lower bound: an incumbent within MIP_GAP is optimal
    target_met: bool = False
    untrusted: bool = False  # a MIP's answer did not hold its incumbent (_mip_answer_above)

    def remaining(self) -> float | None:
        if self.time_limit is None:
            return None
        return self.time_limit - (time.perf_counter() - self.started)

    def within_gap(self, bound: float) -> bool:
        """Whether the incumbent is within MIP_GAP (relative) of ``bound``."""
        return _within_gap(self.best_upper, bound)

    def offer(self, x: PositionVector, value: float) -> None:
        if value < self.best_upper:
            self.best_x, self.best_upper = x, value

    def stop(self, status: Status, message: str) -> None:
        self.status, self.message = status, message
