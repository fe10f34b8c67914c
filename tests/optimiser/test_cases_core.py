"""The worked cases of ../shared/cases: eligibility, baseline and current figures.

Every ``*.json`` in the cases folder is picked up by the ``case_path`` fixture, so a new case
file is tested with no code change. Expected figures are read from the case files only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import close
from xmargin.optimiser import (
    CaseValidationError,
    book_to_dict,
    build_problem,
    evaluate,
    evaluate_eligibility,
    load_case,
    parse_case,
)
from xmargin.optimiser.problem import Problem

STATES = ("baseline", "current")


def _expected(case_data: dict[str, Any]) -> dict[str, Any]:
    expected = case_data.get("expected")
    if expected is None:
        pytest.skip("plain input: the case has no expected block")
    assert isinstance(expected, dict)
    return expected


def _allocation(problem: Problem, state: str) -> np.ndarray:
    if state == "baseline":
        return np.zeros(problem.n_positions)
    return problem.current_xm


def _mismatches(got: dict[str, float | bool], expected: dict[str, Any]) -> list[str]:
    """Every expected figure compared: numbers to the cases' tolerance, booleans exactly."""
    problems = []
    for key, want in expected.items():
        if key not in got:
            problems.append(f"{key}: expected {want!r} but the evaluator has no such figure")
            continue
        have = got[key]
        if isinstance(want, bool):
            if not isinstance(have, bool) or have is not want:
                problems.append(f"{key}: got {have!r}, expected {want!r}")
        elif isinstance(want, int | float):
            if isinstance(have, bool) or not close(float(have), float(want)):
                problems.append(f"{key}: got {have!r}, expected {want!r}")
        else:
            problems.append(f"{key}: unsupported expected value {want!r}")
    return problems


def test_case_loads(case_path: Path) -> None:
    book = load_case(case_path)
    assert book.positions, "a worked case holds positions"
    assert book.scenarios.shocks.shape == (book.scenarios.size, len(book.factors))


def test_eligible_matches_expected(case_path: Path, case_data: dict[str, Any]) -> None:
    expected = _expected(case_data)
    assert "eligible" in expected, "every worked case states its eligibility"
    book = load_case(case_path)
    got = {
        position.instrument: result.eligible
        for position, result in zip(book.positions, evaluate_eligibility(book), strict=True)
    }
    assert got == expected["eligible"]
    # the problem built from the book carries the same answer
    problem = build_problem(book)
    assert dict(zip(problem.position_ids, problem.eligible.tolist(), strict=True)) == got


def test_ineligible_positions_give_reasons(case_path: Path) -> None:
    book = load_case(case_path)
    for position, result in zip(book.positions, evaluate_eligibility(book), strict=True):
        assert result.eligible == (not result.reasons), position.instrument


@pytest.mark.parametrize("state", STATES)
def test_figures_match_expected(case_path: Path, case_data: dict[str, Any], state: str) -> None:
    expected = _expected(case_data)
    if state not in expected:
        pytest.skip(f"the case states no {state} figures")
    assert expected[state], f"the {state} block is empty"
    problem = build_problem(load_case(case_path))
    summary = evaluate(problem, _allocation(problem, state)).summary()
    mismatches = _mismatches(summary, expected[state])
    assert not mismatches, f"{case_path.name} {state}:\n" + "\n".join(mismatches)


def test_baseline_has_empty_xm_account(case_path: Path) -> None:
    problem = build_problem(load_case(case_path))
    summary = evaluate(problem, np.zeros(problem.n_positions)).summary()
    for key in ("xm", "S_F", "S_C", "C_F", "C_C", "r"):
        assert summary[key] == 0.0, key
    assert summary["cap_binding"] is False
    assert close(float(summary["total"]), summary["ficc_standalone"] + summary["cme_standalone"])


@pytest.mark.parametrize("state", STATES)
def test_parts_add_up(case_path: Path, state: str) -> None:
    problem = build_problem(load_case(case_path))
    state_ = evaluate(problem, _allocation(problem, state))
    summary = state_.summary()
    assert close(
        float(summary["total"]),
        float(summary["ficc_standalone"]) + float(summary["cme_standalone"]) + float(summary["xm"]),
    )
    assert close(
        float(summary["ficc_collects"]) + float(summary["cme_collects"]), float(summary["total"])
    )


def test_round_trip_keeps_figures(case_path: Path) -> None:
    """book_to_dict then parse_case rebuilds a book with the same figures."""
    book = load_case(case_path)
    again = parse_case(book_to_dict(book))
    for state in STATES:
        first = build_problem(book)
        second = build_problem(again)
        one = evaluate(first, _allocation(first, state)).summary()
        two = evaluate(second, _allocation(second, state)).summary()
        assert one == two, state


def test_expected_block_is_not_case_input(case_data: dict[str, Any]) -> None:
    """The loader ignores ``expected`` but still validates everything else."""
    data = dict(case_data)
    data.pop("expected", None)
    parse_case(data)
    data["positions"] = []
    data.pop("business_date")
    with pytest.raises(CaseValidationError) as raised:
        parse_case(data)
    assert raised.value.field == "business_date"
