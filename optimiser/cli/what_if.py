"""``what-if``: the command line's rendering of :mod:`xmargin.optimiser.what_if`."""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Any

from xmargin.schema import clip
from xmargin.schema.case_v1 import ID_PATTERN, ID_RULE

from ..case_format import book_to_dict, parse_case
from ..errors import CaseValidationError
from ..model import Book, Position
from ..what_if import WhatIfResult, what_if
from .common import (
    EXIT_OK,
    UsageError,
    _command,
    _load_book,
    _output_flags,
    _print_json,
    _read_json,
    format_table,
    progress,
)


def _parse_trades(data: Any, book: Book) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split a trades file ``{"instruments": [...], "positions": [...]}`` into new instruments
    and the trades (positions in the case format; an ``xm_quantity`` or ``pinned`` is refused by
    :func:`..what_if.what_if`: the what-if places each trade)."""
    if isinstance(data, list):
        data = {"positions": data}
    if not isinstance(data, dict) or not isinstance(data.get("positions"), list):
        raise UsageError(
            'the trades file must be {"instruments": [...], "positions": [...]} in the case '
            "format, or a list of positions"
        )
    unknown = sorted(set(data) - {"instruments", "positions"}, key=str)
    if unknown:
        raise UsageError(
            f"the trades file's key {clip(str(unknown[0]))!r} is unknown; it holds instruments "
            "and positions"
        )
    instruments = data.get("instruments", [])
    if not isinstance(instruments, list):
        raise UsageError("the trades file's instruments must be a list")
    known = set(book.instruments)
    for item in instruments:
        if isinstance(item, dict) and item.get("id") in known:
            raise UsageError(f"the trades file redefines instrument {item.get('id')!r}")
    return instruments, data["positions"]


def _validated_trade_book(
    book: Book, instruments: list[dict[str, Any]], trades: list[dict[str, Any]]
) -> tuple[Book, list[Position]]:
    """The book with the new instruments added (validated by the case-format reader), and the
    trades, each checked as a case-format position."""
    case = book_to_dict(book)
    n_instruments = len(case["instruments"])
    case["instruments"] = case["instruments"] + instruments
    # Validate the trades as positions of a book that holds nothing else.
    case["positions"] = list(trades)
    try:
        trade_book = parse_case(case)
    except CaseValidationError as error:
        moved = []
        for violation in error.violations:
            field = violation.path
            for section, offset in (("instruments", n_instruments), ("positions", 0)):
                if field.startswith(f"{section}["):
                    index = int(field[len(section) + 1 : field.index("]")])
                    if index >= offset:
                        field = f"add.{section}[{index - offset}]" + field[field.index("]") + 1 :]
            moved.append(dataclasses.replace(violation, path=field))
        raise CaseValidationError.of(moved) from error
    full = dataclasses.replace(book, instruments=trade_book.instruments)
    return full, list(trade_book.positions)


def what_if_report(result: WhatIfResult) -> dict[str, Any]:
    """The JSON rendering of a :func:`~xmargin.optimiser.what_if.what_if` result."""

    def placed(total: float | None, change: float | None) -> dict[str, float] | None:
        if total is None or change is None:
            return None
        return {"total": total, "change": change}

    before = result.before.total
    return {
        "name": result.name,
        "current": result.before.summary(),
        "excluded": list(result.excluded),
        "after_exclusions": {
            "total": result.after_exclusions.total,
            "change": result.after_exclusions.total - before,
        },
        "after_all_trades_standalone": {
            "total": result.after_standalone.total,
            "change": result.after_standalone.total - before,
            "summary": result.after_standalone.summary(),
        },
        "after_all_trades_best_placement": {
            "total": result.after_best.total,
            "change": result.margin_change,
            "summary": result.after_best.summary(),
        },
        "trades": [
            {
                "instrument": t.instrument,
                "quantity": t.quantity,
                "eligible": t.eligible,
                "reasons": [reason.value for reason in t.reasons],
                "standalone": placed(t.total_standalone, t.change_standalone),
                "xm": placed(t.total_xm, t.change_xm),
                "best": t.best.value,
            }
            for t in result.trades
        ],
    }


def cmd_what_if(args: argparse.Namespace) -> int:
    book = _load_book(args.case, args.quiet)
    trades: list[Position] = []
    if args.add:
        instruments, positions = _parse_trades(_read_json(args.add, "trades file"), book)
        book, trades = _validated_trade_book(book, instruments, positions)
    if args.add and not trades and not args.exclude:
        raise UsageError(f"the trades file {args.add} holds no trade (its positions are empty)")
    if not trades and not args.exclude:
        raise UsageError("what-if needs --add TRADES.json, --exclude ID, or both")
    with progress("evaluating what-if", enabled=not args.quiet):
        try:
            result = what_if(book, trades, args.exclude or [])
        except CaseValidationError as error:  # name the command line's fields
            named = []
            for violation in error.violations:
                field = violation.path.replace("trades[", "add.positions[", 1)
                field = "--exclude" if field.startswith("exclude[") else field
                named.append(dataclasses.replace(violation, path=field))
            raise CaseValidationError.of(named) from error
        report = what_if_report(result)
    if args.table:
        print(f"{book.name}: current total margin {report['current']['total']:,.0f} USD")
        if report["excluded"]:
            change = report["after_exclusions"]["change"]
            print(f"excluding {', '.join(report['excluded'])}: change {change:+,.0f} USD")
        if report["trades"]:
            rows = [
                [
                    t["instrument"],
                    t["quantity"],
                    t["eligible"],
                    t["standalone"]["change"],
                    t["xm"]["change"] if t["xm"] else "not eligible",
                    t["best"],
                ]
                for t in report["trades"]
            ]
            print()
            print(
                format_table(
                    ["trade", "quantity", "eligible", "change standalone", "change in XM", "best"],
                    rows,
                    "Each trade on its own, current allocation otherwise",
                )
            )
        for key, label in (
            ()
            if not report["trades"]
            else (
                ("after_all_trades_standalone", "all trades standalone"),
                ("after_all_trades_best_placement", "all trades at their best placement"),
            )
        ):
            total, change = report[key]["total"], report[key]["change"]
            print(f"\n{label}: total {total:,.0f} USD, change {change:+,.0f} USD")
    else:
        _print_json(report)
    return EXIT_OK


def _ids(text: str) -> list[str]:
    """``--exclude A,B`` (or ``--exclude A --exclude B``): instrument ids, each as the case
    writes it. An empty entry or one with a blank at either end is refused, not trimmed: ids
    match exactly, and a blank id is no id (:data:`ID_PATTERN`)."""
    ids = text.split(",")
    for part in ids:
        if not part:
            raise argparse.ArgumentTypeError(
                f"an empty id in {clip(text)!r} (give instrument ids separated by commas)"
            )
        if re.fullmatch(ID_PATTERN, part) is None:
            raise argparse.ArgumentTypeError(f"id {clip(part)!r} {ID_RULE}")
    return ids


def add_parsers(commands: Any) -> None:
    """The ``what-if`` subcommand."""
    what_if_parser = _command(
        commands,
        "what-if",
        "margin change of new trades or excluded positions",
        "The margin change of leaving positions out and adding trades at the current "
        "allocation, and each trade's change standalone and in XM (when eligible). A trade "
        "that cuts a position below its XM quantity reduces the XM quantity to the new one.",
    )
    what_if_parser.add_argument("case", metavar="CASE.json")
    what_if_parser.add_argument(
        "--add",
        metavar="TRADES.json",
        help='trades: {"instruments": [...], "positions": [...]} or a list of positions',
    )
    what_if_parser.add_argument(
        "--exclude",
        action="extend",
        type=_ids,
        metavar="ID[,ID...]",
        default=[],
        help="positions to take out (repeat the option or separate ids with commas)",
    )
    _output_flags(what_if_parser, "json")
    what_if_parser.set_defaults(handler=cmd_what_if)
