"""An exact MILP of VaR over a window of candidate tail scenarios: a move of the exact-VaR phase.

A VaR figure with window losses L_s(x), affine in the allocation, and f = floor(n_tail) is

    VaR(x) = L(f+1)(x) = min over sets D of f scenarios of max_{s not in D} L_s(x).

With a set C of candidate scenarios (the largest losses at the phase's best allocations) and a
binary b_s per candidate (s in D):

    v >= L_s(x) - big_s b_s   (s in C),     v >= L_s(x)   (the rest of the window),
    sum_{s in C} b_s <= f,                  big_s = max of L_s over the box - a bound below v,

so v >= VaR(x) everywhere, equal to it wherever the f largest losses at x lie in C: the MILP
minimises a majorant of the exact objective that is exact near the candidates' basins, over
every exclusion set within C at once (where majorise-minimise and its exchanges try one set at
a time). ES figures: Rockafellar-Uryasev, t + (1/n_tail) sum_s e_s, e_s >= L_s - t, e_s >= 0.
Each figure M >= sqrt(h) ((1 - w) risk + w stress) + sum_k a_k, M >= 0, with a_k >=
rate_k (+-E_k - thr_k), a_k >= 0 and stress >= L_s on the stress rows; the XM rule's branches as
in :mod:`.var_majorant` (with reduction ficc + cme + z, z >= C_F, C_C, (1 - cap)(S_F + S_C);
without, ficc + cme + S_F + S_C). The allowed set is exact: fixed positions, whole lots
(y = sign (lot k + remainder w), k >= kmax w), the transfer limit (a binary per movable
position) and the transfer cost (d_i >= |u_i - u0_i|).

Each figure's rows are only those of its largest losses (:data:`KEPT`, at the start and at
each answer, solved again while some join): small LPs at every node. Solved by HiGHS without
presolve (HiGHS 1.16's MIP presolve called the start optimal on book 119 in whole lots with a
lower allocation in the model, as ``highs_backend`` found for its MIPs) and without its sub-MIP
heuristics (:data:`SUB_MIP_HEURISTICS`), from the phase's best allocation as its MIP start,
within the phase's deadline and under the stop hook. Its objective is never trusted: the
answer is put on the allowed set and judged by the exact evaluator, and over a window C alone
its optimum says nothing about the exact optimum.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import highspy
import numpy as np
import numpy.typing as npt

from .. import cancellation
from ..margin import (
    FIGURES,
    account_quantities,
    evaluate,
    var_window_losses,
    window_losses,
)
from ..model import Ccp, Measure
from ..problem import PositionVector, Problem
from ..results import moved_positions
from .base import (
    MIP_GAP,
    allocation_bounds,
    lot_grid,
    on_allowed_set,
    problem_scale,
    snap_to_allowed,
)
from .highs_backend import (
    FEASIBILITY_TOLERANCE,
    MIP_ABSOLUTE_GAP,
    _interrupt_when_stopped,
    quiet_highs_banner,
    set_option,
)
from .local_search import exact_objective

__all__ = [
    "CANDIDATES",
    "KEPT",
    "MAX_POSITIONS",
    "WindowAnswer",
    "WindowSearch",
    "candidate_scenarios",
    "search_window",
    "solve_window_mip",
]

CANDIDATES = 6
"""Candidate scenarios per VaR figure beyond its f excluded ones: the largest losses at the
start allocation."""

SUB_MIP_HEURISTICS = (
    "mip_heuristic_run_rins",
    "mip_heuristic_run_rens",
    "mip_heuristic_run_root_reduced_cost",
)
"""HiGHS's heuristics that solve sub-MIPs, off: on 4 generated books they took 0.8 of a 1.1 s
solve (102, continuous: 0.09 s without them, the same answer) and left 119 in whole lots at the
root node after 3 s (724 nodes without)."""

KEPT = 20
"""Rows per figure beyond ceil(n_tail): its largest window losses at the start and at each
answer (the rest of the window joins only when it is among them: small LPs at every node)."""

MAX_POSITIONS = 60
"""The most positions the phase builds the MILP for: its rows are dense in the positions."""

INF = highspy.kHighsInf


@dataclass(slots=True)
class _Model:
    """Columns (bounds, cost, integrality) and rows (triplets) of one MILP."""

    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    integer: list[int] = field(default_factory=list)
    row_lower: list[float] = field(default_factory=list)
    row_upper: list[float] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def column(self, lower: float, upper: float, cost: float = 0.0, integer: bool = False) -> int:
        self.lower.append(lower)
        self.upper.append(upper)
        self.cost.append(cost)
        if integer:
            self.integer.append(len(self.lower) - 1)
        return len(self.lower) - 1

    def row(self, cols: list[int], values: list[float], lower: float, upper: float) -> None:
        r = len(self.row_lower)
        self.row_lower.append(lower)
        self.row_upper.append(upper)
        self.rows += [r] * len(cols)
        self.cols += cols
        self.values += values

    def block(
        self,
        cols: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
        lower: npt.NDArray[np.float64],
        upper: npt.NDArray[np.float64],
    ) -> None:
        """Rows r with entries values[r, j] in columns cols[r, j] (zeros left out)."""
        first = len(self.row_lower)
        keep = values != 0.0
        self.rows += (np.nonzero(keep)[0] + first).tolist()
        self.cols += cols[keep].tolist()
        self.values += values[keep].tolist()
        self.row_lower += lower.tolist()
        self.row_upper += upper.tolist()

    def highs(self) -> highspy.Highs:
        quiet_highs_banner()
        highs = highspy.Highs()
        set_option(highs, "output_flag", False)
        set_option(highs, "log_to_console", False)
        set_option(highs, "threads", 1)
        set_option(highs, "mip_rel_gap", MIP_GAP)
        set_option(highs, "mip_abs_gap", MIP_ABSOLUTE_GAP)
        set_option(highs, "mip_feasibility_tolerance", FEASIBILITY_TOLERANCE)
        set_option(highs, "presolve", "off")
        for heuristic in SUB_MIP_HEURISTICS:
            set_option(highs, heuristic, False)
        lp = highspy.HighsLp()
        lp.num_col_ = len(self.cost)
        lp.num_row_ = len(self.row_lower)
        lp.col_cost_ = np.array(self.cost)
        lp.col_lower_ = np.array(self.lower)
        lp.col_upper_ = np.array(self.upper)
        lp.row_lower_ = np.array(self.row_lower)
        lp.row_upper_ = np.array(self.row_upper)
        order = np.lexsort((np.array(self.rows), np.array(self.cols)))
        cols = np.array(self.cols, dtype=np.int64)[order]
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = np.searchsorted(cols, np.arange(lp.num_col_ + 1)).astype(np.int32)
        lp.a_matrix_.index_ = np.array(self.rows, dtype=np.int32)[order]
        lp.a_matrix_.value_ = np.array(self.values)[order]
        kinds = [highspy.HighsVarType.kContinuous] * lp.num_col_
        for j in self.integer:
            kinds[j] = highspy.HighsVarType.kInteger
        lp.integrality_ = kinds
        highs.passModel(lp)
        return highs


@dataclass(frozen=True, slots=True)
class WindowAnswer:
    """The MILP's answer on the allowed set, its exact objective, and how HiGHS ended."""

    xm_quantity: PositionVector
    objective: float
    status: str


