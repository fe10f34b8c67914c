"""Small batches for the batch and audit tests: accounts sharing one 200-scenario set."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import pytest

from xmargin.optimiser import Book
from xmargin.optimiser.batch import (
    AccountOutcome,
    BatchGroup,
    batch_from_books,
    batch_to_dict,
    parse_batch,
    strip_volatile,
)
from xmargin.optimiser.sample import generate_book, generate_scenarios

SCENARIOS = 200


@functools.cache
def books(count: int, positions: int = 6, integral: bool = False) -> tuple[Book, ...]:
    """``count`` generated accounts (customers CUST-0 ...) on one shared scenario set."""
    scenario_set = generate_scenarios(SCENARIOS, 20261124)
    return tuple(
        generate_book(positions, SCENARIOS, seed, scenario_set=scenario_set, integral=integral)
        for seed in range(count)
    )


def group(count: int, positions: int = 6, integral: bool = False) -> BatchGroup:
    [only] = batch_from_books(books(count, positions, integral))
    return only


def batch_file_data(
    count: int, positions: int = 6, integral: bool = False, bad_lot_at: int | None = None
) -> dict[str, Any]:
    """A batch file's JSON; ``bad_lot_at`` gives that account a negative lot (it must fail)."""
    data = batch_to_dict(group(count, positions, integral))
    if bad_lot_at is not None:
        data["accounts"][bad_lot_at]["positions"][0]["lot"] = -1
    return data


def batch_group(
    count: int, positions: int = 6, integral: bool = False, bad_lot_at: int | None = None
) -> BatchGroup:
    return parse_batch(batch_file_data(count, positions, integral, bad_lot_at))


def by_account(outcomes: Sequence[AccountOutcome]) -> dict[str, Any]:
    """Each account's result without timings (or its error), to compare two runs."""
    out: dict[str, Any] = {}
    for outcome in outcomes:
        assert outcome.account not in out, f"{outcome.account} came back twice"
        out[outcome.account] = (
            strip_volatile(outcome.result) if outcome.result is not None else outcome.error
        )
    return out


def whole_lot_answers(outcomes: Sequence[AccountOutcome]) -> dict[str, Any]:
    """Each account's status and totals, or its error: what two runs of one whole-lot batch
    must agree on. Their allocations may differ where several whole-lot allocations are
    optimal to the MIP gap (1e-6), and the solver's path (rounds, messages) with its time."""
    out: dict[str, Any] = {}
    for outcome in outcomes:
        assert outcome.account not in out, f"{outcome.account} came back twice"
        result = outcome.result
        out[outcome.account] = (
            ("failed", outcome.error)
            if result is None
            else (result["status"], result["current"]["total"], result["optimised"]["total"])
        )
    return out


def assert_same_whole_lot_answers(got: dict[str, Any], expected: dict[str, Any]) -> None:
    """:func:`whole_lot_answers` of two runs agree: the same accounts, statuses and errors,
    current totals to 1e-9 and optimised totals to the MIP gap, 1e-6, relative."""
    assert got.keys() == expected.keys()
    for account, want in expected.items():
        have = got[account]
        if "failed" in (have[0], want[0]):
            assert have == want, account
            continue
        assert have[0] == want[0], account
        assert have[1] == pytest.approx(want[1], rel=1e-9), account
        assert have[2] == pytest.approx(want[2], rel=1e-6), account
