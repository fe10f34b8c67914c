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
