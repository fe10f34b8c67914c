"""The explanation (optimiser/explain.py): every split adds up to its figure, and the tail
scenarios it lists are the exact evaluator's."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CASE_FILES
from tests.optimiser.books import random_book
from xmargin.optimiser import Book, Ccp, Measure, build_problem, load_case, optimise
from xmargin.optimiser.cli import main
from xmargin.optimiser.explain import (
    ChangeExplanation,
    Explanation,
    FigureExplanation,
    StateExplanation,
    explain,
    explain_change,
    explain_result,
    explain_state,
)
from xmargin.optimiser.margin import (
    account_losses,
    account_quantities,
    evaluate,
)
from xmargin.optimiser.model import ScenarioSet
from xmargin.optimiser.problem import Problem
from xmargin.optimiser.sample import generate_book

REL = 1e-9


def adds_up(parts: float, whole: float, scale: float) -> bool:
    """``parts`` equals ``whole`` to 1e-9 relative; ``scale`` (the figure's size, at least
    1 USD) stands in for a figure that is 0 because a floor or an empty account set it."""
    return abs(parts - whole) <= REL * max(abs(whole), scale, 1.0)


def _check_figure(problem: Problem, figure: FigureExplanation, state_models: dict) -> None:
    exact = state_models[figure.name]
    window = problem.models[Ccp(figure.ccp)]
    assert figure.margin == exact.margin
    size = abs(figure.risk_part) + abs(figure.stress_part) + figure.addons
    # By position and by factor, each adding up to the margin.
    assert adds_up(float(figure.by_position.sum()) + figure.floor, figure.margin, size)
    assert adds_up(
        float(figure.by_factor.sum()) + figure.unexplained_by_factors + figure.floor,
        figure.margin,
        size,
    )
    assert adds_up(float(figure.addons_by_factor.sum()), exact.addons, size)
    assert figure.floor >= 0.0
    assert figure.floor == 0.0 or figure.margin == 0.0
    # The tail is the evaluator's: the same scenarios, weights and figure.
    if window.model.measure is Measure.ES:
        rows = np.flatnonzero(exact.tail_weights) + window.window.start
        assert sorted(s.row for s in figure.tail) == rows.tolist()
        weights = np.array([s.weight for s in figure.tail])
        assert math.isclose(weights.sum(), 1.0, rel_tol=1e-12)
        losses = np.array([s.loss for s in figure.tail])
        assert adds_up(float(weights @ losses), exact.es, abs(exact.es))
        whole = math.floor(window.n_tail)
        assert len(figure.tail) == (whole + 1 if window.n_tail > whole else whole)
    else:
        (quantile,) = figure.tail
        assert quantile.loss == exact.var
    held = account_quantities(problem, state_models["_xm_quantity"])
    losses = account_losses(problem, held)[1][list(held).index(figure.account)]
    assert np.array_equal(figure.window_losses, losses[window.window])
    assert all(losses[s.row] == s.loss for s in figure.tail)
    assert adds_up(sum(s.contribution for s in figure.tail), figure.risk_part, size)
    # The stress term: the evaluator's worst stress loss, at its weight.
    assert figure.stress == exact.stress
    if figure.stress_scenario is not None:
        assert window.stress_rows.size and figure.stress_scenario.row in window.stress_rows
        assert losses[figure.stress_scenario.row] == exact.stress
        assert adds_up(figure.stress_scenario.contribution, figure.stress_part, size)


def check_state(problem: Problem, state: StateExplanation) -> None:
    exact = evaluate(problem, state.xm_quantity)
    models = {**exact.models, "_xm_quantity": state.xm_quantity}
    for figure in state.figures.values():
        _check_figure(problem, figure, models)
    assert state.total == exact.total
    size = sum(abs(f.margin) for f in state.figures.values())
    assert adds_up(float(state.xm.by_position.sum()) + state.xm.floor, exact.xm.margin, size)
    assert adds_up(
        float(state.xm.by_factor.sum()) + state.xm.unexplained_by_factors + state.xm.floor,
        exact.xm.margin,
        size,
    )
    assert adds_up(float(state.by_position.sum()) + state.floor, exact.total, size)
    assert adds_up(
        float(state.by_factor.sum()) + state.unexplained_by_factors + state.floor,
        exact.total,
        size,
    )
    # The binding term of the XM rule is the one the evaluator's r says.
    terms = state.xm.terms
    combined = sum(c * exact.models[name].margin for name, c in terms.items())
    assert adds_up(combined, exact.xm.margin, size)


def check_credits(problem: Problem, change: ChangeExplanation, after: np.ndarray) -> None:
    """The transfers' credits add up to the saving; sequential ones are exact steps."""
    current = evaluate(problem, problem.current_xm).total
    assert change.before_total == current
    assert change.after_total == evaluate(problem, after).total
    credits = sum(t.saving for t in change.transfers) + change.unassigned
    assert adds_up(credits, change.savings, max(change.before_total, change.after_total) * 1e-3)
    assert [t.order for t in change.transfers] == list(range(len(change.transfers)))
    if change.method == "sequential":
        # Each credit is an exact evaluation step: re-applying the transfers in order telescopes.
        x = problem.current_xm.copy()
        previous = current
        for t in change.transfers[:-1]:
            x[t.position] = after[t.position]
            total = evaluate(problem, x).total
            assert adds_up(previous - total, t.saving, previous)
            previous = total
    else:
        savings = [t.saving for t in change.transfers]
        assert savings == sorted(savings, reverse=True)
    if len(change.transfers) == 1:
        assert adds_up(change.transfers[0].saving, change.savings, change.before_total * 1e-3)


