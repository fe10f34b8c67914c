"""The margin maths of margin-model.md, in one place, and the exact evaluator.

For a model with window of N scenario losses L sorted largest first, L(1) >= L(2) >= ...:

    n_tail = (1 - alpha) * N                         (snapped to a whole number within 1e-9)
    ES     = (1/n_tail) * [L(1) + ... + L(f) + (n_tail - f) * L(f+1)],    f = floor(n_tail)
    VaR    = L(f + 1)
    stress = max over the stress scenarios of L[s]   (0 without any)
    addons = sum_k rate_k * max(0, |E_k| - thr_k),   E = net factor exposure
    M      = max(0, sqrt(h) * ((1 - w) * risk + w * stress) + addons),   risk = ES or VaR

and for the XM account, with S = S_F + S_C:

    r_F = 1 - C_F / S,  r_C = 1 - C_C / S,  r = clip(min(r_F, r_C), 0, cap)
    XM margin = (1 - r) * S   (0 when S = 0);  FICC collects (1 - r) S_F, CME (1 - r) S_C.

The evaluator never calls a solver: every reported figure comes from here.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import CaseValidationError, expect_type
from .model import Ccp, Measure
from .problem import ModelWindow, PositionVector, Problem

__all__ = [
    "Attribution",
    "ModelFigures",
    "State",
    "account_figures",
    "attribute",
    "checked_allocation",
    "convex_xm_margin",
    "evaluate",
    "evaluations_reused",
    "expected_shortfall",
    "model_margin",
    "model_margins",
    "state_at",
    "tail_order",
    "tail_weights",
    "value_at_risk",
    "var_exclusions",
    "var_majorant_window",
    "var_window_losses",
    "xm_margin",
]


def tail_order(losses: npt.NDArray[np.float64], n_tail: float) -> npt.NDArray[np.intp]:
    """Indices along the last axis of ``losses`` partitioned at f = floor(n_tail), largest loss
    first: [..., :f] the f largest (in no order), [..., f] the (f+1)-th largest, L(f+1)."""
    return np.argpartition(-losses, math.floor(n_tail), axis=-1)


def tail_weights(
    losses: npt.NDArray[np.float64],
    n_tail: float,
    order: npt.NDArray[np.intp] | None = None,
) -> npt.NDArray[np.float64]:
    """Weights w >= 0 with sum 1 such that ES = w @ losses: 1/n_tail on the floor(n_tail)
    largest losses, (n_tail - floor)/n_tail on the next one, 0 elsewhere.

    ``losses`` is (N,) or (P, N), P portfolios, weights along the last axis; ``order``: its
    :func:`tail_order`, when the caller has it."""
    whole = math.floor(n_tail)
    rows = np.atleast_2d(losses)
    # order[:, whole] is the (whole+1)-th largest loss, order[:, :whole] the larger ones.
    order = np.atleast_2d(tail_order(rows, n_tail) if order is None else order)
    weights = np.zeros_like(rows)
    portfolios = np.arange(rows.shape[0])[:, None]
    weights[portfolios, order[:, :whole]] = 1.0 / n_tail
    if n_tail > whole:
        weights[portfolios[:, 0], order[:, whole]] = (n_tail - whole) / n_tail
    return weights.reshape(losses.shape)


def expected_shortfall(losses: npt.NDArray[np.float64], n_tail: float) -> float:
    """ES of ``losses``: the weighted mean of the n_tail largest (see module docstring)."""
    return float(tail_weights(losses, n_tail) @ losses)


def value_at_risk(
    losses: npt.NDArray[np.float64],
    n_tail: float,
    order: npt.NDArray[np.intp] | None = None,
) -> float | npt.NDArray[np.float64]:
    """VaR = L(floor(n_tail) + 1), the largest loss left once the n_tail worst are dropped
    (along the last axis for (P, N) losses); ``order``: its :func:`tail_order`, if known."""
    whole = math.floor(n_tail)
    if order is None:
        var = -np.partition(-losses, whole, axis=-1)[..., whole]
    else:
        pick = order[..., whole]  # (N,) losses: one index; (P, N): one per portfolio
        var = losses[pick] if losses.ndim == 1 else losses[np.arange(losses.shape[0]), pick]
    return float(var) if np.ndim(var) == 0 else var


@dataclass(frozen=True, slots=True, eq=False)
class ModelFigures:
    """One model on one portfolio: its parts, the margin M, and the ES tail weights over the
    model's window (ES = tail_weights @ window losses)."""

    es: float
    var: float
    stress: float
    addons: float
    margin: float
    tail_weights: npt.NDArray[np.float64]


