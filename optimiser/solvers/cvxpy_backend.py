"""The readable reference formulation in cvxpy (HiGHS by default, any installed solver by name).

Each margin model on a portfolio v is written as in margin-model.md, with ES in its
Rockafellar-Uryasev form over the model's window (t free):

    ES(v)  = t + 1/n_tail * sum_s max(0, L_s(v) - t),   L_s(v) = -(shocks_s . D'v + pnl_s . v)
    M(v)   = max(0, sqrt(h) * ((1 - w) * ES(v) + w * max_{s in stress} L_s(v))
                    + sum_k rate_k * max(0, |(D'v)_k| - thr_k))

and the XM rule as the max of its three convex terms.

The formulation is in factor space: each portfolio's net exposure E = D'v is a K-vector variable
(one equality row per factor), so a scenario's loss -shocks_s . E has K coefficients instead of
one per position; only the positions given as P&L vectors enter the losses one by one.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import ClassVar

import cvxpy as cp
import numpy as np

from ..blas import configure_blas_threads
from ..model import Ccp
from ..problem import ModelWindow, PositionVector, Problem
from ..results import Status
from . import installed_cvxpy_solvers
from .base import (
    MIP_GAP,
    Capabilities,
    RawSolution,
    allocation_bounds,
    lot_grid,
    problem_scale,
    snap_to_allowed,
)
from .local_search import exact_objective

__all__ = ["CvxpyBackend"]

_RETRY_SOLVER = "CLARABEL"

_STATUS = {
    cp.OPTIMAL: Status.OPTIMAL,
    cp.OPTIMAL_INACCURATE: Status.OPTIMAL,
    cp.INFEASIBLE: Status.INFEASIBLE,
    cp.INFEASIBLE_INACCURATE: Status.INFEASIBLE,
    cp.USER_LIMIT: Status.TIME_LIMIT,
}


@dataclass(frozen=True, slots=True)
class _Portfolio:
    """A portfolio v (affine in the allocation, holding units, shape n) and its net exposure
    E = D'v (USD per factor move / margin unit), a K-vector variable tied to v by K rows."""

    held: cp.Expression
    members: np.ndarray  # (n,) bool: the positions v may hold
    exposure: cp.Expression


def _portfolio(
    held: cp.Expression, members: np.ndarray, units: _Units, constraints: list[cp.Constraint]
) -> _Portfolio:
    """``held`` with its exposure variable E and the rows E = D'v added to ``constraints``."""
    n_factors = units.exposure.shape[0]
    if n_factors == 0:
        return _Portfolio(held, members, cp.Constant(np.zeros(0)))
    exposure = cp.Variable(n_factors)
    constraints.append(exposure == units.exposure[:, members] @ held[np.flatnonzero(members)])
    return _Portfolio(held, members, exposure)


def _model_margin(
    problem: Problem, window: ModelWindow, portfolio: _Portfolio, units: _Units
) -> cp.Expression:
    """M(v) / margin_unit of ``window``'s model on ``portfolio``: losses L = -(shocks E + pnl v)
    and add-ons in units of ``units.margin``."""
    model = window.as_es().model
    held, exposure = portfolio.held, portfolio.exposure

    def losses(rows: slice | np.ndarray) -> cp.Expression:
        shocks = problem.shocks[rows]
        loss: cp.Expression = (
            -(shocks @ exposure) if shocks.shape[1] else cp.Constant(np.zeros(shocks.shape[0]))
        )
        inside = portfolio.members[problem.pnl_columns]  # P&L-vector positions v holds
        if inside.any():
            loss = loss - units.pnl[rows][:, inside] @ held[problem.pnl_columns[inside]]
        return loss

    weight = model.stress_weight
    risk: cp.Expression | float = 0.0
    if weight < 1.0:  # at w = 1 the ES term carries no weight: leave its variables out
        t = cp.Variable()
        expected_shortfall = t + cp.sum(cp.pos(losses(window.window) - t)) / window.n_tail
        risk = (1.0 - weight) * expected_shortfall
    if window.has_stress:
        risk = risk + weight * cp.max(losses(window.stress_rows))
    addons: cp.Expression | float = 0.0
    if window.has_addons:
        assert model.addon_rate is not None and model.addon_threshold is not None
        threshold = model.addon_threshold / units.margin
        addons = model.addon_rate @ cp.pos(cp.abs(exposure) - threshold)
    return cp.pos(window.scale * risk + addons)


