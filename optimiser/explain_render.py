"""Readable text of an :class:`~xmargin.optimiser.explain.Explanation` (``xmargin explain``).

Nothing here computes margin: every figure comes from :mod:`xmargin.optimiser.explain`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from .explain import Explanation, FigureExplanation, StateExplanation

__all__ = ["ACCOUNT_CHOICES", "FIGURE_TITLES", "explanation_table"]

FIGURE_TITLES = {
    "ficc_standalone": "FICC standalone (FICC model)",
    "cme_standalone": "CME standalone (CME model)",
    "S_F": "XM, S_F: FICC model on the XM account's FICC legs",
    "S_C": "XM, S_C: CME model on the XM account's CME legs",
    "C_F": "XM, C_F: FICC model on the whole XM account",
    "C_C": "XM, C_C: CME model on the whole XM account",
}
BINDING = {
    "C_F": "C_F: FICC's reduction is the smaller, XM margin = C_F",
    "C_C": "C_C: CME's reduction is the smaller, XM margin = C_C",
    "cap": "the 80% cap: XM margin = (1 - cap) * (S_F + S_C)",
    "no_reduction": "no reduction: XM margin = S_F + S_C",
    "empty": "empty: no risk in XM, margin 0",
}
TRANSFER_TITLES = {
    "path": "Savings by transfer (credited along the straight path from current to optimised; "
    "'saves' adds up to the saving)",
    "sequential": "Savings by transfer (applied one at a time in this order; 'saves' adds up "
    "to the saving)",
}
ACCOUNT_CHOICES = ("ficc_standalone", "cme_standalone", "xm", "S_F", "S_C", "C_F", "C_C")
MAX_ROWS = 12


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> str:
    from .cli.common import format_table  # one table format for the whole command line

    return format_table(headers, rows, title)


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else ""


def _figure_text(
    figure: FigureExplanation, factors: Sequence[str], positions: Sequence[str]
) -> str:
    title = f"{FIGURE_TITLES[figure.name]}: {figure.margin:,.2f} USD"
    if not figure.held:
        return title + " (nothing held)"
    measure = f"{figure.measure} over {figure.window_losses.size} days, n_tail {figure.n_tail:g}"
    weight = " x (1 - w)" if figure.stress_weight else ""
    formula = f"  = sqrt(h) {figure.scale:.4g}{weight} x {figure.measure} {figure.risk:,.2f}"
    if figure.stress_weight:
        formula += f" + sqrt(h) x w x stress {figure.stress:,.2f} (w = {figure.stress_weight:g})"
    if figure.addons:
        formula += f" + add-ons {figure.addons:,.2f}"
    if figure.floor:
        formula += f" + floor {figure.floor:,.2f}"
    lines = [title, f"  {measure}", formula, ""]
    tail_rows = [
        [s.id, s.loss, f"{s.weight:.4g}", s.contribution, _share(s.contribution, figure.margin)]
        for s in figure.tail
    ]
    if figure.stress_scenario is not None and figure.stress_weight:
        s = figure.stress_scenario
        tail_rows.append(
            [f"{s.id} (stress)", s.loss, "1", s.contribution, _share(s.contribution, figure.margin)]
        )
    lines.append(
        _table(
            ["scenario", "1-day loss", "weight", "in margin", "share"],
            tail_rows,
            "Scenarios that set it (largest loss first)",
        )
    )
    addons = bool(figure.addons)
    factor_rows: list[list[Any]] = [
        [name, float(v), *([float(a)] if addons else []), _share(float(v), figure.margin)]
        for name, v, a in zip(factors, figure.by_factor, figure.addons_by_factor, strict=True)
        if v != 0.0
    ]
    for label, value in (
        ("P&L-vector instruments", figure.unexplained_by_factors),
        ("floor at 0", figure.floor),
    ):
        if value:
            factor_rows.append(
                [label, value, *([0.0] if addons else []), _share(value, figure.margin)]
            )
    headers = ["factor", "USD", *(["of which add-on"] if addons else []), "share"]
    lines += ["", _table(headers, factor_rows, "By factor")]
    order = np.argsort(-np.abs(figure.by_position), kind="stable")
    position_rows = [
        [
            positions[i],
            float(figure.by_position[i]),
            _share(float(figure.by_position[i]), figure.margin),
        ]
        for i in order[:MAX_ROWS]
        if figure.by_position[i] != 0.0
    ]
    more = int(np.count_nonzero(figure.by_position)) - len(position_rows)
    title = "By position (largest first" + (f"; {more} more)" if more > 0 else ")")
    lines += ["", _table(["position", "USD", "share"], position_rows, title)]
    return "\n".join(lines)


def _split_table(state: StateExplanation, positions: Sequence[str], factors: Sequence[str]) -> str:
    """The total by account and position, and by factor: each column adds up to its margin
    (floors and P&L-vector instruments in rows of their own where they occur)."""
    columns = (state.ficc_standalone, state.cme_standalone, state.xm)
    rows: list[list[Any]] = [
        [positions[i], *(float(c.by_position[i]) for c in columns), float(state.by_position[i])]
        for i in np.argsort(-np.abs(state.by_position), kind="stable")
        if any(c.by_position[i] != 0.0 for c in columns)
    ]
    for k in np.argsort(-np.abs(state.by_factor), kind="stable"):
        if any(c.by_factor[k] != 0.0 for c in columns):
            rows.append(
                [
                    f"factor {factors[k]}",
                    *(float(c.by_factor[k]) for c in columns),
                    float(state.by_factor[k]),
                ]
            )
    if state.unexplained_by_factors:
        rows.append(
            [
                "factor: P&L-vector instruments",
                *(c.unexplained_by_factors for c in columns),
                state.unexplained_by_factors,
            ]
        )
    if abs(state.floor) > 1e-9 * max(1.0, state.total):  # a floor, not the XM rule's round-off
        rows.append(["floor at 0", *(c.floor for c in columns), state.floor])
    return _table(
        ["", "FICC standalone", "CME standalone", "XM", "total"],
        rows,
        "Margin by position, then by factor (each column adds up to its account's margin)",
    )


def _figure_names(accounts: Sequence[str]) -> list[str]:
    wanted: list[str] = []
    for account in accounts:
        wanted += ["S_F", "S_C", "C_F", "C_C"] if account == "xm" else [account]
    return list(dict.fromkeys(wanted))


def _state_text(
    name: str,
    state: StateExplanation,
    factors: Sequence[str],
    positions: Sequence[str],
    accounts: Sequence[str],
) -> str:
    xm = state.xm
    header = (
        f"== {name} allocation: total {state.total:,.2f} USD = FICC standalone "
        f"{state.ficc_standalone.margin:,.2f} + CME standalone {state.cme_standalone.margin:,.2f}"
        f" + XM {xm.margin:,.2f} =="
    )
    parts = [header, f"XM account: r = {xm.r:.2%}; binding term {BINDING[xm.binding]}", ""]
    parts.append(_split_table(state, positions, factors))
    figures = state.figures
    for figure_name in _figure_names(accounts):
        parts += ["", _figure_text(figures[figure_name], factors, positions)]
    return "\n".join(parts)


def explanation_table(explanation: Explanation, accounts: Sequence[str] | None = None) -> str:
    """The explanation as text: per state, each account's figure, the scenarios that set it,
    its split by factor and by position; then what the allocation change saved, by transfer,
    and the tail days that changed."""
    problem = explanation.problem
    factors = problem.book.factors
    positions = problem.position_ids
    accounts = list(accounts or ("ficc_standalone", "cme_standalone", "xm"))
    parts = [
        f"{problem.book.name}: why each account margins what it does (USD; scenario losses are "
        "1-day, 'in margin' has sqrt(h) and the stress weight applied)"
    ]
    for name, state in explanation.states.items():
        parts += ["", _state_text(name, state, factors, positions, accounts)]
    change = explanation.change
    if change is not None:
        parts += [
            "",
            f"== What the optimised allocation changed: {change.before_total:,.2f} -> "
            f"{change.after_total:,.2f} USD, saving {change.savings:,.2f} ==",
        ]
        if change.transfers:
            rows = [
                [
                    t.order + 1,
                    t.transfer.instrument,
                    f"{t.transfer.from_account.value} -> {t.transfer.to_account.value}",
                    t.transfer.quantity,
                    t.saving,
                    t.alone,
                    t.last,
                ]
                for t in change.transfers
            ]
            parts.append(
                _table(
                    ["#", "instrument", "move", "quantity", "saves", "alone", "undone last"],
                    rows,
                    TRANSFER_TITLES[change.method],
                )
            )
        else:
            parts.append("No transfers.")
        parts += ["", "Tail days, current -> optimised (scenario ids, oldest first)", ""]
        for name in _figure_names(accounts):
            c = change.tail_changes[name]
            if not (c.left or c.entered or c.kept):
                continue
            parts.append(f"{FIGURE_TITLES[name]}: {len(c.kept)} kept")
            for label, ids in (("stop driving it", c.left), ("start driving it", c.entered)):
                if ids:
                    parts.append(
                        textwrap.fill(
                            ", ".join(ids),
                            96,
                            initial_indent=f"  {label}: ",
                            subsequent_indent="    ",
                        )
                    )
    parts += [f"note: {note}" for note in explanation.notes]
    return "\n".join(parts)
