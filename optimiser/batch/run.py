"""The run loop: a batch's groups through an engine, with progress, totals and the audit
store (accounts already stored for the run are skipped, so a run resumes where it stopped)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..model import Book
from .data import AccountOutcome, BatchAccount, BatchGroup, SharedInputs, result_totals
from .engines import Engine, make_engine
from .format import batch_from_books

if TYPE_CHECKING:
    from ..audit import AuditStore

__all__ = [
    "CHUNKS_AHEAD",
    "COMMIT_ROWS",
    "COMMIT_SECONDS",
    "AuditCommits",
    "BatchSummary",
    "run_batch",
    "run_groups",
]


@dataclass(slots=True)
class BatchSummary:
    """Totals over a batch's accounts (computed now or found already stored); ``before`` is
    the current allocation's total margin, ``after`` the optimised one."""

    engine: str
    accounts: int = 0
    computed: int = 0
    skipped: int = 0
    failed: int = 0
    baseline_total: float = 0.0
    before_total: float = 0.0
    after_total: float = 0.0
    seconds: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[AccountOutcome] = field(default_factory=list)

    @property
    def savings(self) -> float:
        """Margin released against the current allocations."""
        return self.before_total - self.after_total

    @property
    def savings_vs_baseline(self) -> float:
        return self.baseline_total - self.after_total

    def add_totals(self, baseline: float, before: float, after: float) -> None:
        self.baseline_total += baseline
        self.before_total += before
        self.after_total += after

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "accounts": self.accounts,
            "computed": self.computed,
            "skipped_already_stored": self.skipped,
            "failed": self.failed,
            "succeeded": self.accounts - self.failed,
            "total_margin_baseline": self.baseline_total,
            "total_margin_before": self.before_total,
            "total_margin_after": self.after_total,
            "savings": self.savings,
            "savings_vs_baseline": self.savings_vs_baseline,
            "seconds": self.seconds,
            "accounts_per_second": self.computed / self.seconds if self.seconds > 0 else None,
            "failures": self.failures,
        }


COMMIT_SECONDS = 0.25
"""A batch's audit rows wait at most this long (or until a group ends) before a commit."""
COMMIT_ROWS = 256
"""... or until this many are waiting."""


class AuditCommits:
    """Outcomes on their way to the audit store, committed together (one transaction, one
    disk sync per chunk): every :data:`COMMIT_SECONDS`, every :data:`COMMIT_ROWS` outcomes,
    at a change of group and at :meth:`flush`. A writer thread encodes and commits each chunk,
    so the run's thread goes on handing accounts to the engine while a chunk's JSON is made and
    synced to disk; at most :data:`CHUNKS_AHEAD` chunks wait for it. A failed commit stops the
    writing: no later chunk is written, and the next :meth:`add` or :meth:`flush` raises the
    error. A run killed between two commits re-runs the accounts of the last chunk when
    resumed. :meth:`close` commits what is waiting and ends the writer."""

    def __init__(self, audit: AuditStore, run_number: int) -> None:
        self.audit = audit
        self.run_number = run_number
        self._shared: SharedInputs | None = None
        self._waiting: list[tuple[BatchAccount, AccountOutcome]] = []
        self._last = time.monotonic()
        self._chunks: queue.Queue[_Chunk | None] = queue.Queue(maxsize=CHUNKS_AHEAD)
        self._error: BaseException | None = None
        self._raised = False
        self._writer = threading.Thread(target=self._write, name="audit-commits", daemon=True)
        self._writer.start()

    def add(self, shared: SharedInputs, account: BatchAccount, outcome: AccountOutcome) -> None:
        self._raise_failure()
        if self._shared is not None and shared is not self._shared:
            self.flush()
        self._shared = shared
        self._waiting.append((account, outcome))
        if len(self._waiting) >= COMMIT_ROWS or time.monotonic() - self._last >= COMMIT_SECONDS:
            self._hand_over()

    def flush(self) -> None:
        """Commit what is waiting; return once every chunk handed over is committed."""
        self._hand_over()
        self._chunks.join()
        self._raise_failure()

    def close(self) -> None:
        """:meth:`flush`, then end the writer thread."""
        try:
            self.flush()
        finally:
            self._chunks.put(None)
            self._writer.join()

    def _hand_over(self) -> None:
        waiting, self._waiting = self._waiting, []
        self._last = time.monotonic()
        if waiting and self._shared is not None and self._error is None:
            self._chunks.put((self._shared, waiting))

    def _raise_failure(self) -> None:
        """Raise the writer's error, once."""
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error

    def _write(self) -> None:
        """The writer thread: each chunk in its own transaction, until ``None``."""
        while (chunk := self._chunks.get()) is not None:
            try:
                if self._error is None:
                    self.audit.record_many(chunk[0], chunk[1], self.run_number)
            except BaseException as error:  # handed to the run's thread
                self._error = error
            finally:
                self._chunks.task_done()
        self._chunks.task_done()


