"""The solver interface: interchangeable backends behind one small protocol.

Every backend solves the same convex problem (margin-model.md, "The allocation problem") over
the XM quantities x of the movable positions, the others fixed at their current allocation:

    minimise   M_F(q_F - x_F) + M_C(q_C - x_C) + z + cost * sum_i |x_i - x0_i| / lot_i
    subject to z >= M_F(x), z >= M_C(x), z >= (1 - cap) * (M_F(x_F) + M_C(x_C))
               x_i between 0 and q_i; x_i a multiple of lot_i when integral;
               at most T positions with x_i != x0_i when a transfer limit is set,

with every model's risk term an expected shortfall (the convex stand-in where the model
measures VaR). The exact XM rule is min(S_F + S_C, max(C_F, C_C, (1 - cap)(S_F + S_C))), a
minimum of two convex branches, so the exact optimum is the better of two convex problems: the
one above (``reduction=True``) and the one whose XM margin is S_F + S_C (``reduction=False``).
The second can win only where the XM account cannot be emptied for free (fixed allocations, a
transfer limit or cost) or a margin is not subadditive (add-on thresholds).
Backends return a :class:`RawSolution`; the exact evaluator reports the figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from ..problem import PositionVector, Problem
from ..results import Status

__all__ = [
    "Backend",
    "Capabilities",
    "LotGrid",
    "RawSolution",
    "allocation_bounds",
    "lot_grid",
    "needs_mip",
    "on_allowed_set",
    "problem_scale",
    "snap_to_allowed",
]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, in the spirit of cvxpy's solver interfaces; the caller consults
    :meth:`refusal` before handing a problem to the backend."""

    lp: bool
    mip: bool
    duals: bool
    warm_start: bool

    def refusal(self, problem: Problem) -> str | None:
        """Why a backend with these capabilities cannot solve ``problem`` (None: it can).
        Every problem is a linear program; whole lots (integer lot counts) or a transfer
        limit (a binary per position) make it a mixed-integer one."""
        if not self.lp:
            return "cannot solve linear programs"
        needs = needs_mip(problem)
        if needs and not self.mip:
            return f"cannot solve mixed-integer programs ({needs})"
        return None


def needs_mip(problem: Problem) -> str | None:
    """What makes ``problem`` a mixed-integer program, or None when it is a linear one."""
    reasons = []
    if problem.options.integral and bool(problem.movable.any()):
        reasons.append("whole lots")
    if problem.options.max_transfers is not None:
        reasons.append("a transfer limit")
    return " and ".join(reasons) or None


@dataclass(slots=True)
class RawSolution:
    """A backend's answer before the exact evaluator sees it."""

    status: Status
    xm_quantity: PositionVector | None
    objective: float = math.nan
    bound: float = math.nan
    iterations: int = 0
    cuts: int = 0
    build_seconds: float = 0.0
    solve_seconds: float = 0.0
    message: str = ""
    rounds: int = 0  # cutting-plane rounds (LP or MIP solves); 1 for a single solve
    lp_seconds: float = 0.0  # inside the LP/MIP solver
    evaluation_seconds: float = 0.0  # evaluating trial allocations exactly (cutting planes)


class Backend(Protocol):
    """A solver backend: ``solve`` the problem within ``time_limit`` seconds."""

    name: ClassVar[str]

    @property
    def capabilities(self) -> Capabilities:
        """What this backend can do (a class constant, or per instance where it depends on
        the backend's settings, as cvxpy's on its solver)."""
        ...

    def solve(
        self,
        problem: Problem,
        time_limit: float | None = None,
        reduction: bool = True,
        warm_start: PositionVector | None = None,
    ) -> RawSolution:
        """``warm_start``: a previous allocation to start from (:mod:`..warm_start`); it may
        speed the solve up, never change its answer (a backend may ignore it)."""
        ...


def allocation_bounds(problem: Problem) -> tuple[PositionVector, PositionVector]:
    """Bounds on each XM quantity: [min(0, q), max(0, q)] when movable, x0 when fixed."""
    lower = np.where(problem.movable, np.minimum(0.0, problem.quantity), problem.current_xm)
    upper = np.where(problem.movable, np.maximum(0.0, problem.quantity), problem.current_xm)
    return lower, upper


MIP_GAP = 1e-6
"""Relative gap to which a whole-lot (or transfer-limited) answer is called optimal: its exact
objective f against a lower bound b, f - b <= MIP_GAP max(1, |f|)."""

FINE_LOT_COUNT = 1e6
"""A movable position holding more lots than this (a FICC note without a lot, one lot per USD of
par; lots of 0.03 USD on 7mm par) is continuous in the whole-lot MIPs: one lot is under a
millionth of its holding, and integer columns over 1e8 lots or more, with the whole holding's
binary under a big-M of as many, made both backends call answers 0.7-8% above an allowed one
optimal. Its answer is snapped to the nearest allowed quantity (:func:`snap_to_allowed`) and
evaluated exactly; a claim of optimality rests on that exact total against the bound of the
relaxed MIP, a lower bound of every whole-lot allocation."""


