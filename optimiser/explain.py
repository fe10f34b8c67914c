"""Why each account margins what it does, and what an allocation change did to it.

Everything is computed from the exact evaluator's inputs (:func:`margin.account_figures`, the
same tail weights, window, sqrt(h), stress weight and add-ons), in numpy, no solver.

One model figure (``ficc_standalone``, ``cme_standalone``, ``S_F``, ``S_C``, ``C_F``, ``C_C``)
of a portfolio holding y, with window losses L[s] = -sum_i y_i p_i[s] (USD, 1 day):

    M = max(0, inner),  inner = a * risk + b * stress + addons,   a = sqrt(h)(1 - w), b = sqrt(h) w
    risk   = sum_s t_s L[s]      t = the evaluator's ES tail weights (VaR: 1 on the quantile)
    stress = L[s*]               s* the worst stress scenario
    addons = sum_k rate_k max(0, |E_k| - thr_k),   E = y @ d  (USD per +1 move of factor k)

Splits (each adds up to M exactly, floating-point round-off apart):

* by position: share_i = a sum_s t_s (-y_i p_i[s]) + b (-y_i p_i[s*]) + addon_i, with
  addon_i = sum_k addons_k * y_i d_i[k] / E_k (each add-on shared in proportion to the
  positions' part of the exposure it charges: the Euler split when the threshold is 0),
  plus ``floor`` = M - inner (non-zero only where max(0, .) binds);
* by factor: the loss of a sensitivity portfolio in s is -sum_k E_k shock[s][k], so factor k
  gets a sum_s t_s (-E_k shock[s][k]) + b (-E_k shock[s*][k]) + addons_k; the P&L-vector
  instruments (options given as full P&L) have no factor split and go to
  ``unexplained_by_factors``; plus ``floor``.

The XM account: with S = S_F + S_C, XM margin = (1 - r) S is one of C_F (r = r_F), C_C
(r = r_C), (1 - cap) S (cap binding) or S (no reduction), so its splits are that binding
term's (a combination of the figures' splits with the coefficients ``XmExplanation.terms``).

What a change of allocation did (:func:`explain_change`): each transfer's credit for the
change of the total margin T, adding up to it exactly. Margin is not additive over transfers
(two legs of a hedge save only together), so the split is a choice:

* ``path`` (default): Aumann-Shapley along the straight line x(t) from the starting to the end
  allocation: transfer i gets -integral of dT/dx_i dx_i, the derivative taken from the
  figures' tail scenarios at the midpoints of ``PATH_STEPS`` steps; each step's credits
  are then adjusted to add up to that step's exact change of T (its residual, round-off where T
  is linear and the kinks where it is not, shared in proportion to the credits), so the credits
  telescope to T(start) - T(end) exactly. Symmetric: no order; both legs of a hedge share.
* ``sequential``: the transfers applied one at a time, largest saving alone first (ties in
  position order), each credited with the exact change it causes. Each credit is a real margin
  change, but the order matters: the transfer that completes a hedge takes its whole saving.

Each transfer also carries ``alone`` (its saving applied alone to the start) and ``last`` (what
undoing it alone at the end costs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .margin import (
    FIGURES,
    ModelFigures,
    account_figures,
    account_losses,
    account_quantities,
    evaluate,
    xm_margin,
)
from .model import Measure
from .problem import ModelWindow, PositionVector, Problem
from .results import Transfer, transfers_between

__all__ = [
    "ChangeExplanation",
    "Explanation",
    "FigureExplanation",
    "ScenarioWeight",
    "StateExplanation",
    "TailChange",
    "TransferSaving",
    "XmExplanation",
    "explain",
    "explain_change",
    "explain_figure",
    "explain_result",
    "explain_state",
]

FIGURE_NAMES = tuple(name for name, _, _ in FIGURES)
ACCOUNT_OF = {name: account for name, _, account in FIGURES}


@dataclass(frozen=True, slots=True)
class ScenarioWeight:
    """One scenario's part in a risk figure.

    ``loss`` is the account's 1-day loss in the scenario (USD, positive = loss), ``weight`` its
    weight in the measure (ES: 1/n_tail, the boundary scenario its fraction; VaR and stress: 1)
    and ``contribution`` what it adds to the margin: sqrt(h) * (1 - w or w) * weight * loss."""

    row: int
    id: str
    loss: float
    weight: float
    contribution: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "row": self.row,
            "loss": self.loss,
            "weight": self.weight,
            "contribution": self.contribution,
        }


@dataclass(frozen=True, slots=True, eq=False)
class FigureExplanation:
    """One model figure of one account: its parts, the scenarios that set it, and its splits
    by factor and by position (module docstring). Money in USD; ``window_losses`` are the
    1-day losses of every scenario in the model's window (for charts); ``gradient`` is dM/dy_i
    (USD per unit of each position, its tail and stress scenario held, 0 where floored): the
    Euler split is quantity * gradient, add-ons with thresholds apart."""

    name: str
    account: str
    ccp: str
    measure: str
    margin: float
    scale: float
    stress_weight: float
    n_tail: float
    risk: float
    stress: float
    addons: float
    risk_part: float
    stress_part: float
    floor: float
    tail: tuple[ScenarioWeight, ...]
    stress_scenario: ScenarioWeight | None
    by_factor: npt.NDArray[np.float64]
    addons_by_factor: npt.NDArray[np.float64]
    unexplained_by_factors: float
    by_position: PositionVector
    window_start: int
    window_losses: npt.NDArray[np.float64]
    gradient: PositionVector

    @property
    def tail_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.tail)

    @property
    def held(self) -> bool:
        """Whether the account holds anything (an empty account's "tail" is a tie of zeros)."""
        return bool(np.any(self.by_position != 0.0)) or bool(np.any(self.window_losses != 0.0))

    def to_dict(
        self, factors: tuple[str, ...], positions: tuple[str, ...], losses: bool = False
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "figure": self.name,
            "account": self.account,
            "held": self.held,
            "model": self.ccp,
            "measure": self.measure,
            "margin": self.margin,
            "horizon_scale": self.scale,
            "stress_weight": self.stress_weight,
            "n_tail": self.n_tail,
            "risk": self.risk,
            "stress": self.stress,
            "addons": self.addons,
            "parts": {
                "risk": self.risk_part,
                "stress": self.stress_part,
                "addons": self.addons,
                "floor": self.floor,
            },
            "tail": [s.to_dict() for s in self.tail],
            "stress_scenario": None
            if self.stress_scenario is None
            else self.stress_scenario.to_dict(),
            "by_factor": dict(zip(factors, map(float, self.by_factor), strict=True)),
            "addons_by_factor": dict(zip(factors, map(float, self.addons_by_factor), strict=True)),
            "unexplained_by_factors": self.unexplained_by_factors,
            "by_position": _nonzero(positions, self.by_position),
        }
        if losses:
            out["window_losses"] = [float(v) for v in self.window_losses]
        return out


@dataclass(frozen=True, slots=True, eq=False)
class XmExplanation:
    """The XM account: its four figures and which term of the XM rule sets its margin.

    ``binding`` is ``C_F`` or ``C_C`` (that clearing house's reduction applies), ``cap`` (the
    savings cap binds: (1 - cap)(S_F + S_C)), ``no_reduction`` (r = 0: S_F + S_C) or ``empty``
    (S_F + S_C = 0: margin 0); ``terms`` gives the margin as sum of coefficient * figure."""

    margin: float
    r: float
    binding: str
    terms: dict[str, float]
    figures: dict[str, FigureExplanation]
    by_factor: npt.NDArray[np.float64]
    unexplained_by_factors: float
    floor: float
    by_position: PositionVector
    rounding: float = 0.0

    def to_dict(
        self, factors: tuple[str, ...], positions: tuple[str, ...], losses: bool = False
    ) -> dict[str, Any]:
        return {
            "margin": self.margin,
            "r": self.r,
            "binding": self.binding,
            "terms": dict(self.terms),
            "by_factor": dict(zip(factors, map(float, self.by_factor), strict=True)),
            "unexplained_by_factors": self.unexplained_by_factors,
            "floor": self.floor,
            "by_position": _nonzero(positions, self.by_position),
            "figures": {
                name: figure.to_dict(factors, positions, losses)
                for name, figure in self.figures.items()
            },
        }


@dataclass(frozen=True, slots=True, eq=False)
class StateExplanation:
    """One allocation: both standalone accounts, the XM account, and the total's splits."""

    xm_quantity: PositionVector
    total: float
    ficc_standalone: FigureExplanation
    cme_standalone: FigureExplanation
    xm: XmExplanation

    @property
    def figures(self) -> dict[str, FigureExplanation]:
        """The six model figures by name (FIGURES order)."""
        return {
            "ficc_standalone": self.ficc_standalone,
            "cme_standalone": self.cme_standalone,
            **self.xm.figures,
        }

    @property
    def by_position(self) -> PositionVector:
        """Each position's share of the total (floors and XM rounding not included)."""
        return (
            self.ficc_standalone.by_position + self.cme_standalone.by_position + self.xm.by_position
        )

    @property
    def by_factor(self) -> npt.NDArray[np.float64]:
        return self.ficc_standalone.by_factor + self.cme_standalone.by_factor + self.xm.by_factor

    @property
    def unexplained_by_factors(self) -> float:
        return (
            self.ficc_standalone.unexplained_by_factors
            + self.cme_standalone.unexplained_by_factors
            + self.xm.unexplained_by_factors
        )

    @property
    def floor(self) -> float:
        """What the max(0, .) floors add, plus the XM rule's own round-off (see XmExplanation)."""
        return self.ficc_standalone.floor + self.cme_standalone.floor + self.xm.floor

    def to_dict(
        self, factors: tuple[str, ...], positions: tuple[str, ...], losses: bool = False
    ) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_factor": dict(zip(factors, map(float, self.by_factor), strict=True)),
            "unexplained_by_factors": self.unexplained_by_factors,
            "floor": self.floor,
            "by_position": _nonzero(positions, self.by_position),
            "accounts": {
                "ficc_standalone": self.ficc_standalone.to_dict(factors, positions, losses),
                "cme_standalone": self.cme_standalone.to_dict(factors, positions, losses),
                "xm": self.xm.to_dict(factors, positions, losses),
            },
        }


