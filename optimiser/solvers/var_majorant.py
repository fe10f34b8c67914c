"""Majorise-minimise on the exact VaR: the first part of the exact-VaR improvement phase.

VaR = L(f+1), f = floor(n_tail), is not convex in the allocation. At an allocation x_k, leaving
out of each VaR figure's window the f scenarios with the largest losses there gives a convex
majorant (:func:`..margin.var_majorant_window`): the largest loss of the rest, equal to VaR at
x_k and above it everywhere. Every figure M is nondecreasing in its risk measure, and each branch
of the XM rule in its figures, so with the majorants in place of the VaR figures each branch's
objective (with reduction: ficc + cme + max(C_F, C_C, (1 - cap)(S_F + S_C)); without: ficc + cme
+ S_F + S_C) lies above the exact objective, and at x_k the active branch's equals it:

    x_{k+1} = argmin over both branches of the majorant's continuous minimum,

by the fast path's active-set LP (:func:`.highs_backend.solve_var_majorant`), moved to the
allowed set in whole lots. It is taken while its exact objective is lower than x_k's (in
continuous mode the majorant guarantees it is no higher), until none is lower,
:data:`MAX_ROUNDS`, or the deadline. A stationary point of the exact objective, not its optimum:
the local search (:mod:`.local_search`) goes on from it. Under a transfer limit each round frees
only the positions x_k already moves, the others held at their current quantity
(:func:`within_the_limit`): no answer moves another, so the limit holds without a binary.

The exact optimum is the least over all exclusion sets, not only the set D where the rounds
stop: :func:`exchange` tries the sets next to D (:func:`exchanged_exclusions`), each still a
majorant of VaR, for a minimum whose exact objective is lower.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .. import cancellation
from ..margin import var_exclusions, var_window_losses
from ..problem import PositionVector, Problem
from ..results import Status, moved_positions
from .base import snap_to_allowed
from .highs_backend import solve_var_majorant
from .local_search import exact_objective

__all__ = [
    "EXCHANGE_WIDTH",
    "MAX_ROUNDS",
    "Descent",
    "descend",
    "exchange",
    "exchanged_exclusions",
    "within_the_limit",
]

MAX_ROUNDS = 20
EXCHANGE_WIDTH = 2
"""Exclusion-set exchanges at an end point: each of the this many smallest excluded losses of a
figure swapped for each of the this many largest kept ones."""


@dataclass(frozen=True, slots=True)
class Descent:
    xm_quantity: PositionVector
    objective: float
    rounds: int  # majorants solved (each on both branches of the XM rule)
    improved: int  # rounds whose answer lowered the exact objective


def within_the_limit(problem: Problem, xm_quantity: PositionVector) -> Problem:
    """``problem`` itself without a transfer limit; under one, the same problem with only the
    positions ``xm_quantity`` already moves (:func:`..results.moved_positions`) movable and no
    limit: none of its allocations moves another position, so each keeps within the limit."""
    if problem.options.max_transfers is None:
        return problem
    moved = moved_positions(problem, problem.current_xm, xm_quantity)
    unlimited = dataclasses.replace(problem.options, max_transfers=None)
    return dataclasses.replace(problem, movable=problem.movable & moved, options=unlimited)


def descend(problem: Problem, start: PositionVector, deadline: float | None) -> Descent:
    """Majorise-minimise from the allowed allocation ``start`` within the wall-clock
    ``deadline`` (a ``time.perf_counter()`` value)."""
    x, best = start, exact_objective(problem, start)
    rounds = improved = 0
    while rounds < MAX_ROUNDS:
        cancellation.check()  # the caller is gone: stop between rounds
        if not within_the_limit(problem, x).movable.any():
            break
        rounds += 1
        found = _majorant_answers(problem, x, var_exclusions(problem, x), deadline)
        if not found:
            break
        value, answer = min(found, key=lambda item: item[0])
        if value >= best - 1e-9 * max(1.0, abs(best)):
            break
        x, best, improved = answer, value, improved + 1
    return Descent(xm_quantity=x, objective=best, rounds=rounds, improved=improved)


def exchanged_exclusions(
    problem: Problem, xm_quantity: PositionVector, width: int = EXCHANGE_WIDTH
) -> list[dict[str, npt.NDArray[np.bool_]]]:
    """Exclusion sets next to :func:`..margin.var_exclusions` at ``xm_quantity``: per VaR figure
    whose window losses there are not all equal, its set D (the f largest) with one of its
    ``width`` smallest members (ranks f, f-1, ...) swapped for one of the ``width`` largest
    losses outside it (ranks f+1, f+2, ...), the other figures' sets unchanged. Any f
    scenarios left out still give a majorant of VaR (the largest loss of the rest is at least
    L(f+1)), touching it no longer at ``xm_quantity`` but, where the optimum's set differs from
    D, possibly lower there than D's. Ordered by swap (rank f for f+1 first), then figure."""
    base = var_exclusions(problem, xm_quantity)
    losses = var_window_losses(problem, xm_quantity)
    orders = {}
    for name, in_window in losses.items():
        whole = int(base[name].sum())
        if whole == 0 or whole >= in_window.size or np.ptp(in_window) == 0.0:
            continue
        orders[name] = (whole, np.argsort(-in_window, kind="stable"))
    sets = []
    for out in range(width):
        for kept in range(width):
            for name, (whole, order) in orders.items():
                if whole - 1 - out < 0 or whole + kept >= order.size:
                    continue
                mask = base[name].copy()
                mask[order[whole - 1 - out]] = False
                mask[order[whole + kept]] = True
                sets.append({**base, name: mask})
    return sets


def _majorant_answers(
    problem: Problem,
    x: PositionVector,
    excluded: dict[str, npt.NDArray[np.bool_]],
    deadline: float | None,
) -> list[tuple[float, PositionVector]]:
    """The majorant's minimum with the exclusion sets ``excluded`` on each branch of the XM rule
    (moving only what ``x`` moves, under a transfer limit), on the allowed set: each with its
    exact objective."""
    free = within_the_limit(problem, x)
    found: list[tuple[float, PositionVector]] = []
    if not free.movable.any():
        return found
    for reduction in (True, False):
        remaining = None if deadline is None else deadline - time.perf_counter()
        if remaining is not None and remaining <= 0:
            break
        raw = solve_var_majorant(free, excluded, reduction, remaining)
        if raw.status is not Status.OPTIMAL or raw.xm_quantity is None:
            continue
        answer = raw.xm_quantity
        if problem.options.integral or free is not problem:  # fixed ones exactly current
            answer = snap_to_allowed(free, answer)
        found.append((exact_objective(problem, answer), answer))
    return found


def exchange(
    problem: Problem, x: PositionVector, value: float, deadline: float | None
) -> tuple[PositionVector, float] | None:
    """The first minimum of an exchanged majorant (:func:`exchanged_exclusions` at ``x``, whose
    exact objective is ``value``) with a lower exact objective, or None when none is lower
    (or the deadline passed)."""
    for excluded in exchanged_exclusions(problem, x):
        cancellation.check()
        if deadline is not None and time.perf_counter() >= deadline:
            return None
        found = _majorant_answers(problem, x, excluded, deadline)
        if found:
            lower, answer = min(found, key=lambda item: item[0])
            if lower < value - 1e-9 * max(1.0, abs(value)):
                return answer, lower
    return None
