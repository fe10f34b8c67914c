"""Executable answers: whole lots by default, the whole-lot allowed set, transfer files that
refuse fractional lots, answers never worse than the current allocation, robust backends and
the exact-VaR improvement phase (issue 12)."""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import CASE_FILES
from tests.optimiser.books import random_book
from xmargin.optimiser import (
    AnswerSource,
    Book,
    Ccp,
    Measure,
    OptimisationResult,
    Position,
    SolveOptions,
    Status,
    build_problem,
    cli,
    evaluate,
    load_case,
    optimise,
)
from xmargin.optimiser.case_format import book_to_dict, parse_case
from xmargin.optimiser.cli import common as cli_common
from xmargin.optimiser.reports import (
    FractionalLotsError,
    bookable_transfers,
    rounding_warnings,
    transfers_csv,
    transfers_fixml,
)
from xmargin.optimiser.results import all_eligible_allocation, transfers_between
from xmargin.optimiser.sample import generate_book
from xmargin.optimiser.solvers import highs_backend
from xmargin.optimiser.solvers.base import Capabilities, RawSolution, lot_grid, on_allowed_set
from xmargin.optimiser.solvers.local_search import allowed_candidates, exact_objective

optimise_module = importlib.import_module("xmargin.optimiser.optimise")
BACKENDS = ("highs", "cvxpy")
WHOLE_LOTS = SolveOptions()


def _whole_lots(book: Book, **changes: object) -> SolveOptions:
    return dataclasses.replace(book.options, integral=True, **changes)


def _var_book(book: Book) -> Book:
    """The same book with FICC's model measuring VaR."""
    models = {
        ccp: dataclasses.replace(model, measure=Measure.VAR) if ccp is Ccp.FICC else model
        for ccp, model in book.models.items()
    }
    return dataclasses.replace(book, models=models)


def _large_lots(book: Book, seed: int) -> Book:
    """Lots large relative to the positions, so that most holdings are off the lot grid."""
    rng = np.random.default_rng(seed)
    positions = tuple(
        dataclasses.replace(
            p,
            lot=float(abs(p.quantity) / rng.uniform(0.6, 3.4)) if p.quantity else p.lot,
            xm_quantity=0.0,
        )
        for p in book.positions
    )
    return dataclasses.replace(book, positions=positions)


def assert_bookable(result: OptimisationResult) -> None:
    """Every XM quantity is allowed and every transfer is whole lots or a whole holding."""
    problem = result.problem
    assert not result.relaxation
    if result.stats.source is not AnswerSource.CURRENT:
        assert on_allowed_set(problem, result.allocation).all()
    assert bookable_transfers(result) == result.transfers  # nothing refused, nothing rounded


def _perturbations(
    result: OptimisationResult, rng: np.random.Generator, count: int
) -> list[np.ndarray]:
    """Random moves of the answer on the allowed set: one or two positions at a time, to
    allowed quantities (lot multiples or the whole holding; anywhere in [0, q] when continuous)."""
    problem = result.problem
    movable = np.flatnonzero(problem.movable)
    moves = []
    for _ in range(count):
        x = result.allocation.copy()
        for i in rng.choice(
            movable, size=min(len(movable), int(rng.integers(1, 3))), replace=False
        ):
            q = problem.quantity[i]
            if problem.options.integral:
                grid = lot_grid(problem)
                choices = np.append(np.arange(grid.kmax[i] + 1) * problem.lot[i], abs(q))
                x[i] = np.sign(q) * rng.choice(choices)
            elif rng.uniform() < 0.5:
                x[i] = q * rng.uniform()
            else:
                x[i] = np.clip(x[i] + q * rng.normal(0, 0.01), min(0, q), max(0, q))
        moves.append(x)
    return moves


def assert_no_lower_neighbour(result: OptimisationResult, seed: int, rel: float) -> None:
    problem = result.problem
    best = exact_objective(problem, result.allocation)
    rng = np.random.default_rng(seed)
    for x in _perturbations(result, rng, 60):
        assert exact_objective(problem, x) >= best - rel * abs(best), "a lower neighbour"


# --- whole lots by default ------------------------------------------------------------------


