"""Local search on the exact total: coordinate moves over the allowed set.

Where a model measures VaR the solvers optimise its ES stand-in, and the exact total (VaR, the
XM rule with its outer min) is not convex. This phase starts from an allowed allocation and
moves one position at a time to the allowed quantity that lowers the exact objective most,

    objective(x) = total(x) + cost * sum_i |x_i - x0_i| / lot_i,

until a sweep over the movable positions finds no lower value, the time is up or the sweep
limit is reached. Losses are linear in the quantities, so moving position i by delta changes
the scenario losses of each account by delta times a fixed vector: every candidate of one
position is evaluated at once, with the evaluator's own formulas (``margin.model_margins``,
``margin.xm_margin``).

Candidates of a position holding q (sign s, lot l, kmax whole lots): whole lots: every lot
multiple when kmax <= ``DENSE_LOTS``, otherwise 0, q, kmax l and the current value +- l m for
m in ``STEPS``; continuous: 0, q and the current value +- |q| f for f in ``FRACTIONS``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .. import cancellation
from ..margin import FIGURES, account_quantities, evaluate, model_margins, xm_margin
from ..problem import PositionVector, Problem
from ..results import moved_positions
from .base import LotGrid, lot_grid

__all__ = [
    "PAIR_NEAREST",
    "LocalSearchResult",
    "allowed_candidates",
    "exact_objective",
    "improve",
    "pair_move",
]

DENSE_LOTS = 64
STEPS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987)
FRACTIONS = (0.5, 0.25, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 1e-4)
MAX_SWEEPS = 50
PAIR_NEAREST = 4  # the candidates of the first position of a pair move (nearest its value)
# Each account's quantity change per unit moved into XM (margin.ACCOUNTS order), FICC / CME.
_FICC_MOVE = np.array([-1.0, 0.0, 1.0, 0.0, 1.0])
_CME_MOVE = np.array([0.0, -1.0, 0.0, 1.0, 1.0])


@dataclass(frozen=True, slots=True)
class LocalSearchResult:
    xm_quantity: PositionVector
    objective: float
    sweeps: int
    moves: int
    evaluations: int


def exact_objective(problem: Problem, xm_quantity: PositionVector) -> float:
    """total(x) + transfer cost: what the answer minimises, from the exact evaluator."""
    return evaluate(problem, xm_quantity).total + problem.transfer_cost(xm_quantity)


def allowed_candidates(
    problem: Problem, i: int, value: float, grid: LotGrid | None = None
) -> npt.NDArray[np.float64]:
    """Allowed quantities for position i near ``value`` and at the ends (see module doc);
    ``grid``: ``lot_grid(problem)``, when the caller has it already."""
    q = float(problem.quantity[i])
    size = abs(q)
    sign = -1.0 if q < 0 else 1.0
    held = abs(value)
    if problem.options.integral:
        lot = float(problem.lot[i])
        kmax = float((grid or lot_grid(problem)).kmax[i])
        if kmax <= DENSE_LOTS:
            amounts = np.arange(kmax + 1) * lot
        else:
            base = np.round(min(held, kmax * lot) / lot)
            steps = np.array(STEPS, dtype=float)
            lots = np.concatenate(([0.0, kmax, base], base + steps, base - steps))
            amounts = np.clip(lots, 0.0, kmax) * lot
        amounts = np.append(amounts, size)
    else:
        offsets = size * np.array(FRACTIONS)
        amounts = np.clip(np.concatenate(([0.0, size], held + offsets, held - offsets)), 0, size)
    return np.unique(sign * amounts)


class _Evaluator:
    """Exact objective of one-position moves from an allocation, all candidates at once."""

    def __init__(self, problem: Problem, xm_quantity: PositionVector) -> None:
        self.problem = problem
        self.x = np.array(xm_quantity, dtype=float)
        held = np.stack(list(account_quantities(problem, self.x).values()))  # (5, n)
        self.exposures = held @ problem.exposure  # (5, K)
        self.losses = -(self.exposures @ problem.shocks.T)  # (5, S)
        if problem.pnl_columns.size:
            self.losses -= held[:, problem.pnl_columns] @ problem.pnl_vectors.T
        self.pnl_column = {int(c): j for j, c in enumerate(problem.pnl_columns)}
        self.evaluations = 0

    def _unit(self, i: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Per unit of position i: its scenario P&L (S,) and factor exposure (K,)."""
        problem = self.problem
        pnl = problem.shocks @ problem.exposure[i]
        if i in self.pnl_column:
            pnl = pnl + problem.pnl_vectors[:, self.pnl_column[i]]
        return pnl, problem.exposure[i]

    def objectives(self, i: int, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The exact objective with position i at each of ``values`` (the rest unchanged)."""
        problem = self.problem
        delta = values - self.x[i]  # (C,)
        move = _FICC_MOVE if problem.is_ficc[i] else _CME_MOVE
        pnl, exposure = self._unit(i)
        change = move[:, None] * delta[None, :]  # (5, C)
        losses = self.losses[:, None, :] - change[:, :, None] * pnl[None, None, :]  # (5, C, S)
        exposures = self.exposures[:, None, :] + change[:, :, None] * exposure[None, None, :]
        candidates = values.size
        margins: dict[str, npt.NDArray[np.float64]] = {}
        for ccp, window in problem.models.items():
            named = [(name, account) for name, house, account in FIGURES if house is ccp]
            rows = [_ACCOUNT_ROW[account] for _, account in named]
            figures = model_margins(
                window,
                losses[rows].reshape(-1, losses.shape[2]),
                exposures[rows].reshape(-1, exposures.shape[2]),
            )
            for j, (name, _) in enumerate(named):
                margins[name] = np.array(
                    [f.margin for f in figures[j * candidates : (j + 1) * candidates]]
                )
        cap = problem.savings_cap
        xm = np.array(
            [
                xm_margin(
                    margins["S_F"][c], margins["S_C"][c], margins["C_F"][c], margins["C_C"][c], cap
                ).margin
                for c in range(candidates)
            ]
        )
        total = margins["ficc_standalone"] + margins["cme_standalone"] + xm
        cost = problem.options.transfer_cost
        if cost > 0:
            others = problem.transfer_cost(self.x) - cost * abs(
                self.x[i] - problem.current_xm[i]
            ) / float(problem.lot[i])
            total = total + others + cost * np.abs(values - problem.current_xm[i]) / problem.lot[i]
        self.evaluations += candidates
        return total

    def move(self, i: int, value: float) -> None:
        problem = self.problem
        delta = value - self.x[i]
        move = _FICC_MOVE if problem.is_ficc[i] else _CME_MOVE
        pnl, exposure = self._unit(i)
        self.losses -= (move * delta)[:, None] * pnl[None, :]
        self.exposures += (move * delta)[:, None] * exposure[None, :]
        self.x[i] = value


_ACCOUNT_ROW = {
    "ficc_standalone": 0,
    "cme_standalone": 1,
    "xm_ficc_only": 2,
    "xm_cme_only": 3,
    "xm": 4,
}


def improve(
    problem: Problem,
    start: PositionVector,
    deadline: float | None,
    max_sweeps: int = MAX_SWEEPS,
    seed: int = 0,
) -> LocalSearchResult:
    """Coordinate descent on the exact objective from the allowed allocation ``start``, within
    the wall-clock ``deadline`` (``time.perf_counter()`` value). Respects fixed positions and a
    transfer limit (a position may move away from its current value only while fewer than
    ``max_transfers`` have)."""
    evaluator = _Evaluator(problem, start)
    movable = np.flatnonzero(problem.movable)
    grid = lot_grid(problem)  # once per search, not per candidate
    limit = problem.options.max_transfers
    rng = np.random.default_rng(seed)
    best = exact_objective(problem, evaluator.x)
    sweeps = moves = 0
    while sweeps < max_sweeps:
        sweeps += 1
        improved = False
        for i in rng.permutation(movable):
            # The caller is gone: stop before the next position (one sweep of a 300-position,
            # 2,520-scenario book took 2.4 s, too long to wait for between sweeps).
            cancellation.check()
            if deadline is not None and time.perf_counter() >= deadline:
                sweeps = max_sweeps
                break
            values = allowed_candidates(problem, int(i), float(evaluator.x[i]), grid)
            if limit is not None:  # moved as the answer's transfers count it (round-off is not)
                moved = moved_positions(problem, problem.current_xm, evaluator.x)
                if int(np.count_nonzero(moved)) >= limit and not moved[i]:
                    continue  # moving it would exceed the transfer limit
            objectives = evaluator.objectives(int(i), values)
            j = int(np.argmin(objectives))
            if objectives[j] < best - 1e-12 * max(1.0, abs(best)):
                evaluator.move(int(i), float(values[j]))
                best = float(objectives[j])
                moves += 1
                improved = True
        if not improved:
            break
    # Re-evaluate from scratch: the running losses carry round-off from many moves.
    final = np.array(evaluator.x)
    return LocalSearchResult(
        xm_quantity=final,
        objective=exact_objective(problem, final),
        sweeps=sweeps,
        moves=moves,
        evaluations=evaluator.evaluations,
    )


def pair_move(
    problem: Problem, start: PositionVector, deadline: float | None, seed: int = 0
) -> LocalSearchResult:
    """The first move of two positions at once that lowers the exact objective from the allowed
    allocation ``start`` (where no single move may: the end of :func:`improve`): position i to
    one of its ``PAIR_NEAREST`` allowed candidates nearest its value, then position j to its
    best candidate (:func:`allowed_candidates`), over i in a seeded order and every j. ``start``
    itself when none is found before the ``deadline``. Respects fixed positions and a transfer
    limit as :func:`improve` does."""
    evaluator = _Evaluator(problem, start)
    movable = np.flatnonzero(problem.movable)
    grid = lot_grid(problem)
    limit = problem.options.max_transfers
    best = exact_objective(problem, evaluator.x)
    unmoved = LocalSearchResult(
        xm_quantity=np.array(start, dtype=float), objective=best, sweeps=1, moves=0, evaluations=0
    )
    for i in np.random.default_rng(seed).permutation(movable):
        held = float(evaluator.x[i])
        values = allowed_candidates(problem, int(i), held, grid)
        values = values[values != held]
        for value in values[np.argsort(np.abs(values - held), kind="stable")[:PAIR_NEAREST]]:
            cancellation.check()
            if deadline is not None and time.perf_counter() >= deadline:
                return unmoved
            evaluator.move(int(i), float(value))
            moved = moved_positions(problem, problem.current_xm, evaluator.x)
            if limit is None or int(np.count_nonzero(moved)) <= limit:
                for j in movable:
                    # Asked at every position: on a 300-position book one i's sweep over j is
                    # hundreds of evaluations, too long to wait for.
                    cancellation.check()
                    if deadline is not None and time.perf_counter() >= deadline:
                        return unmoved
                    if j == i or (
                        limit is not None and not moved[j] and np.count_nonzero(moved) >= limit
                    ):
                        continue
                    candidates = allowed_candidates(problem, int(j), float(evaluator.x[j]), grid)
                    objectives = evaluator.objectives(int(j), candidates)
                    k = int(np.argmin(objectives))
                    if objectives[k] < best - 1e-12 * max(1.0, abs(best)):
                        final = np.array(evaluator.x)
                        final[j] = candidates[k]
                        value_found = exact_objective(problem, final)  # free of running round-off
                        if value_found < best - 1e-12 * max(1.0, abs(best)):
                            return LocalSearchResult(
                                xm_quantity=final,
                                objective=value_found,
                                sweeps=1,
                                moves=2,
                                evaluations=evaluator.evaluations,
                            )
            evaluator.move(int(i), held)
    return unmoved