def model_margins(
    window: ModelWindow,
    losses: npt.NDArray[np.float64],
    exposures: npt.NDArray[np.float64],
    excluded: npt.NDArray[np.bool_] | None = None,
) -> list[ModelFigures]:
    """M = max(0, sqrt(h) * ((1 - w) * risk + w * stress) + addons) for P portfolios at once:
    ``losses`` (P, S) over the whole scenario set, ``exposures`` (P, K) net factor exposure.
    ``excluded`` (P, N): window scenarios the risk measure leaves out (below every other loss
    of the window; the stress figure still reads them), for the VaR majorant
    (:func:`var_majorant_window`)."""
    model = window.model
    in_window = losses[:, window.window]
    if excluded is not None and excluded.any():
        lowest = in_window.min(axis=1, keepdims=True)
        in_window = np.where(excluded, lowest - 1.0 - np.abs(lowest), in_window)
    order = tail_order(in_window, window.n_tail)  # one partial sort for ES and VaR
    weights = tail_weights(in_window, window.n_tail, order)
    es = np.einsum("ps,ps->p", weights, in_window)
    var = np.asarray(value_at_risk(in_window, window.n_tail, order)).reshape(-1)
    stress = np.zeros(losses.shape[0])
    if window.stress_rows.size:
        stress = losses[:, window.stress_rows].max(axis=1)
    addons = np.zeros(losses.shape[0])
    if model.addon_rate is not None and model.addon_threshold is not None:
        addons = np.maximum(0.0, np.abs(exposures) - model.addon_threshold) @ model.addon_rate
    risk = es if model.measure is Measure.ES else var
    weight = model.stress_weight
    margin = np.maximum(0.0, window.scale * ((1.0 - weight) * risk + weight * stress) + addons)
    return [
        ModelFigures(
            es=float(es[p]),
            var=float(var[p]),
            stress=float(stress[p]),
            addons=float(addons[p]),
            margin=float(margin[p]),
            tail_weights=weights[p],
        )
        for p in range(losses.shape[0])
    ]


def model_margin(
    window: ModelWindow, losses: npt.NDArray[np.float64], exposure: npt.NDArray[np.float64]
) -> ModelFigures:
    """:func:`model_margins` of one portfolio with scenario losses ``losses`` (S,) and factor
    exposure ``exposure`` (K,)."""
    return model_margins(window, losses[None, :], exposure[None, :])[0]


def var_majorant_window(window: ModelWindow) -> ModelWindow:
    """The majorant of a VaR model: the same model with ES over a tail of one scenario, the
    largest loss of the window. With the f = floor(n_tail) largest losses at an allocation x0
    left out (:func:`var_exclusions`) it equals VaR = L(f+1) at x0 and lies above VaR
    everywhere (the largest loss outside any f scenarios is at least L(f+1)): a convex
    function touching VaR at x0. An ES model is its own (convex already)."""
    if window.model.measure is Measure.ES:
        return window
    largest = dataclasses.replace(
        window.model, measure=Measure.ES, confidence=1.0 - 1.0 / window.n_scenarios
    )
    return ModelWindow(window.ccp, largest, window.window, window.stress_rows)


def window_losses(
    problem: Problem, xm_quantity: PositionVector
) -> dict[str, npt.NDArray[np.float64]]:
    """Per figure (``FIGURES`` name): its account's losses over its model's window at the
    allocation."""
    held = account_quantities(problem, xm_quantity)
    row = {account: i for i, account in enumerate(held)}
    _, losses = account_losses(problem, held)
    return {
        name: losses[row[account], problem.models[ccp].window] for name, ccp, account in FIGURES
    }


def var_window_losses(
    problem: Problem, xm_quantity: PositionVector
) -> dict[str, npt.NDArray[np.float64]]:
    """:func:`window_losses` of the figures of a VaR model."""
    return {
        name: losses
        for name, losses in window_losses(problem, xm_quantity).items()
        if problem.models[_FIGURE_HOUSE[name]].model.measure is Measure.VAR
    }