def test_whole_lots_are_the_default_of_the_api_and_the_case_format() -> None:
    assert SolveOptions().integral
    data = book_to_dict(random_book(1))
    del data["options"]["integral"]
    assert parse_case(data).options.integral
    data["options"]["integral"] = False
    assert not parse_case(data).options.integral


@pytest.mark.parametrize("case_path", CASE_FILES, ids=lambda p: p.stem)
def test_default_answer_on_every_case_is_whole_lots(case_path: Path) -> None:
    book = load_case(case_path)
    result = optimise(book, options=_whole_lots(book))
    assert result.status is Status.OPTIMAL
    assert_bookable(result)
    assert result.optimised.total <= result.current.total


@pytest.mark.parametrize("seed", [3, 11])
def test_default_answer_on_generated_books_is_whole_lots(seed: int) -> None:
    result = optimise(generate_book(16, 250, seed), options=WHOLE_LOTS)
    assert_bookable(result)
    assert result.optimised.total <= result.current.total
    assert_no_lower_neighbour(result, seed, rel=1e-6)


def test_continuous_answer_is_labelled_a_relaxation() -> None:
    book = load_case(CASE_FILES[2])
    result = optimise(book, options=dataclasses.replace(book.options, integral=False))
    assert result.relaxation
    data = result.to_dict()
    assert data["relaxation"] is True and data["lots"] == "continuous relaxation"
    whole = optimise(book, options=_whole_lots(book))
    # The relaxation is a lower bound on the whole-lot answer.
    assert result.optimised.total <= whole.optimised.total * (1 + 1e-9)


# --- the allowed set ------------------------------------------------------------------------


def test_allowed_set_is_lot_multiples_or_the_whole_holding() -> None:
    book = random_book(2, n_positions=2)
    positions = (
        Position("NOTE0", 2.5e6, 0.0, lot=1e6),
        Position("FUTURE1", -7.0, 0.0, lot=3.0),
    )
    book = dataclasses.replace(
        book,
        positions=positions,
        instruments={p.instrument: book.instruments[p.instrument] for p in positions},
    )
    problem = build_problem(book, options=WHOLE_LOTS)
    assert list(allowed_candidates(problem, 0, 0.0)) == [0.0, 1e6, 2e6, 2.5e6]
    assert list(allowed_candidates(problem, 1, 0.0)) == [-7.0, -6.0, -3.0, 0.0]
    allowed = [[0.0, 1e6, 2e6, 2.5e6], [0.0, -3.0, -6.0, -7.0]]
    for x in itertools.product(*allowed):
        assert on_allowed_set(problem, np.array(x)).all()
    assert not on_allowed_set(problem, np.array([1.5e6, -7.0]))[0]
    assert not on_allowed_set(problem, np.array([0.0, -5.0]))[1]


@pytest.mark.parametrize("seed", [4, 8])
def test_whole_lot_optimum_matches_enumeration_of_the_allowed_set(seed: int) -> None:
    """On a small book with large lots, both backends find the best allowed allocation, which
    enumeration of the whole allowed set confirms (moving whole holdings off the lot grid)."""
    book = _large_lots(random_book(seed, n_positions=5, n_scenarios=120), seed)
    problem = build_problem(book, options=WHOLE_LOTS)
    movable = np.flatnonzero(problem.movable)
    values = [allowed_candidates(problem, int(i), 0.0) for i in movable]
    best = np.inf
    for combination in itertools.product(*values):
        x = problem.current_xm.copy()
        x[movable] = combination
        best = min(best, evaluate(problem, x).total)
    for backend in BACKENDS:
        result = optimise(problem, backend=backend)
        assert_bookable(result)
        assert result.optimised.total == pytest.approx(best, rel=1e-6)


# --- transfer files -------------------------------------------------------------------------


def test_transfer_files_refuse_a_continuous_answer_unless_asked_to_round() -> None:
    book = load_case(CASE_FILES[2])
    result = optimise(book, options=dataclasses.replace(book.options, integral=False))
    assert any(abs(t.lots - round(t.lots)) > 1e-6 for t in result.transfers)
    with pytest.raises(FractionalLotsError, match="whole lots"):
        transfers_csv(result)
    with pytest.raises(FractionalLotsError):
        transfers_fixml(result)
    assert rounding_warnings(result)
    rounded = bookable_transfers(result, round_lots=True)
    assert rounded and all(t.lots == round(t.lots) for t in rounded)
    assert "," in transfers_csv(result, round_lots=True)
    assert "PosXferInstr" in transfers_fixml(result, round_lots=True)


