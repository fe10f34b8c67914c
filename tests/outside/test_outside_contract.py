"""The outside evaluator (contract.py, written from margin-model.md alone) against the command
line on random cases (random_cases.py): `xmargin margin` and `xmargin optimise` (whole lots and
--continuous) figures within 1e-9, answers allowed, no allowed allocation (brute force on small
whole-lot books, random moves otherwise) below a claimed OPTIMUM by 1e-6. Current XM
quantities off the lot grid, and transfers of fractional lots, are left out here (see
bench/results/2026-12-02-outside-s27.md); the sweep, ``python -m tests.outside.sweep``, has
them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.outside import contract
from tests.outside.sweep import check_case

SEEDS = range(5000, 5040)


@pytest.mark.parametrize("first", list(SEEDS)[::10])
def test_reported_figures_and_claimed_optima_hold_outside(first: int, tmp_path: Path) -> None:
    defects: list[str] = []
    for seed in range(first, first + 10):
        bad, _ = check_case(seed, 15, tmp_path, off_lots=False, transfers=False)
        defects += bad
    assert not defects, "\n".join(defects)


def test_the_outside_evaluator_on_the_1e9_rule() -> None:
    """(1 - 0.99) x 100 is 1.0000000000000009 in floats: one whole scenario, not a fraction
    of a second; 0.025 x 200 likewise five."""
    losses = np.arange(100.0)
    assert contract.tail_count(0.99, 100) == 1.0
    assert contract.expected_shortfall(losses, 0.99) == 99.0
    assert contract.value_at_risk(losses, 0.99) == 98.0
    assert contract.tail_count(0.975, 200) == 5.0
