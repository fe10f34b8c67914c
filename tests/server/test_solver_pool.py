"""The solver pool on its own: slots, cancellation of queued work, and fair queueing."""

from __future__ import annotations

import threading

import pytest

from xmargin.server import SolverPool
from xmargin.server.errors import OverloadedError


def test_slots_are_held_until_the_work_ends_and_a_full_pool_refuses() -> None:
    pool = SolverPool(1, 1)
    release = threading.Event()
    try:
        running = pool.submit(release.wait, 30)
        queued = pool.submit(lambda: "queued")
        assert pool.available() == 0
        assert pool.try_submit(lambda: None) is None
        with pytest.raises(OverloadedError):
            pool.hold()
        assert queued.cancel()  # still queued: it never runs, its slot is free at once
        assert pool.available() == 1
        release.set()
        assert running.result(10) is True
        assert pool.wait_idle(5)
        assert pool.available() == 2
    finally:
        release.set()
        pool.shutdown()


def test_a_free_thread_serves_the_waiting_client_before_the_busy_one() -> None:
    """One solver thread busy with client A's work; A queues three more, then B one. B's runs
    next (A has had its turn), then A's in their order: not A, A, A, B as first come first
    served would have it."""
    pool = SolverPool(1, 8)
    order: list[str] = []
    release = threading.Event()

    def work(name: str) -> None:
        order.append(name)

    try:
        blocker = pool.submit(release.wait, 30, client="A")
        futures = [pool.submit(work, f"A{k}", client="A") for k in range(1, 4)]
        futures.append(pool.submit(work, "B1", client="B"))
        release.set()
        for future in [blocker, *futures]:
            future.result(10)
    finally:
        release.set()
        pool.shutdown()
    assert order == ["B1", "A1", "A2", "A3"]


def test_the_client_with_fewer_solves_running_goes_first() -> None:
    """Two threads; A holds one and has work queued, B holds the other and has work queued,
    C has work queued and nothing running: when A's solve ends, C's work goes before A's."""
    pool = SolverPool(2, 8)
    order: list[str] = []
    gates = {name: threading.Event() for name in ("A", "B")}
    try:
        held = [pool.submit(gates[name].wait, 30, client=name) for name in ("A", "B")]
        queued = [
            pool.submit(order.append, "A1", client="A"),
            pool.submit(order.append, "B1", client="B"),
            pool.submit(order.append, "C1", client="C"),
        ]
        gates["A"].set()
        for future in queued:  # all on the thread A freed (B's solve still holds the other)
            future.result(10)
        gates["B"].set()
        held[1].result(10)
    finally:
        for gate in gates.values():
            gate.set()
        pool.shutdown()
    assert order == ["C1", "A1", "B1"]  # first come first served: A1, B1, C1


def test_shutdown_cancels_queued_work() -> None:
    pool = SolverPool(1, 2)
    started, release = threading.Event(), threading.Event()

    def block() -> bool:
        started.set()
        return release.wait(30)

    running = pool.submit(block)
    assert started.wait(10)
    queued = pool.submit(lambda: "never")
    pool.shutdown(wait=False)
    assert queued.cancelled()
    assert pool.try_submit(lambda: None) is None
    release.set()
    assert running.result(10) is True
    assert pool.wait_idle(5)


def test_solver_threads_run_at_the_lower_priority_asked_for() -> None:
    """``nice``: the solver threads' priority is that many steps below the caller's (Linux
    sets it per thread); the thread that made the pool keeps its own."""
    import os

    def priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    mine = priority()
    pool = SolverPool(1, 0, nice=5)
    try:
        assert pool.submit(priority).result(10) == min(19, mine + 5)
    finally:
        pool.shutdown()
    assert priority() == mine
