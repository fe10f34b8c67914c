"""The public functions of xmargin.optimiser given an argument of the wrong type: a TypeError
naming the argument (each was an AttributeError from inside, or taken: an empty dict as "no
rulebook", "yes" as es_for_var=True)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import CASE_FILES
from xmargin.optimiser import (
    book_to_dict,
    build_problem,
    default_rulebook,
    evaluate,
    evaluate_eligibility,
    load_case,
    optimise,
    parse_case,
)

CASE = next(path for path in CASE_FILES if path.name.startswith("05-"))
BOOK = load_case(CASE)
PROBLEM = build_problem(BOOK)
DATA = json.loads(CASE.read_text())

CALLS: dict[str, tuple[Callable[[], Any], str]] = {
    "optimise(dict)": (lambda: optimise(DATA), "book_or_problem"),
    "optimise options dict": (lambda: optimise(BOOK, options={"integral": False}), "options"),  # type: ignore[arg-type]
    "optimise backend 5": (lambda: optimise(BOOK, backend=5), "backend"),  # type: ignore[arg-type]
    "optimise should_stop True": (lambda: optimise(BOOK, should_stop=True), "should_stop"),  # type: ignore[arg-type]
    "optimise warm_start dict": (lambda: optimise(BOOK, warm_start={"TNZ6": 1.0}), "warm_start"),  # type: ignore[arg-type]
    "build_problem(None)": (lambda: build_problem(None), "book"),  # type: ignore[arg-type]
    "build_problem options dict": (lambda: build_problem(BOOK, options={}), "options"),  # type: ignore[arg-type]
    "build_problem rulebook str": (lambda: build_problem(BOOK, rulebook="x"), "rulebook"),  # type: ignore[arg-type]
    "evaluate_eligibility(None)": (lambda: evaluate_eligibility(None), "book"),  # type: ignore[arg-type]
    "load_case rulebook {}": (lambda: load_case(CASE, rulebook={}), "rulebook"),  # type: ignore[arg-type]
    "parse_case rulebook str": (lambda: parse_case(DATA, "x"), "rulebook"),  # type: ignore[arg-type]
    "default_rulebook str": (lambda: default_rulebook("2026-01-01"), "business_date"),  # type: ignore[arg-type]
    "default_rulebook datetime": (
        lambda: default_rulebook(dt.datetime(2026, 1, 1)),
        "business_date",
    ),
    "book_to_dict(dict)": (lambda: book_to_dict(DATA), "book"),  # type: ignore[arg-type]
    "evaluate(book)": (lambda: evaluate(BOOK, PROBLEM.current_xm), "problem"),  # type: ignore[arg-type]
    "evaluate es_for_var yes": (
        lambda: evaluate(PROBLEM, PROBLEM.current_xm, es_for_var="yes"),  # type: ignore[arg-type]
        "es_for_var",
    ),
}


@pytest.mark.parametrize("call, argument", CALLS.values(), ids=list(CALLS))
def test_a_wrong_type_is_refused_naming_the_argument(
    call: Callable[[], Any], argument: str
) -> None:
    with pytest.raises(TypeError, match=f"^{argument}: must be"):
        call()


@pytest.mark.parametrize(
    "eligibility",
    [PROBLEM.eligibility[:-1], (*PROBLEM.eligibility, PROBLEM.eligibility[0]), ("x",) * 5],
    ids=["one short", "one over", "not Eligibility"],
)
def test_build_problem_refuses_an_eligibility_that_does_not_fit_the_book(
    eligibility: tuple[Any, ...],
) -> None:
    """One Eligibility per position, or a ValueError naming the argument (a wrong length was
    a numpy broadcast error from inside)."""
    with pytest.raises(ValueError, match=r"^eligibility: must hold one Eligibility per position"):
        build_problem(BOOK, eligibility=eligibility)
