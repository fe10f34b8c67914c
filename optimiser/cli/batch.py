"""``batch`` and ``audit``: many accounts into the audit store, and reading it back."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from xmargin.schema import DATE_PATTERN, clip

from ..extras import MissingExtraError
from ..solvers import parse_backend_name
from .common import (
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    _backend_flag,
    _command,
    _output_flags,
    _print_json,
    format_table,
    progress,
    states_table,
)

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
    """The exceptions of the audit store's databases (psycopg's when it is installed: the
    ``postgres`` extra)."""
    import sqlite3

    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


def _open_audit(args: argparse.Namespace, create: bool = True) -> Any:
    """The audit store of ``--audit``; the readers (``create=False``) refuse a missing one
    instead of creating an empty database where they were run."""
    from ..audit import open_store

    url = _audit_url(args)
    try:
        return open_store(url, create=create)
    except FileNotFoundError as error:
        raise UsageError(f"{error} (give the store with --audit or $XMARGIN_AUDIT)") from error
    except MissingExtraError:
        raise
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
    from ..batch import AccountOutcome, DaskEngine, load_batch, make_engine, run_groups

    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    engine_name = args.engine or ("dask" if args.scheduler else "local")
    if args.scheduler and engine_name != "dask":
        raise UsageError("--scheduler needs --engine dask")
    if not Path(args.source).exists():
        raise UsageError(f"batch {args.source!r} does not exist")
    rejected: list[AccountOutcome] = []  # files of a folder that are not readable cases
    with progress(f"reading {args.source}", enabled=not args.quiet):
        groups = load_batch(args.source, rejected)
    if args.backend is not None:  # UnknownBackendError: reported like any invalid case field
        parse_backend_name(args.backend)
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
    for outcome in rejected:
        assert outcome.error is not None
        summary["accounts"] += 1
        summary["failed"] += 1
        summary["failures"].append(
            {"account": None, "source": outcome.label} | outcome.error.to_dict()
        )
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
    from ..audit import reproduce

    with _open_audit(args, create=False) as store:
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
            elif check["solve_differences"]:
                print(
                    "xmargin: the stored answer is not a proven optimum (it depends on how far "
                    "its solve got in its time budget) and its figures hold; solved again it "
                    "ends elsewhere: " + "; ".join(check["solve_differences"][:3]),
                    file=sys.stderr,
                )
    if args.table:
        print(audit_record_table(answer))
    else:
        _print_json(answer)
    return code


def audit_record_table(answer: dict[str, Any]) -> str:
    """The readable form of ``audit show``: the key, the status and the stored states."""
    key = answer["key"]
    parts = [
        f"{key['account']}: {key['business_date']} {key['cycle']} run {key['run_number']}, "
        f"{answer['status']}, recorded {answer['recorded_at']} (source {answer['source']})"
    ]
    result = answer.get("result")
    if result:
        names = ("baseline", "current", "optimised", "all_eligible_in_xm")
        states = [(name.replace("_", " "), result[name]) for name in names if name in result]
        parts += ["", states_table(states)]
    if answer.get("error"):
        parts.append(f"error: {answer['error']}")
    if "reproduce" in answer:
        check = answer["reproduce"]
        parts.append(f"reproduced: {'matches' if check['matches'] else 'DIFFERS'}")
        if check["matches"] and check["solve_differences"]:
            parts[-1] += " (its figures; not a proven optimum, a new solve ends elsewhere)"
    return "\n".join(parts)


def cmd_audit_list(args: argparse.Namespace) -> int:
    with _open_audit(args, create=False) as store:
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


def _run_number(text: str) -> int:
    """A run number, 1 to RUN_NUMBER_MAX."""
    from ..audit import RUN_NUMBER_MAX

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= RUN_NUMBER_MAX:
        raise argparse.ArgumentTypeError(f"{value} is not a run number (1 to {RUN_NUMBER_MAX})")
    return value


def _business_date(text: str) -> str:
    """A date written YYYY-MM-DD, as the case format writes it; kept as that text."""
    try:
        ok = re.fullmatch(DATE_PATTERN, text) is not None and bool(dt.date.fromisoformat(text))
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"{clip(text)!r} is not a date YYYY-MM-DD")
    return text


def _run_key_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--business-date", required=True, type=_business_date, metavar="YYYY-MM-DD")
    parser.add_argument("--cycle", required=True, choices=["ITD", "EOD"])
    parser.add_argument("--run-number", required=True, type=_run_number, metavar="N")


def add_parsers(commands: Any) -> None:
    """The ``batch`` and ``audit`` subcommands."""
    batch_parser = _command(
        commands,
        "batch",
        "optimise many accounts (a batch file or a folder of cases) into the audit store",
        "Optimise every account of a batch file (xmargin-batch/1) or a folder of case files, "
        "storing each answer in the audit store as it finishes; a rerun of the same run number "
        "skips the accounts already stored. A file of the folder that cannot be read fails on "
        "its own. Exit 5 when some accounts failed.",
    )
    batch_parser.add_argument("source", metavar="DIR-or-BATCH.json")
    batch_parser.add_argument(
        "--run-number",
        type=_run_number,
        default=1,
        metavar="N",
        help="the business date's run, 1 to 2^32 - 1",
    )
    _audit_flag(batch_parser)
    batch_parser.add_argument("--no-audit", action="store_true", help="store nothing")
    batch_parser.add_argument(
        "--engine", choices=["local", "dask", "inline"], help="default local (a process pool)"
    )
    batch_parser.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="a Dask scheduler")
    batch_parser.add_argument(
        "--workers", type=int, metavar="N", help="processes (default: one per core)"
    )
    _backend_flag(batch_parser)
    _output_flags(batch_parser, "json")
    batch_parser.set_defaults(handler=cmd_batch)

    audit_parser = _command(
        commands,
        "audit",
        "read the audit store",
        "Read the audit store that batch runs and the server write (never creates one).",
    )
    audit_commands = audit_parser.add_subparsers(dest="audit_command", required=True)
    show_parser = _command(
        audit_commands,
        "show",
        "one account's stored answer",
        "One account's stored answer, its versions and (--request) the stored case; "
        "--reproduce solves it again and compares.",
    )
    _run_key_flags(show_parser)
    show_parser.add_argument("--account", required=True, help="the customer id")
    _audit_flag(show_parser)
    show_parser.add_argument(
        "--reproduce",
        action="store_true",
        help="solve the stored request again and check it gives the stored answer (exit 5 if not)",
    )
    show_parser.add_argument("--request", action="store_true", help="include the stored case")
    _output_flags(show_parser, "json")
    show_parser.set_defaults(handler=cmd_audit_show)
    list_parser = _command(
        audit_commands,
        "list",
        "the accounts stored for a run",
        "The accounts stored for a business date, cycle and run number, with their status and "
        "totals before and after.",
    )
    _run_key_flags(list_parser)
    _audit_flag(list_parser)
    _output_flags(list_parser, "json")
    list_parser.set_defaults(handler=cmd_audit_list)