@dataclass(frozen=True, slots=True)
class WindowSearch:
    """The window MILP's lowest answer below the start's objective (None if none is lower) and
    ``bound``, the least over the XM branches solved of HiGHS's proven lower bound (USD; -inf
    where a branch was not solved): every allocation whose f largest losses of each VaR figure
    lie among the candidates has an exact objective at least ``bound`` (each solve's rows are
    some of the window's, a relaxation: its bound holds for the whole window); ``proven``:
    every branch was solved and HiGHS ended each at its optimum (the model was small enough)."""

    answer: WindowAnswer | None
    bound: float
    proven: bool

    def exhausted(self, value: float) -> bool:
        """Whether nothing in the window is below ``value`` by more than MIP_GAP (relative):
        the window MILP cannot improve an end of objective ``value``. Says nothing about the
        exact optimum outside the window."""
        return self.answer is None and self.bound >= value - MIP_GAP * max(1.0, abs(value))


def candidate_scenarios(
    problem: Problem, allocations: list[PositionVector], extra: int = CANDIDATES
) -> dict[str, npt.NDArray[np.bool_]]:
    """Per figure of a VaR model: a mask over its window of the f + ``extra`` largest losses at
    each of ``allocations`` (their union)."""
    masks: dict[str, npt.NDArray[np.bool_]] = {}
    for x in allocations:
        for name, losses in var_window_losses(problem, x).items():
            ccp = next(house for figure, house, _ in FIGURES if figure == name)
            count = min(losses.size, math.floor(problem.models[ccp].n_tail) + extra)
            mask = masks.setdefault(name, np.zeros(losses.size, dtype=bool))
            mask[np.argsort(-losses, kind="stable")[:count]] = True
    return masks