@dataclass(frozen=True, slots=True)
class TransferSaving:
    """What one transfer saved: ``saving`` is its credit (the credits add up to the total
    saving; :func:`explain_change`), ``order`` its place in the list (largest credit first for
    the path method, the order applied for the sequential one), ``alone`` its saving applied
    alone to the starting allocation, ``last`` what undoing it alone at the end would cost
    (USD; positive = saves margin)."""

    transfer: Transfer
    position: int
    order: int
    saving: float
    alone: float
    last: float

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.transfer.to_dict(),
            "order": self.order,
            "saving": self.saving,
            "alone": self.alone,
            "last": self.last,
        }


@dataclass(frozen=True, slots=True)
class TailChange:
    """Scenario ids that enter, leave and stay in a figure's tail between two allocations
    (for VaR the quantile scenario; oldest first)."""

    figure: str
    entered: tuple[str, ...]
    left: tuple[str, ...]
    kept: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"entered": list(self.entered), "left": list(self.left), "kept": list(self.kept)}


@dataclass(frozen=True, slots=True)
class ChangeExplanation:
    """From one allocation to another: the total before and after, each transfer's saving
    (adding up to ``savings`` = before - after) and the tail days that changed per figure."""

    before_total: float
    after_total: float
    transfers: tuple[TransferSaving, ...]
    tail_changes: dict[str, TailChange]
    method: str = "path"
    unassigned: float = 0.0

    @property
    def savings(self) -> float:
        return self.before_total - self.after_total

    def to_dict(self) -> dict[str, Any]:
        return {
            "before_total": self.before_total,
            "after_total": self.after_total,
            "savings": self.savings,
            "method": self.method,
            "transfers": [t.to_dict() for t in self.transfers],
            "unassigned": self.unassigned,
            "tail_changes": {name: change.to_dict() for name, change in self.tail_changes.items()},
        }


