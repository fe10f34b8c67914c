"""``xmargin bench --quick``: the harness runs end to end and records what it promises.

Figures are never asserted here (the benchmark is not a timed test); only the structure of the
results and that the optimum is never worse than a simple policy.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xmargin.bench import books, main
from xmargin.bench.policies import dv01_matching, simple_policies
from xmargin.bench.report import TARGETS
from xmargin.bench.runner import Plan
from xmargin.optimiser import build_problem
from xmargin.optimiser.cli import main as cli_main

POLICIES = {"all_standalone", "all_eligible_in_xm", "dv01_matching"}
PHASES = {"wall", "problem", "build", "solve", "report", "lp", "evaluation"}
SUMMARY = {"median", "p25", "p75", "min", "max", "n"}
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    code = cli_main(["-q", "bench", "--quick", "--out", str(out)])
    return code, out, json.loads((out / "results.json").read_text())


def _solve_configs(results: dict[str, Any]) -> list[dict[str, Any]]:
    reference = [
        c for kind in ("continuous", "integral") for c in results["reference"][kind].values()
    ]
    return reference + results["sweep"]


@pytest.mark.slow
def test_quick_run_writes_results(quick_run: tuple[int, Path, dict[str, Any]]) -> None:
    code, out, results = quick_run
    assert code == 0
    assert results["mode"] == "quick"
    assert "Headline against the targets" in (out / "results.md").read_text()
    if importlib.util.find_spec("matplotlib") is not None:
        assert results["plot"] == "time-vs-size.png"
        assert (out / "time-vs-size.png").stat().st_size > 0
    env = results["environment"]
    for package in ("numpy", "highspy", "cvxpy", "grpcio"):
        assert env["versions"][package]
    assert env["python"] and env["cpu_model"] and env["cores"] >= 1 and env["date"]


@pytest.mark.slow
def test_reference_by_both_paths(quick_run: tuple[int, Path, dict[str, Any]]) -> None:
    reference = quick_run[2]["reference"]
    assert set(reference["continuous"]) == set(reference["integral"]) == {"highs", "cvxpy"}
    for backend in ("highs", "cvxpy"):
        config = reference["continuous"][backend]
        assert config["status"] == "ok", config
        assert set(config["timing"]) == PHASES
        assert all(set(summary) == SUMMARY for summary in config["timing"].values())
        assert config["memory"]["peak_rss_mib"] > 0
    for config in reference["integral"].values():
        # Integral solves may hit their time limit; that is recorded, not hidden.
        assert config["status"] in ("ok", "timed_out", "killed"), config


@pytest.mark.slow
def test_optimum_never_worse_than_a_simple_policy(
    quick_run: tuple[int, Path, dict[str, Any]],
) -> None:
    checked = 0
    for config in _solve_configs(quick_run[2]):
        if config["status"] != "ok" or "policies" not in config:
            continue
        assert POLICIES <= set(config["policies"])
        for name, policy in config["policies"].items():
            slack = TOLERANCE * max(1.0, abs(policy["total"]))
            assert config["optimum"] <= policy["total"] + slack, (name, config["spec"])
        checked += 1
    assert checked >= 2


@pytest.mark.slow
def test_sweep_batch_grpc_and_headline(quick_run: tuple[int, Path, dict[str, Any]]) -> None:
    results = quick_run[2]
    assert results["sweep"]
    for config in results["sweep"]:
        assert {"positions", "scenarios", "backend", "kind", "status"} <= set(config)
    assert all(item["reason"] for item in results["skipped"])
    batch = results["batch"]
    assert batch["status"] == "ok" and batch["total_seconds"] > 0
    assert batch["accounts_per_second"] > 0 and batch["workers"] == 2
    grpc = results["grpc"]
    assert grpc["status"] == "ok", grpc
    assert grpc["calls"] >= 1 and 0 < grpc["p50"] <= grpc["p99"]
    assert grpc["optimum"] == pytest.approx(results["reference"]["continuous"]["highs"]["optimum"])
    assert [row["id"] for row in results["headline"]] == [t.id for t in TARGETS]
    assert all(row["met"] is None for row in results["headline"])  # quick sizes: no verdicts


def test_big_books_are_composed_of_generator_sized_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(books, "GENERATOR_CHUNK", 20)
    book = books.make_book(50, 250, seed=3)
    ids = [p.instrument for p in book.positions]
    assert len(ids) == len(set(ids)) == 50
    assert set(ids) == set(book.instruments)
    assert all(book.instruments[i].id == i for i in ids)


def test_dv01_matching_moves_only_movable_positions() -> None:
    problem = build_problem(books.make_book(40, 250, seed=5))
    allocation = dv01_matching(problem)
    fixed = ~problem.movable
    assert np.array_equal(allocation[fixed], problem.current_xm[fixed])
    moved = problem.movable & (allocation != 0)
    assert np.array_equal(allocation[moved], problem.quantity[moved])
    assert moved.any() and (moved & problem.is_ficc).any() and (moved & ~problem.is_ficc).any()
    assert POLICIES <= set(simple_policies(problem))


def test_bad_repeats_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err


@pytest.mark.slow
def test_pnl_vector_sweep(quick_run: tuple[int, Path, dict[str, Any]]) -> None:
    runs = quick_run[2]["pnl_vectors"]
    shares = {run["pnl_share"] for run in runs}
    assert shares == set(Plan.quick().pnl_shares)
    for share in shares:
        totals = [run["optimum"] for run in runs if run["pnl_share"] == share]
        assert {run["status"] for run in runs if run["pnl_share"] == share} == {"ok"}
        assert abs(totals[0] - totals[1]) <= 1e-6 * max(1.0, abs(totals[0]))
    assert "## Books given as P&L vectors" in (quick_run[1] / "results.md").read_text()
