"""The numeric form of a book that the evaluator and the solvers share.

A :class:`Problem` holds, for the n positions of a book, their quantities, current XM
quantities, lots, clearing house, eligibility and whether they may move, and their per-unit risk
in two parts: factor sensitivities ``exposure`` (n, K), zero for instruments given only as P&L
vectors, and ``pnl_vectors`` (S, m), the P&L vectors of the m positions ``pnl_columns`` given
that way. The per-unit scenario P&L of position i is ``shocks @ exposure[i]`` plus its vector.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from .eligibility import Eligibility, Rulebook, evaluate_eligibility
from .errors import CaseValidationError, expect_type
from .model import Book, Ccp, MarginModel, Measure, Mode, ScenarioMatrix, SolveOptions

__all__ = ["ModelWindow", "Problem", "build_problem", "tail_count"]

PositionVector = npt.NDArray[np.float64]
"""Shape (n,): one value per position."""

TAIL_SNAP = 1e-9


def tail_count(confidence: float, n_scenarios: int) -> float:
    """n_tail = (1 - alpha) * N, snapped to a whole number when within 1e-9 of one."""
    n_tail = (1.0 - confidence) * n_scenarios
    nearest = round(n_tail)
    return float(nearest) if abs(n_tail - nearest) <= TAIL_SNAP else n_tail


@dataclass(frozen=True, slots=True, eq=False)
class ModelWindow:
    """A margin model bound to a scenario set: which scenarios it reads, and its parameters."""

    ccp: Ccp
    model: MarginModel
    window: slice
    stress_rows: npt.NDArray[np.intp]
    n_tail: float = field(init=False)
    """:func:`tail_count` of the model's confidence over the window (found once: the evaluator
    asks for it on every evaluation)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_tail", tail_count(self.model.confidence, self.n_scenarios))

    @property
    def n_scenarios(self) -> int:
        return self.window.stop - self.window.start

    @property
    def scale(self) -> float:
        """sqrt(h): losses over h days from 1-day scenarios."""
        return float(np.sqrt(self.model.horizon_days))

    @property
    def has_stress(self) -> bool:
        return self.model.stress_weight > 0 and self.stress_rows.size > 0

    @property
    def has_addons(self) -> bool:
        return self.model.addon_rate is not None and bool(np.any(self.model.addon_rate > 0))

    def as_es(self) -> ModelWindow:
        """The same model measuring ES (the convex stand-in for a VaR model)."""
        if self.model.measure is Measure.ES:
            return self
        model = self.model
        es_model = MarginModel(
            lookback=model.lookback,
            confidence=model.confidence,
            horizon_days=model.horizon_days,
            measure=Measure.ES,
            stress_ids=model.stress_ids,
            stress_weight=model.stress_weight,
            addon_rate=model.addon_rate,
            addon_threshold=model.addon_threshold,
        )
        return ModelWindow(self.ccp, es_model, self.window, self.stress_rows)


@dataclass(frozen=True, slots=True, eq=False)
class Problem:
    """Everything numeric about one book; built once, shared by evaluator and solvers."""

    book: Book
    position_ids: tuple[str, ...]
    quantity: PositionVector
    current_xm: PositionVector
    lot: PositionVector
    is_ficc: npt.NDArray[np.bool_]
    eligibility: tuple[Eligibility, ...]
    eligible: npt.NDArray[np.bool_]
    pinned: npt.NDArray[np.bool_]
    movable: npt.NDArray[np.bool_]
    shocks: ScenarioMatrix
    exposure: npt.NDArray[np.float64]
    pnl_columns: npt.NDArray[np.intp]
    pnl_vectors: npt.NDArray[np.float64]
    models: dict[Ccp, ModelWindow]
    options: SolveOptions

    @property
    def n_positions(self) -> int:
        return len(self.position_ids)

    @property
    def savings_cap(self) -> float:
        return self.book.program.savings_cap

    def unit_pnl(self) -> npt.NDArray[np.float64]:
        """Per-unit scenario P&L, shape (S, n): p[s] = sum_k d[k] shock[s][k], or the vector."""
        pnl = self.shocks @ self.exposure.T
        pnl[:, self.pnl_columns] += self.pnl_vectors
        return pnl

    def losses(self, quantities: PositionVector) -> npt.NDArray[np.float64]:
        """Scenario losses L[s] = -sum_i y_i p_i[s] of a portfolio holding ``quantities``."""
        loss = -(self.shocks @ (self.exposure.T @ quantities))
        if self.pnl_columns.size:
            loss -= self.pnl_vectors @ quantities[self.pnl_columns]
        return loss

    def transfer_cost(self, xm_quantity: PositionVector) -> float:
        """cost * sum_i |x_i - x0_i| / lot_i: USD per lot moved from the current allocation."""
        moved_lots = np.abs(xm_quantity - self.current_xm) / self.lot
        return float(self.options.transfer_cost * moved_lots.sum())

    def with_options(self, options: SolveOptions) -> Problem:
        """The same problem under other solve options: only the mode changes what is built (what
        may move), so under the same mode the arrays are shared, not rebuilt."""
        if options.mode is self.options.mode:
            return replace(self, options=options)
        return build_problem(self.book, options=options, eligibility=self.eligibility)


