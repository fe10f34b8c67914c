"""The readable reference formulation in cvxpy (HiGHS by default, any installed solver by name).

Each margin model on a portfolio v is written as in margin-model.md, with ES in its
Rockafellar-Uryasev form over the model's window (t free):

    ES(v)  = t + 1/n_tail * sum_s max(0, L_s(v) - t),   L_s(v) = -(shocks_s . D'v + pnl_s . v)
    M(v)   = max(0, sqrt(h) * ((1 - w) * ES(v) + w * max_{s in stress} L_s(v))
                    + sum_k rate_k * max(0, |(D'v)_k| - thr_k))

and the XM rule as the max of its three convex terms.
"""

from __future__ import annotations

import time
import warnings
from typing import ClassVar

import cvxpy as cp
import numpy as np

from ..blas import configure_blas_threads
from ..model import Ccp
from ..problem import ModelWindow, Problem
from ..results import Status
from .base import Capabilities, RawSolution, allocation_bounds, lot_bounds

__all__ = ["CvxpyBackend"]

_STATUS = {
    cp.OPTIMAL: Status.OPTIMAL,
    cp.OPTIMAL_INACCURATE: Status.OPTIMAL,
    cp.INFEASIBLE: Status.INFEASIBLE,
    cp.INFEASIBLE_INACCURATE: Status.INFEASIBLE,
    cp.USER_LIMIT: Status.TIME_LIMIT,
}


def _model_margin(problem: Problem, window: ModelWindow, held: cp.Expression) -> cp.Expression:
    """M(v) of ``window``'s model on the portfolio ``held`` (an affine expression, shape n)."""
    model = window.as_es().model
    exposure = problem.exposure.T @ held

    def losses(rows: slice | np.ndarray) -> cp.Expression:
        loss = -(problem.shocks[rows] @ exposure)
        if problem.pnl_columns.size:
            loss = loss - problem.pnl_vectors[rows] @ held[problem.pnl_columns]
        return loss

    t = cp.Variable()
    expected_shortfall = t + cp.sum(cp.pos(losses(window.window) - t)) / window.n_tail
    risk = (1.0 - model.stress_weight) * expected_shortfall
    if window.has_stress:
        risk = risk + model.stress_weight * cp.max(losses(window.stress_rows))
    addons: cp.Expression | float = 0.0
    if window.has_addons:
        assert model.addon_rate is not None and model.addon_threshold is not None
        addons = model.addon_rate @ cp.pos(cp.abs(exposure) - model.addon_threshold)
    return cp.pos(window.scale * risk + addons)


class CvxpyBackend:
    """cvxpy formulation; ``solver`` is any installed cvxpy solver (HiGHS by default)."""

    name: ClassVar[str] = "cvxpy"
    capabilities: ClassVar[Capabilities] = Capabilities(
        lp=True, mip=True, duals=False, warm_start=False
    )

    def __init__(self, solver: str = "HIGHS") -> None:
        if solver not in cp.installed_solvers():
            raise ValueError(
                f"cvxpy solver {solver!r} is not installed; installed: {cp.installed_solvers()}"
            )
        self.solver = solver

    def solve(
        self, problem: Problem, time_limit: float | None = None, reduction: bool = True
    ) -> RawSolution:
        started = time.perf_counter()
        n = problem.n_positions
        options = problem.options
        lower, upper = allocation_bounds(problem)
        xm = cp.Variable(n, name="xm_quantity")
        constraints = [xm >= lower, xm <= upper]
        if options.integral:
            lots = cp.Variable(n, integer=True, name="lots")
            lot_lower, lot_upper = lot_bounds(problem)
            movable = problem.movable
            constraints += [
                xm[movable] == cp.multiply(problem.lot[movable], lots[movable]),
                lots[movable] >= lot_lower[movable],
                lots[movable] <= lot_upper[movable],
                lots[~movable] == 0,
            ]
        change = xm - problem.current_xm
        if options.max_transfers is not None:
            moved = cp.Variable(n, boolean=True, name="moved")
            size = np.abs(problem.quantity)
            constraints += [
                cp.abs(change) <= cp.multiply(size, moved),
                cp.sum(moved) <= options.max_transfers,
            ]

        ficc = problem.is_ficc.astype(float)
        cme = 1.0 - ficc
        standalone = problem.quantity - xm
        ficc_model, cme_model = problem.models[Ccp.FICC], problem.models[Ccp.CME]
        ficc_standalone = _model_margin(problem, ficc_model, cp.multiply(ficc, standalone))
        cme_standalone = _model_margin(problem, cme_model, cp.multiply(cme, standalone))
        S_F = _model_margin(problem, ficc_model, cp.multiply(ficc, xm))
        S_C = _model_margin(problem, cme_model, cp.multiply(cme, xm))
        C_F = _model_margin(problem, ficc_model, xm)
        C_C = _model_margin(problem, cme_model, xm)
        if reduction:
            xm_margin = cp.maximum(C_F, C_C, (1.0 - problem.savings_cap) * (S_F + S_C))
        else:  # the branch of the XM rule where cross-margining reduces nothing
            xm_margin = S_F + S_C
        transfer_cost = options.transfer_cost * cp.sum(
            cp.multiply(1.0 / problem.lot, cp.abs(change))
        )
        objective = cp.Minimize(ficc_standalone + cme_standalone + xm_margin + transfer_cost)
        program = cp.Problem(objective, constraints)

        kwargs: dict[str, object] = {}
        if self.solver == "HIGHS":
            from .highs_backend import quiet_highs_banner

            quiet_highs_banner()  # else cvxpy's highspy.Highs() prints HiGHS's banner on stdout
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
        except cp.SolverError as error:
            return RawSolution(status=Status.ERROR, xm_quantity=None, message=str(error))
        finished = time.perf_counter()
        stats = program.solver_stats
        solve_seconds = float(stats.solve_time or 0.0) if stats else 0.0
        status = _STATUS.get(program.status, Status.ERROR)
        value = xm.value
        if value is None:
            if status is Status.OPTIMAL:
                status = Status.ERROR
            return RawSolution(status=status, xm_quantity=None, message=str(program.status))
        objective_value = float(program.value)
        return RawSolution(
            status=status,
            xm_quantity=np.asarray(value, dtype=float),
            objective=objective_value,
            bound=objective_value,
            iterations=int(stats.num_iters or 0) if stats else 0,
            build_seconds=max(0.0, finished - started - solve_seconds),
            solve_seconds=solve_seconds,
            message=str(program.status),
        )
