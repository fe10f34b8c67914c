"""The integral-tail benchmark's summary: quantiles of the time ratio, books at the budget."""

from __future__ import annotations

import pytest

from xmargin.bench.integral_tail import _markdown, summary


def test_summary_reports_the_ratio_distribution_and_the_slowest_books() -> None:
    rows = [
        {"seed": s, "positions": 30, "scenarios": 500, "ratio": r, "status": status}
        for s, r, status in [(1, 1.0, "OPTIMAL"), (2, 3.0, "OPTIMAL"), (3, 9.0, "TIME_LIMIT")]
    ]
    result = summary(rows)
    assert result["books"] == 3 and result["at_budget"] == 1
    assert result["ratio"]["p50"] == pytest.approx(3.0)
    assert result["ratio"]["max"] == pytest.approx(9.0)
    assert [r["seed"] for r in result["slowest"]] == [3, 2, 1]
    assert result["by_positions"] == {
        "30": {"books": 3, "p50": pytest.approx(3.0), "max": pytest.approx(9.0), "at_budget": 1}
    }
    markdown = _markdown({"summary": result})
    assert "| 3 | 30 | 500 | 9.0 | TIME_LIMIT |" in markdown
    assert "| 30 | 3 | 3.0 | 9.0 | 1 |" in markdown


def test_a_book_stopped_unproven_is_counted_apart_from_the_budget() -> None:
    rows = [
        {"seed": 1, "positions": 30, "scenarios": 500, "ratio": 9.0, "status": "TIME_LIMIT",
         "message": "whole-lot search stopped at its default budget (5.1 s)"},
        {"seed": 2, "positions": 30, "scenarios": 500, "ratio": 4.0, "status": "TIME_LIMIT",
         "message": "stopped unproven: HiGHS's MIP answered above the incumbent it was given"},
    ]  # fmt: skip
    result = summary(rows)
    assert result["at_budget"] == 1 and result["unproven"] == 1
    assert "1 stopped unproven" in _markdown({"summary": result})