def build_problem(
    book: Book,
    rulebook: Rulebook | None = None,
    options: SolveOptions | None = None,
    eligibility: tuple[Eligibility, ...] | None = None,
) -> Problem:
    """Turn a validated :class:`Book` into arrays."""
    expect_type(book, Book, "book")
    expect_type(options, (SolveOptions, type(None)), "options")
    expect_type(eligibility, (tuple, type(None)), "eligibility")
    options = options or book.options
    positions = book.positions
    if eligibility is None:
        eligibility = tuple(evaluate_eligibility(book, rulebook))
    elif len(eligibility) != len(positions) or not all(
        isinstance(e, Eligibility) for e in eligibility
    ):
        raise ValueError(
            f"eligibility: must hold one Eligibility per position ({len(positions)}), "
            f"got {len(eligibility)} items"
        )
    instruments = [book.instruments[p.instrument] for p in positions]
    n_scenarios, n_factors = book.scenarios.shocks.shape
    exposure = np.zeros((len(positions), n_factors))
    pnl_columns: list[int] = []
    for i, instrument in enumerate(instruments):
        if instrument.sensitivities is not None:
            exposure[i] = instrument.sensitivities
        else:
            pnl_columns.append(i)
    pnl_vectors = np.zeros((n_scenarios, len(pnl_columns)))
    for j, i in enumerate(pnl_columns):
        pnl_vectors[:, j] = instruments[i].pnl
    is_ficc = np.array([inst.ccp is Ccp.FICC for inst in instruments], dtype=bool)
    eligible = np.array([e.eligible for e in eligibility], dtype=bool)
    pinned = np.array([p.pinned for p in positions], dtype=bool)
    movable = eligible & ~pinned
    if options.mode is Mode.FICC_FIXED:
        movable &= ~is_ficc
    # The rows of the stress scenarios (a dict of every scenario id only when some are named).
    stressed = any(model.stress_ids for model in book.models.values())
    row_of = {s: row for row, s in enumerate(book.scenarios.ids)} if stressed else {}
    models = {
        ccp: ModelWindow(
            ccp=ccp,
            model=model,
            window=slice(n_scenarios - model.lookback, n_scenarios),
            stress_rows=np.array([row_of[s] for s in model.stress_ids], dtype=np.intp),
        )
        for ccp, model in book.models.items()
    }
    quantity = np.array([p.quantity for p in positions], dtype=float)
    current_xm = np.array([p.xm_quantity for p in positions], dtype=float)
    lot = np.array([p.lot for p in positions], dtype=float)
    _refuse_impossible_numbers(book, quantity, current_xm, lot, exposure, pnl_vectors)
    return Problem(
        book=book,
        position_ids=tuple(p.instrument for p in positions),
        quantity=quantity,
        current_xm=current_xm,
        lot=lot,
        is_ficc=is_ficc,
        eligibility=eligibility,
        eligible=eligible,
        pinned=pinned,
        movable=movable,
        shocks=book.scenarios.shocks,
        exposure=exposure,
        pnl_columns=np.array(pnl_columns, dtype=np.intp),
        pnl_vectors=pnl_vectors,
        models=models,
        options=options,
    )


def _refuse_impossible_numbers(
    book: Book,
    quantity: PositionVector,
    current_xm: PositionVector,
    lot: PositionVector,
    exposure: npt.NDArray[np.float64],
    pnl_vectors: npt.NDArray[np.float64],
) -> None:
    """A book built in code (not read by the case format, which refuses all of these and more)
    fails here, naming the first field, instead of inside a solver or with an answer: a
    quantity, XM quantity or lot that is not finite, a lot <= 0, an XM quantity beyond the
    holding or of the other sign, a sensitivity, P&L or shock that is not finite, a lookback
    outside 1..scenarios, a confidence outside (0, 1). A few array checks: microseconds."""
    for name, values in (("quantity", quantity), ("xm_quantity", current_xm), ("lot", lot)):
        bad = np.flatnonzero(~np.isfinite(values) | ((values <= 0) if name == "lot" else False))
        if bad.size:
            reason = "must be a finite number" + (" > 0" if name == "lot" else "")
            raise CaseValidationError(f"positions[{bad[0]}].{name}", float(values[bad[0]]), reason)
    beyond = np.flatnonzero((current_xm * quantity < 0) | (np.abs(current_xm) > np.abs(quantity)))
    if beyond.size:
        i = int(beyond[0])
        raise CaseValidationError(
            f"positions[{i}].xm_quantity",
            float(current_xm[i]),
            f"must have the sign of quantity {quantity[i]:g} and not exceed it",
        )
    for row in np.flatnonzero(~np.isfinite(exposure).all(axis=1)):
        instrument = book.positions[int(row)].instrument
        raise CaseValidationError(f"instruments[{instrument}].sensitivities", None, "not finite")
    if not np.isfinite(pnl_vectors).all():
        raise CaseValidationError("instruments.pnl", None, "must be finite numbers")
    if not np.isfinite(book.scenarios.shocks).all():
        raise CaseValidationError("scenarios.shocks", None, "must be finite numbers")
    n_scenarios = book.scenarios.shocks.shape[0]
    for ccp, model in book.models.items():
        if not 1 <= model.lookback <= n_scenarios:
            reason = f"must be a whole number in 1..{n_scenarios} (the scenarios)"
            raise CaseValidationError(f"models.{ccp}.lookback", model.lookback, reason)
        if not 0.0 < model.confidence < 1.0:
            reason = "must lie strictly between 0 and 1"
            raise CaseValidationError(f"models.{ccp}.confidence", model.confidence, reason)
