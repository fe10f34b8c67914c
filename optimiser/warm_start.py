"""Warm start across cycles: start a solve from the previous cycle's answer for the customer.

The previous answer is its allocation, the XM quantity per position id. On the new book it is
mapped by id (a position that vanished is dropped, a new one starts at its current XM
quantity), moved onto what each position allows now, and handed to the backend: the ``highs``
fast path seeds its active set with the tail scenarios of every figure at that allocation,
evaluated on the new scenarios (so a rolled window or changed positions are taken as they are).
A warm start only adds valid rows and the solve still stops on the exact objective meeting the
bound, so it can speed the solve up but never change its answer; the ``cvxpy`` backend ignores
it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .problem import PositionVector, Problem
from .results import OptimisationResult
from .solvers.base import snap_to_allowed

__all__ = ["WarmStart", "warm_allocation"]


@dataclass(frozen=True, slots=True)
class WarmStart:
    """The previous cycle's allocation for the same customer: XM quantity by position id."""

    allocation: Mapping[str, float]

    @classmethod
    def from_result(cls, result: OptimisationResult) -> WarmStart:
        """The allocation of a previous :func:`~xmargin.optimiser.optimise` answer."""
        problem = result.problem
        return cls(dict(zip(problem.position_ids, map(float, result.allocation), strict=True)))


def warm_allocation(
    problem: Problem, warm_start: WarmStart | OptimisationResult | None
) -> PositionVector | None:
    """The previous allocation on ``problem``'s positions: by position id, the current XM
    quantity where the id is new, then moved onto the allowed set (bounds, lots, fixed
    positions); None without a warm start or when no position id is shared."""
    if warm_start is None:
        return None
    if isinstance(warm_start, OptimisationResult):
        warm_start = WarmStart.from_result(warm_start)
    previous = warm_start.allocation
    if not any(pid in previous for pid in problem.position_ids):
        return None
    allocation = np.array(
        [
            float(previous.get(pid, current))
            for pid, current in zip(problem.position_ids, problem.current_xm, strict=True)
        ]
    )
    if not np.all(np.isfinite(allocation)):
        return None
    return snap_to_allowed(problem, allocation)