@dataclass(frozen=True, slots=True)
class LotGrid:
    """The whole-lot allowed set of each position (margin-model.md, "Whole lots").

    A movable position holding q may put y = sign(q) * (lot * k + remainder * z) in XM, with k a
    whole number in [0, kmax] and z in {0, 1} where k = kmax when z = 1: any multiple of the
    lot within the holding, or the whole holding. kmax = floor(|q| / lot), or the nearest whole
    number when |q| is that many lots to a relative 1e-9, and remainder = |q| - lot * kmax (0
    when |q| is a multiple of the lot, to the same 1e-9)."""

    sign: PositionVector
    kmax: PositionVector
    remainder: PositionVector

    @property
    def has_remainder(self) -> np.ndarray:
        return self.remainder > 0.0

    @property
    def fine(self) -> np.ndarray:
        """Positions continuous in the whole-lot MIPs (:data:`FINE_LOT_COUNT`)."""
        return self.kmax > FINE_LOT_COUNT


def lot_grid(problem: Problem) -> LotGrid:
    """The :class:`LotGrid` of ``problem``'s positions."""
    size = np.abs(problem.quantity)
    lots = size / problem.lot
    tolerance = 1e-9 * np.maximum(1.0, size)
    # A holding within the tolerance of a whole number of lots is that number: 7e6 / 0.07 is
    # 99999999.99999999 in floats, and its floor left kmax a lot short with a 0.07 "remainder"
    # (a binary with k >= kmax z, M = 1e8, on which both backends answered 0.7% and 8% above
    # the optimum, each calling it optimal).
    nearest = np.round(lots)
    kmax = np.where(np.abs(size - nearest * problem.lot) <= tolerance, nearest, np.floor(lots))
    remainder = np.maximum(size - kmax * problem.lot, 0.0)
    remainder = np.where(remainder <= tolerance, 0.0, remainder)
    return LotGrid(sign=np.where(problem.quantity < 0, -1.0, 1.0), kmax=kmax, remainder=remainder)


def snap_to_allowed(problem: Problem, xm_quantity: PositionVector) -> PositionVector:
    """The nearest allowed allocation: movable positions clipped to their holding and, with
    whole lots, moved to the nearest of the nearest lot multiple and the whole holding; fixed
    positions at their current allocation. Removes solver round-off; never moves a fixed
    position."""
    lower, upper = allocation_bounds(problem)
    snapped = np.clip(np.asarray(xm_quantity, dtype=float), lower, upper)
    size = np.abs(problem.quantity)
    if problem.options.integral:
        grid = lot_grid(problem)
        held = np.abs(snapped)
        multiple = np.clip(np.round(held / problem.lot), 0.0, grid.kmax) * problem.lot
        whole = np.abs(size - held) < np.abs(multiple - held)
        snapped = grid.sign * np.where(whole, size, multiple)
    else:
        # Values within a relative 1e-9 of a bound are that bound.
        tolerance = 1e-9 * np.maximum(1.0, size)
        snapped = np.where(np.abs(snapped - lower) <= tolerance, lower, snapped)
        snapped = np.where(np.abs(snapped - upper) <= tolerance, upper, snapped)
    return np.where(problem.movable, snapped, problem.current_xm)


def on_allowed_set(problem: Problem, xm_quantity: PositionVector) -> np.ndarray:
    """Per position: whether ``xm_quantity`` is allowed (fixed ones at their current value)."""
    snapped = snap_to_allowed(problem, xm_quantity)
    tolerance = 1e-9 * np.maximum(1.0, np.abs(problem.quantity))
    return np.abs(snapped - xm_quantity) <= tolerance


COLUMN_BLOCK = 16
"""Rows reduced at once by :func:`column_abs_max`."""


def column_abs_max(matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """max_r |matrix[r, c]| per column c of a non-empty (R, C) matrix, as ``np.abs(matrix).max(
    axis=0)`` exactly (a maximum has no rounding), faster for a narrow matrix: numpy reduces a
    C-order (R, C) matrix along axis 0 in R inner loops of C elements, so the rows are first
    reduced in blocks of :data:`COLUMN_BLOCK` as one (R / B, B C) matrix. Measured on the
    reference account's scenario matrices (2,520 x 10 and 2,520 x 22): 260 -> 50-70 us and
    300 -> 100-140 us."""
    absolute = np.abs(matrix)
    rows, width = absolute.shape
    whole = rows - rows % COLUMN_BLOCK
    if not whole:
        return absolute.max(axis=0)
    blocked = absolute[:whole].reshape(whole // COLUMN_BLOCK, COLUMN_BLOCK * width).max(axis=0)
    largest = blocked.reshape(COLUMN_BLOCK, width).max(axis=0)
    if whole < rows:
        largest = np.maximum(largest, absolute[whole:].max(axis=0))
    return largest


def problem_scale(problem: Problem) -> tuple[PositionVector, float]:
    """Units that put the formulations' coefficients near 1: each position's quantity in units
    of its holding (``size``: |q|, or its lot where q = 0), and margin in units of ``margin``,
    a typical position's largest scenario loss (bounded by sum_k |d_k| max_s |shock_s,k| per
    unit, or the largest |P&L| of a vector; their mean over positions, at least 1 USD)."""
    size = np.where(problem.quantity != 0.0, np.abs(problem.quantity), problem.lot)
    largest_shock = column_abs_max(problem.shocks) if problem.shocks.size else 0.0
    per_unit = np.abs(problem.exposure) @ np.atleast_1d(largest_shock)
    if problem.pnl_columns.size:
        per_unit[problem.pnl_columns] += column_abs_max(problem.pnl_vectors)
    largest = per_unit * size
    margin = float(largest.mean()) if largest.size else 1.0
    return size, max(1.0, margin)
