"""Batch engines: each runs accounts that share one :class:`SharedInputs` and yields an
:class:`AccountOutcome` per account as it finishes (in completion order); a failing account
yields a failure and never stops the others.

- :class:`LocalPoolEngine` (default): a :class:`~concurrent.futures.ProcessPoolExecutor` whose
  initializer receives the shared part; a worker that dies is replaced and its accounts re-run.
- :class:`DaskEngine`: Dask distributed, on a scheduler (``tcp://host:port``) or a
  ``LocalCluster``; the shared part, its scenario set validated once in the client, is
  scattered with ``broadcast=True``.
- :class:`InlineEngine`: sequential, in the calling process (tests, tiny batches).

Stopping a run: the local and Dask engines take a ``stop`` hook (``() -> bool``; the server's
is set when the call is cancelled or its deadline passes) and look at it at least every
:data:`STOP_POLL` seconds while they wait; closing the run's iterator early stops it too. Then
no further account starts, and the accounts running stop: the local pool's worker processes
are killed (whatever they solve, HiGHS or cvxpy), and a Dask task's solve runs under a stop
hook (:mod:`..cancellation`) that reads a Dask ``Event`` set for the run, so HiGHS is
interrupted where it is (a cvxpy solve on a daemonic Dask worker, which cannot start a child
process to kill, is not: it runs to its end, and nothing waits for it).
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..cancellation import stop_when
from ..case_format import ScenarioData
from ..extras import require_extra
from .accounts import prepare_shared, solve_account, validate_shared
from .data import AccountError, AccountOutcome, AccountSolver, BatchAccount, SharedInputs

__all__ = [
    "ENGINES",
    "DaskEngine",
    "Engine",
    "InlineEngine",
    "LocalPoolEngine",
    "make_engine",
]

STOP_POLL = 0.1
"""Seconds between looks at a run's stop hook while an engine waits for its accounts."""
StopHook = Callable[[], bool]


@runtime_checkable
class Engine(Protocol):
    """Runs accounts that share ``shared``; yields each outcome as it finishes."""

    name: str

    def run(
        self, accounts: Sequence[BatchAccount], shared: SharedInputs
    ) -> Iterator[AccountOutcome]: ...

    def close(self) -> None: ...


class InlineEngine:
    """Sequential, in this process: the test double, and the engine for a handful of accounts."""

    name = "inline"

    def __init__(self, backend: str | None = None, solve: AccountSolver = solve_account) -> None:
        self.backend = backend
        self.solve = solve

    def run(
        self, accounts: Sequence[BatchAccount], shared: SharedInputs
    ) -> Iterator[AccountOutcome]:
        prepare_shared(shared.data)
        for index, account in enumerate(accounts):
            yield self.solve(index, account, shared.data, self.backend)

    def close(self) -> None:
        return None


def _failure(index: int, account: BatchAccount, error: Exception | AccountError) -> AccountOutcome:
    """The failed outcome of an account the engine lost (not the account's own failure)."""
    if isinstance(error, Exception):
        error = AccountError(type(error).__name__, str(error) or repr(error))
    return AccountOutcome(index, account.account, account.label, None, error)


# Worker-process state of LocalPoolEngine: the shared part, set once by the pool initializer.
_WORKER_SHARED: dict[str, Any] = {}
_WORKER_BACKEND: list[str | None] = [None]
_WORKER_SOLVE: list[AccountSolver] = [solve_account]


def _init_worker(
    shared: dict[str, Any],
    backend: str | None,
    solve: AccountSolver = solve_account,
    validated: ScenarioData | None = None,
) -> None:
    """A pool worker's start: the shared part once, its scenario set trusted as the parent
    validated it (``validated``), so no account validates it again."""
    _WORKER_SHARED.clear()
    _WORKER_SHARED.update(shared)
    _WORKER_BACKEND[0] = backend
    _WORKER_SOLVE[0] = solve
    prepare_shared(_WORKER_SHARED, validated)
    # What the worker holds for its whole life (modules, the shared part) leaves the collector's
    # full passes: validating each account's case triggers them every ~20 accounts, and each
    # rescanned it (reference accounts in process, loaded machine: 2.3 -> 0.13 ms per account).
    gc.freeze()


def _solve_in_worker(index: int, account: BatchAccount) -> AccountOutcome:
    return _WORKER_SOLVE[0](index, account, _WORKER_SHARED, _WORKER_BACKEND[0])