@dataclass(frozen=True, slots=True, eq=False)
class Explanation:
    """The explanation of a book: per state (``current``, ``optimised``), and the change."""

    problem: Problem
    states: dict[str, StateExplanation]
    change: ChangeExplanation | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self, losses: bool = False) -> dict[str, Any]:
        """JSON-ready (USD; losses 1-day; ``losses`` adds every window loss, for charts)."""
        problem = self.problem
        factors = tuple(problem.book.factors)
        positions = problem.position_ids
        return {
            "name": problem.book.name,
            "units": "USD; scenario losses are 1-day (positive = loss); contributions and "
            "splits are in margin, sqrt(h) and the stress weight applied",
            "states": {
                name: state.to_dict(factors, positions, losses)
                for name, state in self.states.items()
            },
            "change": None if self.change is None else self.change.to_dict(),
            "notes": list(self.notes),
        }


# --- one figure -----------------------------------------------------------------------------


def _nonzero(names: tuple[str, ...], values: PositionVector) -> dict[str, float]:
    return {name: float(v) for name, v in zip(names, values, strict=True) if v != 0.0}


def _unit_pnl(problem: Problem, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    """Per-unit P&L p_i[s] of every position in the scenarios ``rows``: (len(rows), n)."""
    pnl = problem.shocks[rows] @ problem.exposure.T
    if problem.pnl_columns.size:
        pnl[:, problem.pnl_columns] += problem.pnl_vectors[rows]
    return pnl


def _quantile_row(window_losses: npt.NDArray[np.float64], n_tail: float) -> int:
    """The window index of the VaR scenario, L(floor(n_tail) + 1): the same partition as
    :func:`margin.value_at_risk` (with ties, any tied scenario has the same loss)."""
    whole = math.floor(n_tail)
    return int(np.argpartition(-window_losses, whole)[whole])


def explain_figure(
    problem: Problem,
    name: str,
    window: ModelWindow,
    quantities: PositionVector,
    losses: npt.NDArray[np.float64],
    exposure: npt.NDArray[np.float64],
    figure: ModelFigures,
) -> FigureExplanation:
    """Explain the model figure ``figure`` (from :func:`account_figures`) of the portfolio
    ``quantities`` under ``window``, given its scenario losses (S,) and net factor exposure
    (K,) as :func:`margin.account_losses` computes them (module docstring for the splits)."""
    model = window.model
    ids = problem.book.scenarios.ids
    rows = np.arange(losses.size)[window.window]
    window_losses = losses[window.window]
    scale, w = window.scale, model.stress_weight
    risk_coef, stress_coef = scale * (1.0 - w), scale * w
    if model.measure is Measure.ES:
        # The evaluator's own tail weights: ties are resolved exactly as it resolves them.
        in_tail = np.flatnonzero(figure.tail_weights)
        weights = figure.tail_weights[in_tail]
        risk = figure.es
    else:
        in_tail = np.array([_quantile_row(window_losses, window.n_tail)], dtype=np.intp)
        weights = np.ones(1)
        risk = figure.var
    tail_rows = rows[in_tail]
    order = np.lexsort((tail_rows, -losses[tail_rows]))  # largest loss first, then oldest
    tail_rows, weights = tail_rows[order], weights[order]
    tail = tuple(
        ScenarioWeight(int(r), ids[r], float(losses[r]), float(t), risk_coef * float(t * losses[r]))
        for r, t in zip(tail_rows, weights, strict=True)
    )
    # Per-position and per-factor losses in the scenarios that carry weight.
    scenario_rows = [tail_rows]
    scenario_coefs = [risk_coef * weights]
    stress_scenario = None
    stress = 0.0
    if window.stress_rows.size:
        worst = int(window.stress_rows[np.argmax(losses[window.stress_rows])])
        stress = float(losses[worst])
        stress_scenario = ScenarioWeight(worst, ids[worst], stress, 1.0, stress_coef * stress)
        scenario_rows.append(np.array([worst], dtype=np.intp))
        scenario_coefs.append(np.array([stress_coef]))
    used_rows = np.concatenate(scenario_rows)
    coefs = np.concatenate(scenario_coefs)
    unit_losses = -_unit_pnl(problem, used_rows)  # dL_s/dy_i, (r, n)
    position_losses = unit_losses * quantities
    factor_losses = -problem.shocks[used_rows] * exposure  # (r, K)
    vector_losses = np.zeros(used_rows.size)
    if problem.pnl_columns.size:
        vector_losses = -(problem.pnl_vectors[used_rows] @ quantities[problem.pnl_columns])
    addons_by_factor = np.zeros(exposure.size)
    addon_positions = np.zeros(problem.n_positions)
    addon_gradient = np.zeros(problem.n_positions)
    if model.addon_rate is not None and model.addon_threshold is not None:
        addons_by_factor = (
            np.maximum(0.0, np.abs(exposure) - model.addon_threshold) * model.addon_rate
        )
        charged = addons_by_factor != 0.0
        share = np.zeros_like(exposure)
        share[charged] = addons_by_factor[charged] / exposure[charged]
        addon_positions = (problem.exposure * quantities[:, None]) @ share
        over = np.abs(exposure) > model.addon_threshold
        addon_gradient = problem.exposure @ (model.addon_rate * np.sign(exposure) * over)
    risk_part, stress_part = risk_coef * risk, stress_coef * stress
    inner = scale * ((1.0 - w) * risk + w * stress) + figure.addons  # as margin.model_margins
    floor = figure.margin - inner
    return FigureExplanation(
        name=name,
        account=ACCOUNT_OF[name],
        ccp=window.ccp.value,
        measure=model.measure.value,
        margin=figure.margin,
        scale=scale,
        stress_weight=w,
        n_tail=window.n_tail,
        risk=risk,
        stress=stress,
        addons=figure.addons,
        risk_part=risk_part,
        stress_part=stress_part,
        floor=floor,
        tail=tail,
        stress_scenario=stress_scenario,
        by_factor=coefs @ factor_losses + addons_by_factor,
        addons_by_factor=addons_by_factor,
        unexplained_by_factors=float(coefs @ vector_losses),
        by_position=coefs @ position_losses + addon_positions,
        window_start=int(rows[0]) if rows.size else 0,
        window_losses=window_losses,
        gradient=(coefs @ unit_losses + addon_gradient) if inner > 0 else np.zeros_like(quantities),
    )


# --- one state ------------------------------------------------------------------------------


def _xm_terms(
    problem: Problem, S_F: float, S_C: float, C_F: float, C_C: float
) -> tuple[str, dict[str, float]]:
    """Which term of the XM rule sets the margin, and the margin as coefficients of figures
    (the branches of :func:`margin.xm_margin`)."""
    standalone_sum = S_F + S_C
    cap = problem.savings_cap
    if standalone_sum <= 0.0:
        return "empty", {}
    r_F, r_C = 1.0 - C_F / standalone_sum, 1.0 - C_C / standalone_sum
    conservative = min(r_F, r_C)
    if conservative >= cap:
        return "cap", {"S_F": 1.0 - cap, "S_C": 1.0 - cap}
    if conservative <= 0.0:
        return "no_reduction", {"S_F": 1.0, "S_C": 1.0}
    return ("C_F", {"C_F": 1.0}) if r_F <= r_C else ("C_C", {"C_C": 1.0})


def explain_state(problem: Problem, xm_quantity: PositionVector) -> StateExplanation:
    """Explain the exact margin of the allocation ``xm_quantity`` (n,)."""
    xm_quantity = np.asarray(xm_quantity, dtype=float)
    figures = account_figures(problem, xm_quantity)
    held = account_quantities(problem, xm_quantity)
    # The very losses the evaluator measured (same product): VaR's quantile is its quantile.
    exposures, losses = account_losses(problem, held)
    row = {account: i for i, account in enumerate(held)}
    explained: dict[str, FigureExplanation] = {}
    for name, ccp, account in FIGURES:
        explained[name] = explain_figure(
            problem,
            name,
            problem.models[ccp],
            held[account],
            losses[row[account]],
            exposures[row[account]],
            figures[name],
        )
    # The XM rule on the same figures (what evaluate does, without computing them again).
    xm = xm_margin(
        figures["S_F"].margin,
        figures["S_C"].margin,
        figures["C_F"].margin,
        figures["C_C"].margin,
        problem.savings_cap,
    )
    total = figures["ficc_standalone"].margin + figures["cme_standalone"].margin + xm.margin
    binding, terms = _xm_terms(problem, xm.S_F, xm.S_C, xm.C_F, xm.C_C)
    K = problem.exposure.shape[1]
    by_factor, by_position = np.zeros(K), np.zeros(problem.n_positions)
    unexplained = floor = combined = 0.0
    for name, coefficient in terms.items():
        part = explained[name]
        by_factor += coefficient * part.by_factor
        by_position += coefficient * part.by_position
        unexplained += coefficient * part.unexplained_by_factors
        floor += coefficient * part.floor
        combined += coefficient * part.margin
    xm_explained = XmExplanation(
        margin=xm.margin,
        r=xm.r,
        binding=binding,
        terms=terms,
        figures={name: explained[name] for name in ("S_F", "S_C", "C_F", "C_C")},
        by_factor=by_factor,
        unexplained_by_factors=unexplained,
        # (1 - r) S and the binding term differ by round-off only (r_F = 1 - C_F/S ...).
        floor=floor + (xm.margin - combined),
        by_position=by_position,
        rounding=xm.margin - combined,
    )
    return StateExplanation(
        xm_quantity=xm_quantity,
        total=total,
        ficc_standalone=explained["ficc_standalone"],
        cme_standalone=explained["cme_standalone"],
        xm=xm_explained,
    )


# --- a change of allocation -----------------------------------------------------------------


def _tail_change(
    name: str, before: FigureExplanation, after: FigureExplanation, ids: tuple[str, ...]
) -> TailChange:
    # An account holding nothing has no tail that drives it (its zeros tie everywhere).
    rows_before = {s.row for s in before.tail} if before.held else set()
    rows_after = {s.row for s in after.tail} if after.held else set()

    def oldest_first(rows: set[int]) -> tuple[str, ...]:
        return tuple(ids[r] for r in sorted(rows))

    return TailChange(
        figure=name,
        entered=oldest_first(rows_after - rows_before),
        left=oldest_first(rows_before - rows_after),
        kept=oldest_first(rows_before & rows_after),
    )


PATH_STEPS = 64
"""Steps of the straight path from one allocation to the other (``method="path"``)."""


def _total_gradient(problem: Problem, state: StateExplanation) -> PositionVector:
    """dT/dx_i, USD per unit moved into XM, at ``state`` (a subgradient where T has a kink):
    -dM_standalone/dy_i + dXM/dx_i, with each figure's :attr:`FigureExplanation.gradient` and
    XM = min(S, max(C_F, C_C, (1 - cap) S)), S = S_F + S_C; pieces tied (to 1e-9) at a max or
    min share equally (the symmetric subgradient), so that a path running along a kink, as
    the XM rule's often does at the optimum, is credited evenly."""
    figures = state.figures
    is_ficc = problem.is_ficc
    standalone = np.where(
        is_ficc, figures["ficc_standalone"].gradient, figures["cme_standalone"].gradient
    )
    legs = np.where(is_ficc, figures["S_F"].gradient, figures["S_C"].gradient)
    S = figures["S_F"].margin + figures["S_C"].margin
    cap = problem.savings_cap
    pieces = [
        (figures["C_F"].margin, figures["C_F"].gradient),
        (figures["C_C"].margin, figures["C_C"].gradient),
        ((1.0 - cap) * S, (1.0 - cap) * legs),
    ]

    def tied(
        options: list[tuple[float, PositionVector]], pick: Any
    ) -> tuple[float, PositionVector]:
        best = pick(value for value, _ in options)
        tolerance = 1e-9 * max(1.0, abs(best))
        chosen = [g for value, g in options if abs(value - best) <= tolerance]
        return best, np.mean(chosen, axis=0)

    inner = tied(pieces, max)
    _, xm = tied([(S, legs), inner], min)
    return xm - standalone


def _path_credits(
    problem: Problem,
    before: PositionVector,
    after: PositionVector,
    positions: list[int],
    start: float,
    end: float,
    steps: int,
) -> list[float]:
    """Aumann-Shapley credits along x(t) = before + t (after - before), made exact per step.

    In step j (t_j to t_j+1) transfer i is credited -g_i dx_i / steps, g = dT/dx at the step's
    midpoint (:func:`_total_gradient`), plus a share of the
    step's residual (its exact saving T(t_j) - T(t_j+1) minus the sum of those terms) in
    proportion to their sizes: each step's credits add up to its exact saving, so the credits
    telescope to T(before) - T(after); the residual is round-off where T is linear over the
    step and shares out the kinks (a tail scenario swapping, the XM rule changing term)."""
    delta = after - before
    moved = delta[positions]
    credits = np.zeros(len(positions))
    previous = start
    for j in range(steps):
        midpoint = explain_state(problem, before + (j + 0.5) / steps * delta)
        gradient = _total_gradient(problem, midpoint)[positions]
        linear = -gradient * moved / steps
        current = (
            end if j == steps - 1 else evaluate(problem, before + (j + 1) / steps * delta).total
        )
        residual = (previous - current) - float(linear.sum())
        size = np.abs(linear)
        weights = (
            size / size.sum() if size.sum() > 0 else np.full(len(positions), 1.0 / len(positions))
        )
        credits += linear + residual * weights
        previous = current
    return [float(c) for c in credits]


def _sequential_credits(
    problem: Problem,
    before: PositionVector,
    after: PositionVector,
    positions: list[int],
    order: list[int],
    start: float,
    end: float,
) -> list[float]:
    """Transfers applied one at a time in ``order``, each credited with the exact change of
    the total it causes (the last step lands on ``after`` exactly, changes too small to be
    transfers included): the credits telescope to T(before) - T(after)."""
    credits = [0.0] * len(positions)
    x, previous = before.copy(), start
    for step, j in enumerate(order):
        if step == len(order) - 1:
            current = end
        else:
            x[positions[j]] = after[positions[j]]
            current = evaluate(problem, x).total
        credits[j] = previous - current
        previous = current
    return credits


def explain_change(
    problem: Problem,
    before: PositionVector,
    after: PositionVector,
    before_state: StateExplanation | None = None,
    after_state: StateExplanation | None = None,
    method: str = "path",
    steps: int = PATH_STEPS,
) -> ChangeExplanation:
    """Each transfer's saving from ``before`` to ``after`` and the tail days that changed.

    ``method`` ``path`` (default): Aumann-Shapley credits along the straight path, exact per
    step (:func:`_path_credits`): symmetric, no order, both legs of a hedge share its saving.
    ``sequential``: one transfer at a time, largest saving alone first, ties in position order
    (:func:`_sequential_credits`): each credit is an exact margin change, but it depends on the
    order (the transfer that completes a hedge takes its whole saving). Either way the credits
    add up to T(before) - T(after)."""
    if method not in ("path", "sequential"):
        raise ValueError(f"method must be path or sequential, not {method!r}")
    before = np.asarray(before, dtype=float)
    after = np.asarray(after, dtype=float)
    before_state = before_state or explain_state(problem, before)
    after_state = after_state or explain_state(problem, after)
    start, end = before_state.total, after_state.total
    transfers = transfers_between(problem, before, after)
    index = {pid: i for i, pid in enumerate(problem.position_ids)}
    positions = [index[t.instrument] for t in transfers]

    def total(x: PositionVector) -> float:
        return evaluate(problem, x).total

    alone, last = [], []
    for i in positions:
        x = before.copy()
        x[i] = after[i]
        alone.append(start - total(x))
        y = after.copy()
        y[i] = before[i]
        last.append(total(y) - end)
    if not transfers:
        credits: list[float] = []
        order: list[int] = []
    elif method == "sequential":
        order = sorted(range(len(transfers)), key=lambda j: (-alone[j], positions[j]))
        credits = _sequential_credits(problem, before, after, positions, order, start, end)
    else:
        credits = _path_credits(problem, before, after, positions, start, end, steps)
        order = sorted(range(len(transfers)), key=lambda j: (-credits[j], positions[j]))
    savings = tuple(
        TransferSaving(
            transfer=transfers[j],
            position=positions[j],
            order=rank,
            saving=credits[j],
            alone=alone[j],
            last=last[j],
        )
        for rank, j in enumerate(order)
    )
    before_figures, after_figures = before_state.figures, after_state.figures
    return ChangeExplanation(
        before_total=start,
        after_total=end,
        transfers=savings,
        tail_changes={
            name: _tail_change(
                name, before_figures[name], after_figures[name], problem.book.scenarios.ids
            )
            for name in FIGURE_NAMES
        },
        method=method,
        unassigned=(start - end) if not transfers else 0.0,
    )


# --- entry points ---------------------------------------------------------------------------


def explain(
    problem: Problem,
    optimised: PositionVector | None = None,
    states: tuple[str, ...] = ("current", "optimised"),
    method: str = "path",
) -> Explanation:
    """Explain the current allocation and, given ``optimised``, that one and the change from
    current to it. ``states`` picks which states to include (the change needs both)."""
    explained: dict[str, StateExplanation] = {}
    current = explain_state(problem, problem.current_xm)
    if "current" in states:
        explained["current"] = current
    change = None
    if optimised is not None:
        best = explain_state(problem, optimised)
        if "optimised" in states:
            explained["optimised"] = best
        change = explain_change(
            problem, problem.current_xm, optimised, current, best, method=method
        )
    return Explanation(problem=problem, states=explained, change=change)


def explain_result(
    result: Any, states: tuple[str, ...] = ("current", "optimised"), method: str = "path"
) -> Explanation:
    """:func:`explain` of an :class:`~xmargin.optimiser.results.OptimisationResult`."""
    explanation = explain(result.problem, result.allocation, states, method)
    explanation.notes.extend(result.notes)
    return explanation
