"""What-if: the margin change of new trades and of leaving positions out, at the current allocation.

One computation for every caller: ``xmargin what-if`` and the gRPC ``WhatIf`` only render its
:class:`WhatIfResult`. Nothing is re-optimised; every figure is the exact evaluator's.

Definitions, with ``total(q, x)`` the exact total margin of quantities ``q`` of which ``x`` in XM:

- ``before``: the book as given, at its current allocation.
- ``after_exclusions`` (the reference R): the book without the excluded positions.
- each trade on its own, on top of R: placed standalone, and placed in XM when its instrument is
  XM-eligible; its change is ``total(R + trade) - total(R)``; the best placement is the smaller
  change (standalone on a tie).
- ``after_standalone``: R with every trade standalone; ``after_best``: R with every trade at its
  own best placement; ``margin_change = after_best.total - before.total``.

A trade in an instrument already held changes that position, ``q -> q + t``. Placed standalone,
its XM quantity ``x`` stays; placed in XM, it becomes ``x + t``. The XM quantity is then kept a
part of the position (the case format's rule: the sign of ``q``, no larger):

    x' = 0     if x' and q + t have opposite signs, or q + t = 0
    x' = q + t if |x'| > |q + t|          (XM holds what is left: clipped)

So a trade that cuts a position below its XM quantity reduces the XM quantity to the new
quantity, whichever placement: cutting a 500mm note held wholly in XM by 90% leaves 50mm, in XM.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .eligibility import Reason
from .errors import CaseValidationError
from .margin import State, evaluate
from .model import Book, Position
from .problem import PositionVector, Problem, build_problem

__all__ = ["Placement", "TradeImpact", "WhatIfResult", "place_trade", "what_if"]


class Placement(enum.StrEnum):
    """Where a trade is booked."""

    STANDALONE = "STANDALONE"
    XM = "XM"


@dataclass(frozen=True, slots=True)
class TradeImpact:
    """One trade's effect on its own, on top of the book without the excluded positions."""

    instrument: str
    quantity: float
    eligible: bool
    reasons: tuple[Reason, ...]
    total_standalone: float
    change_standalone: float
    total_xm: float | None  # None when the instrument is not XM-eligible
    change_xm: float | None
    best: Placement

    @property
    def best_change(self) -> float:
        """The change at the best placement."""
        if self.best is Placement.XM:
            assert self.change_xm is not None
            return self.change_xm
        return self.change_standalone


@dataclass(frozen=True, slots=True)
class WhatIfResult:
    """The states of a what-if, all at the current allocation (see the module docstring)."""

    name: str
    excluded: tuple[str, ...]
    before: State
    after_exclusions: State
    after_standalone: State
    after_best: State
    trades: tuple[TradeImpact, ...]

    @property
    def margin_change(self) -> float:
        """``after_best.total - before.total``."""
        return self.after_best.total - self.before.total


def place_trade(
    quantity: float, xm_quantity: float, trade: float, in_xm: bool
) -> tuple[float, float]:
    """The position ``(quantity, xm_quantity)`` after ``trade``, booked in XM or standalone, with
    the XM quantity clipped into the new quantity (module docstring)."""
    new_quantity = quantity + trade
    xm = xm_quantity + (trade if in_xm else 0.0)
    if xm * new_quantity <= 0:
        xm = 0.0
    elif abs(xm) > abs(new_quantity):
        xm = new_quantity
    return new_quantity, xm


def _check(book: Book, trades: Sequence[Position], exclude: Sequence[str]) -> None:
    held = {p.instrument for p in book.positions}
    excluded: set[str] = set()
    for i, instrument in enumerate(exclude):
        if instrument not in held:
            raise CaseValidationError(
                f"exclude[{i}]", instrument, "the book holds no such position"
            )
        if instrument in excluded:
            raise CaseValidationError(
                f"exclude[{i}]", instrument, "is excluded once already (one entry per position)"
            )
        excluded.add(instrument)
    seen: set[str] = set()
    for m, trade in enumerate(trades):
        if trade.instrument not in book.instruments:
            raise CaseValidationError(
                f"trades[{m}].instrument", trade.instrument, "unknown instrument"
            )
        if trade.instrument in seen:
            raise CaseValidationError(
                f"trades[{m}].instrument", trade.instrument, "one trade per instrument"
            )
        seen.add(trade.instrument)
        if not math.isfinite(trade.quantity) or trade.quantity == 0:
            raise CaseValidationError(
                f"trades[{m}].quantity", trade.quantity, "must be a non-zero number"
            )
        for field, value in (("xm_quantity", trade.xm_quantity), ("pinned", trade.pinned)):
            if value:  # a trade's placement is the what-if's answer, not an input
                raise CaseValidationError(
                    f"trades[{m}].{field}",
                    value,
                    "must be left out: the what-if places each trade itself (XM or "
                    "standalone, whichever margins less)",
                )