def check_change(problem: Problem, explanation: Explanation) -> None:
    change = explanation.change
    assert change is not None
    after = explanation.states["optimised"].xm_quantity
    check_credits(problem, change, after)
    sequential = explain_change(problem, problem.current_xm, after, method="sequential")
    check_credits(problem, sequential, after)
    for name, tail_change in change.tail_changes.items():
        first = explanation.states["current"].figures[name]
        then = explanation.states["optimised"].figures[name]
        # An empty account has no tail that drives it.
        before = set(first.tail_ids) if first.held else set()
        after_ids = set(then.tail_ids) if then.held else set()
        assert set(tail_change.entered) == after_ids - before
        assert set(tail_change.left) == before - after_ids
        assert set(tail_change.kept) == before & after_ids


def test_explanation_of_every_case_adds_up(case_path: Path) -> None:
    book = load_case(case_path)
    result = optimise(book)
    explanation = explain_result(result)
    for state in explanation.states.values():
        check_state(result.problem, state)
    check_change(result.problem, explanation)
    change = explanation.change
    assert change is not None
    assert adds_up(
        sum(t.saving for t in change.transfers) + change.unassigned,
        result.current.total - result.optimised.total,
        1.0,
    )
    json.dumps(explanation.to_dict(losses=True), allow_nan=False)


def test_explanation_in_whole_lots_adds_up() -> None:
    """Nothing depends on the allocation being integral."""
    result = optimise(random_book(21, n_positions=6, n_scenarios=100, integral=True))
    assert result.problem.options.integral
    explanation = explain_result(result)
    for state in explanation.states.values():
        check_state(result.problem, state)
    check_change(result.problem, explanation)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_explanation_of_random_books_adds_up(seed: int) -> None:
    """Books with options given as P&L vectors, stress scenarios and, here, add-ons with
    thresholds (each add-on shared by the positions that load on its factor)."""
    book = random_book(seed, n_positions=9, n_scenarios=150, n_factors=4)
    rates = np.array([0.5, 0.0, 1.0, 0.25])
    models = {
        ccp: dataclasses.replace(
            model, addon_rate=rates, addon_threshold=np.array([0.0, 0.0, 50.0, 1e9])
        )
        for ccp, model in book.models.items()
    }
    for variant in (book, dataclasses.replace(book, models=models)):
        result = optimise(variant)
        explanation = explain_result(result)
        for state in explanation.states.values():
            check_state(result.problem, state)
            if result.problem.pnl_columns.size and state.cme_standalone.margin > 0:
                assert state.cme_standalone.unexplained_by_factors != 0.0
        check_change(result.problem, explanation)


