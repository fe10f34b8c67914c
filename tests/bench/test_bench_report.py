"""The results document's headline and markdown from a hand-made full run: verdicts follow
the targets, a timed-out solve is reported as such and counts as missed."""

from __future__ import annotations

from typing import Any

import pytest

from xmargin.bench.report import headline, markdown


def _solved(wall: float, optimum: float = 100.0) -> dict[str, Any]:
    timing = {"median": wall, "p25": wall, "p75": wall, "min": wall, "max": wall, "n": 3}
    return {
        "status": "ok",
        "optimum": optimum,
        "backend_used": "highs",
        "timing": {
            phase: dict(timing) for phase in ("wall", "problem", "build", "solve", "report")
        },
        "memory": {"peak_rss_mib": 80.0, "solve_increment_mib": 5.0},
    }


def _results() -> dict[str, Any]:
    timed_out = {
        "status": "timed_out",
        "backend_used": "highs",
        "gap": 1e-3,
        "optimum": 101.0,
        "spec": {"time_limit": 30.0},
        "memory": {"peak_rss_mib": 90.0},
    }
    large = {"positions": 1500, "scenarios": 5000, "backend": "highs", "kind": "continuous"}
    return {
        "mode": "full",
        "started_at": "2026-11-25T08:00:00+00:00",
        "finished_at": "2026-11-25T08:10:00+00:00",
        "duration_seconds": 600.0,
        "load_average_start": [1.0, 1.0, 1.0],
        "load_average_end": [1.0, 1.0, 1.0],
        "environment": {
            "cpu_model": "test CPU",
            "cores": 2,
            "memory_gib": 8.0,
            "python": "3.11",
            "versions": {"numpy": "2"},
            "commit": "abc",
            "uncommitted": [],
        },
        "reference": {
            "positions": 300,
            "scenarios": 2520,
            "factors": 10,
            "models": 2,
            "continuous": {"highs": _solved(0.050), "cvxpy": _solved(3.0)},
            "integral": {"highs": timed_out},
        },
        "sweep": [{**large, **_solved(0.2)}],
        "skipped": [],
        "grpc": {
            "status": "ok",
            "p50": 0.015,
            "p99": 0.2,
            "calls": 100,
            "warmup_calls": 5,
            "command": "xmargin serve --port 1",
            "positions": 300,
            "scenarios": 2520,
            "scenario_set": "registered",
            "request_bytes": 1000,
            "latency": {"min": 0.02, "max": 0.3},
            "server_side": {"median": 0.025},
            "measured": "client.optimise",
        },
    }


def test_headline_verdicts() -> None:
    rows = {row["id"]: row for row in headline(_results())}
    assert rows["reference"]["met"] is False
    assert rows["integral"]["met"] is None and rows["integral"]["value"] is None  # reported
    assert "timed out at 30 s" in rows["integral"]["measured"]
    assert rows["large_time"]["met"] is True and rows["large_memory"]["met"] is True
    assert "60x the fast path" in rows["cvxpy_ratio"]["measured"]
    assert rows["cvxpy_ratio"]["met"] is False  # >= 100x wanted
    assert rows["grpc_p50"]["met"] is True and rows["grpc_p99"]["met"] is False
    assert rows["agreement"]["met"] is True
    assert rows["batch"]["met"] is None and rows["batch"]["measured"] == "not measured"


def test_markdown_says_what_was_missed() -> None:
    text = markdown(_results())
    assert "| same, whole lots | reported (see the integral tail) | timed out at 30 s" in text
    assert "**missed**" in text
    assert "## Sweep" in text and "## gRPC round trip" in text


def test_headline_batch_variants_and_pnl_vectors() -> None:
    results = {
        "mode": "full",
        "batch": {
            "status": "ok",
            "accounts": 1000,
            "positions": 300,
            "scenarios": 2520,
            "workers": 2,
            "headline_variant": "engine",
            "total_seconds": 10.0,
            "accounts_per_second": 100.0,
            "variants": {
                "engine": {"total_seconds": 10.0},
                "engine_audit": {"total_seconds": 16.0},
                "engine_dask": {"total_seconds": 12.0},
            },
        },
        "pnl_vectors": [
            {"pnl_share": share, "backend": backend, **_solved(wall)}
            for share, backend, wall in (
                (0.0, "highs", 0.1),
                (0.0, "cvxpy", 2.0),
                (1.0, "highs", 3.0),
                (1.0, "cvxpy", 2.0),  # slower than cvxpy at 100%
            )
        ],
    }
    rows = {row["id"]: row for row in headline(results)}
    assert rows["batch"]["met"] is True
    assert rows["batch_audit"]["met"] is False and rows["batch_audit"]["value"] == 16.0
    assert rows["batch_dask"]["met"] is True and rows["batch_dask"]["value"] == pytest.approx(1.2)
    assert rows["pnl"]["met"] is False and rows["pnl"]["value"] == pytest.approx(1.5)
    assert "100% P&L vectors" in rows["pnl"]["measured"]