def var_exclusions(
    problem: Problem, xm_quantity: PositionVector
) -> dict[str, npt.NDArray[np.bool_]]:
    """Per figure of a VaR model (``FIGURES`` name): its account's f = floor(n_tail) largest
    window losses at the allocation, as a mask over the window (see :func:`var_majorant_window`)."""
    exclusions = {}
    for name, in_window in var_window_losses(problem, xm_quantity).items():
        window = problem.models[_FIGURE_HOUSE[name]]
        whole = math.floor(window.n_tail)
        mask = np.zeros(in_window.size, dtype=bool)
        if whole:
            mask[tail_order(in_window, window.n_tail)[:whole]] = True
        exclusions[name] = mask
    return exclusions


@dataclass(frozen=True, slots=True)
class XmFigures:
    S_F: float
    S_C: float
    C_F: float
    C_C: float
    r_F: float
    r_C: float
    r: float
    cap_binding: bool
    margin: float
    ficc_collects: float
    cme_collects: float


def xm_margin(S_F: float, S_C: float, C_F: float, C_C: float, cap: float) -> XmFigures:
    """The XM rule: r = clip(min(r_F, r_C), 0, cap), XM margin = (1 - r) * (S_F + S_C)."""
    standalone_sum = S_F + S_C
    if standalone_sum <= 0.0:
        return XmFigures(S_F, S_C, C_F, C_C, 0.0, 0.0, 0.0, False, 0.0, 0.0, 0.0)
    r_F = 1.0 - C_F / standalone_sum
    r_C = 1.0 - C_C / standalone_sum
    conservative = min(r_F, r_C)
    r = min(max(conservative, 0.0), cap)
    return XmFigures(
        S_F=S_F,
        S_C=S_C,
        C_F=C_F,
        C_C=C_C,
        r_F=r_F,
        r_C=r_C,
        r=r,
        cap_binding=conservative >= cap,
        margin=(1.0 - r) * standalone_sum,
        ficc_collects=(1.0 - r) * S_F,
        cme_collects=(1.0 - r) * S_C,
    )


def convex_xm_margin(S_F: float, S_C: float, C_F: float, C_C: float, cap: float) -> float:
    """max(C_F, C_C, (1 - cap)(S_F + S_C)): the XM rule without its outer min(S_F + S_C, .),
    the convex form the solvers minimise (margin-model.md shows the min never changes the
    optimum)."""
    return max(C_F, C_C, (1.0 - cap) * (S_F + S_C))


@dataclass(frozen=True, slots=True)
class State:
    """The exact margin of one allocation: every figure of margin-model.md."""

    xm_quantity: PositionVector
    ficc_standalone: float
    cme_standalone: float
    xm: XmFigures
    models: dict[str, ModelFigures]

    @property
    def total(self) -> float:
        return self.ficc_standalone + self.cme_standalone + self.xm.margin

    @property
    def ficc_collects(self) -> float:
        return self.ficc_standalone + self.xm.ficc_collects

    @property
    def cme_collects(self) -> float:
        return self.cme_standalone + self.xm.cme_collects

    def summary(self) -> dict[str, float | bool]:
        """The figures under the names of the case format's ``expected`` block."""
        xm = self.xm
        return {
            "total": self.total,
            "ficc_standalone": self.ficc_standalone,
            "cme_standalone": self.cme_standalone,
            "xm": xm.margin,
            "S_F": xm.S_F,
            "S_C": xm.S_C,
            "C_F": xm.C_F,
            "C_C": xm.C_C,
            "r_F": xm.r_F,
            "r_C": xm.r_C,
            "r": xm.r,
            "cap_binding": xm.cap_binding,
            "ficc_collects": self.ficc_collects,
            "cme_collects": self.cme_collects,
        }


def account_quantities(problem: Problem, xm_quantity: PositionVector) -> dict[str, PositionVector]:
    """Quantities held in each account (and each XM leg) under an allocation."""
    standalone = problem.quantity - xm_quantity
    ficc = problem.is_ficc
    return {
        "ficc_standalone": np.where(ficc, standalone, 0.0),
        "cme_standalone": np.where(ficc, 0.0, standalone),
        "xm_ficc_only": np.where(ficc, xm_quantity, 0.0),
        "xm_cme_only": np.where(ficc, 0.0, xm_quantity),
        "xm": xm_quantity,
    }


