"""``optimise``, ``margin``, ``eligibility``, ``demo`` and ``sample``: one case at a time."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from typing import Any

import numpy as np

from xmargin.schema import BOUNDS

from ..case_format import book_to_dict
from ..eligibility import default_rulebook, evaluate_eligibility
from ..errors import InfeasibleError, SolverError
from ..margin import evaluate
from ..model import Book, Mode, SolveOptions
from ..optimise import optimise
from ..outputs import OutputPathError, check_output_paths, write_files
from ..problem import build_problem
from ..results import OptimisationResult, Status, all_eligible_allocation
from ..sample import SAMPLE_SEED
from ..solvers import parse_backend_name
from .common import (
    EXIT_OK,
    UsageError,
    _command,
    _load_book,
    _output_flags,
    _print_json,
    _solve_flags,
    format_table,
    progress,
    result_table,
    states_table,
)


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
        maturity = instrument.collateral_maturity or instrument.maturity
        positions.append(
            {
                "instrument": position.instrument,
                "ccp": instrument.ccp.value,
                "kind": instrument.kind.value,
                "contract": instrument.contract,
                "maturity": maturity.isoformat() if maturity else None,
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
        most = BOUNDS["time_limit"]
        if not 0.0 < args.time_limit <= most:  # False for NaN too
            raise UsageError(
                f"--time-limit must be a number of seconds in (0, {most:.0f}], as a case "
                f"file's options.time_limit (got {args.time_limit!r})"
            )
        changes["time_limit"] = args.time_limit
    return dataclasses.replace(options, **changes) if changes else options


def _run_optimise(book: Book, args: argparse.Namespace) -> OptimisationResult:
    options = _solve_options(book, args)
    backend = getattr(args, "backend", None)
    if backend is not None:  # UnknownBackendError: reported like any invalid case field
        parse_backend_name(backend)
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
    from ..reports import FractionalLotsError, rounding_warnings, write_reports

    try:
        written = write_reports(result, args.csv, args.fixml, args.html, round_lots=args.round_lots)
    except (OSError, OutputPathError) as error:  # nothing written (outputs.write_files)
        raise UsageError(f"cannot write a report: {error}") from error
    except FractionalLotsError as error:
        raise UsageError(str(error)) from error
    if not args.quiet and (args.csv or args.fixml):
        for warning in rounding_warnings(result) if args.round_lots else []:
            print(f"warning: {warning}", file=sys.stderr)
    if not args.quiet:
        for path in written:
            print(f"wrote {path}", file=sys.stderr)


def _check_report_paths(args: argparse.Namespace, case: str | None = None) -> None:
    """The report flags' paths, checked before the solve (a missing folder, one file for two
    flags, the case file itself) rather than found after it."""
    try:
        check_output_paths(
            {"--csv": args.csv, "--fixml": args.fixml, "--html": args.html}, {"CASE.json": case}
        )
    except OutputPathError as error:
        raise UsageError(str(error)) from error


def cmd_optimise(args: argparse.Namespace) -> int:
    _check_report_paths(args, args.case)
    book = _load_book(args.case, args.quiet)
    result = _run_optimise(book, args)
    _write_reports(result, args)
    if args.table:
        print(result_table(result))
    else:
        _print_json(result.to_dict())
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from ..sample import load_sample_book

    _check_report_paths(args)
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
        print(
            f"The bundled sample book: {len(book.positions)} positions x "
            f"{book.scenarios.size:,} scenarios (xmargin sample --seed {SAMPLE_SEED} makes it)\n"
        )
        print(result_table(result))
    return EXIT_OK


def cmd_sample(args: argparse.Namespace) -> int:
    from ..sample import generate_book

    for flag, value, most in (
        ("--positions", args.positions, BOUNDS["max_positions"]),
        ("--scenarios", args.scenarios, BOUNDS["max_scenarios"]),
    ):
        if not 1 <= value <= most:  # a case file holds at most that many
            raise UsageError(f"{flag} must be 1 to {most:,.0f}, as a case file holds (got {value})")
    if args.seed < 0:
        raise UsageError(f"--seed must be a whole number >= 0 (got {args.seed})")
    if args.output not in (None, "-"):
        try:
            check_output_paths({"--output": args.output})
        except OutputPathError as error:
            raise UsageError(str(error)) from error
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
            write_files({args.output: text + "\n"})
        except OSError as error:
            raise UsageError(f"cannot write {args.output!r}: {error}") from error
        if not args.quiet:
            print(
                f"wrote {args.output}: {len(book.positions)} positions, "
                f"{book.scenarios.size} scenarios, {len(text) / 1e6:.2f} MB",
                file=sys.stderr,
            )
    return EXIT_OK


def add_parsers(commands: Any) -> None:
    """The subcommands of this module."""
    optimise_parser = _command(
        commands,
        "optimise",
        "optimise a case's XM allocation",
        "Find the XM quantities that minimise the customer's total margin; print the result "
        "(the four states, transfers, marginal margin, attribution, solver statistics) and "
        "optionally write the transfers (CSV, FIXML) and the savings report (HTML).",
    )
    optimise_parser.add_argument("case", metavar="CASE.json")
    _solve_flags(optimise_parser)
    _output_flags(optimise_parser, "json")
    optimise_parser.set_defaults(handler=cmd_optimise)

    margin_parser = _command(
        commands,
        "margin",
        "evaluate a case's margin exactly",
        "The exact margin of the case's current allocation, the baseline (nothing in XM) and "
        "all eligible positions in XM, with each position's eligibility.",
    )
    margin_parser.add_argument("case", metavar="CASE.json")
    _output_flags(margin_parser, "json")
    margin_parser.set_defaults(handler=cmd_margin)

    eligibility_parser = _command(
        commands,
        "eligibility",
        "eligibility and reason codes",
        "Each position's XM eligibility under the rulebook in effect on the business date, "
        "with the reason codes of every rule it fails.",
    )
    eligibility_parser.add_argument("case", metavar="CASE.json")
    _output_flags(eligibility_parser, "json")
    eligibility_parser.set_defaults(handler=cmd_eligibility)

    demo_parser = _command(
        commands,
        "demo",
        "optimise the bundled sample book",
        "Optimise the bundled sample book (40 positions, 1,260 scenarios) and print its "
        "states, savings and transfers.",
    )
    _solve_flags(demo_parser)
    _output_flags(demo_parser, "table")
    demo_parser.set_defaults(handler=cmd_demo)

    sample_parser = _command(
        commands,
        "sample",
        "generate a synthetic case file",
        "Generate a synthetic case: Treasuries, futures and options on a correlated scenario "
        "history; the same seed gives the same file.",
    )
    sample_parser.add_argument("--positions", type=int, default=40, help="positions in the book")
    sample_parser.add_argument("--scenarios", type=int, default=1260, help="scenario days")
    sample_parser.add_argument("--seed", type=int, default=SAMPLE_SEED, help="random seed")
    sample_parser.add_argument(
        "--business-date", default="2026-11-24", metavar="YYYY-MM-DD", help="the case's date"
    )
    sample_lots = sample_parser.add_mutually_exclusive_group()
    sample_lots.add_argument(
        "--integral", action="store_true", help="options.integral true (the default)"
    )
    sample_lots.add_argument("--continuous", action="store_true", help="options.integral false")
    sample_parser.add_argument("-o", "--output", metavar="CASE.json", help="default: stdout")
    sample_parser.set_defaults(handler=cmd_sample)
