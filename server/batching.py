"""OptimiseBatch (and Optimise) behind the batch engines of :mod:`xmargin.optimiser.batch`.

The account solver is :class:`ProtoSolve`, a picklable hook run where the work runs (a solver
thread, a pool process, a Dask worker): it merges and validates one account, optimises it
within what the call's deadline leaves at that moment, and returns the answer both as the
result JSON (for the audit store) and as proto bytes (``OptimiseResult`` or ``AccountError``)
for the server to stream back.

Engines: :class:`SolverPoolEngine` (default; the server's own bounded thread pool, since
highspy releases the GIL) or any :class:`~xmargin.optimiser.batch.Engine` made by
:class:`BatchEngines` (``--batch-engine local|dask``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from xmargin.clients.v1 import service_pb2
from xmargin.optimiser import (
    Book,
    CaseValidationError,
    InfeasibleError,
    SolverError,
    WarmStart,
    parse_case,
)
from xmargin.optimiser.batch import (
    AccountError,
    AccountOutcome,
    AccountSolver,
    BatchAccount,
    DaskEngine,
    Engine,
    LocalPoolEngine,
    SharedInputs,
    field_in_batch,
    merge_case,
    xmargin_version,
)
from xmargin.optimiser.cancellation import SolveCancelled, stop_requested, stop_when
from xmargin.optimiser.jsonvalues import json_and_text
from xmargin.optimiser.optimise import optimise, report_allocation
from xmargin.optimiser.problem import build_problem
from xmargin.optimiser.results import (
    AnswerSource,
    OptimisationResult,
    SolverStats,
    Status,
)
from xmargin.optimiser.solvers import parse_backend_name

from .convert import FieldPaths, result_to_proto
from .errors import DeadlineError, report

__all__ = [
    "BATCH_ENGINES",
    "DEADLINE_RESERVE",
    "MIN_SOLVE_SECONDS",
    "AnswerTally",
    "BatchEngines",
    "ProtoSolve",
    "SolverPoolEngine",
    "StoppableSolve",
    "error_proto",
    "outcome_error",
    "rebuild_result",
    "solve_budget",
    "time_limit",
]

log = logging.getLogger("xmargin.server")

# Share of the time left before the deadline kept back for evaluation and the reply.
DEADLINE_RESERVE = 0.2
MIN_SOLVE_SECONDS = 0.005
BATCH_ENGINES = ("threads", "local", "dask")


def error_proto(error: BaseException) -> service_pb2.AccountError:
    """One account's failure as the status it would have had as a single call."""
    error_report = report(error)
    return service_pb2.AccountError(
        code=error_report.code.name,
        message=error_report.message,
        reason=error_report.reason,
        field_violations=[
            service_pb2.FieldViolation(field=f, description=d) for f, d in error_report.violations
        ],
    )


def outcome_error(outcome: AccountOutcome) -> service_pb2.AccountError:
    """The AccountError of a failed outcome (an engine's own failure has no payload)."""
    if outcome.payload is not None:
        return service_pb2.AccountError.FromString(outcome.payload)
    assert outcome.error is not None
    return service_pb2.AccountError(
        code="UNAVAILABLE",
        message=f"{outcome.error.type}: {outcome.error.message}",
        reason=outcome.error.type,
    )


@dataclass(slots=True)
class AnswerTally:
    """The answers of one batch call (OptimiseBatch, OptimiseStream) so far: each outcome put
    into its response message with the call's progress."""

    started: float
    """When the call started (``time.perf_counter()``), for the progress's elapsed time."""
    completed: int = 0
    failed: int = 0

    def fill(self, message: Any, outcome: AccountOutcome, total: int) -> None:
        """Put ``outcome`` (its result, else its error) and the progress into ``message``;
        ``total``: the accounts known so far (never reported below those answered)."""
        if outcome.ok and outcome.payload is not None:
            message.result.ParseFromString(outcome.payload)
        else:
            self.failed += 1
            message.error.CopyFrom(outcome_error(outcome))
        self.completed += 1
        progress = message.progress
        progress.completed = self.completed
        progress.failed = self.failed
        progress.total = max(total, self.completed)
        progress.elapsed.FromNanoseconds(int((time.perf_counter() - self.started) * 1e9))