# Each figure of the XM rule: (its name, the model's clearing house, the account it measures).
FIGURES = (
    ("ficc_standalone", Ccp.FICC, "ficc_standalone"),
    ("cme_standalone", Ccp.CME, "cme_standalone"),
    ("S_F", Ccp.FICC, "xm_ficc_only"),
    ("S_C", Ccp.CME, "xm_cme_only"),
    ("C_F", Ccp.FICC, "xm"),
    ("C_C", Ccp.CME, "xm"),
)
_FIGURE_HOUSE = {name: ccp for name, ccp, _ in FIGURES}


def account_losses(
    problem: Problem, held: dict[str, PositionVector]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Net factor exposure E (A, K) and scenario losses L (A, S) of the accounts ``held``
    (:func:`account_quantities`), in one product: the losses every figure is measured on."""
    quantities = np.stack(list(held.values()))  # (A, n)
    exposures = quantities @ problem.exposure  # (A, K)
    losses = -(exposures @ problem.shocks.T)  # (A, S)
    if problem.pnl_columns.size:
        losses -= quantities[:, problem.pnl_columns] @ problem.pnl_vectors.T
    return exposures, losses


REUSED_EVALUATIONS = 16
"""How many allocations' figures :func:`evaluations_reused` keeps (the most recently used)."""

_FigureKey = tuple[int, bool, bytes]
_reused: ContextVar[OrderedDict[_FigureKey, tuple[Problem, dict[str, ModelFigures]]] | None] = (
    ContextVar("xmargin_reused_evaluations", default=None)
)


@contextmanager
def evaluations_reused() -> Iterator[None]:
    """Within the block (in this thread or task), :func:`account_figures` of an allocation it
    has evaluated already -- the same problem, the same quantities to the bit, the same measure
    -- hands back the figures computed then instead of computing them again: the same numbers.
    ``optimise`` reports the allocations its solver evaluated (current, empty XM, all in XM, the
    optimum) this way. Keeps the last :data:`REUSED_EVALUATIONS` allocations."""
    token = _reused.set(OrderedDict())
    try:
        yield
    finally:
        _reused.reset(token)


def account_figures(
    problem: Problem,
    xm_quantity: PositionVector,
    es_for_var: bool = False,
    excluded: Mapping[str, npt.NDArray[np.bool_]] | None = None,
) -> dict[str, ModelFigures]:
    """The six model figures of an allocation (``FIGURES``): both standalone margins, S_F,
    S_C, C_F and C_C; the losses of the five accounts in one product, then each model on its
    three. With ``es_for_var`` a VaR model is evaluated with ES (the solvers' stand-in);
    ``excluded``, by figure name: the window scenarios its risk measure leaves out
    (:func:`model_margins`, the VaR majorant's). Inside :func:`evaluations_reused`, an
    allocation evaluated before is not evaluated again (never with ``excluded``)."""
    reused = _reused.get()
    if reused is None or excluded is not None:
        return _account_figures(problem, xm_quantity, es_for_var, excluded)
    # Without a VaR model the ES stand-in is the model itself: one key for both.
    stand_in = es_for_var and any(w.model.measure is Measure.VAR for w in problem.models.values())
    key = (id(problem), stand_in, np.ascontiguousarray(xm_quantity, dtype=float).tobytes())
    found = reused.get(key)
    if found is not None and found[0] is problem:  # the entry holds the problem: id not reused
        reused.move_to_end(key)
        return dict(found[1])
    figures = _account_figures(problem, xm_quantity, es_for_var)
    reused[key] = (problem, figures)
    if len(reused) > REUSED_EVALUATIONS:
        reused.popitem(last=False)
    return dict(figures)


def _account_figures(
    problem: Problem,
    xm_quantity: PositionVector,
    es_for_var: bool,
    excluded: Mapping[str, npt.NDArray[np.bool_]] | None = None,
) -> dict[str, ModelFigures]:
    """:func:`account_figures`, computed."""
    held = account_quantities(problem, xm_quantity)
    row = {account: i for i, account in enumerate(held)}
    exposures, losses = account_losses(problem, held)
    figures: dict[str, ModelFigures] = {}
    for ccp, window in problem.models.items():
        named = [(name, row[account]) for name, house, account in FIGURES if house is ccp]
        rows = [r for _, r in named]
        window = window.as_es() if es_for_var else window
        masks = [(excluded or {}).get(name) for name, _ in named]
        mask = None
        if any(m is not None for m in masks):  # a figure without exclusions leaves none out
            like = next(m for m in masks if m is not None)
            mask = np.stack([np.zeros_like(like) if m is None else m for m in masks])
        for (name, _), figure in zip(
            named, model_margins(window, losses[rows], exposures[rows], mask), strict=True
        ):
            figures[name] = figure
    return {name: figures[name] for name, _, _ in FIGURES}


def checked_allocation(problem: Problem, xm_quantity: PositionVector) -> PositionVector:
    """``xm_quantity`` as the (n,) float vector of an allocation margin-model.md allows, else
    CaseValidationError at ``xm_quantity[i]``: each a finite number (not a string or a bool),
    0 <= y/q <= 1 (to a relative 1e-9 of the holding), 0 where the position is not eligible."""
    expect_type(problem, Problem, "problem")
    given = np.asarray(xm_quantity)
    n = problem.n_positions
    if given.shape != (n,) or given.dtype.kind not in "iuf":
        shown = f"shape {given.shape}, {given.dtype}"
        raise CaseValidationError("xm_quantity", shown, f"must be {n} numbers, one per position")
    y = given.astype(float)
    q = problem.quantity
    slack = 1e-9 * np.maximum(1.0, np.abs(q))
    low, high = np.minimum(0.0, q) - slack, np.maximum(0.0, q) + slack
    finite = np.isfinite(y)
    inside = finite & (y >= low) & (y <= high)
    allowed = inside & (problem.eligible | (y == 0.0))
    if not allowed.all():
        i = int(np.flatnonzero(~allowed)[0])
        name = problem.position_ids[i]
        reason = (
            "must be finite"
            if not finite[i]
            else f"must be 0 ({name} is not eligible for XM)"
            if inside[i]
            else f"must have the sign of {name}'s holding {q[i]:g} and be at most it"
        )
        raise CaseValidationError(f"xm_quantity[{i}]", float(y[i]), reason)
    return y


def evaluate(problem: Problem, xm_quantity: PositionVector, es_for_var: bool = False) -> State:
    """Exact margin of the allocation ``xm_quantity`` (n,), per margin-model.md (refused by
    :func:`checked_allocation` unless the contract allows it).

    With ``es_for_var`` every VaR model is evaluated with ES instead: the convex stand-in the
    solvers optimise, used only to report the gap it leaves.
    """
    expect_type(es_for_var, bool, "es_for_var")
    return state_at(problem, checked_allocation(problem, xm_quantity), es_for_var)


def state_at(problem: Problem, xm_quantity: PositionVector, es_for_var: bool = False) -> State:
    """:func:`evaluate` without its check: the figures of any finite quantities, allowed or
    not (a finite-difference probe just beyond a holding)."""
    xm_quantity = np.asarray(xm_quantity, dtype=float)
    figures = account_figures(problem, xm_quantity, es_for_var)
    xm = xm_margin(
        figures["S_F"].margin,
        figures["S_C"].margin,
        figures["C_F"].margin,
        figures["C_C"].margin,
        problem.savings_cap,
    )
    return State(
        xm_quantity=xm_quantity,
        ficc_standalone=figures["ficc_standalone"].margin,
        cme_standalone=figures["cme_standalone"].margin,
        xm=xm,
        models=figures,
    )


@dataclass(frozen=True, slots=True)
class Attribution:
    """Each position's share of each account's horizon-scaled ES, sqrt(h) * ES.

    ``shares[account][i]`` is position i's part of the tail-scenario loss of ``account``
    (``ficc_standalone`` and ``xm_ficc_model`` under the FICC model, ``cme_standalone`` and
    ``xm_cme_model`` under the CME model); each account's shares add up to its sqrt(h) * ES.
    """

    shares: dict[str, PositionVector]
    totals: dict[str, float]


def attribute(
    problem: Problem,
    xm_quantity: PositionVector,
    figures: dict[str, ModelFigures] | None = None,
) -> Attribution:
    """Euler attribution of ES: share_i = sqrt(h) * sum_s w_s * (-y_i p_i[s]), w = tail weights.

    Losses are linear in the quantities, so the shares add up to sqrt(h) * ES exactly.
    ``figures``: the allocation's :func:`account_figures` when the caller has them (their tail
    weights and ES are the ones attributed), else they are evaluated here."""
    held = account_quantities(problem, checked_allocation(problem, xm_quantity))
    if figures is None:
        figures = account_figures(problem, held["xm"])
    figure_of = {  # each attributed account: the figure (FIGURES) measuring it
        "ficc_standalone": "ficc_standalone",
        "cme_standalone": "cme_standalone",
        "xm_ficc_model": "C_F",
        "xm_cme_model": "C_C",
    }
    measured = {name: (ccp, holding) for name, ccp, holding in FIGURES}
    shares: dict[str, PositionVector] = {}
    totals: dict[str, float] = {}
    for account, name in figure_of.items():
        (ccp, holding), figure = measured[name], figures[name]
        window = problem.models[ccp]
        tail = np.flatnonzero(figure.tail_weights)
        tail_slopes = figure.tail_weights[tail] @ _unit_loss_slopes(
            problem, tail + window.window.start
        )
        shares[account] = window.scale * tail_slopes * held[holding]
        totals[account] = window.scale * figure.es
    return Attribution(shares=shares, totals=totals)


def _unit_loss_slopes(problem: Problem, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    """dL_s/dv_i = -p_i[s] for the scenarios ``rows``, shape (len(rows), n)."""
    slopes = -(problem.shocks[rows] @ problem.exposure.T)
    if problem.pnl_columns.size:
        slopes[:, problem.pnl_columns] -= problem.pnl_vectors[rows]
    return slopes


def _order_statistic_slopes(
    problem: Problem,
    losses: npt.NDArray[np.float64],
    rows: npt.NDArray[np.intp],
    sorted_weights: npt.NDArray[np.float64],
) -> PositionVector:
    """Forward derivative, per position, of sum_r sorted_weights[r] * L_(r) (losses ``losses``
    of scenarios ``rows``, sorted largest first; weights non-increasing, as for ES, or one rank,
    as for VaR). Within a group of tied losses the weights go to the scenarios whose loss grows
    fastest, the ordering one more unit would produce."""
    tolerance = 1e-9 * max(1.0, float(np.abs(losses).max()))
    # Only the ranks that carry weight matter, and the losses tied with the last of them: the
    # losses within tolerance below the last weighted rank's, sorted (stable) largest first.
    last = int(np.flatnonzero(sorted_weights)[-1])
    last_loss = -np.partition(-losses, last)[last]
    top = np.flatnonzero(last_loss - losses <= tolerance)
    order = top[np.argsort(-losses[top], kind="stable")]
    ordered = losses[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[:-1] - ordered[1:] > tolerance)))
    bounds = np.append(starts, order.size)
    ranked = _unit_loss_slopes(problem, rows[order])  # (ranks, n): rank r's slopes
    for start, end in itertools.pairwise(bounds):
        if end - start > 1:  # tied losses: the fastest-growing take the larger weights
            ranked[start:end] = -np.sort(-ranked[start:end], axis=0)
    return sorted_weights[: order.size] @ ranked


