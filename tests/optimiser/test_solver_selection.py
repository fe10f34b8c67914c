"""Backend choice: capabilities consulted before a backend is chosen, one parser of backend
names, and only expected solver errors caught by the fallback chain."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from tests.optimiser.books import random_book
from xmargin.optimiser import CaseValidationError, SolveOptions, SolverError, optimise
from xmargin.optimiser.problem import Problem, build_problem
from xmargin.optimiser.solvers import (
    BACKENDS,
    UnknownBackendError,
    expected_solver_errors,
    parse_backend_name,
)
from xmargin.optimiser.solvers.base import Capabilities, RawSolution, needs_mip
from xmargin.optimiser.solvers.cvxpy_backend import CvxpyBackend
from xmargin.optimiser.solvers.highs_backend import HighsBackend

LP_ONLY = Capabilities(lp=True, mip=False, duals=False, warm_start=False)
CONTINUOUS = SolveOptions(integral=False)
WHOLE_LOTS = SolveOptions(integral=True)


def _problem(options: SolveOptions, seed: int = 6) -> Problem:
    return build_problem(random_book(seed), options=options)


def test_what_makes_a_problem_mixed_integer() -> None:
    assert needs_mip(_problem(CONTINUOUS)) is None
    assert needs_mip(_problem(WHOLE_LOTS)) == "whole lots"
    limited = dataclasses.replace(CONTINUOUS, max_transfers=2)
    assert needs_mip(_problem(limited)) == "a transfer limit"
    assert LP_ONLY.refusal(_problem(CONTINUOUS)) is None
    refusal = LP_ONLY.refusal(_problem(WHOLE_LOTS))
    assert refusal is not None and "mixed-integer" in refusal and "whole lots" in refusal


def test_each_backend_declares_what_it_can_do() -> None:
    assert HighsBackend.capabilities.mip
    assert CvxpyBackend().capabilities.mip  # HiGHS through cvxpy
    assert not CvxpyBackend("CLARABEL").capabilities.mip  # an interior-point conic solver
    assert parse_backend_name("cvxpy:CLARABEL").create().capabilities.lp


def test_a_solver_without_mip_is_skipped_for_whole_lots_and_the_reason_recorded() -> None:
    result = optimise(_problem(WHOLE_LOTS), backend="cvxpy:CLARABEL")
    assert result.stats.backend == "highs"
    assert result.stats.fallback_from == "cvxpy:CLARABEL"
    (failure,) = result.stats.failures
    assert failure.startswith("cvxpy:CLARABEL: skipped")
    assert "mixed-integer" in failure and "whole lots" in failure
    assert any("cvxpy:CLARABEL" in note for note in result.notes)


def test_the_same_solver_is_chosen_for_a_continuous_problem() -> None:
    result = optimise(_problem(CONTINUOUS), backend="cvxpy:CLARABEL")
    assert result.stats.backend == "cvxpy:CLARABEL"
    assert result.stats.fallback_from is None and not result.stats.failures


class _Fake:
    """A backend that raises ``error`` on every solve."""

    name: ClassVar[str] = "highs"
    capabilities: ClassVar[Capabilities] = HighsBackend.capabilities
    error: ClassVar[Exception] = TypeError("a bug")

    def solve(
        self, problem: Problem, time_limit: float | None = None, reduction: bool = True
    ) -> RawSolution:
        raise self.error


def test_a_programming_error_in_a_backend_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "highs", _Fake)
    with pytest.raises(TypeError, match="a bug"):
        optimise(_problem(CONTINUOUS))


@pytest.mark.parametrize("bug", [NotImplementedError("todo"), KeyError("x"), AttributeError("y")])
def test_bugs_that_look_like_runtime_errors_propagate_too(
    monkeypatch: pytest.MonkeyPatch, bug: Exception
) -> None:
    fake = type("Buggy", (_Fake,), {"error": bug})
    monkeypatch.setitem(BACKENDS, "highs", fake)
    with pytest.raises(type(bug)):
        optimise(_problem(CONTINUOUS))


@pytest.mark.parametrize(
    "failure", [SolverError("gave up", "retry"), RuntimeError("HiGHS C++ exception")]
)
def test_an_expected_solver_error_falls_back_and_says_why(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    assert isinstance(failure, expected_solver_errors(parse_backend_name("highs")))
    fake = type("Failing", (_Fake,), {"error": failure})
    monkeypatch.setitem(BACKENDS, "highs", fake)
    result = optimise(_problem(CONTINUOUS))
    assert result.stats.backend == "cvxpy" and result.stats.fallback_from == "highs"
    (recorded,) = result.stats.failures
    assert recorded.startswith(f"highs: {type(failure).__name__}: ")
    assert str(failure) in recorded


def test_cvxpy_solver_errors_are_expected_from_the_cvxpy_backend() -> None:
    import cvxpy

    assert cvxpy.SolverError in expected_solver_errors(parse_backend_name("cvxpy:CLARABEL"))
    assert cvxpy.SolverError not in expected_solver_errors(parse_backend_name("highs"))


def test_no_backend_able_to_solve_a_mip_is_a_solver_error(monkeypatch: pytest.MonkeyPatch) -> None:
    lp_only = type("LpOnly", (_Fake,), {"capabilities": LP_ONLY})
    monkeypatch.setitem(BACKENDS, "highs", lp_only)
    monkeypatch.setitem(BACKENDS, "cvxpy", lp_only)
    with pytest.raises(SolverError, match="skipped, cannot solve mixed-integer"):
        optimise(_problem(WHOLE_LOTS))


def test_an_unknown_backend_is_refused_before_any_solve() -> None:
    with pytest.raises(UnknownBackendError) as refused:
        optimise(_problem(CONTINUOUS), backend="cvxpy:NO_SUCH_SOLVER")
    assert isinstance(refused.value, CaseValidationError)
    assert "CLARABEL" in refused.value.reason  # the installed solvers are listed
    assert parse_backend_name("cvxpy:clarabel").create().capabilities.lp  # any case