@pytest.mark.parametrize("seed", [7, 11])
def test_explanation_of_generated_books_adds_up(seed: int) -> None:
    book = generate_book(positions=40, scenarios=500, seed=seed)
    result = optimise(book)
    explanation = explain_result(result)
    for state in explanation.states.values():
        check_state(result.problem, state)
    check_change(result.problem, explanation)


def _tied_book(book: Book, confidence: float) -> tuple[Book, int]:
    """``book`` with its scenario history edited so that several scenarios tie, at the tail's
    boundary, in the current XM account's loss: copies of the boundary scenario's shocks."""
    problem = build_problem(book)
    window = problem.models[Ccp.FICC]
    lookback = window.n_scenarios
    losses = problem.losses(problem.current_xm)[window.window]
    n_tail = (1.0 - confidence) * lookback
    # The last scenario with weight in the ES: L(n_tail), or L(floor + 1) with its fraction.
    boundary = int(np.argsort(-losses, kind="stable")[math.ceil(n_tail - 1e-9) - 1])
    shocks = book.scenarios.shocks.copy()
    start = window.window.start
    copies = [j for j in range(lookback) if j != boundary][:: lookback // 5][:4]
    for j in copies:
        shocks[start + j] = shocks[start + boundary]
    models = {
        ccp: dataclasses.replace(model, confidence=confidence) for ccp, model in book.models.items()
    }
    tied = dataclasses.replace(
        book, scenarios=ScenarioSet(ids=book.scenarios.ids, shocks=shocks), models=models
    )
    return tied, len(copies) + 1


def _case(prefix: str) -> Path:
    (path,) = (path for path in CASE_FILES if path.stem.startswith(prefix))
    return path


@pytest.mark.parametrize("confidence", [0.99, 0.9875])
def test_tail_with_ties_is_the_evaluators(confidence: float) -> None:
    """Case 01 (the note wholly in XM) with copies of its ES boundary scenario: the tie
    straddles the boundary (n_tail whole, and fractional), and the scenarios listed, with
    their weights, are exactly the evaluator's."""
    case_path = _case("01")
    tied, n_tied = _tied_book(load_case(case_path), confidence)
    problem = build_problem(tied)
    state = explain_state(problem, problem.current_xm)
    check_state(problem, state)
    figure = state.xm.figures["C_F"]
    window = problem.models[Ccp.FICC]
    losses = figure.window_losses
    # The tie straddles the boundary: more scenarios share the boundary loss than it has room.
    boundary_loss = min(s.loss for s in figure.tail)
    tied_rows = np.flatnonzero(losses == boundary_loss)
    assert tied_rows.size >= n_tied
    in_tail = [s for s in figure.tail if s.loss == boundary_loss]
    assert 0 < len(in_tail) < tied_rows.size
    exact = evaluate(problem, problem.current_xm).models["C_F"]
    listed = {s.row: s.weight for s in figure.tail}
    expected = {
        int(r) + window.window.start: float(exact.tail_weights[r])
        for r in np.flatnonzero(exact.tail_weights)
    }
    assert listed == expected


def test_current_only_needs_no_solve() -> None:
    book = random_book(5)
    problem = build_problem(book)
    explanation = explain(problem, states=("current",))
    assert list(explanation.states) == ["current"]
    assert explanation.change is None
    check_state(problem, explanation.states["current"])


def test_change_between_any_two_allocations_telescopes() -> None:
    """Not only current -> optimised: any two allocations, fractional ones included."""
    problem = build_problem(random_book(9, n_positions=10))
    rng = np.random.default_rng(0)
    after = np.where(problem.movable, problem.quantity * rng.uniform(0, 1, problem.n_positions), 0)
    for method in ("path", "sequential"):
        change = explain_change(problem, problem.current_xm, after, method=method)
        assert len(change.transfers) >= 2
        check_credits(problem, change, after)
    alone = [t.alone for t in change.transfers]
    assert alone == sorted(alone, reverse=True)  # the sequential order: largest alone first


def test_path_credits_do_not_depend_on_the_positions_order() -> None:
    """The path split has no order: the same book with its positions reversed gives each
    transfer the same credit (to round-off); the sequential one is defined by its order."""
    book = random_book(12, n_positions=10)
    reversed_book = dataclasses.replace(book, positions=book.positions[::-1])
    credits = []
    for variant in (book, reversed_book):
        problem = build_problem(variant)
        rng = np.random.default_rng(1)
        fraction = rng.uniform(0, 1, problem.n_positions)
        if variant is reversed_book:
            fraction = fraction[::-1]
        after = np.where(problem.movable, problem.quantity * fraction, 0.0)
        change = explain_change(problem, problem.current_xm, after)
        credits.append({t.transfer.instrument: t.saving for t in change.transfers})
    assert credits[0].keys() == credits[1].keys() and len(credits[0]) >= 2
    scale = max(abs(v) for v in credits[0].values())
    for name, value in credits[0].items():
        assert abs(value - credits[1][name]) <= 1e-9 * scale


@pytest.mark.parametrize("prefix", ["01", "03"])
def test_cli_explain_table_and_json(prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    case_path = _case(prefix)
    assert main(["-q", "explain", str(case_path)]) == 0
    table = capsys.readouterr().out
    assert "current allocation" in table and "optimised allocation" in table
    assert "Savings by transfer" in table
    assert main(["-q", "explain", str(case_path), "--json", "--state", "current"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["states"]) == ["current"] and data["change"] is None
    xm = data["states"]["current"]["accounts"]["xm"]
    figure = xm["figures"]["C_F"]
    assert sum(figure["by_position"].values()) + figure["parts"]["floor"] == pytest.approx(
        figure["margin"], rel=1e-9, abs=1e-6
    )
    assert main(["-q", "explain", str(case_path), "--account", "C_F"]) == 0
    only = capsys.readouterr().out
    assert "XM, C_F:" in only and "XM, C_C:" not in only and "FICC standalone (" not in only


def test_readme_quotes_the_commands_output(capsys: pytest.CaptureFixture[str]) -> None:
    """Every line of the README's Explain excerpts is a line the command prints.

    Case 03's optimum is an LP vertex where its FICC standalone tail has ties at the boundary, so
    that account's split by position and factor follows float noise in the allocation (the
    margin does not): of case 03 only the headline, XM rule and transfer lines must match."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Explain\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```text\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2

    def lines(block: str, stable_only: bool) -> list[str]:
        kept = [ln.rstrip() for ln in block.splitlines() if ln.strip() and ln.strip() != "..."]
        if stable_only:
            kept = [ln for ln in kept if re.match(r"(==|XM account|#  |\d+  [A-Z])", ln)]
        return kept

    quoted = lines(blocks[0], stable_only=False) + lines(blocks[1], stable_only=True)
    assert len(quoted) > 20
    printed: set[str] = set()
    for prefix, accounts in (("01", ["S_F", "S_C", "C_F"]), ("03", ["ficc_standalone"])):
        assert main(["-q", "explain", str(_case(prefix)), "--account", *accounts]) == 0
        printed |= {line.rstrip() for line in capsys.readouterr().out.splitlines()}
    missing = [line for line in quoted if line not in printed]
    assert not missing, missing
