"""The solver's stop hook (xmargin.optimiser.cancellation), without a server: a HiGHS solve
stops within a second of the hook firing, and the cvxpy backend, which cannot be interrupted,
runs in a child process that is killed."""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest

from tests.conftest import CASE_FILES
from xmargin.bench.load import hard_case
from xmargin.optimiser import build_problem, optimise, parse_case
from xmargin.optimiser.cancellation import SolveCancelled, call_stoppably, stop_when
from xmargin.optimiser.solvers import highs_backend
from xmargin.optimiser.solvers.highs_backend import HighsBackend


def _after(seconds: float) -> tuple[float, object]:
    started = time.monotonic()
    return started, lambda: time.monotonic() - started > seconds


def test_a_highs_solve_stops_within_a_second_of_the_hook() -> None:
    problem = build_problem(parse_case(hard_case(12)))
    started, hook = _after(0.5)
    with pytest.raises(SolveCancelled):
        optimise(problem, should_stop=hook)  # type: ignore[arg-type]
    assert time.monotonic() - started < 1.5


def test_a_long_lp_stops_within_two_seconds_of_the_hook() -> None:
    """One long LP (the direct RU formulation of a continuous book of P&L vectors: over 30
    seconds here) runs its first STOP_CHECK_SECONDS without HiGHS's interrupt callbacks (its
    set-up alone took 1.2 s here before HiGHS looked at its clock) and is then resumed with
    them. The hook's clock starts when the loop first asks it, after the model is built, and
    fires past that set-up, inside the resumed LP."""
    case = hard_case(12)
    case["options"]["integral"] = False
    problem = build_problem(parse_case(case))
    first_asked: list[float] = []

    def hook() -> bool:
        first_asked.append(time.monotonic())
        return time.monotonic() - first_asked[0] > 2.5

    with stop_when(hook), pytest.raises(SolveCancelled):
        HighsBackend("ru").solve(problem, None, True)
    assert time.monotonic() - first_asked[0] < 4.5


def test_an_lp_resumed_after_its_first_slice_gives_the_same_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under a stop hook every LP is cut short at once (a slice of 0 s) and resumed with the
    interrupt callbacks: the same answer as without a hook."""
    case = hard_case(2)
    case["options"]["integral"] = False
    problem = build_problem(parse_case(case))
    plain = optimise(problem)
    resumed: list[object] = []
    callbacks = highs_backend._interrupt_when_stopped
    monkeypatch.setattr(highs_backend, "STOP_CHECK_SECONDS", 0.0)
    monkeypatch.setattr(
        highs_backend,
        "_interrupt_when_stopped",
        lambda highs: resumed.append(highs) or callbacks(highs),
    )
    checked = optimise(problem, should_stop=lambda: False)  # type: ignore[arg-type]
    assert resumed, "no LP was resumed with the interrupt callbacks"
    assert checked.optimised.total == pytest.approx(plain.optimised.total, rel=1e-9)
    assert checked.stats.gap <= 1e-9


def test_a_cvxpy_solve_runs_in_a_child_that_is_killed() -> None:
    pytest.importorskip("cvxpy")  # imported here, so that the clock below times the solve only
    problem = build_problem(parse_case(hard_case(4)))
    started, hook = _after(1.0)
    with pytest.raises(SolveCancelled):
        optimise(problem, backend="cvxpy", should_stop=hook)  # type: ignore[arg-type]
    assert time.monotonic() - started < 2.0
    assert multiprocessing.active_children() == []


def test_without_a_stop_the_child_returns_the_same_answer() -> None:
    book = parse_case(json.loads(CASE_FILES[0].read_text()))
    here = optimise(book, backend="cvxpy")
    there = optimise(book, backend="cvxpy", should_stop=lambda: False)
    assert there.optimised.total == pytest.approx(here.optimised.total, rel=1e-9)


def _fails() -> None:
    raise ValueError("from the child")


def test_a_childs_exception_is_raised_in_the_caller() -> None:
    with stop_when(lambda: False), pytest.raises(ValueError, match="from the child"):
        call_stoppably(_fails)