def search_window(
    problem: Problem, x: PositionVector, value: float, deadline: float, both_branches: bool
) -> WindowSearch:
    """The window MILP from the allowed allocation ``x`` (exact objective ``value``), the
    candidates its largest losses (:func:`candidate_scenarios`), on the XM rule's branch active
    at ``x`` first, then (``both_branches``) on the other, all within ``deadline``: the lowest
    answer if lower than ``value`` and the proven bound (:class:`WindowSearch`). Not tried (no
    answer, bound -inf) on books of more than :data:`MAX_POSITIONS` positions or with nothing
    movable."""
    if problem.n_positions > MAX_POSITIONS or not problem.movable.any():
        return WindowSearch(None, -math.inf, False)
    candidates = candidate_scenarios(problem, [x])
    state = evaluate(problem, x)
    active = state.xm.margin < state.xm.S_F + state.xm.S_C  # the reduction applies at x
    branches = [active] + ([not active] if both_branches else [])
    best: WindowAnswer | None = None
    bound, proven = math.inf, True
    for reduction in branches:
        if time.perf_counter() >= deadline:
            bound, proven = -math.inf, False
            break
        answer, below, optimal = _solve_window(problem, x, candidates, reduction, deadline)
        bound, proven = min(bound, below), proven and optimal
        if answer is not None and answer.objective < (value if best is None else best.objective):
            best = answer
    if best is None or best.objective >= value - 1e-9 * max(1.0, abs(value)):
        best = None
    return WindowSearch(best, bound, proven)


def solve_window_mip(
    problem: Problem,
    start: PositionVector,
    candidates: dict[str, npt.NDArray[np.bool_]],
    reduction: bool,
    deadline: float,
) -> WindowAnswer | None:
    """The MILP of the module doc on one branch of the XM rule (``reduction``), started from the
    allowed allocation ``start``, within ``deadline`` (a ``time.perf_counter()`` value): the
    best of its answers on the allowed set with its exact objective, or None when HiGHS found
    none (or no answer was allowed).

    Each figure's rows are those of its :data:`KEPT` largest window losses at ``start`` (and
    the candidates); at each answer the figures' largest losses not yet kept join, and the MILP
    is solved again from the best answer so far, until none joins or the deadline."""
    return _solve_window(problem, start, candidates, reduction, deadline)[0]


def _solve_window(
    problem: Problem,
    start: PositionVector,
    candidates: dict[str, npt.NDArray[np.bool_]],
    reduction: bool,
    deadline: float,
) -> tuple[WindowAnswer | None, float, bool]:
    """:func:`solve_window_mip`'s answer, the highest of its solves' proven lower bounds (USD;
    -inf when none was solved) and whether its last solve ended at the model's optimum with no
    row left to join."""
    bound, optimal = -math.inf, False
    kept = _largest_losses(problem, start)
    for name, mask in candidates.items():
        kept[name] |= mask
    best: WindowAnswer | None = None
    x, value = start, exact_objective(problem, start)
    while time.perf_counter() < deadline:
        answer, proven = _solve_once(problem, candidates, kept, reduction, x, deadline)
        bound, optimal = max(bound, proven), False
        if answer is None:
            break
        if best is None or answer.objective < best.objective:
            best = answer
        if answer.objective < value:
            x, value = answer.xm_quantity, answer.objective
        joined = 0
        for name, mask in _largest_losses(problem, answer.xm_quantity).items():
            joined += int((mask & ~kept[name]).sum())
            kept[name] |= mask
        if not joined:
            optimal = answer.status == "Optimal"
            break
    return best, bound, optimal


