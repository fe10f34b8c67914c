"""What an optimisation returns: status, the three states, allocation, transfers, marginals.

Every margin figure here comes from :func:`xmargin.optimiser.margin.evaluate`, never from a
solver's own objective.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from .margin import Attribution, State
from .problem import PositionVector, Problem

__all__ = [
    "Account",
    "AnswerSource",
    "MarginalMargin",
    "OptimisationResult",
    "SolverStats",
    "Status",
    "Transfer",
    "all_eligible_allocation",
    "moved_positions",
    "transfers_between",
]


class Status(enum.StrEnum):
    OPTIMAL = "OPTIMAL"  # to tolerance; under a VaR model, the ES stand-in's optimum only
    TIME_LIMIT = "TIME_LIMIT"  # the best found, unproven: the time limit, or a MIP that failed
    INFEASIBLE = "INFEASIBLE"
    ERROR = "ERROR"


class AnswerSource(enum.StrEnum):
    """Where the returned allocation came from."""

    OPTIMUM = "OPTIMUM"  # the solver's proven optimum (to its tolerance)
    BEST_FOUND = "BEST_FOUND"  # the best allocation found before the solve stopped early
    STAND_IN = "STAND_IN"  # the ES stand-in's optimum, not improved on the exact VaR
    LOCAL_SEARCH = "LOCAL_SEARCH"  # improved on the exact VaR total (majorant rounds, local search)
    CURRENT = "CURRENT"  # the current allocation, kept: nothing found was lower


class Account(enum.StrEnum):
    FICC_STANDALONE = "FICC_STANDALONE"
    CME_STANDALONE = "CME_STANDALONE"
    XM = "XM"


@dataclass(frozen=True, slots=True)
class Transfer:
    """Move ``quantity`` (> 0, a whole number of lots) of ``instrument`` between accounts."""

    instrument: str
    from_account: Account
    to_account: Account
    quantity: float
    lots: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "instrument": self.instrument,
            "from_account": self.from_account.value,
            "to_account": self.to_account.value,
            "quantity": self.quantity,
            "lots": self.lots,
        }


def exact_quantity(value: float) -> Decimal:
    """A quantity for people, exactly: whole numbers as such, others to 1e-6 (never 119.71
    lots as "120")."""
    if abs(value - round(value)) <= 1e-9 * max(1.0, abs(value)):
        return Decimal(round(value))
    return Decimal(f"{value:.6f}".rstrip("0"))


def all_eligible_allocation(problem: Problem) -> PositionVector:
    """The "all eligible in XM" reference under the problem's own pins, mode and lots: every
    movable eligible position wholly in XM (a whole holding is always allowed), pinned
    positions and (FICC_FIXED) FICC allocations as given."""
    return np.where(problem.movable, problem.quantity, problem.current_xm)


def moved_positions(
    problem: Problem, before: PositionVector, after: PositionVector
) -> npt.NDArray[np.bool_]:
    """Per position: whether its XM quantity changes from ``before`` to ``after`` (a transfer,
    and one counted against ``max_transfers``): |after - before| > 1e-9 max(1, |q|), so a
    solver's round-off is no transfer."""
    change = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    return np.abs(change) > 1e-9 * np.maximum(1.0, np.abs(problem.quantity))


def transfers_between(
    problem: Problem, before: PositionVector, after: PositionVector
) -> list[Transfer]:
    """The transfers that take XM quantities ``before`` to ``after``.

    A position whose XM quantity grows in size moves from its standalone account to XM; one
    that shrinks moves back. Quantities are reported unsigned, as the amount moved.
    """
    change = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    moved = np.flatnonzero(moved_positions(problem, before, after))
    amount = np.abs(change[moved])
    into_xm = change[moved] * problem.quantity[moved] > 0
    transfers = []
    for i, size, lots, inward, ficc in zip(
        moved.tolist(),
        amount.tolist(),
        (amount / problem.lot[moved]).tolist(),
        into_xm.tolist(),
        problem.is_ficc[moved].tolist(),
        strict=True,
    ):
        standalone = Account.FICC_STANDALONE if ficc else Account.CME_STANDALONE
        transfers.append(
            Transfer(
                instrument=problem.position_ids[i],
                from_account=standalone if inward else Account.XM,
                to_account=Account.XM if inward else standalone,
                quantity=size,
                lots=lots,
            )
        )
    return transfers


@dataclass(frozen=True, slots=True)
class MarginalMargin:
    """What one more unit of each position would add to the total margin, held in XM or in its
    standalone account, at the optimised allocation (USD per unit; negative means it saves)."""

    in_xm: PositionVector
    in_standalone: PositionVector


