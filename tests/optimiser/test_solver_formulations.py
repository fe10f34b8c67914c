"""The fast path's two formulations (cutting planes, direct Rockafellar-Uryasev LP) and the cvxpy
reference agree, on the public cases and on books given as P&L vectors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import highspy
import numpy as np
import pytest

from tests.conftest import CASE_FILES
from xmargin.bench.books import with_pnl_vectors
from xmargin.optimiser import SolveOptions, Status, build_problem, load_case
from xmargin.optimiser.problem import Problem
from xmargin.optimiser.sample import generate_book
from xmargin.optimiser.solvers.base import Backend, column_abs_max
from xmargin.optimiser.solvers.cvxpy_backend import CvxpyBackend
from xmargin.optimiser.solvers.highs_backend import (
    MODEL_STATUS,
    HighsBackend,
    _CuttingPlaneModel,
    set_option,
)

AGREEMENT = 1e-6


def _agree(a: float, b: float) -> bool:
    return abs(a - b) <= AGREEMENT * max(abs(a), abs(b), 1.0)


def _objectives(problem: Problem, reduction: bool = True) -> dict[str, float]:
    solvers: dict[str, Backend] = {
        "cuts": HighsBackend("cuts"),
        "ru": HighsBackend("ru"),
        "cvxpy": CvxpyBackend(),
    }
    objectives = {}
    for name, backend in solvers.items():
        raw = backend.solve(problem, reduction=reduction)
        assert raw.status is Status.OPTIMAL, (name, raw.message)
        objectives[name] = raw.objective
    return objectives


@pytest.mark.parametrize("case_path", CASE_FILES, ids=lambda p: p.stem)
def test_formulations_agree_on_cases(case_path: Path) -> None:
    book = load_case(case_path)
    continuous = build_problem(book, options=dataclasses.replace(book.options, integral=False))
    for reduction in (True, False):
        objectives = _objectives(continuous, reduction)
        assert _agree(objectives["cuts"], objectives["ru"]), objectives
        assert _agree(objectives["cuts"], objectives["cvxpy"]), objectives


@pytest.mark.parametrize(("share", "noise"), [(1.0, 0.0), (1.0, 0.3), (0.5, 0.3), (0.1, 0.3)])
def test_formulations_agree_on_pnl_vector_books(share: float, noise: float) -> None:
    book = with_pnl_vectors(generate_book(40, 500, 7), share, seed=3, noise=noise)
    problem = build_problem(book, options=SolveOptions(integral=False))
    assert problem.pnl_columns.size > 0
    objectives = _objectives(problem)
    assert _agree(objectives["cuts"], objectives["ru"]), objectives
    assert _agree(objectives["cuts"], objectives["cvxpy"]), objectives


def test_formulation_choice() -> None:
    """ "auto" never writes the RU LP, not even on a whole-lot book of P&L vectors (measured:
    Kelley's cuts do better there, FORMULATIONS); a linear program gets the active set, a MIP
    Kelley's cuts; "ru" only when asked for."""
    book = with_pnl_vectors(generate_book(40, 500, 7), 1.0, seed=3)
    for integral in (False, True):
        problem = build_problem(book, options=SolveOptions(integral=integral))
        assert problem.pnl_columns.size == problem.n_positions
        auto = _CuttingPlaneModel(problem)
        assert not auto.ru and auto.active_set is not integral
        assert not _CuttingPlaneModel(problem, formulation="cuts").ru
        assert _CuttingPlaneModel(problem, formulation="ru").ru
    with pytest.raises(ValueError):
        HighsBackend("simplex")


def test_highs_runs_after_cvxpy_in_one_process() -> None:
    """HiGHS's thread scheduler is global to the process: the fast path must still run after
    a cvxpy solve (it once failed with "Not Set" there, and optimise fell back to cvxpy)."""
    script = (
        "from xmargin.optimiser import SolveOptions, build_problem\n"
        "from xmargin.optimiser.sample import generate_book\n"
        "from xmargin.optimiser.solvers.cvxpy_backend import CvxpyBackend\n"
        "from xmargin.optimiser.solvers.highs_backend import HighsBackend\n"
        "p = build_problem(generate_book(12, 250, 1), options=SolveOptions(integral=False))\n"
        "print(CvxpyBackend().solve(p, time_limit=60.0).status.value)\n"
        "print(HighsBackend().solve(p, time_limit=60.0).status.value)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert run.stdout.split() == [Status.OPTIMAL.value, Status.OPTIMAL.value], run.stderr


def test_every_highs_model_status_is_mapped() -> None:
    assert set(highspy.HighsModelStatus.__members__.values()) == set(MODEL_STATUS)
    assert MODEL_STATUS[highspy.HighsModelStatus.kOptimal] is Status.OPTIMAL


def test_a_refused_highs_option_raises() -> None:
    highs = highspy.Highs()
    set_option(highs, "output_flag", False)
    with pytest.raises(RuntimeError, match="no_such_option"):
        set_option(highs, "no_such_option", 1)
    with pytest.raises(RuntimeError, match="mip_rel_gap"):
        set_option(highs, "mip_rel_gap", -1.0)


@pytest.mark.parametrize("rows", [1, 15, 16, 17, 33, 2520])
@pytest.mark.parametrize("width", [1, 10, 22])
def test_column_abs_max_is_numpys(rows: int, width: int) -> None:
    """The blocked column reduction of problem_scale gives np.abs(m).max(axis=0) exactly, the
    largest magnitude anywhere in its column (a row past the last whole block included)."""
    rng = np.random.default_rng(rows * 100 + width)
    matrix = rng.standard_normal((rows, width))
    matrix[-1, 0] = -1e6  # the largest magnitude of column 0, in the last row, negative
    expected = np.abs(matrix).max(axis=0)
    assert column_abs_max(matrix)[0] == 1e6
    np.testing.assert_array_equal(column_abs_max(matrix), expected)
