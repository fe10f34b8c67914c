"""The ``xmargin`` parser and entry point: each command group registers its own subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from xmargin.schema import clip

from ..errors import CaseValidationError, InfeasibleError, SolverError
from ..extras import MissingExtraError
from . import batch, explain, solve, what_if
from .common import (
    EXIT_BAD_INPUT,
    EXIT_CODES,
    EXIT_INFEASIBLE,
    EXIT_MISSING_COMPONENT,
    EXIT_OK,
    EXIT_SOLVER_FAILURE,
    UsageError,
    _HelpFormatter,
    _quiet_flag,
)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmargin",
        description="Cross-margin allocation of FICC Treasuries and CME rate futures.",
        epilog=EXIT_CODES,
        formatter_class=_HelpFormatter,
    )
    _quiet_flag(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    solve.add_parsers(commands)
    what_if.add_parsers(commands)
    explain.add_parsers(commands)
    batch.add_parsers(commands)

    for name, (module, what) in DELEGATES.items():
        delegate = commands.add_parser(
            name,
            help=f"{what} (arguments go to {module})",
            description=f"{what}: every argument goes to {module} (try {name} --help)",
        )
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
        count = len(error.violations)
        print(f"xmargin: invalid case ({count} violation{'s' * (count != 1)}):", file=sys.stderr)
        for violation in error.violations:
            shown = "" if violation.value is None else f" (got {clip(repr(violation.value))})"
            print(f"  {violation.path}: {violation.message}{shown}", file=sys.stderr)
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
    except MissingExtraError as error:
        print(f"xmargin: {error}", file=sys.stderr)
        return EXIT_MISSING_COMPONENT
    except BrokenPipeError:  # `xmargin ... | head`
        return EXIT_OK
