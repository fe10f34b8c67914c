"""The solver pool: a fixed number of solver threads and waiting places, shared fairly.

Every compute call (and every account of a threaded batch or stream) runs here. highspy releases
the GIL while it solves (see the README's measurement), so threads give parallel solves without
pickling books across processes. There are ``workers`` threads and ``workers + max_queue``
*slots*; a slot is held from submission until the work finishes or, still queued, is
cancelled, and work that finds every slot taken is refused (RESOURCE_EXHAUSTED) at once.

Fair queueing: queued work waits in one FIFO queue per client (the identity admission uses:
:func:`.admission.client_identity`). A free solver thread takes the next work of the client
with the fewest solves running now, clients tied on that served in turn (the one served least
recently first). So one client with many long calls queued holds no more than its share of the
threads once another client is waiting: the other's call starts when the first solve ends,
not after the whole queue.

Priority: the solver threads may run at a lower CPU priority (``nice``, Linux: per thread; the
threads HiGHS starts from them inherit it), so that on a busy machine the server's gRPC
threads (which take calls in, refuse them, answer health checks) get a CPU first and a solve
takes what is left (``--solver-nice``; off by default, because on a shared machine it also
gives the solves less CPU against every other process).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import OverloadedError

__all__ = ["SolverPool"]

T = TypeVar("T")


@dataclass(slots=True)
class _Work:
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]


class SolverPool:
    """``workers`` solver threads and ``max_queue`` waiting places; no more, ever. The one
    count of slots held is ``_held`` (under ``_lock``): admission reads it through
    :meth:`available`."""

    def __init__(self, workers: int, max_queue: int, nice: int = 0) -> None:
        if workers < 1 or max_queue < 0:
            raise ValueError("workers must be >= 1 and max_queue >= 0")
        self.workers = workers
        self.nice = nice
        """How much lower than the process's the solver threads' CPU priority is (0-19)."""
        self.capacity = workers + max_queue
        self._lock = threading.Condition()
        self._held = 0
        self._queues: dict[str, deque[_Work]] = {}
        """Queued work per client."""
        self._running: dict[str, int] = {}
        """Solves running now per client (clients with none are left out)."""
        self._served: dict[str, int] = {}
        """When each client with work queued or running last had a solve started (a tick)."""
        self._tick = 0
        self._closed = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"xmargin-solve-{k}", daemon=True)
            for k in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    # --- slots ------------------------------------------------------------------------------

    def _take(self) -> bool:
        with self._lock:
            if self._closed or self._held >= self.capacity:
                return False
            self._held += 1
            return True

    def _give_back(self) -> None:
        with self._lock:
            self._held -= 1
            self._lock.notify_all()

    def available(self) -> int:
        """Slots free now (admission looks before it reads a request)."""
        with self._lock:
            return self.capacity - self._held

    def queued(self) -> dict[str, int]:
        """Work waiting for a solver thread, per client (cancelled work may still count)."""
        with self._lock:
            return {client: len(work) for client, work in self._queues.items()}

    # --- work -------------------------------------------------------------------------------

    def try_submit(self, fn: Callable[..., T], /, *args: Any, client: str = "") -> Future[T] | None:
        """Queue ``fn(*args)`` as ``client``'s work if a slot is free (held until it finishes,
        or until it is cancelled while queued: it then never starts), else None."""
        if not self._take():
            return None
        future: Future[T] = Future()
        future.add_done_callback(lambda _: self._give_back())
        with self._lock:
            self._queues.setdefault(client, deque()).append(_Work(future, fn, args))
            self._lock.notify()
        return future

    def submit(self, fn: Callable[..., T], /, *args: Any, client: str = "") -> Future[T]:
        future = self.try_submit(fn, *args, client=client)
        if future is None:
            raise OverloadedError(f"all {self.capacity} solver slots are busy; retry with backoff")
        return future

    def hold(self) -> None:
        """Take a slot for work done elsewhere (a batch on processes or Dask) until
        :meth:`release`; OverloadedError when none is free."""
        if not self._take():
            raise OverloadedError(f"all {self.capacity} solver slots are busy; retry with backoff")

    def release(self) -> None:
        self._give_back()

    def _next(self) -> tuple[str, _Work] | None:
        """The next work to run (caller holds the lock): the queued client with the fewest
        solves running, ties to the one served least recently; None when shut down."""
        while True:
            if self._closed:
                return None
            if self._queues:
                client = min(
                    self._queues,
                    key=lambda c: (self._running.get(c, 0), self._served.get(c, -1)),
                )
                queue = self._queues[client]
                work = queue.popleft()
                if not queue:
                    del self._queues[client]
                return client, work
            self._lock.wait()

    def _forget(self, client: str) -> None:
        """Drop ``client``'s turn once it has nothing queued or running (caller holds the lock)."""
        if client not in self._queues and client not in self._running:
            self._served.pop(client, None)

    def _serve(self) -> None:
        """One solver thread: run the next work, as :meth:`_next` picks it, until shut down."""
        if self.nice:
            _lower_priority(self.nice)
        while True:
            with self._lock:
                picked = self._next()
                if picked is None:
                    return
                client, work = picked
                if not work.future.set_running_or_notify_cancel():
                    self._forget(client)
                    continue  # cancelled while queued: its slot is already free
                self._running[client] = self._running.get(client, 0) + 1
                self._tick += 1
                self._served[client] = self._tick
            try:
                result = work.fn(*work.args)
            except BaseException as error:
                outcome: tuple[bool, Any] = (False, error)
            else:
                outcome = (True, result)
            finally:
                with self._lock:
                    self._running[client] -= 1
                    if not self._running[client]:
                        del self._running[client]
                        self._forget(client)
            # after the running count: a caller woken by the answer sees this thread free
            if outcome[0]:
                work.future.set_result(outcome[1])
            else:
                work.future.set_exception(outcome[1])
            del work, outcome

    # --- the end ----------------------------------------------------------------------------

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking work; queued work is cancelled (its callers are gone by then)."""
        with self._lock:
            self._closed = True
            queued = [work for queue in self._queues.values() for work in queue]
            self._queues.clear()
            self._lock.notify_all()
        for work in queued:
            work.future.cancel()
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until no slot is held; whether none is."""
        end = time.monotonic() + timeout
        with self._lock:
            while self._held > 0:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True


def _lower_priority(nice: int) -> None:
    """Lower this thread's CPU priority by ``nice`` (Linux: ``setpriority`` of a thread id
    sets that thread's alone); where the system does not allow it, leave it as it is."""
    try:
        thread = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, current + nice))
    except (AttributeError, OSError):
        pass
