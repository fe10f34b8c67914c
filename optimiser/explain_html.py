"""The explanation as an HTML fragment for the customer's savings report.

Rendered from ``templates/explain.html.j2`` (jinja2, autoescape on): per state, each account's
scenario P&L over its model's window as an inline SVG with the tail marked, the scenarios that
set the figure, its split by factor; then the savings by transfer and the tail days that
changed. No scripts, no external resources. Every figure comes from
:mod:`xmargin.optimiser.explain`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader

from .explain import Explanation, FigureExplanation, StateExplanation, explain_result
from .explain_render import FIGURE_TITLES

__all__ = ["TAIL_COLOUR", "explanation_html", "pnl_chart", "result_explanation_html"]

TAIL_COLOUR = "#c0392b"
BODY_COLOUR = "#9aa5b1"
STRESS_COLOUR = "#7d3c98"
BINDING = {
    "C_F": "FICC's reduction is the smaller of the two: the XM margin is C_F",
    "C_C": "CME's reduction is the smaller of the two: the XM margin is C_C",
    "cap": "the 80% savings cap binds: the XM margin is (1 - cap) x (S_F + S_C)",
    "no_reduction": "no reduction: the XM margin is S_F + S_C",
    "empty": "the XM account holds no risk",
}
SHOWN_ROWS = 12


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("xmargin.optimiser", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _money(value: float) -> str:
    return f"{round(float(value)) + 0:,d}"


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else ""


@dataclass(frozen=True, slots=True)
class Chart:
    """Coordinates of one P&L chart: vertical bars of each scenario's 1-day P&L (= -loss) as
    SVG paths (body and tail separately), axis ticks and the first and last scenario ids."""

    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    zero_y: float
    body_path: str
    tail_path: str
    stress_path: str
    ticks: list[tuple[float, str]]
    first_id: str
    last_id: str
    label: str


def pnl_chart(
    figure: FigureExplanation, ids: tuple[str, ...], width: int = 720, height: int = 200
) -> Chart:
    """The window's scenario P&L, oldest left, each scenario a bar from 0 (losses down); the
    tail scenarios (and the worst stress scenario, if weighted) in their own paths."""
    left, right, top, bottom = 80, 20, 12, 28
    plot_width, plot_height = width - left - right, height - top - bottom
    pnl = -figure.window_losses
    low, high = min(float(pnl.min()), 0.0), max(float(pnl.max()), 0.0)
    if high == low:
        high = low + 1.0
    span = high - low

    def y(value: float) -> float:
        return top + plot_height * (high - value) / span

    n = pnl.size
    step = plot_width / max(n, 1)
    zero = y(0.0)
    xs = left + step * (np.arange(n) + 0.5)
    tail = np.zeros(n, dtype=bool)
    tail[[s.row - figure.window_start for s in figure.tail]] = True
    stress = np.zeros(n, dtype=bool)
    if figure.stress_scenario is not None and figure.stress_weight:
        row = figure.stress_scenario.row - figure.window_start
        if 0 <= row < n:
            stress[row] = True

    def path(mask: np.ndarray) -> str:
        return " ".join(
            f"M{x:.1f} {zero:.1f}V{y(float(v)):.1f}"
            for x, v in zip(xs[mask], pnl[mask], strict=True)
        )

    unit, unit_label = (1e6, "USD mm") if span >= 2e6 else (1e3, "USD k")
    ticks = [(y(v), f"{v / unit:,.1f}") for v in (high, 0.0, low)]
    window_ids = ids[figure.window_start : figure.window_start + n]
    return Chart(
        width=width,
        height=height,
        left=left,
        top=top,
        plot_width=plot_width,
        plot_height=plot_height,
        zero_y=zero,
        body_path=path(~tail & ~stress),
        tail_path=path(tail),
        stress_path=path(stress & ~tail),
        ticks=list(dict.fromkeys(ticks)),
        first_id=window_ids[0] if window_ids else "",
        last_id=window_ids[-1] if window_ids else "",
        label=unit_label,
    )


def _figure_view(
    figure: FigureExplanation,
    factors: tuple[str, ...],
    positions: tuple[str, ...],
    ids: tuple[str, ...],
) -> dict[str, Any]:
    whole = figure.margin
    factor_rows = [
        {
            "name": name,
            "usd": _money(v),
            "share": _share(float(v), whole),
            "bar": min(100.0, abs(float(v)) / whole * 100.0) if whole else 0.0,
            "negative": v < 0,
        }
        for name, v in zip(factors, figure.by_factor, strict=True)
        if v != 0.0
    ]
    if figure.unexplained_by_factors:
        v = figure.unexplained_by_factors
        factor_rows.append(
            {
                "name": "P&L-vector instruments (no factor split)",
                "usd": _money(v),
                "share": _share(v, whole),
                "bar": min(100.0, abs(v) / whole * 100.0) if whole else 0.0,
                "negative": v < 0,
            }
        )
    order = np.argsort(-np.abs(figure.by_position), kind="stable")
    position_rows = [
        {
            "name": positions[i],
            "usd": _money(figure.by_position[i]),
            "share": _share(float(figure.by_position[i]), whole),
        }
        for i in order[:SHOWN_ROWS]
        if figure.by_position[i] != 0.0
    ]
    return {
        "name": figure.name,
        "title": FIGURE_TITLES[figure.name],
        "margin": _money(figure.margin),
        "measure": figure.measure,
        "window": figure.window_losses.size,
        "n_tail": f"{figure.n_tail:g}",
        "scale": f"{figure.scale:.4g}",
        "risk": _money(figure.risk),
        "stress_weight": figure.stress_weight,
        "stress": _money(figure.stress),
        "addons": _money(figure.addons) if figure.addons else "",
        "floor": _money(figure.floor) if figure.floor else "",
        "chart": pnl_chart(figure, ids),
        "tail": [
            {
                "id": s.id,
                "loss": _money(s.loss),
                "weight": f"{s.weight:.4g}",
                "contribution": _money(s.contribution),
                "share": _share(s.contribution, whole),
            }
            for s in figure.tail[:SHOWN_ROWS]
        ],
        "tail_more": max(0, len(figure.tail) - SHOWN_ROWS),
        "stress_row": None
        if figure.stress_scenario is None or not figure.stress_weight
        else {
            "id": figure.stress_scenario.id,
            "loss": _money(figure.stress_scenario.loss),
            "contribution": _money(figure.stress_scenario.contribution),
            "share": _share(figure.stress_scenario.contribution, whole),
        },
        "factors": factor_rows,
        "positions": position_rows,
    }


def _state_view(
    name: str,
    state: StateExplanation,
    factors: tuple[str, ...],
    positions: tuple[str, ...],
    ids: tuple[str, ...],
) -> dict[str, Any]:
    return {
        "name": name,
        "total": _money(state.total),
        "ficc": _money(state.ficc_standalone.margin),
        "cme": _money(state.cme_standalone.margin),
        "xm": _money(state.xm.margin),
        "r": f"{state.xm.r:.2%}",
        "binding": BINDING[state.xm.binding],
        "figures": [
            _figure_view(figure, factors, positions, ids)
            for figure in state.figures.values()
            if figure.held
        ],
    }


def explanation_html(explanation: Explanation) -> str:
    """The explanation as an HTML fragment (a ``<section id="explain">``)."""
    problem = explanation.problem
    factors = tuple(problem.book.factors)
    positions = problem.position_ids
    ids = problem.book.scenarios.ids
    change = explanation.change
    change_view = None
    if change is not None:
        change_view = {
            "before": _money(change.before_total),
            "after": _money(change.after_total),
            "savings": _money(change.savings),
            "method": change.method,
            "transfers": [
                {
                    "order": t.order + 1,
                    "instrument": t.transfer.instrument,
                    "move": f"{t.transfer.from_account.value} to {t.transfer.to_account.value}",
                    "quantity": _money(t.transfer.quantity),
                    "saving": _money(t.saving),
                    "share": _share(t.saving, change.savings),
                    "alone": _money(t.alone),
                    "last": _money(t.last),
                }
                for t in change.transfers
            ],
            "tails": [
                {
                    "title": FIGURE_TITLES[name],
                    "kept": len(c.kept),
                    "left": ", ".join(c.left),
                    "entered": ", ".join(c.entered),
                }
                for name, c in change.tail_changes.items()
                if c.left or c.entered
            ],
        }
    template = _environment().get_template("explain.html.j2")
    return template.render(
        states=[
            _state_view(name.capitalize(), state, factors, positions, ids)
            for name, state in explanation.states.items()
        ],
        change=change_view,
        tail_colour=TAIL_COLOUR,
        body_colour=BODY_COLOUR,
        stress_colour=STRESS_COLOUR,
    )


def result_explanation_html(result: Any) -> str:
    """:func:`explanation_html` of an optimisation result (current, optimised, the change):
    what the savings report inserts."""
    return explanation_html(explain_result(result))
