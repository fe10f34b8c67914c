"""Simple allocation policies a user might use instead of the optimiser.

Each policy is an XM allocation (positions that may not move keep their current XM quantity);
its margin comes from the exact evaluator, like the optimiser's.

- ``all_standalone``: nothing in XM (the baseline).
- ``all_eligible_in_xm``: every eligible position entirely in XM.
- ``dv01_matching``: pair cash with the futures that hedge it. Each eligible FICC position with
  key-rate risk and each eligible future has a key-rate DV01 vector (quantity times its
  sensitivities). Pairs are taken greedily, most opposed direction first (cosine of the two
  vectors, at most :data:`MATCH_COSINE`), while both sides still have DV01 left to hedge (the
  parallel DV01 each match uses up is the smaller of the two sides' remainders); every matched
  position goes entirely into XM, the rest stays standalone.
- ``current``: the allocation the account holds now.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xmargin.optimiser import Problem, evaluate
from xmargin.optimiser.problem import PositionVector

__all__ = ["MATCH_COSINE", "dv01_matching", "policy_report", "simple_policies"]

MATCH_COSINE = -0.5
"""A future hedges a cash position when their key-rate DV01 vectors point this far apart."""


def _with_fixed(problem: Problem, chosen: PositionVector) -> PositionVector:
    return np.where(problem.movable, chosen, problem.current_xm)


def dv01_matching(problem: Problem) -> PositionVector:
    """The DV01-matching heuristic's XM allocation (see the module docstring)."""
    risk = problem.exposure * problem.quantity[:, None]  # key-rate DV01 per position
    has_risk = np.abs(risk).sum(axis=1) > 0
    cash = np.flatnonzero(problem.movable & problem.is_ficc & has_risk)
    futures = np.flatnonzero(problem.movable & ~problem.is_ficc & has_risk)
    in_xm = np.zeros(problem.n_positions, dtype=bool)
    if cash.size and futures.size:
        unit = risk / np.maximum(np.linalg.norm(risk, axis=1), 1e-300)[:, None]
        cosine = unit[cash] @ unit[futures].T
        remaining = np.abs(risk.sum(axis=1))
        order = np.argsort(cosine, axis=None)
        for flat in order:
            c, f = np.unravel_index(flat, cosine.shape)
            if cosine[c, f] > MATCH_COSINE:
                break
            i, j = cash[c], futures[f]
            if remaining[i] <= 0 or remaining[j] <= 0:
                continue
            used = min(remaining[i], remaining[j])
            remaining[i] -= used
            remaining[j] -= used
            in_xm[i] = in_xm[j] = True
    return _with_fixed(problem, np.where(in_xm, problem.quantity, 0.0))


def simple_policies(problem: Problem) -> dict[str, PositionVector]:
    """The XM allocation of each simple policy, by name."""
    return {
        "all_standalone": _with_fixed(problem, np.zeros(problem.n_positions)),
        "all_eligible_in_xm": _with_fixed(problem, np.where(problem.eligible, problem.quantity, 0)),
        "dv01_matching": dv01_matching(problem),
        "current": problem.current_xm.copy(),
    }


def policy_report(problem: Problem, optimum: float) -> dict[str, dict[str, Any]]:
    """Each policy's exact total margin and its distance above ``optimum`` (USD and relative)."""
    report: dict[str, dict[str, Any]] = {}
    for name, allocation in simple_policies(problem).items():
        total = evaluate(problem, allocation).total
        report[name] = {
            "total": total,
            "above_optimum": total - optimum,
            "above_optimum_relative": (total - optimum) / max(1.0, abs(optimum)),
            "positions_in_xm": int(np.count_nonzero(allocation)),
        }
    return report
