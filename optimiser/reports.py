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
import functools
import io
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .margin import State
from .model import Ccp
from .outputs import check_output_paths, write_files
from .results import Account, OptimisationResult, Transfer, exact_quantity

if TYPE_CHECKING:
    import jinja2

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


RELAXATION_NOTE = (
    "This is the continuous relaxation: its margins are a lower bound and its transfers need "
    "not be whole lots, so they cannot be booked as they stand. Solve with whole lots (the "
    "default) for an allocation to book."
)


def bookable_transfers(result: OptimisationResult, round_lots: bool = False) -> list[Transfer]:
    """The transfers a clearing firm can book: whole lots or whole holdings. A transfer of a
    fractional number of lots (a continuous relaxation's, or a whole-lot answer's reached from a
    current XM quantity off the lot grid) raises :class:`FractionalLotsError`
    unless ``round_lots``; then it is rounded to the nearest whole lot, at most the leaving
    account's holding, and dropped when that is none (see :func:`rounding_warnings`)."""
    fractional = [t for t in result.transfers if not _is_bookable(result, t)]
    if fractional and not round_lots:
        names = ", ".join(f"{t.instrument} ({t.lots:.6g} lots)" for t in fractional[:5])
        if not result.relaxation:  # whole lots: the current XM quantity is off them
            why = (
                "the answer is in whole lots but the current XM quantity is not, so reaching it "
                "takes a fractional transfer. Ask to round them (--round-lots, round_lots=True)"
            )
        else:
            why = (
                "this is the continuous relaxation. Solve with whole lots (the default; drop "
                "--continuous / integral=False), or ask to round them (--round-lots, "
                "round_lots=True)"
            )
        raise FractionalLotsError(
            f"{len(fractional)} transfer(s) are not whole lots: {names}"
            f"{', ...' if len(fractional) > 5 else ''}; {why}"
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
    if not result.relaxation:
        why = (
            "the current XM quantity is off the lot grid; the reported margins are the whole-lot "
            "answer's, not the rounded allocation's"
        )
    else:
        why = (
            "the reported margins are the continuous relaxation's, not the rounded allocation's "
            "(solve with whole lots for bookable figures)"
        )
    return [
        f"{len(rounded)} of {len(result.transfers)} transfers rounded to whole lots in the "
        f"transfer files; {why}"
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


def _chart(
    states: Sequence[tuple[str, State]], width: int = 720, height: int = 340
) -> dict[str, Any]:
    """The geometry of the report's stacked-bar chart: each state's margin by account (FICC
    standalone, CME standalone, XM), the total on top; the template draws it as inline SVG."""
    left, right, top, bottom = 90, 170, 30, 50
    plot_width, plot_height = width - left - right, height - top - bottom
    largest = max([state.total for _, state in states] + [1.0])
    step = _nice_step(largest)
    axis_top = step * np.ceil(largest / step)
    unit, unit_label = next(
        (size, label)
        for size, label in ((1e6, "USD mm"), (1e3, "USD k"), (1.0, "USD"))
        if axis_top >= size or size == 1.0
    )

    def y(value: float) -> float:
        return top + plot_height * (1.0 - value / axis_top)

    step_in_units = step / unit
    # a step of 1, 2, 2.5 or 5 x 10^k, k >= -1 in the chosen unit: at most two decimals
    decimals = next(
        (d for d in (0, 1, 2) if abs(round(step_in_units, d) - step_in_units) < 1e-9), 3
    )
    ticks = []
    tick = 0.0
    while tick <= axis_top + 1e-9:
        ticks.append(
            {
                "y": f"{y(tick):.1f}",
                "text_y": f"{y(tick) + 4:.1f}",
                "label": f"{tick / unit:,.{decimals}f}",
            }
        )
        tick += step
    slot = plot_width / len(states)
    bar_width = min(90.0, slot * 0.55)
    bars = []
    for index, (label, state) in enumerate(states):
        x = left + slot * index + (slot - bar_width) / 2
        segments = []
        base = 0.0
        for account, value in (
            ("ficc_standalone", state.ficc_standalone),
            ("cme_standalone", state.cme_standalone),
            ("xm", state.xm.margin),
        ):
            if value > 0:
                segments.append(
                    {
                        "y": f"{y(base + value):.1f}",
                        "height": f"{y(base) - y(base + value):.1f}",
                        "colour": STATE_COLOURS[account],
                        "account": ACCOUNT_LABELS[account],
                        "value": _money(value),
                    }
                )
            base += value
        bars.append(
            {
                "label": label,
                "x": f"{x:.1f}",
                "width": f"{bar_width:.1f}",
                "middle": f"{x + bar_width / 2:.1f}",
                "total_y": f"{y(state.total) - 6:.1f}",
                "total": f"{state.total / unit:,.{1 if unit > 1.0 else 2}f}",
                "segments": segments,
            }
        )
    legend_x = left + plot_width + 20
    legend = [
        {
            "x": legend_x,
            "y": top + 10 + 24 * row,
            "colour": STATE_COLOURS[account],
            "account": ACCOUNT_LABELS[account],
        }
        for row, account in enumerate(("xm", "cme_standalone", "ficc_standalone"))
    ]
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": left + plot_width,
        "unit_x": left - 60,
        "unit_y": top - 12,
        "unit_label": unit_label,
        "label_y": top + plot_height + 20,
        "ticks": ticks,
        "bars": bars,
        "legend": legend,
    }


@functools.cache
def _template() -> jinja2.Template:
    """``templates/report.html.j2`` with autoescaping on (loaded at the first report)."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
    )
    return environment.get_template("report.html.j2")


def _explanation_fragment(result: OptimisationResult) -> Any:
    """The explanation section (explain_html renders it from its own autoescaping template),
    marked safe so the report's template inserts it as HTML."""
    import markupsafe

    from .explain_html import result_explanation_html

    return markupsafe.Markup(result_explanation_html(result))


def savings_report_html(result: OptimisationResult) -> str:
    """A self-contained HTML page for the customer: the savings, margin by account in the three
    states (inline SVG), the four states' figures, the transfers and each position's ES
    attribution. Rendered by jinja2 with autoescaping: ids, names, contracts and reasons from the
    case are text, never markup."""
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
        {"caption": caption, "figure": figure}
        for caption, figure in (
            ("Baseline margin (nothing in XM)", _money(baseline_total) + " USD"),
            ("Optimised margin", _money(result.optimised.total) + " USD"),
            ("Saving against baseline", f"{_money(result.savings)} USD ({saving_share:.1%})"),
            ("Saving against current", _money(savings_vs_current) + " USD"),
        )
    ]
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
        cells = [label]
        for state in (*(s for _, s in states), result.all_eligible):
            value = state.summary()[key]
            if isinstance(value, bool):
                cells.append("yes" if value else "no")
            elif key == "r":
                cells.append(f"{value:.1%}")
            else:
                cells.append(_money(float(value)))
        figure_rows.append(cells)

    transfer_rows = [
        [
            t.instrument,
            t.from_account.value,
            t.to_account.value,
            f"{exact_quantity(t.quantity):,}",
            f"{exact_quantity(t.lots):,}",
        ]
        for t in result.transfers
    ]

    attribution = result.attribution
    accounts = ("ficc_standalone", "cme_standalone", "xm_ficc_model", "xm_cme_model")
    attribution_rows = []
    for i, position_id in enumerate(problem.position_ids):
        instrument = book.instruments[position_id]
        eligibility = problem.eligibility[i]
        eligible_text = "yes" if eligibility.eligible else "no: " + ", ".join(eligibility.reasons)
        row = [
            position_id,
            instrument.ccp.value,
            instrument.kind.value + (f" {instrument.contract}" if instrument.contract else ""),
            eligible_text,
            f"{exact_quantity(problem.quantity[i]):,}",
            f"{exact_quantity(problem.current_xm[i]):,}",
            f"{exact_quantity(result.allocation[i]):,}",
        ]
        row += [_money(attribution.shares[account][i]) for account in accounts]
        attribution_rows.append(row)
    return _template().render(
        title=f"Cross-margin savings: {book.customer.id}",
        book=book.name,
        business_date=book.business_date.isoformat(),
        cycle=book.cycle.value,
        clearing_member=book.clearing_member.id,
        backend=result.stats.backend,
        status=result.status.value,
        cards=cards,
        chart=_chart(states),
        figures={
            "headers": ["Figure (USD)", "Baseline", "Current", "Optimised", "All eligible in XM"],
            "rows": figure_rows,
            "numeric": {1, 2, 3, 4},
        },
        transfers={
            "headers": ["Instrument", "From", "To", "Quantity", "Lots"],
            "rows": transfer_rows,
            "numeric": {3, 4},
        },
        attribution={
            "headers": [
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
            "rows": attribution_rows,
            "numeric": set(range(4, 11)),
            "total": ["Total", "", "", "", "", "", ""]
            + [_money(attribution.totals[account]) for account in accounts],
        },
        explanation=_explanation_fragment(result),
        notes=([RELAXATION_NOTE] if result.relaxation else []) + list(result.notes),
    )


def write_reports(
    result: OptimisationResult,
    csv_path: str | Path | None = None,
    fixml_path: str | Path | None = None,
    html_path: str | Path | None = None,
    round_lots: bool = False,
) -> list[Path]:
    """Write whichever reports have a path, all or none (:func:`~.outputs.write_files`); return
    the paths written. Refused before anything is written: a path given twice or in a missing
    folder (:class:`~.outputs.OutputPathError`), fractional lots in the transfer files
    (:class:`FractionalLotsError`) unless ``round_lots``."""
    paths = {"csv": csv_path, "fixml": fixml_path, "html": html_path}
    check_output_paths(paths)
    if csv_path is not None or fixml_path is not None:
        bookable_transfers(result, round_lots)  # refuse before writing anything
    renders = {
        "csv": lambda: transfers_csv(result, round_lots),
        "fixml": lambda: transfers_fixml(result, round_lots=round_lots),
        "html": lambda: savings_report_html(result),
    }
    return write_files({path: renders[kind]() for kind, path in paths.items() if path is not None})
