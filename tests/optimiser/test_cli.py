"""The ``xmargin`` command line on the worked cases: outputs, reports, exit codes, delegation.

Expected figures come from the case files' ``expected`` blocks or from the library itself
(the CLI must say what the library computes), never from numbers written here.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import CASE_FILES, close
from xmargin.optimiser import (
    Book,
    InfeasibleError,
    Measure,
    OptimisationResult,
    SolverError,
    build_problem,
    cli,
    evaluate,
    load_case,
    optimise,
)
from xmargin.optimiser.cli import common as cli_common
from xmargin.optimiser.cli import solve as cli_solve
from xmargin.optimiser.results import all_eligible_allocation

STATE_KEYS = {"total", "ficc_standalone", "cme_standalone", "xm", "S_F", "S_C", "C_F", "C_C", "r"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = run(capsys, *argv)
    assert code == cli.EXIT_OK, err
    data = json.loads(out)
    assert isinstance(data, dict)
    return data


def _expected(case_data: dict[str, Any]) -> dict[str, Any]:
    if "expected" not in case_data:
        pytest.skip("plain input: no expected block")
    return case_data["expected"]


def _assert_figures(got: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, want in expected.items():
        if isinstance(want, bool):
            assert got[key] is want, key
        else:
            assert close(float(got[key]), float(want)), (key, got[key], want)


# --- margin, eligibility, optimise on every case ---------------------------------------------


def test_margin_reports_the_cases_expected_figures(
    capsys: pytest.CaptureFixture[str], case_path: Path, case_data: dict[str, Any]
) -> None:
    expected = _expected(case_data)
    report = run_json(capsys, "margin", str(case_path))
    assert set(report) >= {"eligible", "baseline", "current", "all_eligible_in_xm"}
    assert report["eligible"] == expected["eligible"]
    for state in ("baseline", "current"):
        assert STATE_KEYS <= set(report[state])
        _assert_figures(report[state], expected[state])
    # all eligible in XM is the evaluator's figure for that allocation
    problem = build_problem(load_case(case_path))
    all_in = evaluate(problem, all_eligible_allocation(problem))
    assert report["all_eligible_in_xm"]["total"] == pytest.approx(all_in.total, rel=1e-12)


def test_margin_table_shows_every_state(
    capsys: pytest.CaptureFixture[str], case_path: Path
) -> None:
    code, out, _ = run(capsys, "margin", str(case_path), "--table")
    assert code == 0
    total_line = next(line for line in out.splitlines() if line.startswith("total margin"))
    problem = build_problem(load_case(case_path))
    baseline = evaluate(problem, np.zeros(problem.n_positions)).total
    assert f"{round(baseline):,d}" in total_line
    header = next(line for line in out.splitlines() if line.startswith("USD"))
    for state in ("baseline", "current", "all eligible in XM"):
        assert state in header


def test_eligibility_lists_each_position_with_reasons(
    capsys: pytest.CaptureFixture[str], case_path: Path, case_data: dict[str, Any]
) -> None:
    expected = _expected(case_data)["eligible"]
    report = run_json(capsys, "eligibility", str(case_path))
    got = {p["instrument"]: p for p in report["positions"]}
    assert {k: v["eligible"] for k, v in got.items()} == expected
    for position in got.values():
        assert bool(position["reasons"]) == (not position["eligible"])
    code, table, _ = run(capsys, "eligibility", str(case_path), "--table")
    assert code == 0
    for instrument in expected:
        assert instrument in table


def test_optimise_reaches_the_cases_optimum(
    capsys: pytest.CaptureFixture[str], case_path: Path, case_data: dict[str, Any]
) -> None:
    expected = _expected(case_data)
    result = run_json(capsys, "optimise", str(case_path))
    assert result["status"] in ("OPTIMAL", "TIME_LIMIT")
    assert result["eligible"] == expected["eligible"]
    _assert_figures(result["baseline"], expected["baseline"])
    _assert_figures(result["current"], expected["current"])
    optimum = expected["optimised"]["total"]
    if case_data["models"]["FICC"].get("measure") == Measure.VAR.value:
        # VaR: the ES stand-in's allocation, evaluated exactly, may differ (cases README).
        assert result["optimised"]["total"] <= result["baseline"]["total"] * (1 + 1e-9)
    else:
        assert close(result["optimised"]["total"], optimum)
    # the transfers take the current allocation to the optimised one
    allocation = result["optimised"]["allocation"]
    problem = build_problem(load_case(case_path))
    for transfer in result["optimised"]["transfers"]:
        i = problem.position_ids.index(transfer["instrument"])
        moved = allocation[transfer["instrument"]] - problem.current_xm[i]
        assert abs(moved) == pytest.approx(transfer["quantity"])


def test_optimise_options_reach_the_solver(capsys: pytest.CaptureFixture[str]) -> None:
    case = CASE_FILES[1]
    fixed = run_json(capsys, "optimise", str(case), "--mode", "FICC_FIXED", "--backend", "cvxpy")
    assert fixed["solver"]["backend"].startswith("cvxpy")
    problem = build_problem(load_case(case))
    for i, position_id in enumerate(problem.position_ids):
        if problem.is_ficc[i]:
            assert fixed["optimised"]["allocation"][position_id] == problem.current_xm[i]
    integral = run_json(capsys, "optimise", str(case), "--integral", "--time-limit", "30")
    for i, position_id in enumerate(problem.position_ids):
        lots = integral["optimised"]["allocation"][position_id] / problem.lot[i]
        assert lots == pytest.approx(round(lots), abs=1e-9)


def test_optimise_table_and_reports(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    case = CASE_FILES[0]
    paths = {ext: tmp_path / f"transfers.{ext}" for ext in ("csv", "xml", "html")}
    code, out, err = run(
        capsys,
        "optimise",
        str(case),
        "--table",
        "--csv",
        str(paths["csv"]),
        "--fixml",
        str(paths["xml"]),
        "--html",
        str(paths["html"]),
    )
    assert code == 0, err
    result = optimise(load_case(case))
    assert f"{round(result.optimised.total):,d}" in out
    assert "Savings" in out
    with paths["csv"].open() as handle:
        assert len(list(csv.DictReader(handle))) == 2 * len(result.transfers)
    assert paths["xml"].read_text().count("<PosXferInstr") == len(result.transfers)
    assert "<svg" in paths["html"].read_text()


# --- what-if ---------------------------------------------------------------------------------


def _margin_total(capsys: pytest.CaptureFixture[str], case: dict[str, Any], path: Path) -> float:
    path.write_text(json.dumps(case))
    return float(run_json(capsys, "margin", str(path))["current"]["total"])


def test_what_if_matches_margin_of_the_edited_case(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    case_path = next(p for p in CASE_FILES if "mixed-ineligible" in p.name)
    case = json.loads(case_path.read_text())
    case.pop("expected", None)
    future = next(i for i in case["instruments"] if i["kind"] == "FUTURE")
    new_future = dict(future, id="NEWFUT")
    excluded = next(i["id"] for i in case["instruments"] if i["kind"] == "OPTION")
    trades = {"instruments": [new_future], "positions": [{"instrument": "NEWFUT", "quantity": 250}]}
    trades_path = tmp_path / "trades.json"
    trades_path.write_text(json.dumps(trades))

    report = run_json(
        capsys, "what-if", str(case_path), "--add", str(trades_path), "--exclude", excluded
    )

    current = _margin_total(capsys, case, tmp_path / "current.json")
    assert report["current"]["total"] == pytest.approx(current, rel=1e-12)
    without = dict(case, positions=[p for p in case["positions"] if p["instrument"] != excluded])
    without_total = _margin_total(capsys, without, tmp_path / "without.json")
    assert report["after_exclusions"]["total"] == pytest.approx(without_total, rel=1e-12)

    (trade,) = report["trades"]
    assert trade["eligible"] is True and trade["xm"] is not None
    for placement, xm_quantity in (("standalone", 0), ("xm", 250)):
        edited = dict(
            without,
            instruments=[*case["instruments"], new_future],
            positions=[
                *without["positions"],
                {"instrument": "NEWFUT", "quantity": 250, "xm_quantity": xm_quantity},
            ],
        )
        total = _margin_total(capsys, edited, tmp_path / f"{placement}.json")
        assert trade[placement]["total"] == pytest.approx(total, rel=1e-12)
        assert trade[placement]["change"] == pytest.approx(total - without_total, rel=1e-9)
    xm_is_cheaper = trade["xm"]["change"] < trade["standalone"]["change"]
    assert trade["best"] == ("XM" if xm_is_cheaper else "STANDALONE")

    code, table, _ = run(capsys, "what-if", str(case_path), "--add", str(trades_path), "--table")
    assert code == 0 and "NEWFUT" in table


def test_what_if_rejects_bad_trades(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    case = str(CASE_FILES[0])
    trades_path = tmp_path / "trades.json"
    trades_path.write_text(json.dumps({"positions": [{"instrument": "NOPE", "quantity": 1}]}))
    code, _, err = run(capsys, "what-if", case, "--add", str(trades_path))
    assert code == cli.EXIT_BAD_INPUT and "add.positions[0].instrument" in err
    code, _, err = run(capsys, "what-if", case, "--exclude", "NOPE")
    assert code == cli.EXIT_BAD_INPUT and "NOPE" in err
    code, _, _ = run(capsys, "what-if", case)
    assert code == cli.EXIT_BAD_INPUT


@pytest.mark.parametrize(
    ("trades", "named"),
    [
        ({"positions": [{"instrument": "TYZ6", "quantity": 5}], "instrumnts": []}, "instrumnts"),
        ({"positions": [{"instrument": "TYZ6", "quantity": 5}], "position": []}, "position"),
        ({"positions": []}, "no trade"),
        ([], "no trade"),
    ],
)
def test_what_if_trades_file_with_an_unknown_key_or_no_trade_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, trades: Any, named: str
) -> None:
    """A trades file's keys are instruments and positions: another (a misspelling) is refused
    naming it, not dropped; a file holding no trade says so (it was told to give --add)."""
    case = str(next(p for p in CASE_FILES if p.name.startswith("01-")))
    trades_path = tmp_path / "trades.json"
    trades_path.write_text(json.dumps(trades))
    code, out, err = run(capsys, "what-if", case, "--add", str(trades_path))
    assert code == cli.EXIT_BAD_INPUT and out == "", (code, out, err)
    assert named in err, err


# --- demo and sample -------------------------------------------------------------------------


def test_demo_prints_the_three_states_savings_and_transfers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's text and JSON render its own solve. (The sample book's whole-lot solve can
    reach its default budget on a loaded machine, and two solves stopped there differ: the
    demo's one real solve is kept and handed to the second rendering and to the checks.)"""
    solved: list[OptimisationResult] = []

    def solve_once(book: Book, **kwargs: Any) -> OptimisationResult:
        if not solved:
            solved.append(optimise(book, **kwargs))
        return solved[0]

    monkeypatch.setattr(cli_solve, "optimise", solve_once)
    code, out, err = run(capsys, "demo")
    assert code == 0, err
    [result] = solved
    assert "Lots: whole lots" in out
    for state in (result.baseline, result.current, result.optimised):
        assert f"{round(state.total):,d}" in out
    assert f"Savings: {result.savings:,.0f} USD" in out
    assert f"Transfers ({len(result.transfers)})" in out
    demo_json = run_json(capsys, "demo", "--json")
    assert demo_json["optimised"]["total"] == pytest.approx(result.optimised.total, rel=1e-9)
    assert demo_json["optimised"]["total"] < demo_json["baseline"]["total"]


