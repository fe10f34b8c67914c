"""Reports of an optimisation: transfer lists (CSV, FIXML) and a customer's savings report (HTML).

Every figure comes from the :class:`~xmargin.optimiser.results.OptimisationResult`, whose
figures come from the exact evaluator; nothing here computes margin.

Transfer sides
--------------
A transfer moves ``quantity`` of a position from one account to another, so each transfer has
two sides. The leaving account closes what it gives up and the receiving account opens it: for
a long position the leaving account sells and the receiving account buys; for a short position
the sides are the other way round (the leaving account buys back the short, the receiving
account sells it).
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import html
import io
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .margin import State
from .model import Ccp
from .results import Account, OptimisationResult, Transfer

__all__ = [
    "FIXML_NAMESPACE",
    "FractionalLotsError",
    "Side",
    "TransferLeg",
    "bookable_transfers",
    "rounding_warnings",
    "savings_report_html",
    "transfer_legs",
    "transfers_csv",
    "transfers_fixml",
    "write_reports",
]

FIXML_NAMESPACE = "http://www.fixprotocol.org/FIXML-5-0-SP2"
CSV_COLUMNS = (
    "transfer_id",
    "business_date",
    "cycle",
    "customer",
    "instrument",
    "ccp",
    "account",
    "from_account",
    "to_account",
    "side",
    "quantity",
    "lots",
    "position",
)


class FractionalLotsError(ValueError):
    """A transfer file was asked for an answer whose transfers are not whole lots."""


def _is_bookable(result: OptimisationResult, transfer: Transfer) -> bool:
    """Whole lots, or the leaving account's whole holding (always bookable)."""
    problem = result.problem
    i = problem.position_ids.index(transfer.instrument)
    lots = transfer.lots
    if abs(lots - round(lots)) <= 1e-9 * max(1.0, abs(lots)):
        return True
    tolerance = 1e-9 * max(1.0, abs(problem.quantity[i]))
    after = result.allocation[i]
    empties = after if transfer.to_account is Account.XM else problem.quantity[i] - after
    return abs(problem.quantity[i] - empties) <= tolerance or abs(after) <= tolerance


def bookable_transfers(result: OptimisationResult, round_lots: bool = False) -> list[Transfer]:
    """The transfers a clearing firm can book: whole lots or whole holdings. A transfer of a
    fractional number of lots (a continuous relaxation's) raises :class:`FractionalLotsError`
    unless ``round_lots``; then it is rounded to the nearest whole lot, at most the leaving
    account's holding, and dropped when that is none (see :func:`rounding_warnings`)."""
    fractional = [t for t in result.transfers if not _is_bookable(result, t)]
    if fractional and not round_lots:
        names = ", ".join(f"{t.instrument} ({t.lots:.6g} lots)" for t in fractional[:5])
        raise FractionalLotsError(
            f"{len(fractional)} transfer(s) are not whole lots: {names}"
            f"{', ...' if len(fractional) > 5 else ''}; this is the continuous relaxation. "
            "Solve with whole lots (the default; drop --continuous / integral=False), or "
            "ask to round them (--round-lots, round_lots=True)"
        )
    problem = result.problem
    out: list[Transfer] = []
    for transfer in result.transfers:
        if transfer in fractional:
            i = problem.position_ids.index(transfer.instrument)
            lot = float(problem.lot[i])
            before = float(problem.current_xm[i])
            leaving = (
                abs(problem.quantity[i] - before)
                if transfer.to_account is Account.XM
                else abs(before)
            )
            quantity = min(round(transfer.lots) * lot, leaving)
            if quantity <= 0:
                continue
            transfer = Transfer(
                transfer.instrument,
                transfer.from_account,
                transfer.to_account,
                quantity,
                quantity / lot,
            )
        out.append(transfer)
    return out


def rounding_warnings(result: OptimisationResult) -> list[str]:
    """What rounding to whole lots changed in the transfer files (empty when nothing)."""
    rounded = [t for t in result.transfers if not _is_bookable(result, t)]
    if not rounded:
        return []
    return [
        f"{len(rounded)} of {len(result.transfers)} transfers rounded to whole lots in the "
        "transfer files; the reported margins are the continuous relaxation's, not the rounded "
        "allocation's (solve with whole lots for bookable figures)"
    ]


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"