def model_slopes(
    problem: Problem,
    window: ModelWindow,
    quantities: PositionVector,
    figures: ModelFigures | None = None,
) -> PositionVector:
    """Forward derivative of M in each position's quantity: (M(v + t e_i) - M(v)) / t, t -> 0+.

    dL_s/dv_i = -p_i[s]; one-sided derivatives add over sums, take the largest active piece of
    a max and the smallest of a min. Risk: the tail (ES) or VaR weights on the sorted losses;
    stress: the worst stress scenario; add-ons: rate_k * sign(E_k) * d_i[k] where |E_k| > thr_k;
    0 where the floor at zero binds. ``figures``: the model's figures at ``quantities``, when
    the caller has evaluated them.
    """
    model = window.model
    losses = problem.losses(quantities)
    exposure = problem.exposure.T @ quantities
    if figures is None:
        figures = model_margin(window, losses, exposure)
    rows = np.arange(losses.size)[window.window]
    whole = math.floor(window.n_tail)
    sorted_weights = np.zeros(rows.size)
    if model.measure is Measure.ES:
        sorted_weights[:whole] = 1.0 / window.n_tail
        if window.n_tail > whole:
            sorted_weights[whole] = (window.n_tail - whole) / window.n_tail
    else:
        sorted_weights[whole] = 1.0
    slope = (1.0 - model.stress_weight) * _order_statistic_slopes(
        problem, losses[rows], rows, sorted_weights
    )
    if window.has_stress:
        # The worst stress scenarios of these losses (not figures.stress: the caller's figures
        # may come from another product of the same losses, a rounding apart).
        stress_rows, stressed = window.stress_rows, losses[window.stress_rows]
        stress = float(stressed.max())
        worst = stressed >= stress - 1e-9 * max(1.0, abs(stress))
        stress_slopes = _unit_loss_slopes(problem, stress_rows[worst]).max(axis=0)
        slope += model.stress_weight * stress_slopes
    slope *= window.scale
    if model.addon_rate is not None and model.addon_threshold is not None:
        excess = np.abs(exposure) - model.addon_threshold
        tolerance = 1e-9 * np.maximum(1.0, model.addon_threshold)
        d = problem.exposure * model.addon_rate  # (n, K)
        direction = np.where(exposure > 0, d, np.where(exposure < 0, -d, np.abs(d)))
        over = excess > tolerance
        at = np.abs(excess) <= tolerance
        slope += (direction * over).sum(axis=1) + (np.maximum(direction, 0.0) * at).sum(axis=1)
    risk = figures.es if model.measure is Measure.ES else figures.var
    weight = model.stress_weight
    inner = window.scale * ((1.0 - weight) * risk + weight * figures.stress) + figures.addons
    inner_tolerance = 1e-9 * max(1.0, abs(inner))
    if inner > inner_tolerance:
        return slope
    if inner < -inner_tolerance:
        return np.zeros(problem.n_positions)
    return np.maximum(slope, 0.0)  # at the floor: max(0, inner) grows only if inner does


