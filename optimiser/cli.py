"""The ``xmargin`` command line: a thin adapter over :mod:`xmargin.optimiser`.

Subcommands::

    xmargin optimise CASE.json [--backend highs|cvxpy] [--continuous] [--mode JOINT|FICC_FIXED]
                               [--time-limit S] [--csv F] [--fixml F] [--html F]
    xmargin margin CASE.json          the three states (and all eligible in XM) of the case
    xmargin eligibility CASE.json     each position's eligibility and reason codes
    xmargin what-if CASE.json --add TRADES.json --exclude ID ...
    xmargin demo                      optimise the bundled sample book, as a table
    xmargin sample --positions N --scenarios S --seed K -o CASE.json
    xmargin batch DIR-or-BATCH.json [--run-number N] [--audit URL] [--engine local|dask]
                                    [--scheduler tcp://HOST:PORT] [--workers N]
    xmargin audit show --business-date D --cycle C --run-number N --account A [--reproduce]
    xmargin audit list --business-date D --cycle C --run-number N
    xmargin serve ...                 the gRPC server (xmargin.server.cli)
    xmargin bench ...                 the benchmark (xmargin.bench)

Output is JSON on stdout (``--table`` for people), except ``demo``, which prints a table
(``--json`` for machines). Progress goes to stderr for anything slower than a second.

Exit codes: 0 ok; 1 a component (server, benchmark) is not installed; 2 bad input (invalid
case, missing or unreadable file, bad arguments); 3 solver failure; 4 infeasible; 5 (batch and
audit) some accounts failed, or a reproduced answer differs from the stored one.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .case_format import book_to_dict, parse_case
from .eligibility import default_rulebook, evaluate_eligibility, instrument_eligibility
from .errors import CaseValidationError, InfeasibleError, SolverError
from .margin import State, evaluate
from .model import Book, Mode, Position, SolveOptions
from .problem import build_problem
from .results import OptimisationResult, Status, all_eligible_allocation
from .sample import SAMPLE_SEED

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INCOMPLETE",
    "EXIT_INFEASIBLE",
    "EXIT_OK",
    "EXIT_SOLVER_FAILURE",
    "main",
]

EXIT_OK = 0
EXIT_MISSING_COMPONENT = 1
EXIT_BAD_INPUT = 2
EXIT_SOLVER_FAILURE = 3
EXIT_INFEASIBLE = 4
EXIT_INCOMPLETE = 5  # batch: some accounts failed; audit show --reproduce: the answer differs
EXIT_INTERRUPTED = 130  # batch: stopped by Ctrl-C (128 + SIGINT)

PROGRESS_AFTER_SECONDS = 1.0


class UsageError(Exception):
    """Bad input that is not a case-format error (a missing file, a malformed trade list)."""


# --- progress -------------------------------------------------------------------------------


@contextmanager
def progress(message: str, enabled: bool = True, stream: TextIO | None = None) -> Iterator[None]:
    """Say ``message ...`` on stderr if the block is still running after a second, and how
    long it took when it ends; say nothing for a quick block."""
    stream = stream or sys.stderr
    done = threading.Event()
    announced = threading.Event()
    start = time.perf_counter()

    def announce() -> None:
        if not done.wait(PROGRESS_AFTER_SECONDS):
            announced.set()
            print(f"{message} ...", file=stream, flush=True)

    watcher = threading.Thread(target=announce, daemon=True) if enabled else None
    if watcher:
        watcher.start()
    try:
        yield
    finally:
        done.set()
        if watcher:
            watcher.join()
        if announced.is_set():
            print(f"{message}: done in {time.perf_counter() - start:.1f} s", file=stream)


# --- input ----------------------------------------------------------------------------------


def _read_json(path: str, what: str) -> Any:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{what} {path!r} does not exist or is not a file")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UsageError(f"{what} {path!r} is not valid JSON: {error}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {what} {path!r}: {error}") from error


def _load_book(path: str, quiet: bool) -> Book:
    with progress(f"reading {path}", enabled=not quiet):
        return parse_case(_read_json(path, "case file"))


# --- output ---------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays unwrapped, NaN and infinity as null."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _print_json(data: Any) -> None:
    json.dump(_jsonable(data), sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None
) -> str:
    """A plain-text table: numbers right-aligned with thousands separators, text left."""

    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, Decimal):  # an exact quantity: every digit it has
            return f"{value:,f}"
        if isinstance(value, float | int | np.floating | np.integer):
            number = float(value)
            if number.is_integer() or abs(number) >= 100:
                return f"{round(number) + 0:,d}"
            return f"{number:,.4g}"
        return "" if value is None else str(value)

    text_rows = [[cell(v) for v in row] for row in rows]
    numeric = [
        any(
            isinstance(row[i], float | int | np.floating | np.integer | Decimal)
            and not isinstance(row[i], bool)
            for row in rows
        )
        for i in range(len(headers))
    ]
    widths = [max([len(h)] + [len(r[i]) for r in text_rows]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if numeric[i] else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    out = [title, ""] if title else []
    out.append(line(list(headers)))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in text_rows)
    return "\n".join(out)


STATE_ROWS = (
    ("total", "total margin"),
    ("ficc_standalone", "FICC standalone"),
    ("cme_standalone", "CME standalone"),
    ("xm", "XM margin"),
    ("S_F", "S_F  FICC model, XM FICC legs"),
    ("S_C", "S_C  CME model, XM CME legs"),
    ("C_F", "C_F  FICC model, whole XM"),
    ("C_C", "C_C  CME model, whole XM"),
    ("r", "reduction factor r"),
    ("cap_binding", "80% cap binding"),
    ("ficc_collects", "FICC collects"),
    ("cme_collects", "CME collects"),
)


def states_table(states: Sequence[tuple[str, dict[str, Any]]], title: str | None = None) -> str:
    """The figures of several states side by side (USD; r as a percentage)."""
    rows = []
    for key, label in STATE_ROWS:
        row: list[Any] = [label]
        for _, summary in states:
            value = summary.get(key)
            row.append(f"{value:.1%}" if key in ("r",) and value is not None else value)
        rows.append(row)
    return format_table(["USD", *(name for name, _ in states)], rows, title)


def transfers_table(result: OptimisationResult) -> str:
    if not result.transfers:
        return "No transfers: the current allocation is already optimal."
    rows = [
        [t.instrument, t.from_account.value, t.to_account.value, exact(t.quantity), exact(t.lots)]
        for t in result.transfers
    ]
    title = f"Transfers ({len(rows)})"
    if result.relaxation:
        title += ": continuous relaxation, not whole lots (rerun without --continuous to book)"
    return format_table(["instrument", "from", "to", "quantity", "lots"], rows, title)


def exact(value: float) -> Decimal:
    """A quantity for a table, exactly: whole numbers as such, others to 1e-6 (never 119.71
    lots as "120")."""
    if abs(value - round(value)) <= 1e-9 * max(1.0, abs(value)):
        return Decimal(round(value))
    return Decimal(f"{value:.6f}".rstrip("0"))


def result_table(result: OptimisationResult) -> str:
    """The readable form of an optimisation: the states, the savings and the transfers."""
    book = result.problem.book
    header = (
        f"{book.name}: customer {book.customer.id}, {len(book.positions)} positions, "
        f"{book.scenarios.size} scenarios, business date {book.business_date} {book.cycle.value}"
    )
    states = states_table(
        [
            ("baseline", result.baseline.summary()),
            ("current", result.current.summary()),
            ("optimised", result.optimised.summary()),
            ("all eligible in XM", result.all_eligible.summary()),
        ]
    )
    baseline = result.baseline.total
    share = result.savings / baseline if baseline > 0 else 0.0
    savings = (
        f"Savings: {result.savings:,.0f} USD against the baseline ({share:.1%}), "
        f"{result.current.total - result.optimised.total:,.0f} USD against the current allocation."
    )
    solver = (
        f"Solver: {result.stats.backend}, {result.status.value}, answer "
        f"{result.stats.source.value.lower().replace('_', ' ')}, "
        f"{result.stats.build_seconds + result.stats.solve_seconds:.3f} s"
    )
    lots = (
        "Lots: CONTINUOUS RELAXATION, a lower bound; transfers are not whole lots"
        if result.relaxation
        else "Lots: whole lots (or whole holdings)"
    )
    parts = [header, "", states, "", savings, solver, lots, "", transfers_table(result)]
    if result.var_gap:
        parts.append(f"\nVaR gap of the ES stand-in: {result.var_gap:,.0f} USD")
    if result.stand_in_total is not None:
        parts.append(
            f"Exact total at the ES stand-in's optimum: {result.stand_in_total:,.0f} USD; "
            f"answer after the exact-VaR phase: {result.optimised.total:,.0f} USD"
        )
    parts += [f"note: {note}" for note in result.notes]
    return "\n".join(parts)


# --- subcommands ----------------------------------------------------------------------------


def margin_report(book: Book) -> dict[str, Any]:
    """The figures of ``xmargin margin``: eligibility and three allocations, evaluated exactly."""
    problem = build_problem(book)
    return {
        "name": book.name,
        "business_date": book.business_date.isoformat(),
        "eligible": dict(
            zip(problem.position_ids, (bool(e) for e in problem.eligible), strict=True)
        ),
        "baseline": evaluate(problem, np.zeros(problem.n_positions)).summary(),
        "current": evaluate(problem, problem.current_xm).summary(),
        "all_eligible_in_xm": evaluate(problem, all_eligible_allocation(problem)).summary(),
    }


def cmd_margin(args: argparse.Namespace) -> int:
    book = _load_book(args.case, args.quiet)
    with progress("evaluating margin", enabled=not args.quiet):
        report = margin_report(book)
    if args.table:
        print(f"{book.name}: business date {book.business_date}\n")
        print(
            states_table(
                [
                    ("baseline", report["baseline"]),
                    ("current", report["current"]),
                    ("all eligible in XM", report["all_eligible_in_xm"]),
                ]
            )
        )
    else:
        _print_json(report)
    return EXIT_OK


def eligibility_report(book: Book) -> dict[str, Any]:
    rulebook = default_rulebook(book.business_date)
    positions = []
    for position, eligibility in zip(book.positions, evaluate_eligibility(book), strict=True):
        instrument = book.instruments[position.instrument]
        positions.append(
            {
                "instrument": position.instrument,
                "ccp": instrument.ccp.value,
                "kind": instrument.kind.value,
                "contract": instrument.contract,
                "maturity": (
                    (instrument.collateral_maturity or instrument.maturity).isoformat()
                    if (instrument.collateral_maturity or instrument.maturity)
                    else None
                ),
                "eligible": eligibility.eligible,
                "reasons": [reason.value for reason in eligibility.reasons],
            }
        )
    return {
        "name": book.name,
        "business_date": book.business_date.isoformat(),
        "rulebook": {"name": rulebook.name, "effective_date": rulebook.effective_date.isoformat()},
        "positions": positions,
    }


def cmd_eligibility(args: argparse.Namespace) -> int:
    book = _load_book(args.case, args.quiet)
    report = eligibility_report(book)
    if args.table:
        rows = [
            [
                p["instrument"],
                p["ccp"],
                p["kind"] + (f" {p['contract']}" if p["contract"] else ""),
                p["maturity"] or "",
                p["eligible"],
                ", ".join(p["reasons"]),
            ]
            for p in report["positions"]
        ]
        rulebook = report["rulebook"]
        print(
            format_table(
                ["instrument", "ccp", "kind", "maturity", "eligible", "reasons"],
                rows,
                f"{book.name}: eligibility on {book.business_date} under "
                f"{rulebook['name']} (effective {rulebook['effective_date']})",
            )
        )
    else:
        _print_json(report)
    return EXIT_OK


def _solve_options(book: Book, args: argparse.Namespace) -> SolveOptions:
    options = book.options
    changes: dict[str, Any] = {}
    if getattr(args, "integral", False):
        changes["integral"] = True
    if getattr(args, "continuous", False):
        changes["integral"] = False
    if getattr(args, "mode", None):
        changes["mode"] = Mode(args.mode)
    if getattr(args, "time_limit", None) is not None:
        if args.time_limit <= 0:
            raise UsageError("--time-limit must be positive")
        changes["time_limit"] = args.time_limit
    return dataclasses.replace(options, **changes) if changes else options


def _run_optimise(book: Book, args: argparse.Namespace) -> OptimisationResult:
    from . import optimise  # the solver stack loads only when it is needed

    options = _solve_options(book, args)
    backend = getattr(args, "backend", None)
    if backend is not None and backend.partition(":")[0] not in ("highs", "cvxpy"):
        raise UsageError(f"unknown backend {backend!r}: use highs, cvxpy or cvxpy:SOLVER")
    message = (
        f"optimising {len(book.positions)} positions x {book.scenarios.size} scenarios"
        f"{' (whole lots)' if options.integral else ' (continuous relaxation)'}"
    )
    with progress(message, enabled=not args.quiet):
        result = optimise(book, options=options, backend=backend)
    if result.status is Status.INFEASIBLE:
        raise InfeasibleError("the solver reported the allocation problem infeasible")
    if result.status is Status.ERROR:
        raise SolverError("the solver returned no usable allocation")
    if result.status is Status.TIME_LIMIT and not args.quiet:
        source = result.stats.source.value.lower().replace("_", " ")
        print(
            f"warning: the solve stopped early ({result.stats.message}); the answer is the "
            f"{source} allocation, never above the current one",
            file=sys.stderr,
        )
    return result


def _write_reports(result: OptimisationResult, args: argparse.Namespace) -> None:
    from .reports import FractionalLotsError, rounding_warnings, write_reports

    try:
        written = write_reports(result, args.csv, args.fixml, args.html, round_lots=args.round_lots)
    except OSError as error:
        raise UsageError(f"cannot write a report: {error}") from error
    except FractionalLotsError as error:
        raise UsageError(str(error)) from error
    if not args.quiet and (args.csv or args.fixml):
        for warning in rounding_warnings(result) if args.round_lots else []:
            print(f"warning: {warning}", file=sys.stderr)
    if not args.quiet:
        for path in written:
            print(f"wrote {path}", file=sys.stderr)


def cmd_optimise(args: argparse.Namespace) -> int:
    book = _load_book(args.case, args.quiet)
    result = _run_optimise(book, args)
    _write_reports(result, args)
    if args.table:
        print(result_table(result))
    else:
        _print_json(result.to_dict())
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .sample import SAMPLE_BOOK_RESOURCE, load_sample_book

    with progress("reading the bundled sample book", enabled=not args.quiet):
        book = load_sample_book()
    # Whole lots unless --continuous, whatever the bundled file says.
    book = dataclasses.replace(
        book, options=dataclasses.replace(book.options, integral=not args.continuous)
    )
    result = _run_optimise(book, args)
    _write_reports(result, args)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(f"The bundled sample book (xmargin.optimiser/{SAMPLE_BOOK_RESOURCE})\n")
        print(result_table(result))
    return EXIT_OK


# what-if


def _parse_trades(data: Any, book: Book) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split a trades file ``{"instruments": [...], "positions": [...]}`` into new instruments
    and the trades (positions in the case format; ``xm_quantity`` is ignored)."""
    if isinstance(data, list):
        data = {"positions": data}
    if not isinstance(data, dict) or not isinstance(data.get("positions"), list):
        raise UsageError(
            'the trades file must be {"instruments": [...], "positions": [...]} in the case '
            "format, or a list of positions"
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
    case["positions"] = [
        {k: v for k, v in dict(trade).items() if k != "xm_quantity"}
        if isinstance(trade, dict)
        else trade
        for trade in trades
    ]
    try:
        trade_book = parse_case(case)
    except CaseValidationError as error:
        field = error.field
        for section, offset in (("instruments", n_instruments), ("positions", 0)):
            if field.startswith(f"{section}["):
                index = int(field[len(section) + 1 : field.index("]")])
                if index >= offset:
                    field = f"add.{section}[{index - offset}]" + field[field.index("]") + 1 :]
        raise CaseValidationError(field, error.value, error.reason) from error
    full = dataclasses.replace(book, instruments=trade_book.instruments)
    return full, list(trade_book.positions)


def _book_with(book: Book, positions: list[Position]) -> Book:
    return dataclasses.replace(book, positions=tuple(positions))


def _place(base: list[Position], trade: Position, in_xm: bool) -> list[Position]:
    """``base`` with ``trade`` added, the traded quantity in XM or standalone. A trade in a held
    instrument changes that position; its XM quantity is kept within the new quantity."""
    positions = list(base)
    for index, position in enumerate(positions):
        if position.instrument == trade.instrument:
            quantity = position.quantity + trade.quantity
            xm = position.xm_quantity + (trade.quantity if in_xm else 0.0)
            if xm * quantity < 0:
                xm = 0.0
            if abs(xm) > abs(quantity):
                xm = quantity
            positions[index] = dataclasses.replace(position, quantity=quantity, xm_quantity=xm)
            return positions
    positions.append(
        dataclasses.replace(trade, xm_quantity=trade.quantity if in_xm else 0.0, pinned=False)
    )
    return positions


def _current_total(book: Book) -> State:
    problem = build_problem(book)
    return evaluate(problem, problem.current_xm)


def what_if_report(book: Book, trades: list[Position], exclude: Sequence[str]) -> dict[str, Any]:
    """Margin change of excluding positions and adding trades under the current allocation, and
    each added trade's best placement: its margin change standalone and in XM (if eligible),
    one trade at a time on top of the book without the excluded positions."""
    held = {p.instrument for p in book.positions}
    unknown = [i for i in exclude if i not in held]
    if unknown:
        raise UsageError(f"--exclude names positions the case does not hold: {', '.join(unknown)}")
    before = _current_total(book)
    base_positions = [p for p in book.positions if p.instrument not in set(exclude)]
    base = _current_total(_book_with(book, base_positions))
    rulebook = default_rulebook(book.business_date)
    trade_reports = []
    best_positions = list(base_positions)
    standalone_positions = list(base_positions)
    for trade in trades:
        eligibility = instrument_eligibility(
            rulebook,
            book.clearing_member,
            book.customer,
            book.instruments[trade.instrument],
            book.business_date,
        )
        standalone = _current_total(_book_with(book, _place(base_positions, trade, False)))
        placements: dict[str, Any] = {
            "STANDALONE": {"total": standalone.total, "change": standalone.total - base.total}
        }
        if eligibility.eligible:
            in_xm = _current_total(_book_with(book, _place(base_positions, trade, True)))
            placements["XM"] = {"total": in_xm.total, "change": in_xm.total - base.total}
        best = min(placements, key=lambda name: placements[name]["change"])
        best_positions = _place(best_positions, trade, best == "XM")
        standalone_positions = _place(standalone_positions, trade, False)
        trade_reports.append(
            {
                "instrument": trade.instrument,
                "quantity": trade.quantity,
                "eligible": eligibility.eligible,
                "reasons": [reason.value for reason in eligibility.reasons],
                "standalone": placements["STANDALONE"],
                "xm": placements.get("XM"),
                "best": best,
            }
        )
    all_standalone = _current_total(_book_with(book, standalone_positions))
    all_best = _current_total(_book_with(book, best_positions))
    return {
        "name": book.name,
        "current": before.summary(),
        "excluded": list(exclude),
        "after_exclusions": {"total": base.total, "change": base.total - before.total},
        "after_all_trades_standalone": {
            "total": all_standalone.total,
            "change": all_standalone.total - before.total,
            "summary": all_standalone.summary(),
        },
        "after_all_trades_best_placement": {
            "total": all_best.total,
            "change": all_best.total - before.total,
            "summary": all_best.summary(),
        },
        "trades": trade_reports,
    }


def cmd_what_if(args: argparse.Namespace) -> int:
    book = _load_book(args.case, args.quiet)
    trades: list[Position] = []
    if args.add:
        instruments, positions = _parse_trades(_read_json(args.add, "trades file"), book)
        book, trades = _validated_trade_book(book, instruments, positions)
    if not trades and not args.exclude:
        raise UsageError("what-if needs --add TRADES.json, --exclude ID, or both")
    with progress("evaluating what-if", enabled=not args.quiet):
        report = what_if_report(book, trades, args.exclude or [])
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


def cmd_sample(args: argparse.Namespace) -> int:
    from .sample import generate_book

    if args.positions < 1 or args.scenarios < 1:
        raise UsageError("--positions and --scenarios must be at least 1")
    try:
        business_date = dt.date.fromisoformat(args.business_date)
    except ValueError as error:
        raise UsageError(f"--business-date must be YYYY-MM-DD: {error}") from error
    with progress(
        f"generating {args.positions} positions x {args.scenarios} scenarios",
        enabled=not args.quiet,
    ):
        try:
            book = generate_book(
                args.positions, args.scenarios, args.seed, business_date, not args.continuous
            )
        except ValueError as error:
            raise UsageError(str(error)) from error
        text = json.dumps(book_to_dict(book), separators=(",", ":"))
    if args.output in (None, "-"):
        sys.stdout.write(text + "\n")
    else:
        try:
            Path(args.output).write_text(text + "\n", encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot write {args.output!r}: {error}") from error
        if not args.quiet:
            print(
                f"wrote {args.output}: {len(book.positions)} positions, "
                f"{book.scenarios.size} scenarios, {len(text) / 1e6:.2f} MB",
                file=sys.stderr,
            )
    return EXIT_OK


def _delegate(module: str, what: str, argv: list[str]) -> int:
    """Run ``module.main(argv)``; a clear message when that part of xmargin is not installed."""
    import importlib

    try:
        target = importlib.import_module(module)
        entry: Callable[[list[str]], int] = target.main
    except (ImportError, AttributeError) as error:
        print(
            f"xmargin: {what} is not available ({module}.main could not be loaded: {error}). "
            "Install the full package with `pip install -e '.[dev]'`.",
            file=sys.stderr,
        )
        return EXIT_MISSING_COMPONENT
    return int(entry(argv) or 0)


DELEGATES = {
    "serve": ("xmargin.server.cli", "the gRPC server"),
    "bench": ("xmargin.bench", "the benchmark"),
}


# --- batch and audit ------------------------------------------------------------------------

DEFAULT_AUDIT = "sqlite:///xmargin-audit.db"
"""Where ``batch`` and ``audit`` keep the audit store unless ``--audit`` or $XMARGIN_AUDIT say."""


class BatchProgress:
    """A progress bar on stderr: redrawn in place on a terminal, a line per tenth otherwise."""

    WIDTH = 30

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()
        self.failed = 0
        self._last_tenth = -1
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, outcome: Any, done: int, total: int) -> None:
        if not outcome.ok:
            self.failed += 1
        if not self.enabled or total <= 0:
            return
        elapsed = time.perf_counter() - self.started
        filled = round(self.WIDTH * done / total)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        eta = elapsed / done * (total - done) if done else 0.0
        line = (
            f"[{bar}] {done}/{total} accounts, {self.failed} failed, "
            f"{elapsed:.1f} s, {eta:.0f} s left"
        )
        if self._tty:
            end = "\n" if done == total else ""
            print(f"\r{line}", end=end, file=self.stream, flush=True)
        elif done * 10 // total > self._last_tenth:
            self._last_tenth = done * 10 // total
            print(line, file=self.stream, flush=True)


def _audit_url(args: argparse.Namespace) -> str:
    import os

    return str(args.audit or os.environ.get("XMARGIN_AUDIT") or DEFAULT_AUDIT)


def _database_errors() -> tuple[type[Exception], ...]:
    """The exceptions of the audit store's databases (psycopg's only when it is installed)."""
    import sqlite3

    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


def _open_audit(args: argparse.Namespace) -> Any:
    from .audit import open_store

    url = _audit_url(args)
    try:
        return open_store(url)
    except ImportError as error:
        raise UsageError(f"the audit store {url!r} needs a driver: {error}") from error
    except Exception as error:  # sqlite3.Error, psycopg.Error, a bad URL
        raise UsageError(f"cannot open the audit store: {type(error).__name__}: {error}") from error


def batch_table(summary: dict[str, Any], source: str) -> str:
    rows: list[list[Any]] = [
        ["accounts", summary["accounts"]],
        ["computed now", summary["computed"]],
        ["already stored (skipped)", summary["skipped_already_stored"]],
        ["failed", summary["failed"]],
        ["total margin before (current)", summary["total_margin_before"]],
        ["total margin after (optimised)", summary["total_margin_after"]],
        ["savings", summary["savings"]],
        ["savings against the baseline", summary["savings_vs_baseline"]],
        ["seconds", round(summary["seconds"], 2)],
    ]
    parts = [format_table(["", "value"], rows, f"Batch {source} on {summary['engine']}")]
    for failure in summary["failures"]:
        parts.append(f"failed: {failure['account']} ({failure['source']}): {failure['message']}")
    return "\n".join(parts)


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch import DaskEngine, load_batch, make_engine, run_groups

    if args.run_number < 1:
        raise UsageError("--run-number must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    engine_name = args.engine or ("dask" if args.scheduler else "local")
    if args.scheduler and engine_name != "dask":
        raise UsageError("--scheduler needs --engine dask")
    if not Path(args.source).exists():
        raise UsageError(f"batch {args.source!r} does not exist")
    with progress(f"reading {args.source}", enabled=not args.quiet):
        groups = load_batch(args.source)
    if args.backend is not None and args.backend.partition(":")[0] not in ("highs", "cvxpy"):
        raise UsageError(f"unknown backend {args.backend!r}: use highs, cvxpy or cvxpy:SOLVER")
    store = None if args.no_audit else _open_audit(args)
    engine = make_engine(engine_name, args.workers, args.scheduler, args.backend)
    bar = BatchProgress(enabled=not args.quiet)
    try:
        if isinstance(engine, DaskEngine) and args.scheduler:
            try:
                engine.connect()  # now, to fail clearly
            except (OSError, TimeoutError) as error:
                raise UsageError(
                    f"cannot reach the Dask scheduler {args.scheduler}: {error}"
                ) from error
        summary = run_groups(
            groups, engine, audit=store, run_number=args.run_number, on_outcome=bar
        ).to_dict()
    except KeyboardInterrupt:
        stored = "the accounts finished so far are stored; " if store is not None else ""
        print(f"\nxmargin: interrupted; {stored}rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _database_errors() as error:
        print(
            f"xmargin: the audit store failed: {type(error).__name__}: {error}; the accounts "
            "committed before are kept, rerun the same command to resume",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    finally:
        engine.close()
        if store is not None:
            store.close()
    summary["source"] = args.source
    summary["run_number"] = args.run_number
    summary["business_dates"] = sorted({g.shared.business_date for g in groups})
    summary["cycles"] = sorted({g.shared.cycle for g in groups})
    summary["audit"] = None if store is None else store.where
    if args.table:
        print(batch_table(summary, args.source))
    else:
        _print_json(summary)
    return EXIT_INCOMPLETE if summary["failed"] else EXIT_OK


def cmd_audit_show(args: argparse.Namespace) -> int:
    from .audit import reproduce

    with _open_audit(args) as store:
        record = store.get(args.business_date, args.cycle, args.run_number, args.account)
        if record is None:
            raise UsageError(
                f"no stored answer for account {args.account!r} on {args.business_date} "
                f"{args.cycle} run {args.run_number} in {store.where}"
            )
        answer = record.to_dict()
        if args.request:
            answer["request"] = store.request(record)
        code = EXIT_OK
        if args.reproduce:
            with progress("reproducing", enabled=not args.quiet):
                check = reproduce(store, record)
            answer["reproduce"] = {k: v for k, v in check.items() if k not in ("result", "error")}
            if not check["matches"]:
                code = EXIT_INCOMPLETE
                print(
                    "xmargin: the reproduced answer differs from the stored one: "
                    + "; ".join(check["differences"][:5]),
                    file=sys.stderr,
                )
    _print_json(answer)
    return code


def cmd_audit_list(args: argparse.Namespace) -> int:
    with _open_audit(args) as store:
        rows = store.accounts(args.business_date, args.cycle, args.run_number)
    if args.table:
        print(
            format_table(
                ["account", "status", "before", "after"],
                [list(row) for row in rows],
                f"{args.business_date} {args.cycle} run {args.run_number}: {len(rows)} accounts",
            )
        )
    else:
        _print_json(
            {
                "business_date": args.business_date,
                "cycle": args.cycle,
                "run_number": args.run_number,
                "accounts": [
                    {"account": a, "status": s, "total_before": b, "total_after": f}
                    for a, s, b, f in rows
                ],
            }
        )
    return EXIT_OK


def _audit_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--audit",
        metavar="URL",
        help=f"sqlite:///PATH.db or postgresql://... (default $XMARGIN_AUDIT or {DEFAULT_AUDIT})",
    )


def _run_key_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--business-date", required=True, metavar="YYYY-MM-DD")
    parser.add_argument("--cycle", required=True, choices=["ITD", "EOD"])
    parser.add_argument("--run-number", required=True, type=int, metavar="N")


def _batch_parsers(commands: Any) -> None:
    """The ``batch`` and ``audit`` subcommands."""
    batch_parser = commands.add_parser(
        "batch",
        help="optimise many accounts (a batch file or a folder of cases) into the audit store",
        description="Optimise every account of a batch file (xmargin-batch/1) or a folder of "
        "case files, storing each answer in the audit store as it finishes; a rerun of the "
        "same run number skips the accounts already stored. Exit 5 when some accounts failed.",
    )
    batch_parser.add_argument("source", metavar="DIR-or-BATCH.json")
    batch_parser.add_argument("--run-number", type=int, default=1, metavar="N", help="default 1")
    _audit_flag(batch_parser)
    batch_parser.add_argument("--no-audit", action="store_true", help="store nothing")
    batch_parser.add_argument(
        "--engine", choices=["local", "dask", "inline"], help="default local (a process pool)"
    )
    batch_parser.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="a Dask scheduler")
    batch_parser.add_argument(
        "--workers", type=int, metavar="N", help="processes (default: one per core)"
    )
    batch_parser.add_argument("--backend", help="highs (default), cvxpy or cvxpy:SOLVER")
    _output_flags(batch_parser, "json")
    batch_parser.set_defaults(handler=cmd_batch)

    audit_parser = commands.add_parser("audit", help="read the audit store")
    audit_commands = audit_parser.add_subparsers(dest="audit_command", required=True)
    show_parser = audit_commands.add_parser("show", help="one account's stored answer")
    _run_key_flags(show_parser)
    show_parser.add_argument("--account", required=True, help="the customer id")
    _audit_flag(show_parser)
    show_parser.add_argument(
        "--reproduce",
        action="store_true",
        help="solve the stored request again and check it gives the stored answer (exit 5 if not)",
    )
    show_parser.add_argument("--request", action="store_true", help="include the stored case")
    show_parser.set_defaults(handler=cmd_audit_show)
    list_parser = audit_commands.add_parser("list", help="the accounts stored for a run")
    _run_key_flags(list_parser)
    _audit_flag(list_parser)
    _output_flags(list_parser, "json")
    list_parser.set_defaults(handler=cmd_audit_list)


# --- parser ---------------------------------------------------------------------------------


def _output_flags(parser: argparse.ArgumentParser, default: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--json",
        action="store_true",
        default=default == "json",
        help="JSON for machines" + (" (default)" if default == "json" else ""),
    )
    group.add_argument(
        "--table",
        action="store_true",
        default=default == "table",
        help="a readable table" + (" (default)" if default == "table" else ""),
    )


def _solve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", help="highs (default), cvxpy or cvxpy:SOLVER")
    lots = parser.add_mutually_exclusive_group()
    lots.add_argument("--integral", action="store_true", help="whole lots (the default)")
    lots.add_argument(
        "--continuous", action="store_true", help="the continuous relaxation (a lower bound)"
    )
    parser.add_argument("--mode", choices=[m.value for m in Mode], help="what may move")
    parser.add_argument("--time-limit", type=float, metavar="SECONDS", help="bound the solve")
    parser.add_argument("--csv", metavar="FILE", help="write the transfers as CSV")
    parser.add_argument("--fixml", metavar="FILE", help="write the transfers as FIXML")
    parser.add_argument(
        "--round-lots",
        action="store_true",
        help="let CSV/FIXML round a continuous answer's transfers to whole lots (with a warning)",
    )
    parser.add_argument("--html", metavar="FILE", help="write the customer's savings report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmargin",
        description="Cross-margin allocation of FICC Treasuries and CME rate futures.",
        epilog="Exit codes: 0 ok, 1 component missing, 2 bad input, 3 solver failure, "
        "4 infeasible.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    optimise_parser = commands.add_parser("optimise", help="optimise a case's XM allocation")
    optimise_parser.add_argument("case", metavar="CASE.json")
    _solve_flags(optimise_parser)
    _output_flags(optimise_parser, "json")
    optimise_parser.set_defaults(handler=cmd_optimise)

    margin_parser = commands.add_parser("margin", help="evaluate a case's margin exactly")
    margin_parser.add_argument("case", metavar="CASE.json")
    _output_flags(margin_parser, "json")
    margin_parser.set_defaults(handler=cmd_margin)

    eligibility_parser = commands.add_parser("eligibility", help="eligibility and reason codes")
    eligibility_parser.add_argument("case", metavar="CASE.json")
    _output_flags(eligibility_parser, "json")
    eligibility_parser.set_defaults(handler=cmd_eligibility)

    what_if_parser = commands.add_parser(
        "what-if", help="margin change of new trades or excluded positions"
    )
    what_if_parser.add_argument("case", metavar="CASE.json")
    what_if_parser.add_argument(
        "--add", metavar="TRADES.json", help='{"instruments": [...], "positions": [...]}'
    )
    what_if_parser.add_argument(
        "--exclude", nargs="+", metavar="ID", default=[], help="positions to take out"
    )
    _output_flags(what_if_parser, "json")
    what_if_parser.set_defaults(handler=cmd_what_if)

    demo_parser = commands.add_parser("demo", help="optimise the bundled sample book")
    _solve_flags(demo_parser)
    _output_flags(demo_parser, "table")
    demo_parser.set_defaults(handler=cmd_demo)

    sample_parser = commands.add_parser("sample", help="generate a synthetic case file")
    sample_parser.add_argument("--positions", type=int, default=40)
    sample_parser.add_argument("--scenarios", type=int, default=1260)
    sample_parser.add_argument("--seed", type=int, default=SAMPLE_SEED)
    sample_parser.add_argument("--business-date", default="2026-11-24", metavar="YYYY-MM-DD")
    sample_lots = sample_parser.add_mutually_exclusive_group()
    sample_lots.add_argument(
        "--integral", action="store_true", help="options.integral true (the default)"
    )
    sample_lots.add_argument("--continuous", action="store_true", help="options.integral false")
    sample_parser.add_argument("-o", "--output", metavar="CASE.json", help="default: stdout")
    sample_parser.set_defaults(handler=cmd_sample)

    _batch_parsers(commands)

    for name, (module, what) in DELEGATES.items():
        delegate = commands.add_parser(name, help=f"{what} (arguments go to {module})")
        delegate.add_argument("arguments", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (the console script exits with it)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    # serve and bench hand every argument, options included, to their own parsers.
    flags = [a for a in arguments if a in ("-q", "--quiet")]
    rest = [a for a in arguments if a not in flags]
    if rest and rest[0] in DELEGATES:
        module, what = DELEGATES[rest[0]]
        return _delegate(module, what, arguments[arguments.index(rest[0]) + 1 :])
    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exit_:  # argparse exits 2 on bad arguments, 0 on --help
        return int(exit_.code or 0) if isinstance(exit_.code, int) else EXIT_BAD_INPUT
    try:
        return int(args.handler(args))
    except CaseValidationError as error:
        print(f"xmargin: invalid case: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except UsageError as error:
        print(f"xmargin: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InfeasibleError as error:
        print(f"xmargin: infeasible: {error}", file=sys.stderr)
        return EXIT_INFEASIBLE
    except SolverError as error:
        print(f"xmargin: solver failure: {error}", file=sys.stderr)
        return EXIT_SOLVER_FAILURE
    except BrokenPipeError:  # `xmargin ... | head`
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