def time_limit(deadline: float | None, requested: float | None) -> float | None:
    """The solver's time limit now: the request's, bounded by what the deadline (wall clock,
    ``time.time()``) leaves; DeadlineError when that is too short."""
    return solve_budget(None if deadline is None else deadline - time.time(), requested)


def solve_budget(remaining: float | None, requested: float | None) -> float | None:
    """The request's time limit bounded by ``remaining`` seconds less the reserve."""
    if remaining is None:
        return requested
    remaining = max(0.0, remaining)
    budget = remaining * (1.0 - DEADLINE_RESERVE)
    if budget < MIN_SOLVE_SECONDS:
        raise DeadlineError(f"deadline leaves {remaining * 1e3:.1f} ms: too short to solve")
    return budget if requested is None else min(requested, budget)


@dataclass(frozen=True, slots=True)
class ProtoSolve:
    """The server's account solver (an :data:`~xmargin.optimiser.batch.AccountSolver`).

    ``deadline`` is the call's deadline in wall-clock seconds (None: none). An account's label
    is its proto path (``accounts[3]``, ``account``), so field errors name request fields. The
    outcome's ``payload`` is ``OptimiseResult`` bytes when it succeeded, else ``AccountError``
    bytes; its ``error`` mirrors :func:`~xmargin.optimiser.batch.solve_account`'s, so that
    ``xmargin audit show --reproduce`` reproduces a stored failure too.
    """

    deadline: float | None = None
    optimiser: Callable[..., OptimisationResult] = optimise
    """``optimise`` (a module-level function: it travels to workers by reference)."""
    answer_json: bool = True
    """Whether the outcome carries the result as JSON (``result``, ``result_json``): only the
    audit store reads it, so a server without one skips the encoding."""
    warm_start: WarmStart | None = None
    """The previous cycle's allocation to start from (a unary Optimise call's warm_start)."""

    def __call__(
        self,
        index: int,
        account: BatchAccount,
        shared: Mapping[str, Any],
        backend: str | None = None,
    ) -> AccountOutcome:
        return self.attempt(index, account, shared, backend)[0]

    def attempt(
        self,
        index: int,
        account: BatchAccount,
        shared: Mapping[str, Any],
        backend: str | None = None,
    ) -> tuple[AccountOutcome, BaseException | None]:
        """The outcome, and the exception behind a failure (a unary call raises it, keeping
        its rich status details)."""
        started = time.perf_counter()
        paths = FieldPaths(account=account.label)

        def failed(
            error: BaseException, audit_error: AccountError
        ) -> tuple[AccountOutcome, BaseException]:
            outcome = AccountOutcome(
                index,
                account.account,
                account.label,
                None,
                audit_error,
                time.perf_counter() - started,
                xmargin_version(),
                error_proto(error).SerializeToString(),
            )
            return outcome, error

        try:
            case = merge_case(shared, account.data)
            paths.factor_count = len(shared.get("factors") or [])
            result = self.solve_book(parse_case(case), backend)
            answer, answer_json = (
                json_and_text(result.to_dict()) if self.answer_json else (None, None)
            )
            payload = result_to_proto(result).SerializeToString()
        except CaseValidationError as error:
            n_shared = len(shared.get("instruments", []) or [])
            where = field_in_batch(error.field, account, n_shared)
            message = f"{where}: {error.reason} (got {error.value!r})"
            return failed(paths.error(error), AccountError("CaseValidationError", message, where))
        except (InfeasibleError, SolverError) as error:
            return failed(error, AccountError(type(error).__name__, str(error), None, error.advice))
        except Exception as error:  # an account never stops the batch
            log.exception("unexpected error in %s", account.label)
            return failed(error, AccountError(type(error).__name__, str(error) or repr(error)))
        outcome = AccountOutcome(
            index,
            account.account,
            account.label,
            answer,
            None,
            time.perf_counter() - started,
            xmargin_version(),
            payload,
            result_json=answer_json,
        )
        return outcome, None

    def solve_book(self, book: Book, backend: str | None = None) -> OptimisationResult:
        """Optimise a validated book within what the deadline leaves now: SolveCancelled when
        the call has ended already, a CaseValidationError for an unknown backend name,
        DeadlineError when too little time is left."""
        if stop_requested():  # the call ended while its request was read: stop here
            raise SolveCancelled("the call ended before the solve started")
        if book.options.backend is not None:
            parse_backend_name(book.options.backend)
        options = book.options
        limit = time_limit(self.deadline, options.time_limit)
        if limit is not None:
            options = dataclasses.replace(options, time_limit=limit)
        warm = {} if self.warm_start is None else {"warm_start": self.warm_start}
        return self.optimiser(book, options=options, backend=backend, **warm)


