"""The numeric problem: per-unit scenario P&L from sensitivities or P&L vectors."""

from __future__ import annotations

import numpy as np

from tests.conftest import CASE_FILES
from xmargin.optimiser import build_problem, load_case


def test_unit_pnl_comes_from_sensitivities_or_the_vector_and_gives_the_losses() -> None:
    for path in CASE_FILES:
        book = load_case(path)
        problem = build_problem(book)
        unit_pnl = problem.unit_pnl()
        assert unit_pnl.shape == (book.scenarios.size, problem.n_positions)
        for i, position in enumerate(book.positions):
            instrument = book.instruments[position.instrument]
            if instrument.sensitivities is not None:
                expected = book.scenarios.shocks @ instrument.sensitivities
            else:
                expected = instrument.pnl
            np.testing.assert_allclose(unit_pnl[:, i], expected, rtol=1e-12, atol=1e-9)
        # L[s] = -sum_i y_i p_i[s], whichever way each instrument's risk was given.
        np.testing.assert_allclose(
            problem.losses(problem.quantity),
            -(unit_pnl @ problem.quantity),
            rtol=1e-9,
            atol=1e-6 * np.abs(unit_pnl @ problem.quantity).max(),
        )
