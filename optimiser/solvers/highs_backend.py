"""The fast path: a direct highspy formulation in factor space, solved by cutting planes.

The loss of a portfolio v in scenario s is L_s = -(shocks_s . E + pnl_s . v_pnl) with E = D'v its
K-vector of net factor exposure, so every term of the problem depends on the positions only
through E (and the few positions given as P&L vectors). ES is the maximum of linear functions,

    ES(L) = max { w . L : 0 <= w_s <= 1/n_tail, sum_s w_s = 1 },

so instead of one Rockafellar-Uryasev row per scenario the LP carries an epigraph variable theta
per (model, portfolio) and a few cuts theta >= w . L(v), each with K + (#P&L positions)
coefficients: w is the tail weighting at a trial point. Kelley's method adds the cut of every
violated term at each LP solution and re-solves with dual simplex from the previous basis; it
stops when the exact convex objective at the incumbent and the LP bound agree to 1e-10
relative. Integral allocations re-solve the same model as a MIP with the cuts found so far.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import ClassVar

import highspy
import numpy as np
import numpy.typing as npt

from ..margin import evaluate, tail_weights
from ..model import Ccp
from ..problem import ModelWindow, PositionVector, Problem
from ..results import Status
from .base import Capabilities, RawSolution, lot_bounds

__all__ = ["HighsBackend"]

INF = highspy.kHighsInf


def _silence_banner() -> None:
    """HiGHS prints a banner on stdout when the first instance of a process is made, whatever
    its options; make that first instance with stdout pointed at /dev/null so that command-line
    JSON output stays clean."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


_silence_banner()
GAP_TOLERANCE = 1e-10
MIP_GAP = 1e-10
MAX_ROUNDS = 500


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
        self.starts.append(self.nnz)
        self.indices.append(index_array[keep])
        self.values.append(value_array[keep])
        self.nnz += int(keep.sum())
        self.lower.append(lower)
        self.upper.append(upper)

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


@dataclass(frozen=True, slots=True)
class _Portfolio:
    """An account (or XM leg) as an affine map of the lot variables: v = constant + sign * lot * k
    on ``members``, 0 elsewhere."""

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


class HighsBackend:
    """Direct highspy model; cutting planes on the tail scenarios; warm-started dual simplex."""

    name: ClassVar[str] = "highs"
    capabilities: ClassVar[Capabilities] = Capabilities(
        lp=True, mip=True, duals=True, warm_start=True
    )

    def solve(self, problem: Problem, time_limit: float | None = None) -> RawSolution:
        started = time.perf_counter()
        model = _CuttingPlaneModel(problem)
        built = time.perf_counter()
        raw = model.run(time_limit, started)
        raw.build_seconds = built - started
        raw.solve_seconds = time.perf_counter() - built
        return raw