def _default_start_method() -> str:
    """forkserver where it exists: safe beside threads (gRPC, progress), and fast to start once
    the server has imported the solver stack; spawn elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


class LocalPoolEngine:
    """A process pool on this machine; the shared part reaches each worker once, through the
    pool initializer. A worker that dies breaks the pool: a new pool re-runs the accounts that
    had not finished, at most ``max_restarts`` times, then they fail with ``WorkerLost``. When
    ``stop()`` says so (or the run's iterator is closed early) the workers are killed."""

    name = "local"

    def __init__(
        self,
        workers: int | None = None,
        start_method: str | None = None,
        backend: str | None = None,
        max_in_flight: int | None = None,
        max_restarts: int = 2,
        solve: AccountSolver = solve_account,
        stop: StopHook | None = None,
    ) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.solve = solve
        self.stop = stop
        self.start_method = start_method or _default_start_method()
        self.backend = backend
        self.max_in_flight = max_in_flight or 4 * self.workers
        self.max_restarts = max_restarts
        self._pool: ProcessPoolExecutor | None = None
        self.restarts = 0
        """How many times the last run replaced a broken pool."""

    def _context(self) -> multiprocessing.context.BaseContext:
        context = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            context.set_forkserver_preload(["xmargin.optimiser.batch", "xmargin.optimiser"])
        return context

    def worker_pids(self) -> list[int]:
        """Process ids of the running pool's workers (empty between runs)."""
        pool = self._pool
        processes = getattr(pool, "_processes", None) or {}
        return [int(pid) for pid in processes]

    def run(
        self, accounts: Sequence[BatchAccount], shared: SharedInputs
    ) -> Iterator[AccountOutcome]:
        pending = list(range(len(accounts)))
        self.restarts = restarts = 0
        validated = validate_shared(shared.data)  # once per batch, in the parent
        while pending:
            lost: list[int] = []
            pool = ProcessPoolExecutor(
                max_workers=min(self.workers, len(pending)),
                mp_context=self._context(),
                initializer=_init_worker,
                initargs=(shared.data, self.backend, self.solve, validated),
            )
            self._pool = pool
            running: dict[Future[AccountOutcome], int] = {}
            try:
                while pending or running:
                    while pending and len(running) < self.max_in_flight and not lost:
                        index = pending.pop(0)
                        try:
                            running[pool.submit(_solve_in_worker, index, accounts[index])] = index
                        except BrokenProcessPool:
                            lost.append(index)
                    if not running:
                        break
                    if self._stopped():
                        return  # the finally kills the workers, running accounts and all
                    timeout = None if self.stop is None else STOP_POLL
                    done, _ = wait(list(running), timeout, return_when=FIRST_COMPLETED)
                    for future in done:
                        index = running.pop(future)
                        try:
                            yield future.result()
                        except BrokenProcessPool:
                            lost.append(index)
                        except Exception as error:  # pickling and the like
                            yield _failure(index, accounts[index], error)
                    if lost:  # the rest of the pool's work is lost too
                        for future, index in list(running.items()):
                            try:
                                yield future.result()
                            except Exception:
                                lost.append(index)
                        running.clear()
                        break
            finally:
                if running:  # stopped, or the iterator closed early: nobody wants the rest
                    self._kill_workers(pool)
                for future in running:
                    future.cancel()
                pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
            if lost:
                lost.sort()
                restarts += 1
                self.restarts = restarts
                if restarts > self.max_restarts:
                    for index in lost + pending:
                        failure = AccountError(
                            "WorkerLost", f"a worker process died {restarts} times; not retried"
                        )
                        yield _failure(index, accounts[index], failure)
                    return
                pending = lost + pending

    def _stopped(self) -> bool:
        return self.stop is not None and bool(self.stop())

    @staticmethod
    def _kill_workers(pool: ProcessPoolExecutor) -> None:
        """Kill the pool's worker processes now (their accounts' answers are not wanted)."""
        processes = getattr(pool, "_processes", None) or {}
        for process in list(processes.values()):
            process.kill()

    def close(self) -> None:
        return None


def _dask_solve(
    indices: list[int],
    pickled_accounts: np.ndarray,
    shared: tuple[dict[str, Any], ScenarioData | None],
    backend: str | None,
    solve: AccountSolver = solve_account,
    stop_event: str | None = None,
) -> list[AccountOutcome]:
    """A few accounts on a Dask worker, one after the other: ``pickled_accounts``, their
    :class:`BatchAccount`\\ s (at ``indices``) pickled by the client as one buffer
    (:func:`_packed`; Dask's own serialisation would send each of an account's hundreds of
    small arrays as a frame of its own); ``shared``: the shared part and its scenario set as
    the client validated it (trusted here, so no worker validates it again); with
    ``stop_event`` (the name of the run's Dask ``Event``), under a stop hook that reads it (see
    :class:`_DaskStop`)."""
    accounts: list[BatchAccount] = pickle.loads(pickled_accounts.data)
    data, validated = shared
    prepared = prepare_shared(data, validated)
    if stop_event is None:
        return [solve(i, a, prepared, backend) for i, a in zip(indices, accounts, strict=True)]
    with stop_when(_DaskStop(stop_event)):
        return [solve(i, a, prepared, backend) for i, a in zip(indices, accounts, strict=True)]


def _packed(accounts: list[BatchAccount]) -> np.ndarray:
    """``accounts`` pickled, as a byte array (read back by ``pickle.loads``): Dask's messages
    carry an array as a frame of their own, where they copy a ``bytes`` into their pickles at
    each hop, the client's and the scheduler's (1,000 reference accounts on a LocalCluster of
    2: the client's process ~1 ms less CPU per account)."""
    return np.frombuffer(pickle.dumps(accounts, protocol=5), dtype=np.uint8)


class _DaskStop:
    """A stop hook on a Dask worker: whether the run's ``Event`` is set, asked of the
    scheduler at most every :data:`STOP_POLL` seconds (HiGHS calls the hook far more often),
    the first time :data:`STOP_POLL` seconds after the task starts (one hook per task, for its
    few accounts): a task shorter than that makes no round trip to the scheduler."""

    def __init__(self, name: str) -> None:
        from distributed import Event

        self.event = Event(name)
        self.asked = time.monotonic()
        self.stopped = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self.stopped and now - self.asked >= STOP_POLL:
            self.asked = now
            self.stopped = bool(self.event.is_set())
        return self.stopped


DASK_ACCOUNTS_PER_TASK = 16
"""Accounts per Dask task by default, at most: each task costs the client, the scheduler (in
the client's process with a LocalCluster) and the worker some milliseconds of their own, so a
task carries several accounts (1,000 reference accounts on 2 workers: 16 a task took ~1.5 ms
less CPU per account than 4). Near the end of a batch the tasks get smaller
(:func:`_task_chunks`), so that no worker waits long for the last one."""


def _task_chunks(count: int, per_task: int, threads: int, taper: bool) -> list[list[int]]:
    """The indices ``0..count-1`` in tasks of ``per_task``, in order; with ``taper``, a task
    holds at most a ``2 * threads``-th of the accounts not yet given out (at least one), so the
    last tasks are short and the workers finish together."""
    chunks: list[list[int]] = []
    start = 0
    while start < count:
        size = per_task
        if taper:
            size = max(1, min(per_task, -(-(count - start) // (2 * threads))))
        chunks.append(list(range(start, min(start + size, count))))
        start += size
    return chunks


LOCAL_CLUSTER_CONFIG = {
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.scheduler.active-memory-manager.start": False,
    "distributed.worker.profile.enabled": False,
}
"""Dask settings of the engine's own LocalCluster, whose scheduler runs in this process: its
event-loop watchdog (every 20 ms) and system monitor (every 0.5 s) by default took about 5% of
a core while idle, 1% with these. The active memory manager is off: every 2 s it dropped the
broadcast shared inputs from all but as many workers as had tasks waiting on them, so a worker
fetched the scenario set again at its next task. The workers' statistical profiler (a look at the
running task's stack every 10 ms, for the dashboard) is off: ~0.8 ms of a worker's CPU per
reference account."""


class DaskEngine:
    """Dask distributed: a scheduler at ``scheduler`` (``tcp://host:port``; its workers need
    xmargin installed), else a ``LocalCluster`` of ``workers`` processes, one thread each. The
    shared part is scattered to every worker once (``broadcast=True``; on a scheduler of
    your own, turn its active memory manager off, as the LocalCluster does, or it drops those
    replicas and workers fetch the shared part again); a task carries
    ``accounts_per_task`` accounts (by default up to :data:`DASK_ACCOUNTS_PER_TASK`, fewer
    towards the end of the batch: the scheduler's and the comms' cost per task is shared by
    them; fewer when ``max_in_flight`` is small), and at
    most ``max_in_flight`` accounts (default: two tasks per worker thread) are submitted at a
    time, so the scheduler never holds the whole batch's data. Dask re-runs the tasks of a
    worker that dies on another one; a task that fails all the same is run again one account
    per task, so that only the account that fails is reported failed. When ``stop()`` says so
    (or the run's iterator is closed early), the tasks are cancelled and the run's ``Event``
    set, which stops the solves running (see the module docstring)."""

    name = "dask"

    def __init__(
        self,
        scheduler: str | None = None,
        workers: int | None = None,
        backend: str | None = None,
        client: Any = None,
        connect_timeout: float = 10.0,
        solve: AccountSolver = solve_account,
        max_in_flight: int | None = None,
        stop: StopHook | None = None,
        accounts_per_task: int = 0,
    ) -> None:
        self.scheduler = scheduler
        self.max_in_flight = max_in_flight
        self.accounts_per_task = accounts_per_task or DASK_ACCOUNTS_PER_TASK
        self.taper = not accounts_per_task
        self.solve = solve
        self.stop = stop
        self.connect_timeout = connect_timeout
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.backend = backend
        if client is None:  # fail now, with the extra to install, not at the first account
            require_extra("distributed", "batch", "the Dask batch engine")
        self._client = client
        self._owns_client = client is None
        self._cluster: Any = None
        self.shared_key: str | None = None
        """The key of the scattered shared inputs of the current run (each worker holds it)."""

    @property
    def client(self) -> Any:
        """The distributed Client (a LocalCluster starts on first use)."""
        if self._client is None:
            import dask
            from distributed import Client, LocalCluster

            if self.scheduler:
                self._client = Client(self.scheduler, timeout=self.connect_timeout)
            else:
                with dask.config.set(LOCAL_CLUSTER_CONFIG):
                    self._cluster = LocalCluster(
                        n_workers=self.workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=":0",  # any free port: never clash on 8787
                        silence_logs=40,  # logging.ERROR
                        env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
                    )
                self._client = Client(self._cluster)
        return self._client

    def connect(self) -> Any:
        """Connect to the scheduler (or start the LocalCluster) now; the Client."""
        return self.client

    def run(
        self, accounts: Sequence[BatchAccount], shared: SharedInputs
    ) -> Iterator[AccountOutcome]:
        from distributed import Event, as_completed

        client = self.client
        # validated once per batch, here; a list, so that the pair is one piece of data
        validated = validate_shared(shared.data)
        [shared_future] = client.scatter([(shared.data, validated)], broadcast=True, hash=False)
        self.shared_key = str(shared_future.key)
        token = f"{shared.sha256[:12]}-{time.time_ns()}"
        stop_event = f"xmargin-stop-{token}"
        threads = max(1, sum(client.nthreads().values()))
        # two tasks per worker thread in flight: one running, the next already there
        limit = self.max_in_flight or 2 * self.accounts_per_task * threads
        per_task = max(1, min(self.accounts_per_task, limit // (2 * threads)))
        chunks = _task_chunks(len(accounts), per_task, threads, self.taper)
        queued = iter(chunks)
        running: dict[Any, list[int]] = {}
        alone: list[list[int]] = []  # the accounts of a failed task, each to run on its own
        serial = itertools.count()

        def submit_next() -> Any:
            """The next few accounts' task (None when all are submitted)."""
            indices = alone.pop() if alone else next(queued, None)
            if indices is None:
                return None
            future = client.submit(
                _dask_solve,
                indices,
                _packed([accounts[i] for i in indices]),
                shared_future,
                self.backend,
                self.solve,
                stop_event,
                key=f"xmargin-accounts-{token}-{next(serial)}",  # a retry gets a key of its own
                pure=False,
            )
            running[future] = indices
            return future

        window = max(1, limit // per_task)
        first = [submit_next() for _ in range(window)]
        finished = False
        try:
            arrivals = as_completed([f for f in first if f is not None])
            while not arrivals.is_empty():
                if self.stop is not None and self.stop():
                    return
                if self.stop is not None and not arrivals.has_ready():
                    time.sleep(STOP_POLL)
                    continue
                for future in arrivals.next_batch(block=True):
                    indices = running.pop(future)
                    try:
                        outcomes = future.result()
                    except Exception as error:  # KilledWorker, lost scheduler, ...
                        if len(indices) > 1:  # which account? each again in a task of its own
                            alone.extend([i] for i in reversed(indices))
                            outcomes = []
                        else:
                            outcomes = [_failure(indices[0], accounts[indices[0]], error)]
                    finally:
                        future.release()
                    yield from outcomes
                    for _ in range(1 if outcomes else len(indices)):
                        following = submit_next()
                        if following is not None:
                            arrivals.add(following)
            finished = True
        finally:
            client.cancel(list(running))
            client.cancel([shared_future])
            if not finished:  # stop the solves still running; then forget the event
                event = Event(stop_event, client=client)
                event.set()
                self._forget_later(event)

    @staticmethod
    def _forget_later(event: Any, after: float = 10.0) -> None:
        """Clear the run's stop ``event`` (the scheduler then forgets it) once its tasks had
        time to see it set."""

        def clear() -> None:
            try:
                event.clear()
            except Exception:  # the client closed meanwhile: the scheduler went with it
                pass

        timer = threading.Timer(after, clear)
        timer.daemon = True
        timer.start()

    def close(self) -> None:
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


ENGINES = ("local", "dask", "inline")


def make_engine(
    name: str = "local",
    workers: int | None = None,
    scheduler: str | None = None,
    backend: str | None = None,
) -> Engine:
    """``local`` (process pool), ``dask`` (``scheduler`` or a LocalCluster) or ``inline``."""
    if name == "local":
        return LocalPoolEngine(workers, backend=backend)
    if name == "dask":
        return DaskEngine(scheduler, workers, backend=backend)
    if name == "inline":
        return InlineEngine(backend)
    raise ValueError(f"unknown engine {name!r}; use one of {ENGINES}")