# --- never worse than current; budgets; provenance -----------------------------------------


def test_a_time_limit_returns_a_total_no_higher_than_current() -> None:
    book = generate_book(30, 500, 1)
    result = optimise(book, options=SolveOptions(time_limit=0.3))
    assert result.optimised.total <= result.current.total
    assert result.status in (Status.TIME_LIMIT, Status.OPTIMAL)
    if result.status is Status.TIME_LIMIT:
        assert result.stats.source in (AnswerSource.BEST_FOUND, AnswerSource.CURRENT)
        assert result.notes


def test_a_time_limit_bounds_a_backend_that_cannot_be_interrupted() -> None:
    """cvxpy's compile is not bounded by the time limit its solver gets (on this book it alone
    runs for seconds): the solve runs in a child process, killed when the budget is spent, and
    the answer is the current allocation, said to be so."""
    import time

    import cvxpy  # noqa: F401  (its import, seconds the first time, is not the point here)

    from xmargin.bench.load import hard_case

    book = parse_case(hard_case(12))
    started = time.perf_counter()
    result = optimise(book, options=SolveOptions(time_limit=1.0, integral=True), backend="cvxpy")
    elapsed = time.perf_counter() - started
    assert result.status is Status.TIME_LIMIT
    assert result.stats.source is AnswerSource.CURRENT
    assert result.optimised.total == pytest.approx(result.current.total, rel=1e-12)
    assert any(
        note.startswith("kept the current allocation: the time limit") for note in result.notes
    )
    assert elapsed < 1.0 + 3.0, f"a 1 s budget took {elapsed:.1f} s"


def test_a_whole_lot_bound_never_lies_above_the_answer() -> None:
    """On this book HiGHS's last MIP finds nothing below the incumbent's objective (the
    cut-off); its dual bound is then +inf or the cut-off, and the answer's bound must still be
    a lower bound of the answer (it was +inf: a gap of 0 read from it)."""
    result = optimise(generate_book(30, 1260, 1154), options=SolveOptions(integral=True))
    stats = result.stats
    assert stats.objective is not None and stats.bound is not None
    assert np.isfinite(stats.bound)
    assert stats.bound <= stats.objective + 1e-9 * abs(stats.objective)


def test_a_mip_answer_above_its_given_incumbent_proves_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When HiGHS answers a MIP with a solution above the incumbent it was given (seen on
    30-position books: "optimal" 3e-6 above an allocation another run found, its bound above
    its own answer) and no unbounded round follows, the solve stops there unproven: the best
    allocation so far, whole lots, its bound below it, the status and a note saying so."""
    monkeypatch.setattr(highs_backend, "_mip_answer_above", lambda info, given: True)
    monkeypatch.setattr(highs_backend, "UNBOUNDED_AFTER_ABOVE", False)
    # A time limit far above the solve's (~1 s): the stop must come from the answer above,
    # not from the default budget, which a loaded machine reached first.
    options = SolveOptions(integral=True, time_limit=60.0)
    result = optimise(generate_book(20, 500, 7), options=options)
    stats = result.stats
    assert result.status is Status.TIME_LIMIT
    assert stats.source is AnswerSource.BEST_FOUND
    assert "stopped unproven" in stats.message
    assert any(note.startswith("not proven optimal") for note in result.notes)
    assert stats.objective is not None and stats.bound is not None
    assert stats.bound < stats.objective
    assert result.optimised.total <= result.current.total
    problem = build_problem(generate_book(20, 500, 7), options=options)
    assert on_allowed_set(problem, result.allocation).all()


def test_a_mip_answer_above_its_given_incumbent_is_followed_by_an_unbounded_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After an answer above the incumbent (simulated: every bounded MIP's answer counts as
    above) the full-range MIP runs on without the objective bound, and its answers are taken
    (an unbounded answer above its MIP start would still stop the solve unproven):
    the solve does not stop unproven, and its whole-lot answer is on the allowed set, no
    higher than the current allocation and no lower than its bound."""
    bounds: list[float] = []
    model_class = highs_backend._CuttingPlaneModel
    run_highs = model_class._run_highs

    def recording(self: Any, integral: bool) -> int:
        if integral:
            bounds.append(float(self.highs.getOptionValue("objective_bound")[1]))
        return run_highs(self, integral)

    monkeypatch.setattr(model_class, "_run_highs", recording)
    # Every bounded MIP's answer counts as above; an unbounded round's is judged as it is.
    judged = highs_backend._mip_answer_above
    monkeypatch.setattr(
        highs_backend,
        "_mip_answer_above",
        lambda info, given: not np.isinf(bounds[-1]) or judged(info, given),
    )
    book = generate_book(20, 500, 7)
    # The unbounded round comes after three bounded MIPs and the solve converges (~1 s here);
    # the limit is far above that, so a loaded machine reaches the round too (at a 5 s limit
    # on a 30 x 1,260 book it did not).
    result = optimise(book, options=SolveOptions(integral=True, time_limit=60.0))
    stats = result.stats
    assert "stopped unproven" not in stats.message
    assert any(np.isinf(bound) for bound in bounds[1:])
    assert stats.objective is not None and stats.bound is not None
    assert stats.bound <= stats.objective + 1e-9 * abs(stats.objective)
    assert result.optimised.total <= result.current.total
    problem = build_problem(book, options=SolveOptions(integral=True))
    assert on_allowed_set(problem, result.allocation).all()