class _CuttingPlaneModel:
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        n, n_factors = problem.exposure.shape
        self.n_factors = n_factors
        self.lot = problem.lot
        options = problem.options
        self.highs = highspy.Highs()
        self.highs.setOptionValue("output_flag", False)
        self.highs.setOptionValue("simplex_strategy", 1)  # dual simplex
        self.highs.setOptionValue("mip_rel_gap", MIP_GAP)
        self.highs.setOptionValue("threads", 1)

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
            lower.extend(np.broadcast_to(np.asarray(low, dtype=float), (count,)).tolist())
            upper.extend(np.broadcast_to(np.asarray(high, dtype=float), (count,)).tolist())
            return np.arange(first, first + count, dtype=np.int64)

        lot_lower, lot_upper = lot_bounds(problem)
        self.lots = columns(n, lot_lower, lot_upper)
        self.current_lots = problem.current_xm / problem.lot
        rows = _Rows()

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
        exposure_of: dict[str, npt.NDArray[np.int64]] = {}
        for name, portfolio in portfolios.items():
            exposure = columns(n_factors, -INF, INF)
            exposure_of[name] = exposure
            if name == "xm":  # E_xm = E_xm_ficc_only + E_xm_cme_only
                for k in range(n_factors):
                    rows.add(
                        [
                            exposure[k],
                            exposure_of["xm_ficc_only"][k],
                            exposure_of["xm_cme_only"][k],
                        ],
                        [1.0, -1.0, -1.0],
                        0.0,
                        0.0,
                    )
                continue
            members = np.flatnonzero(portfolio.members & has_sensitivities)
            constant_exposure = problem.exposure[members].T @ portfolio.constant[members]
            for k in range(n_factors):
                # E_k - sum_i sign * lot_i * d_ik * k_i = sum_i d_ik * c_i
                rows.add(
                    np.concatenate(([exposure[k]], self.lots[members])),
                    np.concatenate(
                        (
                            [1.0],
                            -portfolio.sign * problem.lot[members] * problem.exposure[members, k],
                        )
                    ),
                    constant_exposure[k],
                    constant_exposure[k],
                )

        term_specs = [
            (Ccp.FICC, "ficc_standalone"),
            (Ccp.CME, "cme_standalone"),
            (Ccp.FICC, "xm_ficc_only"),
            (Ccp.CME, "xm_cme_only"),
            (Ccp.FICC, "xm"),
            (Ccp.CME, "xm"),
        ]
        self.terms: list[_Term] = []
        for ccp, name in term_specs:
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
                for addon, k in zip(addons, active, strict=True):
                    rate, threshold = model.addon_rate[k], model.addon_threshold[k]
                    rows.add([addon, exposure[k]], [1.0, -rate], -rate * threshold, INF)
                    rows.add([addon, exposure[k]], [1.0, rate], -rate * threshold, INF)
            rows.add(margin_index, margin_value, 0.0, INF)
            self.terms.append(_Term(window, portfolio, exposure, theta, margin))

        # Objective: standalone margins + XM margin z (+ transfer cost).
        cost[self.terms[0].margin] = 1.0
        cost[self.terms[1].margin] = 1.0
        xm_margin = int(columns(1, 0.0, INF, objective=1.0)[0])
        s_f, s_c, c_f, c_c = (term.margin for term in self.terms[2:])
        cap = problem.savings_cap
        rows.add([xm_margin, c_f], [1.0, -1.0], 0.0, INF)
        rows.add([xm_margin, c_c], [1.0, -1.0], 0.0, INF)
        rows.add([xm_margin, s_f, s_c], [1.0, -(1.0 - cap), -(1.0 - cap)], 0.0, INF)

        movable = np.flatnonzero(problem.movable)
        self.movable = movable
        if options.transfer_cost > 0 and movable.size:
            moved = columns(movable.size, 0.0, INF, objective=options.transfer_cost)
            for d, i in zip(moved, movable, strict=True):
                rows.add([d, self.lots[i]], [1.0, -1.0], -self.current_lots[i], INF)
                rows.add([d, self.lots[i]], [1.0, 1.0], self.current_lots[i], INF)
        self.binaries = np.zeros(0, dtype=np.int64)
        if options.max_transfers is not None and movable.size:
            self.binaries = columns(movable.size, 0.0, 1.0)
            for b, i in zip(self.binaries, movable, strict=True):
                span = max(abs(lot_upper[i] - lot_lower[i]), 1.0)
                rows.add([self.lots[i], b], [1.0, -span], -INF, self.current_lots[i])
                rows.add([self.lots[i], b], [1.0, span], self.current_lots[i], INF)
            rows.add(self.binaries, np.ones(movable.size), -INF, float(options.max_transfers))

        lp = highspy.HighsLp()
        lp.num_col_ = len(cost)
        lp.col_cost_ = np.array(cost)
        lp.col_lower_ = np.array(lower)
        lp.col_upper_ = np.array(upper)
        self.highs.passModel(lp)
        rows.push(self.highs)
        self.integer_columns = np.concatenate((self.lots[movable], self.binaries))
        self.needs_mip = bool(options.integral and movable.size) or self.binaries.size > 0
        for point in self._starting_points():
            self._add_violated_cuts(point, force=True)

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
        """epigraph >= -(shock . E + pnl . v_pnl), v_pnl = c + sign * lot * k on members."""
        problem = self.problem
        index = [epigraph, *exposure.tolist()]
        value = [1.0, *shock.tolist()]
        lower = 0.0
        columns = problem.pnl_columns
        if columns.size:
            inside = portfolio.members[columns]
            members, weights = columns[inside], pnl[inside]
            index.extend(self.lots[members].tolist())
            value.extend((weights * portfolio.sign * problem.lot[members]).tolist())
            lower = -float(weights @ portfolio.constant[members])
        rows.add(index, value, lower, INF)

    def _held(self, portfolio: _Portfolio, xm_quantity: PositionVector) -> PositionVector:
        return np.where(portfolio.members, portfolio.constant + portfolio.sign * xm_quantity, 0.0)

    def _add_violated_cuts(
        self,
        xm_quantity: PositionVector,
        force: bool = False,
        theta_values: npt.NDArray[np.float64] | None = None,
    ) -> int:
        """Add theta >= w . L for every term whose ES at ``xm_quantity`` exceeds its theta."""
        problem = self.problem
        rows = _Rows()
        added = 0
        for position, term in enumerate(self.terms):
            held = self._held(term.portfolio, xm_quantity)
            losses = problem.losses(held)[term.window.window]
            weights = tail_weights(losses, term.window.n_tail)
            es = float(weights @ losses)
            if not force:
                assert theta_values is not None
                if es <= theta_values[position] + 1e-9 * max(1.0, abs(es)):
                    continue
            tail = np.flatnonzero(weights)
            shocks = problem.shocks[term.window.window][tail]
            shock = weights[tail] @ shocks
            pnl = self._pnl_row(0)
            if problem.pnl_columns.size:
                pnl = weights[tail] @ problem.pnl_vectors[term.window.window][tail]
            self._loss_cut(rows, term.theta, term.portfolio, term.exposure_columns, shock, pnl)
            added += 1
        rows.push(self.highs)
        return added

    def _starting_points(self) -> list[PositionVector]:
        problem = self.problem
        everything = np.where(problem.movable, problem.quantity, problem.current_xm)
        return [problem.current_xm, np.where(problem.movable, 0.0, problem.current_xm), everything]

    # --- the loop ----------------------------------------------------------------------------

    def _convex_objective(self, xm_quantity: PositionVector) -> float:
        """The convex objective at an allocation, from the exact evaluator's model figures."""
        problem = self.problem
        state = evaluate(problem, xm_quantity, es_for_var=True)
        figures = state.models
        xm_margin = max(
            figures["C_F"].margin,
            figures["C_C"].margin,
            (1.0 - problem.savings_cap) * (figures["S_F"].margin + figures["S_C"].margin),
        )
        moved = np.abs(xm_quantity - problem.current_xm) / problem.lot
        cost = problem.options.transfer_cost * float(moved.sum())
        return state.ficc_standalone + state.cme_standalone + xm_margin + cost

    def _set_integral(self) -> None:
        count = self.integer_columns.size
        self.highs.changeColsIntegrality(
            count,
            self.integer_columns.astype(np.int32),
            np.array([highspy.HighsVarType.kInteger] * count),
        )

    def run(self, time_limit: float | None, started: float) -> RawSolution:
        highs, problem = self.highs, self.problem
        best_x: PositionVector | None = None
        best_upper = np.inf
        lower_bound = -np.inf
        cuts = rounds = iterations = 0
        phases = [False, True] if self.needs_mip else [False]
        if self.needs_mip and self.binaries.size and not problem.options.integral:
            phases = [True]  # the transfer limit makes even a continuous allocation a MIP
        status = Status.OPTIMAL
        message = "converged"
        for integral in phases:
            if integral:
                self._set_integral()
                best_x, best_upper = None, np.inf  # continuous incumbents are not admissible
            while True:
                rounds += 1
                if time_limit is not None:
                    remaining = time_limit - (time.perf_counter() - started)
                    if remaining <= 0:
                        status, message = Status.TIME_LIMIT, "time limit reached"
                        break
                    highs.setOptionValue("time_limit", float(remaining))
                highs.run()
                model_status = highs.getModelStatus()
                info = highs.getInfo()
                iterations += int(info.simplex_iteration_count)
                if model_status == highspy.HighsModelStatus.kInfeasible:
                    return RawSolution(Status.INFEASIBLE, None, message="infeasible")
                if model_status == highspy.HighsModelStatus.kTimeLimit:
                    status, message = Status.TIME_LIMIT, "time limit reached"
                    if integral and info.primal_solution_status == 2:
                        solution = np.asarray(highs.getSolution().col_value)
                        x = solution[self.lots] * self.lot
                        value = self._convex_objective(x)
                        if value < best_upper:
                            best_x, best_upper = x, value
                    break
                if model_status != highspy.HighsModelStatus.kOptimal:
                    return RawSolution(
                        Status.ERROR, None, message=highs.modelStatusToString(model_status)
                    )
                solution = np.asarray(highs.getSolution().col_value)
                lower_bound = float(
                    info.mip_dual_bound if integral else info.objective_function_value
                )
                x = solution[self.lots] * self.lot
                if integral:
                    x = np.where(problem.movable, np.round(solution[self.lots]) * self.lot, x)
                value = self._convex_objective(x)
                if value < best_upper:
                    best_x, best_upper = x, value
                if best_upper - lower_bound <= GAP_TOLERANCE * max(1.0, abs(best_upper)):
                    break
                thetas = solution[[term.theta for term in self.terms]]
                added = self._add_violated_cuts(x, theta_values=thetas)
                cuts += added
                if added == 0 or rounds >= MAX_ROUNDS:
                    if added == 0 and best_upper - lower_bound > 1e-6 * max(1.0, abs(best_upper)):
                        message = "no violated cut but gap remains"
                    if rounds >= MAX_ROUNDS:
                        status, message = Status.TIME_LIMIT, f"stopped after {MAX_ROUNDS} rounds"
                    break
            if status is not Status.OPTIMAL:
                break
        if best_x is None:
            return RawSolution(
                Status.ERROR if status is Status.OPTIMAL else status, None, message=message
            )
        return RawSolution(
            status=status,
            xm_quantity=best_x,
            objective=float(best_upper),
            bound=float(lower_bound),
            iterations=iterations,
            cuts=cuts,
            message=f"{message} in {rounds} rounds",
        )