class SolverPoolEngine:
    """The default batch engine: the server's bounded solver threads (:class:`SolverPool`).

    ``run`` takes the first account's slot at once (OverloadedError, i.e. RESOURCE_EXHAUSTED,
    when none is free) before it returns its iterator; further accounts use spare slots, up to
    one per solver thread, and wait for a slot when others hold them all. ``stop`` ends the
    run early (a cancelled call): queued accounts are cancelled. The accounts queue as
    ``client``'s work (the pool serves clients in turn)."""

    name = "threads"

    def __init__(
        self, pool: Any, solve: AccountSolver, stop: threading.Event, client: str = ""
    ) -> None:
        self.pool = pool
        self.client = client
        self.solve: AccountSolver = StoppableSolve(solve, stop)
        self.stop = stop

    def run(
        self, accounts: Sequence[BatchAccount], shared: SharedInputs
    ) -> Iterator[AccountOutcome]:
        if not accounts:
            return iter(())
        first = self.pool.submit(self.solve, 0, accounts[0], shared.data, None, client=self.client)
        return self._stream(first, accounts, shared)

    def _stream(
        self, first: Future[AccountOutcome], accounts: Sequence[BatchAccount], shared: SharedInputs
    ) -> Iterator[AccountOutcome]:
        pending = list(range(1, len(accounts)))
        running: dict[Future[AccountOutcome], int] = {first: 0}

        def submit(index: int) -> Future[AccountOutcome] | None:
            future: Future[AccountOutcome] | None = self.pool.try_submit(
                self.solve, index, accounts[index], shared.data, None, client=self.client
            )
            return future

        try:
            while running or pending:
                while pending and len(running) < self.pool.workers:
                    future = submit(pending[0])
                    if future is None:
                        break
                    running[future] = pending.pop(0)
                if not running:  # every slot taken by other calls: wait for one
                    if self.stop.wait(0.01):
                        return
                    continue
                done, _ = wait(list(running), timeout=0.25, return_when=FIRST_COMPLETED)
                if self.stop.is_set():
                    return
                for future in done:
                    index = running.pop(future)
                    try:
                        yield future.result()
                    except Exception as error:  # the hook catches everything; belt and braces
                        account = accounts[index]
                        failure = AccountError(type(error).__name__, str(error))
                        yield AccountOutcome(index, account.account, account.label, None, failure)
        finally:
            for future in running:
                future.cancel()

    def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class StoppableSolve:
    """An account solve that stops (raises SolveCancelled) once ``stop`` is set, and never
    starts when it is set before its turn (see :mod:`xmargin.optimiser.cancellation`)."""

    solve: AccountSolver
    stop: threading.Event

    def __call__(
        self, index: int, account: BatchAccount, shared: Mapping[str, Any], backend: Any = None
    ) -> AccountOutcome:
        if self.stop.is_set():
            raise SolveCancelled("the batch ended before this account started")
        with stop_when(self.stop.is_set):
            return self.solve(index, account, shared, backend)


