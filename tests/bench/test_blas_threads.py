"""bench.blas_threads: the child's measurement and the report's table (no time asserted)."""

from __future__ import annotations

import pytest

from xmargin.bench import blas_threads


def test_a_child_solves_under_its_setting_and_the_report_lists_each_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("XMARGIN_BLAS_THREADS", raising=False)
    run = blas_threads.measure_child(20, 120, 2)
    assert run["asked_threads"] == 1 and run["total"] > 0
    assert run["wall_ms"] > 0 and run["cpu_ms"] >= 0
    size = {
        "positions": 20,
        "scenarios": 120,
        "runs": {"default": [run], "library": [dict(run, blas_threads=[2])]},
        "ratios": [1.0],
        "ratio_median": 1.0,
        "totals_relative_spread": 0.0,
    }
    data = {
        "started_at": "2026-12-02T00:00:00+00:00",
        "load_average": [0.0, 0.0, 0.0],
        "cpus": 2,
        "repeats": 2,
        "rounds": 1,
        "sizes": [size],
    }
    table = blas_threads.report(data)
    assert "| 20 x 120 |" in table and "(2)" in table and "1.00 (1.00-1.00)" in table