@dataclass(frozen=True, slots=True)
class TransferLeg:
    """One side of a transfer: ``account`` buys or sells ``quantity`` of ``instrument``."""

    transfer_id: str
    instrument: str
    ccp: Ccp
    account: Account
    from_account: Account
    to_account: Account
    side: Side
    quantity: float
    lots: float
    position_is_long: bool


def _transfer_id(result: OptimisationResult, number: int) -> str:
    book = result.problem.book
    return f"{book.customer.id}-{book.business_date:%Y%m%d}-{book.cycle.value}-{number:04d}"


def _position_sign(result: OptimisationResult) -> dict[str, float]:
    problem = result.problem
    return {
        pid: float(np.sign(q))
        for pid, q in zip(problem.position_ids, problem.quantity, strict=True)
    }


def transfer_legs(result: OptimisationResult, round_lots: bool = False) -> list[TransferLeg]:
    """Both sides of every bookable transfer, leaving account first (see the module docstring
    and :func:`bookable_transfers`)."""
    sign = _position_sign(result)
    instruments = result.problem.book.instruments
    legs: list[TransferLeg] = []
    for number, transfer in enumerate(bookable_transfers(result, round_lots), start=1):
        is_long = sign[transfer.instrument] >= 0
        leaving_side, receiving_side = (Side.SELL, Side.BUY) if is_long else (Side.BUY, Side.SELL)
        for account, side in (
            (transfer.from_account, leaving_side),
            (transfer.to_account, receiving_side),
        ):
            legs.append(
                TransferLeg(
                    transfer_id=_transfer_id(result, number),
                    instrument=transfer.instrument,
                    ccp=instruments[transfer.instrument].ccp,
                    account=account,
                    from_account=transfer.from_account,
                    to_account=transfer.to_account,
                    side=side,
                    quantity=transfer.quantity,
                    lots=transfer.lots,
                    position_is_long=is_long,
                )
            )
    return legs


def _number(value: float) -> str:
    """A quantity as text: whole numbers without a decimal point, others exactly (repr)."""
    return f"{value:.0f}" if float(value).is_integer() else repr(float(value))


def transfers_csv(result: OptimisationResult, round_lots: bool = False) -> str:
    """The transfers as CSV, one row per side (columns :data:`CSV_COLUMNS`); whole lots only
    (:func:`bookable_transfers`)."""
    book = result.problem.book
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for leg in transfer_legs(result, round_lots):
        writer.writerow(
            [
                leg.transfer_id,
                book.business_date.isoformat(),
                book.cycle.value,
                book.customer.id,
                leg.instrument,
                leg.ccp.value,
                leg.account.value,
                leg.from_account.value,
                leg.to_account.value,
                leg.side.value,
                _number(leg.quantity),
                _number(leg.lots),
                "LONG" if leg.position_is_long else "SHORT",
            ]
        )
    return buffer.getvalue()


def _account_id(customer: str, account: Account) -> str:
    return f"{customer}-{account.value}"