class BatchEngines:
    """Makes the engine of each OptimiseBatch call for ``--batch-engine``: ``threads`` (the
    solver pool), ``local`` (a process pool of ``workers`` per batch) or ``dask`` (the
    scheduler at ``scheduler``, else a LocalCluster of ``workers``; one Client for the
    server's life, connected at start)."""

    def __init__(self, name: str = "threads", workers: int = 2, scheduler: str | None = None):
        if scheduler and name != "dask":
            raise ValueError("--scheduler needs --batch-engine dask")
        if name not in BATCH_ENGINES:
            raise ValueError(f"unknown batch engine {name!r}; use one of {BATCH_ENGINES}")
        self.name = name
        self.workers = max(1, workers)
        self.scheduler = scheduler
        self._dask: DaskEngine | None = None
        if name == "dask":
            self._dask = DaskEngine(scheduler, self.workers)
            self._dask.connect()

    @property
    def threaded(self) -> bool:
        return self.name == "threads"

    def make(self, solve: AccountSolver, stop: Callable[[], bool] | None = None) -> Engine:
        """An engine for one call (``threads`` has none: see :class:`SolverPoolEngine`); once
        ``stop()`` says so, it starts no more accounts and stops those running."""
        if self.name == "local":
            return LocalPoolEngine(self.workers, solve=solve, stop=stop)
        if self._dask is not None:
            return DaskEngine(client=self._dask.client, solve=solve, stop=stop)
        raise ValueError("the threads engine is made by the servicer (it needs the pool)")

    def close(self) -> None:
        if self._dask is not None:
            self._dask.close()
            self._dask = None


# --- the stored answer, again ---------------------------------------------------------------


def rebuild_result(case: Mapping[str, Any], stored: Mapping[str, Any]) -> OptimisationResult:
    """The stored answer as an :class:`OptimisationResult`, without solving: the stored
    allocation evaluated exactly on the stored request (every figure the evaluator's, as when
    it was first computed), with the stored solver statistics, notes and VaR gap."""
    book = parse_case(dict(case))
    problem = build_problem(book)
    allocation_of = stored["optimised"]["allocation"]
    allocation = np.array([float(allocation_of[pid]) for pid in problem.position_ids])
    solver = stored["solver"]
    stats = SolverStats(
        backend=str(solver["backend"]),
        status=Status(stored["status"]),
        objective=_number(solver["objective"]),
        bound=_number(solver["bound"]),
        build_seconds=_number(solver["build_seconds"]),
        solve_seconds=_number(solver["solve_seconds"]),
        iterations=int(solver["iterations"]),
        cuts=int(solver["cuts"]),
        message=str(solver["message"]),
        fallback_from=solver.get("fallback_from"),
        source=AnswerSource(solver.get("source", AnswerSource.OPTIMUM.value)),
        failures=[str(f) for f in solver.get("failures", [])],
        rounds=int(solver.get("rounds", 0)),
        lp_seconds=_number(solver.get("lp_seconds", 0.0)),
        evaluation_seconds=_number(solver.get("evaluation_seconds", 0.0)),
    )
    var_gap, stand_in = stored.get("var_gap"), stored.get("stand_in_total")
    return report_allocation(
        problem,
        allocation,
        stats,
        notes=[str(n) for n in stored.get("notes", [])],
        var_gap=None if var_gap is None else float(var_gap),
        stand_in_total=None if stand_in is None else float(stand_in),
    )


def _number(value: Any) -> float:
    """A stored figure (JSON null stands for NaN or infinity)."""
    return float("nan") if value is None else float(value)
