"""The ``xmargin`` parser and entry point: each command group registers its own subcommands."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

from xmargin.schema import clip

from .. import cancellation
from ..errors import CaseValidationError, InfeasibleError, SolverError
from ..extras import MissingExtraError
from . import batch, explain, solve, what_if
from .common import (
    EXIT_BAD_INPUT,
    EXIT_CODES,
    EXIT_INFEASIBLE,
    EXIT_INTERRUPTED,
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
    with _stopped_by_signals() as received:
        try:
            code = _run(args)
        except (KeyboardInterrupt, cancellation.SolveCancelled):
            name = signal.Signals(received[0]).name if received else "SIGINT"
            print(f"\nxmargin: stopped by {name}", file=sys.stderr)
            code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED and received:  # batch answers that itself, for either signal
        return 128 + received[0]
    return code


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[list[int]]:
    """SIGINT and SIGTERM stop a command; the signals received are listed in the value.

    The handler raises ``KeyboardInterrupt`` (Python code stops where it is, as Ctrl-C does by
    default; a batch stops its workers) and the command runs under a stop hook
    (:func:`..cancellation.stop_when`) that a solve asks: a ``KeyboardInterrupt`` raised inside
    one of HiGHS's callbacks is lost, and the solve ran on to its time limit and answered
    (exit 0); SIGTERM killed the process without cleanup, leaving a batch's workers solving.
    A signal ignored when the command started (``nohup``, a background job) stays ignored."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = {
        sig: signal.signal(sig, stop)
        for sig in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        with cancellation.stop_when(lambda: bool(received)):
            yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace) -> int:
    """The command's exit code; its errors reported on stderr."""
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
