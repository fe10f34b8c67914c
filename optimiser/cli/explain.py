"""``xmargin explain``: why each account margins what it does (xmargin.optimiser.explain)."""

from __future__ import annotations

import argparse
from typing import Any

from ..problem import build_problem
from .common import (
    EXIT_OK,
    UsageError,
    _command,
    _load_book,
    _output_flags,
    _print_json,
    _solver_flags,
)
from .solve import _run_optimise


def cmd_explain(args: argparse.Namespace) -> int:
    """The explanation of the current and/or optimised allocation, as a table or JSON."""
    from ..explain import explain, explain_result
    from ..explain_render import explanation_table

    unused = _unused_flags(args)
    if unused:
        raise UsageError(unused)
    book = _load_book(args.case, args.quiet)
    states = (args.state,) if args.state else ("current", "optimised")
    if states == ("current",):
        explanation = explain(build_problem(book), states=states)
    else:
        explanation = explain_result(_run_optimise(book, args), states, args.transfers or "path")
    if args.json:
        _print_json(explanation.to_dict(losses=args.losses))
    else:
        print(explanation_table(explanation, args.account))
    return EXIT_OK


def _unused_flags(args: argparse.Namespace) -> str:
    """Why a flag given would change nothing (refused, not ignored), or ''."""
    if args.state == "current":
        solve = {
            "--backend": args.backend is not None,
            "--integral": args.integral,
            "--continuous": args.continuous,
            "--mode": args.mode is not None,
            "--time-limit": args.time_limit is not None,
            "--transfers": args.transfers is not None,
        }
        given = [flag for flag, on in solve.items() if on]
        if given:
            return f"{', '.join(given)}: nothing is solved with --state current"
    if args.losses and not args.json:
        return "--losses: the losses are written in JSON only (add --json)"
    if args.account and args.json:
        return "--account: the JSON has every account (it selects the table's)"
    return ""


def add_parsers(commands: Any) -> None:
    """The ``explain`` subcommand."""
    explain_parser = _command(
        commands,
        "explain",
        "the scenarios, factors and positions behind each account's margin",
        "Per account and state: the tail scenarios that set each figure, the stress and "
        "add-on terms, the split by factor and by position (adding up to the figure), and "
        "what each transfer of the optimised allocation saves.",
    )
    explain_parser.add_argument("case", metavar="CASE.json")
    explain_parser.add_argument("--state", choices=["current", "optimised"], help="default: both")
    explain_parser.add_argument(
        "--account",
        nargs="+",
        choices=["ficc_standalone", "cme_standalone", "xm", "S_F", "S_C", "C_F", "C_C"],
        help="accounts to show in the table (default: all)",
    )
    explain_parser.add_argument(
        "--losses", action="store_true", help="JSON: every scenario loss of each window"
    )
    explain_parser.add_argument(
        "--transfers",
        choices=["path", "sequential"],
        help="how each transfer's saving is credited (default: path)",
    )
    _solver_flags(explain_parser)
    _output_flags(explain_parser, "table")
    explain_parser.set_defaults(handler=cmd_explain)