def transfers_fixml(
    result: OptimisationResult,
    transact_time: dt.datetime | None = None,
    round_lots: bool = False,
) -> str:
    """The transfers as FIXML position transfer instructions, one ``PosXferInstr`` each.

    Each instruction names the clearing firm and the customer's leaving account (``Pty``, roles
    4 clearing firm and 24 customer account), the receiving account (``TrgtPty``), the
    instrument (``Instrmt``: futures by exchange symbol, FICC securities by CUSIP) and the
    quantity moved as a long or short position (``Qty``), whole lots only
    (:func:`bookable_transfers`). Element and attribute names follow
    FIXML 5.0 SP2's abbreviations; check them against the clearing house's schema before use.
    """
    problem = result.problem
    book = problem.book
    transact_time = transact_time or dt.datetime.now(dt.UTC).replace(microsecond=0)
    ET.register_namespace("", FIXML_NAMESPACE)
    root = ET.Element(f"{{{FIXML_NAMESPACE}}}FIXML", {"v": "5.0 SP2"})
    batch = ET.SubElement(root, f"{{{FIXML_NAMESPACE}}}Batch")
    sign = _position_sign(result)
    for number, transfer in enumerate(bookable_transfers(result, round_lots), start=1):
        instrument = book.instruments[transfer.instrument]
        instruction = ET.SubElement(
            batch,
            f"{{{FIXML_NAMESPACE}}}PosXferInstr",
            {
                "XferInstrID": _transfer_id(result, number),
                "XferTransTyp": "0",  # new
                "XferTyp": "0",  # request transfer
                "XferScope": "1",  # intra-firm
                "BizDt": book.business_date.isoformat(),
                "SesID": book.cycle.value,
                "TxnTm": transact_time.isoformat(),
                "Txt": f"xmargin {transfer.from_account.value} to {transfer.to_account.value}",
            },
        )
        for tag, account in (("Pty", transfer.from_account), ("TrgtPty", transfer.to_account)):
            ET.SubElement(
                instruction,
                f"{{{FIXML_NAMESPACE}}}{tag}",
                {"ID": book.clearing_member.id, "R": "4"},
            )
            ET.SubElement(
                instruction,
                f"{{{FIXML_NAMESPACE}}}{tag}",
                {"ID": _account_id(book.customer.id, account), "R": "24"},
            )
        if instrument.ccp is Ccp.CME:
            attributes = {
                "ID": instrument.id,
                "Src": "H",
                "Sym": instrument.contract or instrument.id,
                "SecTyp": "FUT" if instrument.kind.value == "FUTURE" else "OOF",
                "Exch": "CBT" if instrument.contract not in ("SR3", "SR1", "ZQ") else "CME",
            }
        else:
            attributes = {"ID": instrument.id, "Src": "1", "SecTyp": "TNOTE", "Exch": "FICC"}
            if instrument.kind.value == "BOND":
                attributes["SecTyp"] = "TBOND"
        ET.SubElement(instruction, f"{{{FIXML_NAMESPACE}}}Instrmt", attributes)
        long_quantity = transfer.quantity if sign[transfer.instrument] >= 0 else 0.0
        short_quantity = transfer.quantity - long_quantity
        ET.SubElement(
            instruction,
            f"{{{FIXML_NAMESPACE}}}Qty",
            {"Typ": "TOT", "Long": _number(long_quantity), "Short": _number(short_quantity)},
        )
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


# --- the HTML savings report ----------------------------------------------------------------

STATE_COLOURS = {
    "ficc_standalone": "#3b6ea8",
    "cme_standalone": "#e08a2e",
    "xm": "#3f9b5a",
}
ACCOUNT_LABELS = {
    "ficc_standalone": "FICC standalone",
    "cme_standalone": "CME standalone",
    "xm": "XM (cross-margin)",
}


def _money(value: float) -> str:
    """Whole USD with thousands separators; a value that rounds to zero shows as 0, not -0."""
    rounded = round(float(value))
    return f"{rounded + 0:,d}"


