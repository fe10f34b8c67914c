"""OptimiseStream: a batch whose accounts arrive as a stream and whose answers leave as they
finish, so neither any message nor the server's memory grows with the batch.

The first request message carries the shared parts (an ``OptimiseBatchRequest`` without
accounts), each later one a single account. A reader thread takes an account off the stream
only when the call has fewer than ``window`` accounts in flight (read but not yet answered):
past that, HTTP/2 flow control holds the client back. Memory is therefore bounded by the
window (accounts, their answers) plus the ids seen so far (for the duplicate check).

Engines: ``threads`` (default) solves each account on the server's solver pool as soon as it
is read, at most one per solver thread for one call; ``local`` and ``dask`` take the accounts a
window at a time (one pool slot held per window). The first account that finds no free slot
refuses the whole call (RESOURCE_EXHAUSTED, nothing answered yet); later ones wait for one.
A customer id already seen in the stream gets its own INVALID_ARGUMENT answer; the first
account with that id is solved.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from xmargin.clients.v1 import book_pb2, common_pb2, service_pb2
from xmargin.optimiser.batch import AccountError, AccountOutcome, BatchAccount, SharedInputs
from xmargin.optimiser.cancellation import SolveCancelled

from .batching import AnswerTally, BatchEngines, ProtoSolve, StoppableSolve, error_proto
from .convert import RequestError
from .errors import EngineError, OverloadedError, ServiceError

__all__ = ["StreamRun", "duplicate_ids"]

log = logging.getLogger("xmargin.server")
POLL = 0.05
"""Seconds between checks that the call is still alive while waiting."""


def duplicate_ids(ids: Iterable[str]) -> list[tuple[str, str]]:
    """Field violations for customer ids met before in a batch (empty ids are left to the
    account's own validation): one answer per customer."""
    first: dict[str, int] = {}
    violations = []
    for index, customer in enumerate(ids):
        if not customer:
            continue
        if customer in first:
            violations.append(_duplicate(index, customer, first[customer]))
        else:
            first[customer] = index
    return violations


def _duplicate(index: int, customer: str, first: int) -> tuple[str, str]:
    return (
        f"accounts[{index}].customer.id",
        f"{customer!r} is already accounts[{first}]: one account per customer in a batch",
    )


@dataclass(frozen=True, slots=True)
class _End:
    """The reader is done: ``count`` accounts were received (each gets exactly one answer)."""

    count: int


_Item = tuple[int, str, AccountOutcome] | BaseException | _End


class StreamRun:
    """One OptimiseStream call after its header: read, solve and answer its accounts.

    ``make_account(book, label)`` converts one AccountBook (RequestError when invalid);
    ``prior(account)`` is the stored answer of an audited run (or None); ``finish(account,
    outcome)`` records an outcome and returns what to answer (the audit's say)."""

    def __init__(
        self,
        *,
        pool: Any,
        engines: BatchEngines,
        solve: ProtoSolve,
        inputs: SharedInputs,
        window: int,
        run: common_pb2.RunContext,
        context: grpc.ServicerContext,
        client: str = "",
        make_account: Callable[[book_pb2.AccountBook, str], BatchAccount],
        prior: Callable[[BatchAccount], AccountOutcome | None],
        finish: Callable[[BatchAccount, AccountOutcome], AccountOutcome],
    ) -> None:
        self.pool = pool
        self.engines = engines
        self.solve = solve
        self.inputs = inputs
        self.window_size = max(1, window)
        self.run = run
        self.context = context
        self.client = client
        """Whose work the solves are, for the pool's fair queueing."""
        self.make_account = make_account
        self.prior = prior
        self.finish = finish
        self._window = threading.Semaphore(self.window_size)
        self._solving = threading.Semaphore(max(1, pool.workers))
        self._outcomes: queue.Queue[_Item] = queue.Queue()
        self._stop = threading.Event()
        self._started_any = False
        # threads engine: a solve that has not started when the call ends never starts, and
        # one that runs stops (xmargin.optimiser.cancellation)
        self._stoppable = StoppableSolve(solve, self._stop)
        self.received = 0
        self.peak_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._pending: set[Any] = set()  # solves submitted, not finished

    # --- answers (the handler's thread) ---------------------------------------------------

    def answers(
        self, requests: Iterator[service_pb2.OptimiseStreamRequest], started: float
    ) -> Iterator[service_pb2.OptimiseStreamResponse]:
        """Start the reader on ``requests`` and yield each account's answer as it comes."""
        self.context.add_callback(self._end)
        reader = threading.Thread(
            target=self._read, args=(requests,), name="xmargin-stream-read", daemon=True
        )
        reader.start()
        expected: int | None = None
        tally = AnswerTally(started)
        try:
            while expected is None or tally.completed < expected:
                if not self.context.is_active():
                    return
                try:
                    item = self._outcomes.get(timeout=0.25)
                except queue.Empty:
                    continue
                if isinstance(item, _End):
                    expected = item.count
                    continue
                if isinstance(item, BaseException):
                    if isinstance(item, ServiceError | RequestError):
                        raise item
                    log.error("stream batch engine failed", exc_info=item)
                    why = f"{type(item).__name__}: {item}"
                    raise EngineError(f"the batch engine failed ({why}); retry") from item
                index, name, outcome = item
                message = service_pb2.OptimiseStreamResponse(
                    run=self.run, account_index=index, account_name=name
                )
                tally.fill(message, outcome, self.received)
                yield message
                self._leave()
        finally:
            self._end()
            log.info(
                json.dumps(
                    {
                        "event": "stream_done",
                        "request_id": self.run.request_id,
                        "accounts": self.received,
                        "answered": tally.completed,
                        "window": self.window_size,
                        "peak_in_flight": self.peak_in_flight,
                    }
                )
            )

    def _enter(self) -> bool:
        """Wait for room in the window; False when the call ended meanwhile."""
        while not self._window.acquire(timeout=POLL):
            if self._stop.is_set():
                return False
        with self._lock:
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        return True

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
        self._window.release()

    # --- reading (the reader thread) --------------------------------------------------------

    def _read(self, requests: Iterator[service_pb2.OptimiseStreamRequest]) -> None:
        seen: dict[str, int] = {}
        batch: list[tuple[int, str, BatchAccount]] = []  # local/dask: the current window
        try:
            while self._enter():
                try:
                    message = next(requests)
                except StopIteration:
                    self._leave()
                    break
                index = self.received
                self.received += 1
                self._take(index, message, seen, batch)
                if batch and len(batch) >= self.window_size:
                    self._run_engine(batch)
                    batch = []
            if batch and not self._stop.is_set():
                self._run_engine(batch)
        except Exception as error:
            if not self._stop.is_set() and self.context.is_active():
                self._outcomes.put(error)
            return
        self._outcomes.put(_End(self.received))

    def _take(
        self,
        index: int,
        message: service_pb2.OptimiseStreamRequest,
        seen: dict[str, int],
        batch: list[tuple[int, str, BatchAccount]],
    ) -> None:
        """Check one account message and start its work (or answer its refusal)."""
        if message.WhichOneof("item") != "account":
            raise RequestError(
                [("batch", "only the first message carries the batch; later ones one account")]
            )
        book = message.account
        label = f"accounts[{index}]"
        name = book.name or book.customer.id
        customer = book.customer.id
        try:
            if customer in seen:
                raise RequestError([_duplicate(index, customer, seen[customer])])
            if customer:
                seen[customer] = index
            account = self.make_account(book, label)
        except RequestError as error:
            failure = AccountError(type(error).__name__, str(error))
            payload = error_proto(error).SerializeToString()
            outcome = AccountOutcome(index, customer, label, None, failure, payload=payload)
            self._outcomes.put((index, name, outcome))
            return
        stored = self.prior(account)
        if stored is not None:
            self._outcomes.put((index, name, stored))
        elif self.engines.threaded:
            self._submit(index, name, account)
        else:
            batch.append((index, name, account))

    def _submit(self, index: int, name: str, account: BatchAccount) -> None:
        """Solve one account on the solver pool, at most one per solver thread for this call;
        RESOURCE_EXHAUSTED when the call's first solve finds the pool full."""
        while not self._solving.acquire(timeout=POLL):
            if self._stop.is_set():
                return
        while True:
            future = self.pool.try_submit(
                self._stoppable, index, account, self.inputs.data, None, client=self.client
            )
            if future is not None:
                break
            if not self._started_any:
                self._solving.release()
                raise OverloadedError(
                    f"all {self.pool.capacity} solver slots are busy; retry with backoff"
                )
            if self._stop.wait(POLL):
                self._solving.release()
                return
        self._started_any = True
        with self._lock:
            self._pending.add(future)

        def done(finished: Any) -> None:
            self._solving.release()
            with self._lock:
                self._pending.discard(finished)
            if finished.cancelled():
                return
            try:
                outcome = finished.result()
            except SolveCancelled:  # the call ended: nobody reads this account's answer
                return
            except Exception as error:  # the hook catches everything; belt and braces
                failure = AccountError(type(error).__name__, str(error))
                outcome = AccountOutcome(index, account.account, account.label, None, failure)
            self._outcomes.put((index, name, self.finish(account, outcome)))

        future.add_done_callback(done)

    def _end(self) -> None:
        """The call ended (answered, cancelled, deadline): stop reading, cancel the solves
        still queued and stop the running ones (threads engine). Nothing done is kept: a
        finished solve leaves ``_pending`` at once, so memory stays bounded by the window
        however long the stream."""
        self._stop.set()
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            future.cancel()

    def _run_engine(self, batch: list[tuple[int, str, BatchAccount]]) -> None:
        """One window of accounts on the ``local`` or ``dask`` engine, holding one slot."""
        while True:
            try:
                self.pool.hold()
                break
            except OverloadedError:
                if not self._started_any:
                    raise
                if self._stop.wait(POLL):
                    return
        self._started_any = True
        accounts = [account for _, _, account in batch]
        iterator: Iterator[AccountOutcome] = iter(())
        try:
            iterator = self.engines.make(self.solve, self._stop.is_set).run(accounts, self.inputs)
            for outcome in iterator:
                index, name, account = batch[outcome.index]
                outcome = _reindexed(outcome, index)
                self._outcomes.put((index, name, self.finish(account, outcome)))
                if self._stop.is_set():
                    break
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            self.pool.release()


def _reindexed(outcome: AccountOutcome, index: int) -> AccountOutcome:
    return dataclasses.replace(outcome, index=index)
