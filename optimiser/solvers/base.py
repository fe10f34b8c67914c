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

from ..problem import PositionVector, Problem
from ..results import Status

__all__ = ["Backend", "Capabilities", "RawSolution", "allocation_bounds", "lot_bounds"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, in the spirit of cvxpy's solver interfaces."""

    lp: bool
    mip: bool
    duals: bool
    warm_start: bool


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


class Backend(Protocol):
    """A solver backend: ``solve`` the problem within ``time_limit`` seconds."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def solve(
        self, problem: Problem, time_limit: float | None = None, reduction: bool = True
    ) -> RawSolution: ...


def allocation_bounds(problem: Problem) -> tuple[PositionVector, PositionVector]:
    """Bounds on each XM quantity: [min(0, q), max(0, q)] when movable, x0 when fixed."""
    lower = np.where(problem.movable, np.minimum(0.0, problem.quantity), problem.current_xm)
    upper = np.where(problem.movable, np.maximum(0.0, problem.quantity), problem.current_xm)
    return lower, upper


def lot_bounds(problem: Problem) -> tuple[PositionVector, PositionVector]:
    """Bounds on the number of lots k with x = k * lot (integral allocation)."""
    lower, upper = allocation_bounds(problem)
    fixed = ~problem.movable
    lot_lower = np.where(fixed, lower / problem.lot, np.ceil(lower / problem.lot - 1e-9))
    lot_upper = np.where(fixed, upper / problem.lot, np.floor(upper / problem.lot + 1e-9))
    return lot_lower, lot_upper