def _nice_step(top: float, ticks: int = 5) -> float:
    """A 1, 2 or 5 times a power of ten step giving about ``ticks`` gridlines up to ``top``."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    power = 10.0 ** np.floor(np.log10(raw))
    for multiple in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= multiple * power:
            return float(multiple * power)
    return float(10.0 * power)


def margin_chart_svg(
    states: Sequence[tuple[str, State]], width: int = 720, height: int = 340
) -> str:
    """An inline SVG of stacked bars: each state's margin by account (FICC standalone, CME
    standalone, XM), the total on top."""
    left, right, top, bottom = 90, 170, 30, 50
    plot_width, plot_height = width - left - right, height - top - bottom
    largest = max([state.total for _, state in states] + [1.0])
    step = _nice_step(largest)
    axis_top = step * np.ceil(largest / step)
    unit, unit_label = (1e6, "USD mm") if axis_top >= 1e6 else (1e3, "USD k")

    def y(value: float) -> float:
        return top + plot_height * (1.0 - value / axis_top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Margin by account and state">',
        f'<text x="{left - 60}" y="{top - 12}" class="axis">{unit_label}</text>',
    ]
    step_in_units = step / unit
    decimals = next(d for d in (0, 1, 2, 3) if abs(round(step_in_units, d) - step_in_units) < 1e-9)
    tick = 0.0
    while tick <= axis_top + 1e-9:
        parts.append(
            f'<line x1="{left}" x2="{left + plot_width}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'class="grid"/>'
            f'<text x="{left - 8}" y="{y(tick) + 4:.1f}" class="axis" text-anchor="end">'
            f"{tick / unit:,.{decimals}f}</text>"
        )
        tick += step
    slot = plot_width / len(states)
    bar_width = min(90.0, slot * 0.55)
    for index, (label, state) in enumerate(states):
        x = left + slot * index + (slot - bar_width) / 2
        base = 0.0
        for account, value in (
            ("ficc_standalone", state.ficc_standalone),
            ("cme_standalone", state.cme_standalone),
            ("xm", state.xm.margin),
        ):
            if value > 0:
                parts.append(
                    f'<rect x="{x:.1f}" y="{y(base + value):.1f}" width="{bar_width:.1f}" '
                    f'height="{y(base) - y(base + value):.1f}" fill="{STATE_COLOURS[account]}">'
                    f"<title>{html.escape(label)}: {ACCOUNT_LABELS[account]} "
                    f"{_money(value)} USD</title></rect>"
                )
            base += value
        parts.append(
            f'<text x="{x + bar_width / 2:.1f}" y="{y(state.total) - 6:.1f}" '
            f'class="value" text-anchor="middle">{state.total / unit:,.1f}</text>'
            f'<text x="{x + bar_width / 2:.1f}" y="{top + plot_height + 20}" '
            f'class="label" text-anchor="middle">{html.escape(label)}</text>'
        )
    legend_x = left + plot_width + 20
    for row, account in enumerate(("xm", "cme_standalone", "ficc_standalone")):
        legend_y = top + 10 + 24 * row
        parts.append(
            f'<rect x="{legend_x}" y="{legend_y}" width="14" height="14" '
            f'fill="{STATE_COLOURS[account]}"/>'
            f'<text x="{legend_x + 20}" y="{legend_y + 12}" class="label">'
            f"{ACCOUNT_LABELS[account]}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem;
       color: #1d2733; max-width: 1100px; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #d5dbe3; }
.meta { color: #5a6878; margin-top: 0; }
.headline { display: flex; gap: 1rem; flex-wrap: wrap; margin: 1.2rem 0; }
.card { background: #f3f6f9; border-radius: 6px; padding: 0.8rem 1.1rem; min-width: 11rem; }
.card .figure { font-size: 1.35rem; font-weight: 600; }
.card .caption { color: #5a6878; font-size: 0.85rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin-top: 0.5rem; }
th, td { padding: 0.3rem 0.6rem; border-bottom: 1px solid #e3e8ee; }
th { background: #f3f6f9; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.ineligible td { color: #7b8794; }
svg .grid { stroke: #e3e8ee; } svg .axis { font-size: 11px; fill: #5a6878; }
svg .label { font-size: 12px; fill: #1d2733; } svg .value { font-size: 12px; font-weight: 600; }
.notes { color: #5a6878; font-size: 0.85rem; }
.wide { overflow-x: auto; }
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{cell}</td>' if index in numeric else f"<td>{cell}</td>"
            for index, cell in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def savings_report_html(result: OptimisationResult) -> str:
    """A self-contained HTML page for the customer: the savings, margin by account in the three
    states (inline SVG), the state figures, the transfers and each position's ES attribution."""
    problem = result.problem
    book = problem.book
    states = [
        ("Baseline", result.baseline),
        ("Current", result.current),
        ("Optimised", result.optimised),
    ]
    savings_vs_current = result.current.total - result.optimised.total
    baseline_total = result.baseline.total
    saving_share = result.savings / baseline_total if baseline_total > 0 else 0.0
    cards = [
        ("Baseline margin (nothing in XM)", _money(baseline_total) + " USD"),
        ("Optimised margin", _money(result.optimised.total) + " USD"),
        ("Saving against baseline", f"{_money(result.savings)} USD ({saving_share:.1%})"),
        ("Saving against current", _money(savings_vs_current) + " USD"),
    ]
    card_html = "".join(
        f'<div class="card"><div class="figure">{html.escape(figure)}</div>'
        f'<div class="caption">{html.escape(caption)}</div></div>'
        for caption, figure in cards
    )
    figure_rows = []
    for key, label in (
        ("total", "Total margin"),
        ("ficc_standalone", "FICC standalone"),
        ("cme_standalone", "CME standalone"),
        ("xm", "XM margin"),
        ("S_F", "S_F (FICC model, XM FICC legs)"),
        ("S_C", "S_C (CME model, XM CME legs)"),
        ("C_F", "C_F (FICC model, whole XM)"),
        ("C_C", "C_C (CME model, whole XM)"),
        ("r", "Reduction factor r"),
        ("cap_binding", "80% cap binding"),
        ("ficc_collects", "FICC collects"),
        ("cme_collects", "CME collects"),
    ):
        cells = [html.escape(label)]
        for state in (*(s for _, s in states), result.all_eligible):
            value = state.summary()[key]
            if isinstance(value, bool):
                cells.append("yes" if value else "no")
            elif key == "r":
                cells.append(f"{value:.1%}")
            else:
                cells.append(_money(float(value)))
        figure_rows.append(cells)
    figures_table = _table(
        ["Figure (USD)", "Baseline", "Current", "Optimised", "All eligible in XM"],
        figure_rows,
        numeric={1, 2, 3, 4},
    )

    transfer_rows = [
        [
            html.escape(t.instrument),
            t.from_account.value,
            t.to_account.value,
            _money(t.quantity),
            f"{t.lots:,.6g}",
        ]
        for t in result.transfers
    ]
    transfers_html = (
        _table(["Instrument", "From", "To", "Quantity", "Lots"], transfer_rows, numeric={3, 4})
        if transfer_rows
        else "<p>No transfers: the current allocation is already optimal.</p>"
    )

    attribution = result.attribution
    accounts = ("ficc_standalone", "cme_standalone", "xm_ficc_model", "xm_cme_model")
    attribution_rows = []
    for i, position_id in enumerate(problem.position_ids):
        instrument = book.instruments[position_id]
        eligibility = problem.eligibility[i]
        eligible_text = "yes" if eligibility.eligible else "no: " + ", ".join(eligibility.reasons)
        row = [
            html.escape(position_id),
            instrument.ccp.value,
            instrument.kind.value + (f" {instrument.contract}" if instrument.contract else ""),
            html.escape(eligible_text),
            _money(problem.quantity[i]),
            _money(problem.current_xm[i]),
            _money(result.allocation[i]),
        ]
        row += [_money(attribution.shares[account][i]) for account in accounts]
        attribution_rows.append(row)
    attribution_rows.append(
        ["<b>Total</b>", "", "", "", "", "", ""]
        + [f"<b>{_money(attribution.totals[account])}</b>" for account in accounts]
    )
    attribution_table = _table(
        [
            "Position",
            "CCP",
            "Kind",
            "Eligible",
            "Quantity",
            "XM now",
            "XM optimised",
            "FICC standalone",
            "CME standalone",
            "XM, FICC model",
            "XM, CME model",
        ],
        attribution_rows,
        numeric=set(range(4, 11)),
    )
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in result.notes)
    title = f"Cross-margin savings: {book.customer.id}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">Book {html.escape(book.name)} &middot; business date {book.business_date}