def what_if(book: Book, trades: Sequence[Position], exclude: Sequence[str] = ()) -> WhatIfResult:
    """The margin change of leaving out the positions in ``exclude`` and adding ``trades``
    (instrument and quantity; an ``xm_quantity`` or ``pinned`` set is refused), each trade's
    best placement, at the current allocation. ``book.instruments`` must list every traded
    instrument. Raises :class:`CaseValidationError` naming ``exclude[i]`` or ``trades[m]``."""
    _check(book, trades, exclude)
    left_out = set(exclude)
    base = [p for p in book.positions if p.instrument not in left_out]
    row = {p.instrument: k for k, p in enumerate(base)}
    new = [t for t in trades if t.instrument not in row]
    for t in new:
        row[t.instrument] = len(row)
    n = len(row)
    reference_q = np.array([p.quantity for p in base] + [0.0] * len(new))
    reference_x = np.array([p.xm_quantity for p in base] + [0.0] * len(new))

    def with_trades(placements: Sequence[bool]) -> tuple[PositionVector, PositionVector]:
        q, x = reference_q.copy(), reference_x.copy()
        for trade, in_xm in zip(trades, placements, strict=True):
            i = row[trade.instrument]
            q[i], x[i] = place_trade(q[i], x[i], trade.quantity, in_xm)
        return q, x

    # One problem over every position any state holds (the new ones at their traded quantity);
    # each state is then a pair of vectors (quantities, XM quantities) for the exact evaluator.
    all_q, all_x = with_trades([False] * len(trades))
    positions = [
        dataclasses.replace(p, quantity=float(all_q[k]), xm_quantity=float(all_x[k]))
        for k, p in enumerate(base)
    ] + [
        dataclasses.replace(
            t, xm_quantity=0.0, pinned=False, quantity=float(all_q[row[t.instrument]])
        )
        for t in new
    ]
    problem = build_problem(dataclasses.replace(book, positions=tuple(positions)))
    assert problem.n_positions == n

    def state(quantity: PositionVector, xm_quantity: PositionVector) -> State:
        return evaluate(_with_quantity(problem, quantity), xm_quantity)

    full = build_problem(book)
    before = evaluate(full, full.current_xm)
    reference = state(reference_q, reference_x)
    impacts = []
    best: list[bool] = []
    for trade in trades:
        i = row[trade.instrument]
        eligibility = problem.eligibility[i]
        totals: dict[Placement, float] = {}
        for placement in (Placement.STANDALONE, Placement.XM):
            if placement is Placement.XM and not eligibility.eligible:
                continue
            q, x = reference_q.copy(), reference_x.copy()
            q[i], x[i] = place_trade(q[i], x[i], trade.quantity, placement is Placement.XM)
            totals[placement] = state(q, x).total
        chosen = min(totals, key=lambda p: (totals[p] - reference.total, p is Placement.XM))
        best.append(chosen is Placement.XM)
        xm_total = totals.get(Placement.XM)
        impacts.append(
            TradeImpact(
                instrument=trade.instrument,
                quantity=trade.quantity,
                eligible=eligibility.eligible,
                reasons=tuple(eligibility.reasons),
                total_standalone=totals[Placement.STANDALONE],
                change_standalone=totals[Placement.STANDALONE] - reference.total,
                total_xm=xm_total,
                change_xm=None if xm_total is None else xm_total - reference.total,
                best=chosen,
            )
        )
    return WhatIfResult(
        name=book.name,
        excluded=tuple(exclude),
        before=before,
        after_exclusions=reference,
        after_standalone=state(all_q, all_x),
        after_best=state(*with_trades(best)),
        trades=tuple(impacts),
    )


def _with_quantity(problem: Problem, quantity: PositionVector) -> Problem:
    """The same problem holding ``quantity`` (the exact evaluator reads only the quantities)."""
    return dataclasses.replace(problem, quantity=quantity)