def test_sample_writes_a_valid_deterministic_case(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    paths = [tmp_path / f"case{i}.json" for i in range(3)]
    for path, seed in zip(paths, ("5", "5", "6"), strict=True):
        code, _, err = run(
            capsys,
            "sample",
            "--positions",
            "12",
            "--scenarios",
            "260",
            "--seed",
            seed,
            "-o",
            str(path),
        )
        assert code == 0, err
    assert paths[0].read_bytes() == paths[1].read_bytes() != paths[2].read_bytes()
    book = load_case(paths[0])
    assert len(book.positions) == 12 and book.scenarios.size == 260
    report = run_json(capsys, "margin", str(paths[0]))
    assert report["baseline"]["total"] > 0
    code, _, _ = run(capsys, "sample", "--positions", "0")
    assert code == cli.EXIT_BAD_INPUT
    code, _, _ = run(capsys, "sample", "--business-date", "2026-11-28")  # a Saturday
    assert code == cli.EXIT_BAD_INPUT


# --- bad input and failures ------------------------------------------------------------------


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for command in ("optimise", "margin", "eligibility", "what-if"):
        code, out, err = run(capsys, command, str(tmp_path / "absent.json"))
        assert code == cli.EXIT_BAD_INPUT and out == "" and "absent.json" in err


def test_invalid_json_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "xmargin-case/1", "positions": [')
    code, out, err = run(capsys, "optimise", str(broken))
    assert code == cli.EXIT_BAD_INPUT and out == "" and "not valid JSON" in err


def test_nan_in_a_case_exits_2_naming_the_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    case = json.loads(CASE_FILES[0].read_text())
    case["scenarios"]["shocks"][3][2] = float("nan")
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(case))  # Python writes NaN, which json.loads reads back
    for command in ("optimise", "margin"):
        code, out, err = run(capsys, command, str(path))
        assert code == cli.EXIT_BAD_INPUT and out == ""
        assert "scenarios.shocks[3][2]" in err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    case = str(CASE_FILES[0])
    for argv in (
        ["no-such-command"],
        ["optimise", case, "--mode", "SIDEWAYS"],
        ["optimise", case, "--backend", "abacus"],
        ["optimise", case, "--time-limit", "-1"],
        ["optimise", case, "--json", "--table"],
        [],
    ):
        code, _, _ = run(capsys, *argv)
        assert code == cli.EXIT_BAD_INPUT, argv


def test_solver_failures_map_to_exit_codes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    case = str(CASE_FILES[0])
    for error, code in (
        (InfeasibleError("no allocation", "unpin positions"), cli.EXIT_INFEASIBLE),
        (SolverError("both backends failed", "raise the time limit"), cli.EXIT_SOLVER_FAILURE),
    ):

        def failing(*args: object, error: Exception = error, **kwargs: object) -> None:
            raise error

        monkeypatch.setattr(cli_solve, "optimise", failing)
        got, out, err = run(capsys, "optimise", case)
        assert got == code and out == "" and str(error) in err


# --- delegation and progress -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "module"), [("serve", "xmargin.server.cli"), ("bench", "xmargin.bench")]
)
def test_serve_and_bench_delegate_every_argument(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str, module: str
) -> None:
    received: list[list[str]] = []
    fake = types.ModuleType(module)
    fake.main = lambda argv: received.append(argv) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module, fake)
    code, _, _ = run(capsys, command, "--port", "0", "--flag", "value")
    assert code == 7 and received == [["--port", "0", "--flag", "value"]]


def test_missing_delegate_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "xmargin.bench", None)  # makes the import fail
    code, _, err = run(capsys, "bench", "--quick")
    assert code == cli.EXIT_MISSING_COMPONENT and "benchmark is not available" in err


def test_progress_only_for_slow_work(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_common, "PROGRESS_AFTER_SECONDS", 0.05)
    with cli.progress("quick work"):
        pass
    with cli.progress("slow work"):
        time.sleep(0.2)
    err = capsys.readouterr().err
    assert "quick work" not in err
    assert "slow work ..." in err and "slow work: done in" in err


def test_console_script_entry_point() -> None:
    """The installed module runs as a program and exits with main's code."""
    completed = subprocess.run(
        [sys.executable, "-m", "xmargin.optimiser.cli", "margin", "/nonexistent/case.json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == cli.EXIT_BAD_INPUT
    assert "does not exist" in completed.stderr


def test_json_output_has_no_nan() -> None:
    """Strict JSON: a figure that is not finite (a solver's missing bound) is written as null."""
    data = {"bound": float("nan"), "gap": np.float64(np.inf), "values": [np.float64(1.5)]}
    assert cli_common.jsonable(data) == {"bound": None, "gap": None, "values": [1.5]}