&middot; cycle {book.cycle.value} &middot; clearing member {html.escape(book.clearing_member.id)}
&middot; solver {html.escape(result.stats.backend)} ({result.status.value})</p>
<div class="headline">{card_html}</div>
<h2>Margin by account</h2>
{margin_chart_svg(states)}
<h2>The three states</h2>
{figures_table}
<h2>Transfers from current to optimised</h2>
{transfers_html}
<h2>Where the margin comes from (optimised allocation)</h2>
<p class="notes">Each position's share of each account's horizon-scaled expected shortfall
(Euler attribution, USD; negative shares offset risk). The XM account is shown under both
clearing houses' models.</p>
<div class="wide">{attribution_table}</div>
{f'<h2>Notes</h2><ul class="notes">{notes}</ul>' if notes else ""}
</body>
</html>
"""


def write_reports(
    result: OptimisationResult,
    csv_path: str | Path | None = None,
    fixml_path: str | Path | None = None,
    html_path: str | Path | None = None,
    round_lots: bool = False,
) -> list[Path]:
    """Write whichever reports have a path; return the paths written. The transfer files
    refuse fractional lots (:class:`FractionalLotsError`, before anything is written) unless
    ``round_lots``."""
    if csv_path is not None or fixml_path is not None:
        bookable_transfers(result, round_lots)  # refuse before writing anything
    written = []
    for path, render in (
        (csv_path, lambda r: transfers_csv(r, round_lots)),
        (fixml_path, lambda r: transfers_fixml(r, round_lots=round_lots)),
        (html_path, savings_report_html),
    ):
        if path is not None:
            target = Path(path)
            target.write_text(render(result), encoding="utf-8")
            written.append(target)
    return written