def _largest_losses(problem: Problem, x: PositionVector) -> dict[str, npt.NDArray[np.bool_]]:
    """Per figure: a mask over its window of the ceil(n_tail) + :data:`KEPT` largest losses."""
    losses = window_losses(problem, x)
    masks = {}
    for name, ccp, _ in FIGURES:
        window = problem.models[ccp]
        in_window = losses[name]
        count = min(in_window.size, math.ceil(window.n_tail) + KEPT)
        mask = np.zeros(in_window.size, dtype=bool)
        mask[np.argsort(-in_window, kind="stable")[:count]] = True
        masks[name] = mask
    return masks


def _solve_once(
    problem: Problem,
    candidates: dict[str, npt.NDArray[np.bool_]],
    kept: dict[str, npt.NDArray[np.bool_]],
    reduction: bool,
    start: PositionVector,
    deadline: float,
) -> tuple[WindowAnswer | None, float]:
    """One solve: its answer on the allowed set (None when HiGHS found none or it is not
    allowed) and HiGHS's proven lower bound on the model's objective, in USD (-inf without
    one)."""
    remaining = deadline - time.perf_counter()
    if remaining <= 0:
        return None, -math.inf
    built = _build(problem, candidates, kept, reduction, start)
    highs = built.model.highs()
    set_option(highs, "time_limit", max(remaining, 1e-3))
    _interrupt_when_stopped(highs)
    columns, values = built.start
    highs.setSolution(columns.size, columns.astype(np.int32), values)
    highs.run()
    cancellation.check()  # stopped by the hook: the interrupt ended the run
    status = highs.getModelStatus()
    info = highs.getInfo()
    bound = info.mip_dual_bound * built.unit if math.isfinite(info.mip_dual_bound) else -math.inf
    if info.primal_solution_status != 2:  # no feasible solution
        return None, bound
    solution = np.asarray(highs.getSolution().col_value)
    x = solution[built.u] * built.size
    if problem.options.max_transfers is not None:  # a position not counted moved is not moved
        x = np.where(built.moves(solution), x, problem.current_xm)
    x = snap_to_allowed(problem, x)
    if not _allowed(problem, x):
        return None, bound
    answer = WindowAnswer(x, exact_objective(problem, x), highs.modelStatusToString(status))
    return answer, bound


def _allowed(problem: Problem, x: PositionVector) -> bool:
    limit = problem.options.max_transfers
    moved = int(moved_positions(problem, problem.current_xm, x).sum())
    return bool(on_allowed_set(problem, x).all()) and (limit is None or moved <= limit)