def marginal_margins(problem: Problem, state: State) -> tuple[PositionVector, PositionVector]:
    """What one more unit of each position adds to the total margin at ``state``'s allocation,
    held in XM (NaN where ineligible) and held standalone: forward directional derivatives.

    XM = min(S, max(C_F, C_C, (1 - cap) S)) with S = S_F + S_C; at a kink the forward derivative
    of a max is the largest of its active pieces' and of a min the smallest.
    """
    held = account_quantities(problem, state.xm_quantity)
    windows = {ccp: problem.models[ccp] for ccp in Ccp}

    def slopes(name: str) -> PositionVector:
        """Slopes of the figure ``name`` (margin.FIGURES) at the state's allocation."""
        _, ccp, account = next(figure for figure in FIGURES if figure[0] == name)
        return model_slopes(problem, windows[ccp], held[account], state.models[name])

    is_ficc = problem.is_ficc
    in_standalone = np.where(is_ficc, slopes("ficc_standalone"), slopes("cme_standalone"))
    leg_sum = np.where(is_ficc, slopes("S_F"), slopes("S_C"))
    xm = state.xm
    cap = problem.savings_cap
    standalone_sum = xm.S_F + xm.S_C
    pieces = [
        (xm.C_F, lambda: slopes("C_F")),
        (xm.C_C, lambda: slopes("C_C")),
        ((1.0 - cap) * standalone_sum, lambda: (1.0 - cap) * leg_sum),
    ]
    largest = max(value for value, _ in pieces)
    tolerance = 1e-9 * max(1.0, largest)
    max_slope = np.max([slope() for value, slope in pieces if value >= largest - tolerance], axis=0)
    if standalone_sum < largest - tolerance:
        in_xm = leg_sum
    elif standalone_sum > largest + tolerance:
        in_xm = max_slope
    else:
        in_xm = np.minimum(leg_sum, max_slope)
    return np.where(problem.eligible, in_xm, np.nan), in_standalone