_Chunk = tuple[SharedInputs, list[tuple[BatchAccount, AccountOutcome]]]
CHUNKS_AHEAD = 4
"""Chunks handed to :class:`AuditCommits`' writer and not yet committed, at most (then the run
waits for the writer, so a slow store holds back the run rather than filling memory)."""


def run_batch(
    accounts: Sequence[BatchAccount] | Sequence[Book],
    shared: SharedInputs | None = None,
    engine: Engine | str = "local",
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    audit: AuditStore | None = None,
    run_number: int = 1,
    keep_outcomes: bool = False,
    on_outcome: Callable[[AccountOutcome, int, int], None] | None = None,
) -> BatchSummary:
    """Optimise every account and return the totals.

    ``accounts`` are :class:`BatchAccount`\\ s sharing ``shared``, or :class:`Book`\\ s (grouped
    by :func:`batch_from_books`; ``shared`` is then None). ``engine`` is an :class:`Engine` (left
    open) or a name for :func:`make_engine` (closed at the end). With ``audit``, accounts already
    stored for (business date, cycle, ``run_number``) are skipped and each outcome is committed
    in chunks (:class:`AuditCommits`: every :data:`COMMIT_SECONDS` or :data:`COMMIT_ROWS`
    outcomes, and whenever the run stops). ``on_outcome(outcome, done, total)`` is called after
    each one (progress).
    """
    books = [a for a in accounts if isinstance(a, Book)]
    if shared is None and len(books) == len(accounts):
        groups = batch_from_books(books)
    elif shared is not None and not books:
        groups = [BatchGroup(shared, [a for a in accounts if isinstance(a, BatchAccount)])]
    else:
        raise TypeError("give BatchAccounts with their SharedInputs, or Books and no shared")
    return run_groups(
        groups,
        engine,
        workers=workers,
        scheduler=scheduler,
        audit=audit,
        run_number=run_number,
        keep_outcomes=keep_outcomes,
        on_outcome=on_outcome,
    )


def run_groups(
    groups: Sequence[BatchGroup],
    engine: Engine | str = "local",
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    audit: AuditStore | None = None,
    run_number: int = 1,
    keep_outcomes: bool = False,
    on_outcome: Callable[[AccountOutcome, int, int], None] | None = None,
) -> BatchSummary:
    """:func:`run_batch` over several groups (a folder of cases with different scenario sets)."""
    owned = isinstance(engine, str)
    runner = make_engine(engine, workers, scheduler) if isinstance(engine, str) else engine
    summary = BatchSummary(engine=runner.name)
    total = sum(len(g.accounts) for g in groups)
    summary.accounts = total
    done = 0
    started = time.perf_counter()
    commits = AuditCommits(audit, run_number) if audit is not None else None
    try:
        for group in groups:
            todo = list(group.accounts)
            if audit is not None:
                stored = audit.completed_totals(
                    group.shared.business_date, group.shared.cycle, run_number
                )
                for account in group.accounts:
                    if account.account in stored:
                        summary.skipped += 1
                        summary.add_totals(*stored[account.account])
                todo = [a for a in group.accounts if a.account not in stored]
                done += len(group.accounts) - len(todo)
                audit.prepare(group.shared)
            if not todo:
                continue
            for outcome in runner.run(todo, group.shared):
                done += 1
                summary.computed += 1
                if commits is not None:
                    commits.add(group.shared, todo[outcome.index], outcome)
                if outcome.result is not None:
                    summary.add_totals(*result_totals(outcome.result))
                else:
                    assert outcome.error is not None
                    summary.failed += 1
                    summary.failures.append(
                        {"account": outcome.account, "source": outcome.label}
                        | outcome.error.to_dict()
                    )
                if keep_outcomes:
                    summary.outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome, done, total)
    finally:
        try:
            if commits is not None:  # also when stopped: what finished stays stored
                commits.close()
        finally:
            summary.seconds = time.perf_counter() - started
            if owned:
                runner.close()
    return summary