@dataclass(slots=True)
class _Built:
    model: _Model
    u: npt.NDArray[np.int64]
    size: PositionVector
    start: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]
    transfer: dict[int, int]  # position -> its "moved" binary
    unit: float  # USD per unit of the model's objective

    def moves(self, solution: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        moved = np.ones(self.u.size, dtype=bool)
        for i, t in self.transfer.items():
            moved[i] = solution[t] > 0.5
        return moved


def _build(
    problem: Problem,
    candidates: dict[str, npt.NDArray[np.bool_]],
    kept: dict[str, npt.NDArray[np.bool_]],
    reduction: bool,
    start: PositionVector,
) -> _Built:
    """The MILP in scaled units (u_i = x_i / size_i, money in ``unit`` USD, see
    :func:`.base.problem_scale`), and its MIP start at ``start``."""
    options = problem.options
    size, unit = problem_scale(problem)
    lower, upper = allocation_bounds(problem)
    m = _Model()
    n = problem.n_positions
    u = np.array([m.column(lower[i] / size[i], upper[i] / size[i]) for i in range(n)])
    u0 = problem.current_xm / size
    us = start / size
    start_cols: list[int] = list(u)
    start_vals: list[float] = list(us)
    movable = np.flatnonzero(problem.movable)
    if options.integral:
        grid = lot_grid(problem)
        for i in movable.tolist():
            if grid.fine[i]:
                continue
            sign, lot, rem = grid.sign[i], problem.lot[i], grid.remainder[i]
            kmax = float(grid.kmax[i])
            held = abs(start[i])
            whole = rem > 0 and held > kmax * lot + 0.5 * rem
            k = m.column(0.0, kmax, integer=True)
            cols, vals = [int(u[i]), k], [1.0, -sign * lot / size[i]]
            start_cols.append(k)
            start_vals.append(kmax if whole else float(np.clip(np.round(held / lot), 0, kmax)))
            if rem > 0:
                w = m.column(0.0, 1.0, integer=True)
                cols.append(w)
                vals.append(-sign * rem / size[i])
                m.row([k, w], [1.0, -kmax], 0.0, INF)
                start_cols.append(w)
                start_vals.append(float(whole))
            m.row(cols, vals, 0.0, 0.0)
    if options.transfer_cost > 0:
        for i in movable.tolist():
            d = m.column(0.0, INF, options.transfer_cost * size[i] / problem.lot[i] / unit)
            m.row([d, int(u[i])], [1.0, -1.0], -u0[i], INF)
            m.row([d, int(u[i])], [1.0, 1.0], u0[i], INF)
    transfer: dict[int, int] = {}
    if options.max_transfers is not None:
        moved = moved_positions(problem, problem.current_xm, start)
        for i in movable.tolist():
            t = m.column(0.0, 1.0, integer=True)
            transfer[i] = t
            span = max((upper[i] - lower[i]) / size[i], 1e-9)
            m.row([int(u[i]), t], [1.0, -span], -INF, u0[i])
            m.row([int(u[i]), t], [1.0, span], u0[i], INF)
            start_cols.append(t)
            start_vals.append(float(moved[i]))
        m.row(list(transfer.values()), [1.0] * len(transfer), -INF, float(options.max_transfers))

    pnl = problem.unit_pnl()  # (S, n) per unit
    box_lower, box_upper = lower / size, upper / size
    held_at_start = account_quantities(problem, start)
    ficc = problem.is_ficc.astype(float)
    accounts = {  # account -> (constant quantity, quantity per unit of u)
        "ficc_standalone": (np.where(problem.is_ficc, problem.quantity, 0.0), -ficc),
        "cme_standalone": (np.where(problem.is_ficc, 0.0, problem.quantity), ficc - 1.0),
        "xm_ficc_only": (np.zeros(n), ficc),
        "xm_cme_only": (np.zeros(n), 1.0 - ficc),
        "xm": (np.zeros(n), np.ones(n)),
    }
    figures: dict[str, int] = {}
    wanted = ["ficc_standalone", "cme_standalone", "S_F", "S_C"]
    wanted += ["C_F", "C_C"] if reduction else []
    for name, ccp, account in FIGURES:
        if name not in wanted:
            continue
        constant, per_u = accounts[account]
        per_u = np.asarray(per_u, dtype=float) * size  # quantity_i = constant_i + per_u_i u_i
        loss_const = -(pnl @ constant) / unit  # (S,)
        loss_coef = -(pnl * per_u[None, :]) / unit  # (S, n)
        loss_max = loss_const + np.maximum(loss_coef * box_lower, loss_coef * box_upper).sum(1)
        loss_min = loss_const + np.minimum(loss_coef * box_lower, loss_coef * box_upper).sum(1)
        at_start = -(pnl @ held_at_start[account]) / unit
        figures[name] = _figure(
            m,
            problem,
            ccp,
            u,
            (loss_const, loss_coef, loss_min, loss_max, at_start),
            (constant, per_u),
            unit,
            candidates.get(name),
            kept[name],
            (start_cols, start_vals),
        )
    margin = figures
    m.cost[margin["ficc_standalone"]] += 1.0
    m.cost[margin["cme_standalone"]] += 1.0
    if reduction:
        cap = problem.savings_cap
        z = m.column(0.0, INF, 1.0)
        m.row([z, margin["C_F"]], [1.0, -1.0], 0.0, INF)
        m.row([z, margin["C_C"]], [1.0, -1.0], 0.0, INF)
        m.row([z, margin["S_F"], margin["S_C"]], [1.0, cap - 1.0, cap - 1.0], 0.0, INF)
    else:
        m.cost[margin["S_F"]] += 1.0
        m.cost[margin["S_C"]] += 1.0
    start_at = (np.array(start_cols), np.array(start_vals, dtype=float))
    return _Built(m, u, size, start_at, transfer, unit)


def _figure(
    m: _Model,
    problem: Problem,
    ccp: Ccp,
    u: npt.NDArray[np.int64],
    losses: tuple[npt.NDArray[np.float64], ...],
    quantities: tuple[PositionVector, PositionVector],
    unit: float,
    candidates: npt.NDArray[np.bool_] | None,
    kept: npt.NDArray[np.bool_],
    start: tuple[list[int], list[float]],
) -> int:
    """The columns and rows of one model figure, its risk measure's rows only for the window's
    scenarios ``kept`` and the ``candidates``; its margin column M."""
    window = problem.models[ccp]
    model = window.model
    loss_const, loss_coef, loss_min, loss_max, at_start = losses
    rows = np.arange(problem.shocks.shape[0])[window.window]
    cols = np.broadcast_to(u, loss_coef.shape)
    terms: list[tuple[int, float]] = []
    weight = model.stress_weight
    if weight < 1.0:
        if model.measure is Measure.VAR:
            whole = math.floor(window.n_tail)
            chosen = np.zeros(rows.size, dtype=bool) if candidates is None else candidates
            chosen = chosen if whole else np.zeros(rows.size, dtype=bool)
            # v >= every kept loss outside the candidates: v's lower bound
            outside = rows[kept & ~chosen]
            bound = float(loss_min[outside].max()) if outside.size else float(loss_min.min())
            v = m.column(bound, INF)
            terms.append((v, window.scale * (1.0 - weight)))
            # v - loss_coef u >= loss_const on the rows outside the candidates
            m.block(
                np.hstack([np.full((outside.size, 1), v), cols[outside]]),
                np.hstack([np.ones((outside.size, 1)), -loss_coef[outside]]),
                loss_const[outside],
                np.full(outside.size, INF),
            )
            inside = rows[chosen]
            binaries = [m.column(0.0, 1.0, integer=True) for _ in inside]
            big = np.maximum(loss_max[inside] - bound, 0.0)
            binary_of = np.array(binaries, dtype=np.int64)[:, None]
            m.block(
                np.hstack([np.full((inside.size, 1), v), binary_of, cols[inside]]),
                np.hstack([np.ones((inside.size, 1)), big[:, None], -loss_coef[inside]]),
                loss_const[inside],
                np.full(inside.size, INF),
            )
            if binaries:
                m.row(binaries, [1.0] * len(binaries), -INF, float(whole))
                excluded = np.argsort(-at_start[inside], kind="stable")[:whole]
                start[0].extend(binaries)
                start[1].extend(np.isin(np.arange(inside.size), excluded).astype(float).tolist())
        else:
            t = m.column(-INF, INF)
            terms.append((t, window.scale * (1.0 - weight)))
            for s in rows[kept].tolist():
                e = m.column(0.0, INF)
                terms.append((e, window.scale * (1.0 - weight) / window.n_tail))
                coefficients = [1.0, 1.0, *(-loss_coef[s]).tolist()]
                m.row([e, t, *u.tolist()], coefficients, loss_const[s], INF)
    if weight > 0.0 and window.stress_rows.size:
        sigma = m.column(-INF, INF)
        terms.append((sigma, window.scale * weight))
        for s in window.stress_rows.tolist():
            m.row([sigma, *u.tolist()], [1.0, *(-loss_coef[s]).tolist()], loss_const[s], INF)
    if window.has_addons:
        assert model.addon_rate is not None and model.addon_threshold is not None
        constant, per_u = quantities
        exposure_const = constant @ problem.exposure / unit  # (K,)
        exposure_coef = per_u[:, None] * problem.exposure / unit  # (n, K)
        for k in np.flatnonzero(model.addon_rate > 0).tolist():
            rate, threshold = float(model.addon_rate[k]), float(model.addon_threshold[k]) / unit
            a = m.column(0.0, INF)
            terms.append((a, 1.0))
            for sign in (1.0, -1.0):  # a - sign rate E_coef u >= rate (sign E_const - thr)
                m.row(
                    [a, *u.tolist()],
                    [1.0, *(-sign * rate * exposure_coef[:, k]).tolist()],
                    rate * (sign * exposure_const[k] - threshold),
                    INF,
                )
    margin = m.column(0.0, INF)
    m.row([margin] + [c for c, _ in terms], [1.0] + [-w for _, w in terms], 0.0, INF)
    return margin