def test_the_current_allocation_is_kept_when_nothing_found_is_lower(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    book = random_book(5, n_positions=6)
    problem = build_problem(book, options=WHOLE_LOTS)
    worse = np.where(problem.movable, problem.quantity, problem.current_xm)

    class Poor:
        name = "highs"
        capabilities = Capabilities(lp=True, mip=True, duals=False, warm_start=False)

        def solve(self, problem: object, time_limit: object = None, reduction: bool = True):
            return RawSolution(Status.TIME_LIMIT, worse.copy(), message="stopped")

    monkeypatch.setitem(optimise_module.BACKENDS, "highs", Poor)
    result = optimise(problem)
    if exact_objective(problem, worse) > result.current.total:
        assert result.stats.source is AnswerSource.CURRENT
        assert np.array_equal(result.allocation, problem.current_xm)
        assert not result.transfers
    assert result.optimised.total <= result.current.total


def test_infeasible_from_a_backend_on_a_feasible_problem_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken:
        name = "highs"
        capabilities = Capabilities(lp=True, mip=True, duals=False, warm_start=False)

        def solve(self, problem: object, time_limit: object = None, reduction: bool = True):
            return RawSolution(Status.INFEASIBLE, None, message="infeasible")

    monkeypatch.setitem(optimise_module.BACKENDS, "highs", Broken)
    result = optimise(random_book(6), options=WHOLE_LOTS)
    assert result.stats.backend == "cvxpy" and result.stats.fallback_from == "highs"
    assert any("highs" in failure and "infeasible" in failure for failure in result.stats.failures)


def test_cvxpy_solves_a_model_whose_stress_weight_is_one() -> None:
    book = generate_book(12, 250, 5)
    cme = book.models[Ccp.CME]
    stress = book.scenarios.ids[-40:-30]
    models = {
        Ccp.FICC: book.models[Ccp.FICC],
        Ccp.CME: dataclasses.replace(cme, stress_ids=stress, stress_weight=1.0),
    }
    book = dataclasses.replace(book, models=models)
    totals = []
    for backend in BACKENDS:
        result = optimise(book, options=SolveOptions(integral=False), backend=backend)
        assert result.status is Status.OPTIMAL and not result.stats.failures
        totals.append(result.optimised.total)
    assert totals[0] == pytest.approx(totals[1], rel=1e-6)


def test_all_eligible_reference_keeps_pins_and_mode() -> None:
    book = random_book(7, n_positions=6)
    positions = list(book.positions)
    positions[0] = dataclasses.replace(positions[0], pinned=True)
    book = dataclasses.replace(book, positions=tuple(positions))
    result = optimise(book, options=WHOLE_LOTS)
    problem = result.problem
    expected = np.where(problem.movable, problem.quantity, problem.current_xm)
    assert np.array_equal(result.all_eligible.xm_quantity, expected)
    assert result.all_eligible.xm_quantity[0] == problem.current_xm[0]
    assert np.array_equal(all_eligible_allocation(problem), expected)
    # An allowed allocation, so never below the optimum (no transfer limit).
    assert result.optimised.total <= result.all_eligible.total * (1 + 1e-9)


# --- optimality by perturbation -------------------------------------------------------------


@pytest.mark.parametrize("integral", [False, True], ids=["continuous", "whole-lots"])
def test_perturbing_the_answer_finds_nothing_lower(integral: bool) -> None:
    book = random_book(12, n_positions=8, n_scenarios=150)
    result = optimise(book, options=SolveOptions(integral=integral))
    assert result.status is Status.OPTIMAL
    assert_no_lower_neighbour(result, 12, rel=1e-6)


def test_var_answer_is_improved_on_the_exact_var_and_locally_optimal() -> None:
    book = _var_book(random_book(13, n_positions=8, n_scenarios=200))
    result = optimise(book, options=WHOLE_LOTS)
    assert result.stand_in_total is not None
    assert result.optimised.total <= result.stand_in_total
    assert result.stats.source in (
        AnswerSource.STAND_IN,
        AnswerSource.LOCAL_SEARCH,
        AnswerSource.CURRENT,
    )
    assert_no_lower_neighbour(result, 13, rel=1e-9)
    assert result.optimised.total <= result.all_eligible.total


# --- command line and wire ------------------------------------------------------------------


def test_cli_labels_a_relaxation_and_refuses_its_transfer_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    case, target = str(CASE_FILES[2]), tmp_path / "transfers.csv"
    code = cli.main(["-q", "optimise", case, "--continuous", "--csv", str(target)])
    assert code == cli.EXIT_BAD_INPUT and "not whole lots" in capsys.readouterr().err
    assert not target.exists()
    argv = ["optimise", case, "--continuous", "--round-lots", "--csv", str(target), "--table"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "CONTINUOUS RELAXATION" in out and "warning:" in err and "rounded" in err
    assert target.exists()
    data = json.loads(CASE_FILES[2].read_text())
    del data["options"]["integral"]
    (tmp_path / "case.json").write_text(json.dumps(data))
    assert cli.main(["-q", "optimise", str(tmp_path / "case.json")]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["relaxation"] is False  # no options.integral: whole lots


def test_tables_print_lots_exactly() -> None:
    table = cli_common.format_table(
        ["lots"], [[cli_common.exact(119.71)], [cli_common.exact(53.638838090542406)]]
    )
    assert "119.71" in table and "53.638838" in table and "120" not in table
    assert str(cli_common.exact(120.0)) == "120"


def test_wire_options_default_to_whole_lots() -> None:
    from xmargin.clients.convert import options_message
    from xmargin.clients.v1 import book_pb2
    from xmargin.server.convert import options_case

    assert options_case(book_pb2.SolveOptions())["integral"] is True
    assert options_case(book_pb2.SolveOptions(integral=True))["integral"] is True
    assert options_case(book_pb2.SolveOptions(continuous=True))["integral"] is False
    assert options_message({}).continuous is False
    assert options_message({"integral": False}).continuous is True


def test_transfer_files_name_an_off_lot_current_quantity_for_a_whole_lot_answer() -> None:
    """A whole-lot answer reached from a current XM quantity off the lot grid needs a fractional
    transfer: the transfer file refuses it and says why (not "the continuous relaxation")."""
    case = json.loads(CASE_FILES[0].read_text())
    case.pop("expected", None)
    bond = case["positions"][0]
    bond["quantity"], bond["xm_quantity"] = 500_500_000, 300_500_000  # 300.5 lots in XM
    case["options"] = {"integral": True}
    result = optimise(parse_case(case))
    problem = result.problem
    allocation = result.allocation.copy()
    allocation[0] = 400_000_000.0  # whole lots, neither account emptied: 99.5 lots to move
    moved = dataclasses.replace(
        result,
        allocation=allocation,
        transfers=transfers_between(problem, problem.current_xm, allocation),
    )
    with pytest.raises(FractionalLotsError, match="current XM quantity is not"):
        transfers_csv(moved)
    assert all(t.lots == round(t.lots) for t in bookable_transfers(moved, round_lots=True))
    assert "off the lot grid" in rounding_warnings(moved)[0]