@dataclass(slots=True)
class SolverStats:
    backend: str
    status: Status
    objective: float  # the solver's objective (convex stand-in, USD)
    bound: float  # best proven lower bound on that objective
    build_seconds: float = 0.0
    solve_seconds: float = 0.0
    iterations: int = 0
    cuts: int = 0
    message: str = ""
    fallback_from: str | None = None
    source: AnswerSource = AnswerSource.OPTIMUM
    failures: list[str] = field(default_factory=list)  # each failed backend and why
    rounds: int = 0  # cutting-plane rounds (highs: LP/MIP solves); 1 for one solver call
    lp_seconds: float = 0.0  # of build + solve: inside the LP/MIP solver
    evaluation_seconds: float = 0.0  # of build + solve: exact evaluation of trial allocations

    @property
    def gap(self) -> float:
        """Relative gap between objective and bound."""
        return max(0.0, self.objective - self.bound) / max(1.0, abs(self.objective))

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "status": self.status.value,
            "objective": self.objective,
            "bound": self.bound,
            "gap": self.gap,
            "build_seconds": self.build_seconds,
            "solve_seconds": self.solve_seconds,
            "iterations": self.iterations,
            "cuts": self.cuts,
            "message": self.message,
            "fallback_from": self.fallback_from,
            "source": self.source.value,
            "failures": list(self.failures),
            "rounds": self.rounds,
            "lp_seconds": self.lp_seconds,
            "evaluation_seconds": self.evaluation_seconds,
        }


@dataclass(slots=True)
class OptimisationResult:
    """The answer for one account."""

    problem: Problem
    status: Status
    allocation: PositionVector
    baseline: State
    current: State
    optimised: State
    all_eligible: State
    transfers: list[Transfer]
    marginal: MarginalMargin
    attribution: Attribution
    stats: SolverStats
    transfer_cost: float = 0.0
    var_gap: float | None = None
    notes: list[str] = field(default_factory=list)
    stand_in_total: float | None = None  # VaR models: exact total at the ES stand-in's optimum

    @property
    def savings(self) -> float:
        return self.baseline.total - self.optimised.total

    @property
    def relaxation(self) -> bool:
        """Whether this is the continuous relaxation (quantities need not be whole lots): a
        lower bound on the whole-lot answer, not a bookable set of transfers as it stands."""
        return not self.problem.options.integral

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the keys of the case format's ``expected`` block."""
        problem = self.problem
        eligibility = {
            pid: e.eligible
            for pid, e in zip(problem.position_ids, problem.eligibility, strict=True)
        }
        optimised: dict[str, Any] = dict(self.optimised.summary())
        optimised["allocation"] = dict(
            zip(problem.position_ids, _floats(self.allocation), strict=True)
        )
        optimised["transfers"] = [t.to_dict() for t in self.transfers]
        optimised["transfer_cost"] = self.transfer_cost
        return {
            "name": problem.book.name,
            "status": self.status.value,
            "relaxation": self.relaxation,
            "lots": "continuous relaxation" if self.relaxation else "whole lots",
            "eligible": eligibility,
            "baseline": self.baseline.summary(),
            "current": self.current.summary(),
            "optimised": optimised,
            "all_eligible_in_xm": self.all_eligible.summary(),
            "all_eligible_in_xm_basis": ALL_ELIGIBLE_BASIS,
            "savings": self.savings,
            "var_gap": self.var_gap,
            "stand_in_total": self.stand_in_total,
            "marginal_margin": {
                # JSON has no NaN: XM for an ineligible position does not exist, null
                pid: {"in_xm": x if math.isfinite(x) else None, "in_standalone": s}
                for pid, x, s in zip(
                    problem.position_ids,
                    _floats(self.marginal.in_xm),
                    _floats(self.marginal.in_standalone),
                    strict=True,
                )
            },
            "attribution": {
                account: dict(zip(problem.position_ids, _floats(shares), strict=True))
                for account, shares in self.attribution.shares.items()
            },
            "solver": self.stats.to_dict(),
            "notes": list(self.notes),
        }


ALL_ELIGIBLE_BASIS = (
    "every movable eligible position wholly in XM (a whole holding is always allowed); pinned "
    "positions and, in FICC_FIXED mode, FICC allocations as given"
)


def _floats(values: Any) -> list[float]:
    """A vector as Python floats in one C pass (``float(v)`` of each element, without the
    Python loop over numpy scalars)."""
    floats: list[float] = np.asarray(values, dtype=np.float64).tolist()
    return floats
