"""When a call's work must stop, and running it so that it does.

A :class:`CallStop` is set when the call ends (the client cancelled, its deadline passed: gRPC
runs the context's callbacks) or when the server's default deadline passes for a call that
came without one (``--default-deadline``). :func:`run_in_pool` submits the work to the solver
pool under that hook (:func:`xmargin.optimiser.cancellation.stop_when`): work still queued when
the call ends is cancelled and never starts, running work stops within a HiGHS iteration or a
cutting-plane round and its slot is free again; the handler thread returns at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextvars import ContextVar
from typing import Any, TypeVar

import grpc

from xmargin.optimiser.cancellation import SolveCancelled, stop_when

from .admission import client_identity
from .errors import DeadlineError, ServiceError

__all__ = [
    "NO_DEADLINE_SECONDS",
    "CallCancelledError",
    "CallStop",
    "current_call",
    "remaining",
    "run_in_pool",
]

T = TypeVar("T")

# grpc reports a call without a deadline as one that far away (or more).
NO_DEADLINE_SECONDS = 1e7


class CallCancelledError(ServiceError):
    """The client cancelled the call (nobody reads the answer)."""

    code = grpc.StatusCode.CANCELLED


def remaining(context: grpc.ServicerContext) -> float | None:
    """Seconds left before the call's own deadline; None when it has none."""
    left: float | None = context.time_remaining()
    if left is None or left > NO_DEADLINE_SECONDS:
        return None
    return max(0.0, float(left))


class CallStop:
    """Says when a call's work must stop: ``stop()`` is True once the call has ended or its
    deadline (its own, else ``default_deadline`` seconds from now) has passed."""

    def __init__(self, context: grpc.ServicerContext, default_deadline: float | None) -> None:
        self.ended = threading.Event()
        self._wake: list[Callable[[], object]] = []
        self._lock = threading.Lock()
        own = remaining(context)
        self.imposed = own is None and default_deadline is not None
        left = own if own is not None else default_deadline
        self.deadline = None if left is None else time.monotonic() + left
        if not context.add_callback(self._end):  # the call has already ended
            self._end()

    def _end(self) -> None:
        self.ended.set()
        with self._lock:
            wake, self._wake = self._wake, []
        for callback in wake:
            callback()

    def on_end(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` when the call ends (now, if it has)."""
        with self._lock:
            if not self.ended.is_set():
                self._wake.append(callback)
                return
        callback()

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def wall_deadline(self) -> float | None:
        """The deadline on the wall clock (``time.time()``), as ProtoSolve takes it."""
        left = self.remaining()
        return None if left is None else time.time() + left

    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def __call__(self) -> bool:
        return self.ended.is_set() or self.timed_out()


current_call: ContextVar[CallStop | None] = ContextVar("xmargin_call", default=None)
"""The call whose work runs in this solver thread (its deadline bounds the solver's)."""


def run_in_pool(
    pool: Any, context: grpc.ServicerContext, work: Callable[[], T], default_deadline: float | None
) -> T:
    """Run ``work`` in ``pool`` (a :class:`~.solver_pool.SolverPool`, as the calling client's
    work; RESOURCE_EXHAUSTED when it is full) until it finishes, the call ends or its deadline
    passes, whichever comes first."""
    call = CallStop(context, default_deadline)

    def guarded() -> T:
        if call():  # the caller left while this waited in the queue: never start
            raise SolveCancelled("the call ended before its work started")
        token = current_call.set(call)
        try:
            with stop_when(call):
                return work()
        finally:
            current_call.reset(token)

    future: Future[T] = pool.submit(guarded, client=client_identity(context))
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    call.on_end(done.set)
    call.on_end(future.cancel)  # still queued: it never starts, its slot is free at once
    done.wait(call.remaining())
    if future.done() and not future.cancelled():
        try:
            return future.result()
        except SolveCancelled:
            pass  # stopped by the call's end or deadline: reported below
    future.cancel()
    timed_out = call.timed_out()
    call.ended.set()  # stop the work, if it still runs (the hook reads this)
    if timed_out or context.is_active():
        raise DeadlineError("deadline exceeded while solving")
    raise CallCancelledError("the call was cancelled")
