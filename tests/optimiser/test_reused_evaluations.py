"""evaluations_reused: inside the block an allocation evaluated before is not evaluated again, and
every evaluation still gives the figures of a fresh one (no other allocation's, measure's or
problem's)."""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

import numpy as np
import pytest

from tests.conftest import CASES_DIR, assert_tree_close
from tests.optimiser.books import random_book
from xmargin.optimiser import build_problem, load_case, optimise
from xmargin.optimiser import margin as margin_module
from xmargin.optimiser.margin import REUSED_EVALUATIONS, evaluate, evaluations_reused
from xmargin.optimiser.problem import PositionVector, Problem


def _figures(problem: Problem, x: PositionVector, es_for_var: bool = False) -> dict[str, Any]:
    """Every figure of an evaluation, tail weights included, as a comparable tree."""
    state = evaluate(problem, x, es_for_var)
    models = {
        name: [f.es, f.var, f.stress, f.addons, f.margin, f.tail_weights.tolist()]
        for name, f in state.models.items()
    }
    return {"summary": state.summary(), "models": models}


def _allocations(problem: Problem, seed: int) -> list[PositionVector]:
    """Current, empty XM, all movable in XM and a random allowed mix."""
    rng = np.random.default_rng(seed)
    share = np.where(problem.movable, rng.uniform(0.0, 1.0, problem.n_positions), 0.0)
    return [
        problem.current_xm.copy(),
        np.where(problem.movable, 0.0, problem.current_xm),
        np.where(problem.movable, problem.quantity, problem.current_xm),
        np.where(problem.movable, share * problem.quantity, problem.current_xm),
    ]


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the evaluations actually computed (not handed back from the block)."""
    calls: list[int] = []
    compute = margin_module._account_figures

    def counted(*args: Any) -> Any:
        calls.append(1)
        return compute(*args)

    monkeypatch.setattr(margin_module, "_account_figures", counted)
    return calls


def test_each_allocation_once_and_every_figure_as_fresh(computed: list[int]) -> None:
    problem = build_problem(random_book(3, n_positions=12))
    points = _allocations(problem, 3)
    fresh = [_figures(problem, x) for x in points]
    computed.clear()
    with evaluations_reused():
        for _ in range(2):
            for x, expected in zip(points, fresh, strict=True):
                assert_tree_close(_figures(problem, x), expected)
    assert len(computed) == len(points)  # the second pass computed nothing


def test_an_array_changed_in_place_is_evaluated_again(computed: list[int]) -> None:
    problem = build_problem(random_book(4, n_positions=12))
    x = np.where(problem.movable, problem.quantity, problem.current_xm)
    with evaluations_reused():
        before = _figures(problem, x)
        x[np.flatnonzero(problem.movable)[0]] = 0.0
        after = _figures(problem, x)
    assert len(computed) == 2
    assert after["summary"] != before["summary"]
    assert_tree_close(after, _figures(problem, x.copy()))


def test_the_es_stand_in_of_a_var_model_is_its_own_evaluation() -> None:
    problem = build_problem(load_case(CASES_DIR / "06-ficc-var-measure.json"))
    x = problem.current_xm
    exact, stand_in = _figures(problem, x), _figures(problem, x, es_for_var=True)
    assert exact["summary"]["total"] != pytest.approx(stand_in["summary"]["total"], rel=1e-9)
    with evaluations_reused():
        for _ in range(2):
            assert_tree_close(_figures(problem, x, es_for_var=True), stand_in)
            assert_tree_close(_figures(problem, x), exact)


def test_two_problems_of_the_same_size_keep_their_own_figures() -> None:
    first, second = (build_problem(random_book(seed, n_positions=12)) for seed in (5, 6))
    same_sign = np.sign(first.quantity) == np.sign(second.quantity)
    held = np.sign(first.quantity) * np.minimum(abs(first.quantity), abs(second.quantity))
    x = np.where(first.movable & second.movable & same_sign, held, 0.0)  # allowed in both
    expected = [_figures(first, x), _figures(second, x)]
    assert expected[0]["summary"] != expected[1]["summary"]
    with evaluations_reused():
        for _ in range(2):
            assert_tree_close(_figures(first, x), expected[0])
            assert_tree_close(_figures(second, x), expected[1])


def test_only_the_most_recent_allocations_are_kept(computed: list[int]) -> None:
    problem = build_problem(random_book(7, n_positions=12))
    rng = np.random.default_rng(7)
    points = [
        np.where(problem.movable, rng.uniform(0.0, 1.0) * problem.quantity, problem.current_xm)
        for _ in range(REUSED_EVALUATIONS + 1)
    ]
    with evaluations_reused():
        for x in points:
            evaluate(problem, x)
        evaluate(problem, points[-1])  # kept
        assert len(computed) == len(points)
        evaluate(problem, points[0])  # the oldest was dropped
        assert len(computed) == len(points) + 1
    evaluate(problem, points[-1])  # outside the block nothing is kept
    assert len(computed) == len(points) + 2


def test_optimise_reports_what_its_solver_evaluated(
    computed: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path evaluates the current, empty-XM and all-in-XM allocations and its optimum
    while solving; optimise reports them without computing them again, with the same figures."""
    book = load_case(CASES_DIR / "02-butterfly-2s5s10s.json")
    reused = optimise(book, backend="highs").to_dict()
    with_reuse = len(computed)
    computed.clear()
    optimise_module = importlib.import_module("xmargin.optimiser.optimise")  # not the function
    monkeypatch.setattr(optimise_module, "evaluations_reused", contextlib.nullcontext)
    fresh = optimise(book, backend="highs").to_dict()
    assert with_reuse <= len(computed) - 3
    for result in (reused, fresh):
        result.pop("solver")  # timings
    assert_tree_close(reused, fresh)
