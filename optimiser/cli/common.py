"""What every command shares: exit codes, progress, input, output (JSON and tables), and the
parser's common flags and help."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from xmargin.schema import clip, parse_json

from ..case_format import parse_case
from ..jsonvalues import jsonable
from ..model import Book, Mode
from ..results import OptimisationResult, SolverStats
from ..results import exact_quantity as exact
from ..solvers import BACKEND_HELP

EXIT_OK = 0
EXIT_MISSING_COMPONENT = 1
EXIT_BAD_INPUT = 2
EXIT_SOLVER_FAILURE = 3
EXIT_INFEASIBLE = 4
EXIT_INCOMPLETE = 5  # batch: some accounts failed; audit show --reproduce: the answer differs
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C (128 + SIGINT); by SIGTERM: 143 (128 + SIGTERM)

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
        return parse_json(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {what} {path!r}: {error}") from error
    except (ValueError, RecursionError) as error:  # JSONDecodeError, a 5,000-digit number
        raise UsageError(f"{what} {path!r} is not valid JSON: {clip(str(error))}") from error


def _load_book(path: str, quiet: bool) -> Book:
    with progress(f"reading {path}", enabled=not quiet):
        return parse_case(_read_json(path, "case file"))


# --- output ---------------------------------------------------------------------------------


def _print_json(data: Any) -> None:
    json.dump(jsonable(data), sys.stdout, indent=2, allow_nan=False)
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
        + _solver_detail(result.stats)
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


# --- parser ---------------------------------------------------------------------------------


def _solver_detail(stats: SolverStats) -> str:
    """ ", N rounds (LP x s, evaluation y s)" where the backend ran cutting-plane rounds."""
    if not stats.rounds:
        return ""
    return (
        f", {stats.rounds} rounds (LP {stats.lp_seconds:.3f} s, "
        f"evaluation {stats.evaluation_seconds:.3f} s)"
    )


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


def _backend_flag(parser: argparse.ArgumentParser) -> None:
    """``--backend``, checked by the handler through ``solvers.parse_backend_name``."""
    parser.add_argument("--backend", help=BACKEND_HELP)


def _solver_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of every command that solves: backend, lots, mode and time limit."""
    _backend_flag(parser)
    lots = parser.add_mutually_exclusive_group()
    lots.add_argument("--integral", action="store_true", help="whole lots (the default)")
    lots.add_argument(
        "--continuous", action="store_true", help="the continuous relaxation (a lower bound)"
    )
    parser.add_argument("--mode", choices=[m.value for m in Mode], help="what may move")
    parser.add_argument("--time-limit", type=float, metavar="SECONDS", help="bound the solve")


def _solve_flags(parser: argparse.ArgumentParser) -> None:
    _solver_flags(parser)
    parser.add_argument("--csv", metavar="FILE", help="write the transfers as CSV")
    parser.add_argument("--fixml", metavar="FILE", help="write the transfers as FIXML")
    parser.add_argument(
        "--round-lots",
        action="store_true",
        help="let CSV/FIXML round a continuous answer's transfers to whole lots (with a warning)",
    )
    parser.add_argument("--html", metavar="FILE", help="write the customer's savings report")


EXIT_CODES = (
    "exit codes: 0 ok; 1 a component (server, benchmark, an extra such as dask or psycopg) is "
    "not installed; 2 bad input (invalid case, missing or unreadable file, bad arguments); "
    "3 solver failure; 4 infeasible; 5 some accounts of a batch failed, or audit show "
    "--reproduce found a different answer; 130 interrupted (Ctrl-C), 143 terminated (SIGTERM)"
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (flags, unset)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default
        if default is None or isinstance(default, bool) or default == []:
            return action.help or ""
        return super()._get_help_string(action) or ""


def _quiet_flag(parser: argparse.ArgumentParser, top: bool) -> None:
    """``-q`` before or after the subcommand (the subcommand's copy leaves the top one alone
    unless given)."""
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="no progress on stderr",
    )


def _command(commands: Any, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=EXIT_CODES,
        formatter_class=_HelpFormatter,
    )
    _quiet_flag(parser, top=False)
    return parser