@dataclass(frozen=True, slots=True)
class _Units:
    """Scaled data (solvers.base.problem_scale): quantities in holdings, margin in ``margin``."""

    size: np.ndarray  # (n,) USD par or contracts per holding unit
    margin: float  # USD per margin unit
    exposure: np.ndarray  # (K, n) d_ik * size_i / margin
    pnl: np.ndarray  # (S, m) pnl_i * size_i / margin for the P&L-vector positions


def _units(problem: Problem) -> _Units:
    size, margin = problem_scale(problem)
    pnl = problem.pnl_vectors * size[problem.pnl_columns] / margin
    return _Units(size, margin, problem.exposure.T * size / margin, pnl)


def _has_integers(program: cp.Problem) -> bool:
    return any(v.attributes["integer"] or v.attributes["boolean"] for v in program.variables())


class CvxpyBackend:
    """cvxpy formulation; ``solver`` is any installed cvxpy solver (HiGHS by default)."""

    name: ClassVar[str] = "cvxpy"

    @property
    def capabilities(self) -> Capabilities:
        """MIP only where the chosen cvxpy solver does it (cvxpy's MI_SOLVERS)."""
        from cvxpy.reductions.solvers.defines import MI_SOLVERS

        return Capabilities(lp=True, mip=self.solver in MI_SOLVERS, duals=False, warm_start=False)

    def __init__(self, solver: str = "HIGHS") -> None:
        installed = installed_cvxpy_solvers()
        if solver not in installed:
            raise ValueError(
                f"cvxpy solver {solver!r} is not installed; installed: {list(installed)}"
            )
        self.solver = solver

    def solve(
        self,
        problem: Problem,
        time_limit: float | None = None,
        reduction: bool = True,
        warm_start: PositionVector | None = None,  # ignored: the reference path starts cold
    ) -> RawSolution:
        started = time.perf_counter()
        n = problem.n_positions
        options = problem.options
        units = _units(problem)
        size = units.size
        lower, upper = allocation_bounds(problem)
        # u: XM quantity in units of the holding (x = size * u), so |u| <= 1.
        u = cp.Variable(n, name="xm_holdings")
        constraints = [u >= lower / size, u <= upper / size]
        movable = problem.movable
        grid = lot_grid(problem)
        index = np.flatnonzero(movable & ~grid.fine)  # fine lots: u continuous, then snapped
        relaxed = bool(options.integral and np.any(movable & grid.fine))
        if options.integral and index.size:
            # u = sign * (lot * k + remainder * z) / size, k <= kmax, z binary, k >= kmax * z.
            lots = cp.Variable(index.size, integer=True, name="lots")
            step = grid.sign[index] * problem.lot[index] / size[index]
            held: cp.Expression = cp.multiply(step, lots)
            constraints += [lots <= grid.kmax[index], lots >= 0]
            odd = np.flatnonzero(grid.has_remainder[index])  # sizes off the lot grid
            if odd.size:
                whole = cp.Variable(odd.size, boolean=True, name="whole_holding")
                rest = np.zeros((index.size, odd.size))
                rest[odd, np.arange(odd.size)] = (grid.sign * grid.remainder / size)[index[odd]]
                held = held + rest @ whole
                constraints.append(lots[odd] >= cp.multiply(grid.kmax[index[odd]], whole))
            constraints.append(u[index] == held)
        current = problem.current_xm / size
        change = u - current
        if options.max_transfers is not None:
            moved = cp.Variable(n, boolean=True, name="moved")
            constraints += [cp.abs(change) <= 2.0 * moved, cp.sum(moved) <= options.max_transfers]

        ficc = problem.is_ficc.astype(float)
        cme = 1.0 - ficc
        standalone = problem.quantity / size - u
        ficc_model, cme_model = problem.models[Ccp.FICC], problem.models[Ccp.CME]

        def margin(window: ModelWindow, portfolio: _Portfolio) -> cp.Expression:
            return _model_margin(problem, window, portfolio, units)

        def portfolio(held: cp.Expression, members: np.ndarray) -> _Portfolio:
            return _portfolio(held, members, units, constraints)

        is_ficc = problem.is_ficc
        xm = portfolio(u, np.ones(n, dtype=bool))
        ficc_standalone = margin(ficc_model, portfolio(cp.multiply(ficc, standalone), is_ficc))
        cme_standalone = margin(cme_model, portfolio(cp.multiply(cme, standalone), ~is_ficc))
        S_F = margin(ficc_model, portfolio(cp.multiply(ficc, u), is_ficc))
        S_C = margin(cme_model, portfolio(cp.multiply(cme, u), ~is_ficc))
        C_F = margin(ficc_model, xm)
        C_C = margin(cme_model, xm)
        if reduction:
            xm_margin = cp.maximum(C_F, C_C, (1.0 - problem.savings_cap) * (S_F + S_C))
        else:  # the branch of the XM rule where cross-margining reduces nothing
            xm_margin = S_F + S_C
        per_holding = options.transfer_cost * size / problem.lot / units.margin
        transfer_cost = cp.sum(cp.multiply(per_holding, cp.abs(change)))
        objective = cp.Minimize(ficc_standalone + cme_standalone + xm_margin + transfer_cost)
        program = cp.Problem(objective, constraints)

        kwargs: dict[str, object] = {}
        note = ""
        if self.solver == "HIGHS":
            from .highs_backend import quiet_highs_banner

            quiet_highs_banner()  # else cvxpy's highspy.Highs() prints HiGHS's banner on stdout
            # One thread, as the fast path: HiGHS's thread scheduler is global to the process,
            # and once cvxpy's instance started it on every core, an instance asking for one
            # thread (the highs backend) fails to run ("the scheduler has already been
            # initialized to use 2 threads").
            kwargs["threads"] = 1
            if time_limit is not None:
                kwargs["time_limit"] = float(time_limit)
            if options.integral or options.max_transfers is not None:
                kwargs["mip_rel_gap"] = 1e-9
        configure_blas_threads("cvxpy")  # scipy's OpenBLAS too, now that cvxpy has loaded it
        try:
            with warnings.catch_warnings():
                # cvxpy's bound propagation multiplies infinite bounds by zero; harmless.
                warnings.filterwarnings("ignore", category=RuntimeWarning, module="cvxpy")
                program.solve(solver=self.solver, **kwargs)
                retry = _RETRY_SOLVER if program.status in cp.settings.INF_OR_UNB else None
                if retry and not _has_integers(program) and retry in installed_cvxpy_solvers():
                    # HiGHS through cvxpy can call a feasible LP infeasible (seen with a
                    # model whose stress_weight is 1); an interior-point solver checks it.
                    program.solve(solver=retry)
                    note = f" ({self.solver} said infeasible; {retry} solved)"
        except cp.SolverError as error:
            return RawSolution(status=Status.ERROR, xm_quantity=None, message=str(error))
        finished = time.perf_counter()
        stats = program.solver_stats
        solve_seconds = float(stats.solve_time or 0.0) if stats else 0.0
        status = _STATUS.get(program.status, Status.ERROR)
        value = None if u.value is None else np.asarray(u.value, dtype=float) * size
        if value is None:
            if status is Status.OPTIMAL:
                status = Status.ERROR
            return RawSolution(status=status, xm_quantity=None, message=str(program.status))
        objective_value = bound = float(program.value) * units.margin
        if relaxed and status is Status.OPTIMAL:
            # The fine-lot positions were continuous: the optimum is a bound; the answer is
            # their nearest allowed quantities, optimal only if its exact objective meets it.
            value = snap_to_allowed(problem, value)
            objective_value = exact_objective(problem, value)
            if objective_value - bound > MIP_GAP * max(1.0, abs(objective_value)):
                status = Status.TIME_LIMIT
                note += (
                    f" (fine lots snapped to the allowed set: {objective_value - bound:.3g} USD "
                    "above the relaxed optimum, unproven)"
                )
        return RawSolution(
            status=status,
            xm_quantity=value,
            objective=objective_value,
            bound=bound,
            iterations=int(stats.num_iters or 0) if stats else 0,
            build_seconds=max(0.0, finished - started - solve_seconds),
            solve_seconds=solve_seconds,
            message=str(program.status) + note,
            rounds=2 if note else 1,  # one solver call, two when retried
            lp_seconds=solve_seconds,
        )
