"""Stopping a solve from outside: a ``should_stop`` hook the solvers check.

A caller (the gRPC server, when a call is cancelled or its deadline passes) runs ``optimise``
under :func:`stop_when`; the ``highs`` backend checks the hook between cutting-plane rounds
and, during a simplex or MIP solve, from HiGHS's interrupt callbacks, and a backend that cannot
be interrupted (``cvxpy``) is not started once it is set. A stopped solve raises
:class:`SolveCancelled`, a ``BaseException`` (as ``asyncio.CancelledError`` is) so that the code
that catches ``Exception`` (the fallback to the other backend, a batch account's error capture)
lets it through instead of treating it as a failure to recover from.

The hook lives in a context variable: it applies to the thread (or task) that set it, so
concurrent solves in a thread pool each see their own.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from multiprocessing.connection import Connection
from typing import Any, TypeVar

__all__ = [
    "SolveCancelled",
    "call_stoppably",
    "check",
    "current",
    "stop_requested",
    "stop_when",
]

T = TypeVar("T")
POLL_SECONDS = 0.05

StopHook = Callable[[], bool]
_hook: ContextVar[StopHook | None] = ContextVar("xmargin_should_stop", default=None)


class SolveCancelled(BaseException):
    """The caller asked the solve to stop (its call was cancelled or ran out of time)."""


@contextmanager
def stop_when(should_stop: StopHook | None) -> Iterator[None]:
    """Within the block, solves stop (raise :class:`SolveCancelled`) once ``should_stop()``."""
    token = _hook.set(should_stop)
    try:
        yield
    finally:
        _hook.reset(token)


def current() -> StopHook | None:
    """The hook in force here, if any."""
    return _hook.get()


def stop_requested() -> bool:
    hook = _hook.get()
    return hook is not None and bool(hook())


def check() -> None:
    """Raise :class:`SolveCancelled` if the hook in force says stop."""
    if stop_requested():
        raise SolveCancelled("the solve was stopped by its caller")


def _child(connection: Connection) -> None:
    fn, args = connection.recv()
    try:
        result: tuple[bool, Any] = (True, fn(*args))
    except Exception as error:
        result = (False, error)
    connection.send(result)
    connection.close()


def _send(connection: Connection, work: tuple[Callable[..., Any], tuple[Any, ...]]) -> None:
    try:
        connection.send(work)
    except OSError:  # the child was killed before it read its work
        pass


def call_stoppably(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` for work that cannot check the hook itself (a cvxpy solve): in this
    process when no hook is in force, else in a spawned child process that is killed as soon
    as the hook says stop (polled every 50 ms). ``fn``, its arguments and its result must
    pickle; its exceptions are raised here. The work goes to the child from a thread, so that
    a child still importing its modules does not hold up the polling. A daemonic process (a
    Dask worker) may not start children: there the work runs in this process, once the hook
    was asked, and is not stopped."""
    hook = current()
    if hook is None:
        return fn(*args)
    check()
    if multiprocessing.current_process().daemon:
        return fn(*args)
    context = multiprocessing.get_context("spawn")  # no fork of a threaded server
    connection, child_end = context.Pipe(duplex=True)
    process = context.Process(target=_child, args=(child_end,), daemon=True)
    process.start()
    child_end.close()
    sender = threading.Thread(target=_send, args=(connection, (fn, args)), daemon=True)
    sender.start()
    try:
        while not connection.poll(POLL_SECONDS):
            if hook():
                raise SolveCancelled("the solve was stopped by its caller")
            if not process.is_alive() and not connection.poll(0):
                raise RuntimeError(f"the solver process died (exit code {process.exitcode})")
        ok, value = connection.recv()
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        sender.join()
        connection.close()
    if ok:
        return value
    raise value
