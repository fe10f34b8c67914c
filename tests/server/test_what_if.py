"""What-if is one library computation: the command line and the gRPC WhatIf give the same
figures (or the same refusal) for the same trades, including a cut below the XM quantity."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.server.harness import optimise_request, what_if_request
from tests.server.test_errors import call_error, violations
from xmargin.clients.v1 import book_pb2, service_pb2
from xmargin.clients.v1.service_pb2_grpc import XmarginServiceStub
from xmargin.optimiser import Position, build_problem, cli, evaluate, parse_case
from xmargin.optimiser.what_if import Placement, place_trade, what_if

CASH = "91282CKZ3"  # case 01's cash leg: 500mm, all of it in XM
FUTURE = "TYZ6"  # case 01's futures leg: -4,600, standalone


def _cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: dict[str, Any], *argv: str
) -> tuple[int, str, str]:
    case_path = tmp_path / "case.json"
    case_path.write_text(json.dumps(case))
    code = cli.main(["what-if", str(case_path), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _trades_file(
    tmp_path: Path, trades: list[tuple[str, float]], extra: dict[str, Any] | None = None
) -> str:
    """A trades file; ``extra``: more fields of every trade."""
    path = tmp_path / "trades.json"
    rows = [{"instrument": i, "quantity": q, **(extra or {})} for i, q in trades]
    path.write_text(json.dumps(rows))
    return str(path)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def test_place_trade_keeps_the_xm_quantity_inside_the_position() -> None:
    assert place_trade(500.0, 500.0, -450.0, in_xm=False) == (50.0, 50.0)  # clipped
    assert place_trade(500.0, 500.0, -450.0, in_xm=True) == (50.0, 50.0)
    assert place_trade(500.0, 200.0, -100.0, in_xm=False) == (400.0, 200.0)
    assert place_trade(500.0, 200.0, -100.0, in_xm=True) == (400.0, 100.0)
    assert place_trade(500.0, 200.0, -700.0, in_xm=False) == (-200.0, 0.0)  # flipped: closed
    assert place_trade(-10.0, 0.0, 4.0, in_xm=True) == (-6.0, 0.0)  # opposite sign: nothing
    assert place_trade(-10.0, -5.0, -4.0, in_xm=True) == (-14.0, -9.0)


def test_a_cut_below_the_xm_quantity_reduces_the_xm_quantity(
    cases: dict[str, dict[str, Any]],
) -> None:
    case = copy.deepcopy(cases["01-basis-trade-10y"])
    book = parse_case(case)
    cash = next(p for p in book.positions if p.instrument == CASH)
    assert cash.xm_quantity == cash.quantity == 500e6
    result = what_if(book, [Position(CASH, -0.9 * cash.quantity)])
    (impact,) = result.trades
    # the edited case: 50mm left, all of it in XM, whichever placement
    for position in case["positions"]:
        if position["instrument"] == CASH:
            position["quantity"] = position["xm_quantity"] = 50e6
    problem = build_problem(parse_case(case))
    expected = evaluate(problem, problem.current_xm).total
    assert _close(result.after_standalone.total, expected)
    assert _close(impact.total_standalone, expected)
    assert impact.total_xm is not None and _close(impact.total_xm, expected)
    assert impact.best is Placement.STANDALONE  # a tie goes to standalone
    assert _close(result.margin_change, expected - result.before.total)


@pytest.mark.parametrize(
    ("name", "trades", "exclude"),
    [
        ("01-basis-trade-10y", [(CASH, -450e6)], []),  # cut the cash leg by 90%
        ("01-basis-trade-10y", [(CASH, -450e6), (FUTURE, 4000.0)], []),
        ("02-butterfly-2s5s10s", [("FVZ6", -500.0)], ["TNZ6"]),
    ],
)
def test_cli_and_grpc_give_the_same_figures(
    stub: XmarginServiceStub,
    cases: dict[str, dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    name: str,
    trades: list[tuple[str, float]],
    exclude: list[str],
) -> None:
    case = cases[name]
    argv = ["--add", _trades_file(tmp_path, trades)]
    for instrument in exclude:
        argv += ["--exclude", instrument]
    code, out, err = _cli(capsys, tmp_path, case, *argv)
    assert code == cli.EXIT_OK, err
    local = json.loads(out)
    served = stub.WhatIf(
        what_if_request(
            case,
            add_trades=[book_pb2.Position(instrument=i, quantity=q) for i, q in trades],
            exclude_positions=exclude,
        ),
        timeout=60,
    )
    assert _close(served.before.total, local["current"]["total"])
    assert _close(served.after_standalone.total, local["after_all_trades_standalone"]["total"])
    assert _close(served.after_best.total, local["after_all_trades_best_placement"]["total"])
    assert _close(served.margin_change, local["after_all_trades_best_placement"]["change"])
    assert len(served.trades) == len(local["trades"]) == len(trades)
    for remote, mine in zip(served.trades, local["trades"], strict=True):
        assert remote.instrument == mine["instrument"] and remote.eligible == mine["eligible"]
        assert _close(remote.margin_change_standalone, mine["standalone"]["change"])
        assert remote.HasField("margin_change_xm") == (mine["xm"] is not None)
        if mine["xm"] is not None:
            assert _close(remote.margin_change_xm, mine["xm"]["change"])
        placement = service_pb2.Placement.Name(remote.best_placement).removeprefix("PLACEMENT_")
        assert placement == mine["best"]


@pytest.mark.parametrize(
    ("trades", "extra", "exclude", "cli_field", "grpc_field"),
    [
        ([(FUTURE, 0.0)], {}, [], "add.positions[0].quantity", "add_trades[0].quantity"),
        ([("NOPE", 5.0)], {}, [], "add.positions[0].instrument", "add_trades[0].instrument"),
        ([], {}, ["NOPE"], "--exclude", "exclude_positions[0]"),
        ([], {}, [FUTURE, FUTURE], "--exclude", "exclude_positions[1]"),
        (
            [(FUTURE, 5.0)],
            {"xm_quantity": 5.0},
            [],
            "add.positions[0].xm_quantity",
            "add_trades[0].xm_quantity",
        ),
        ([(FUTURE, 5.0)], {"pinned": True}, [], "add.positions[0].pinned", "add_trades[0].pinned"),
    ],
    ids=[
        "zero quantity",
        "unknown instrument",
        "unknown exclusion",
        "exclusion given twice",
        "a trade's xm_quantity (was ignored)",
        "a trade pinned (was ignored)",
    ],
)
def test_cli_and_grpc_refuse_the_same_trades(
    stub: XmarginServiceStub,
    cases: dict[str, dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    trades: list[tuple[str, float]],
    extra: dict[str, Any],
    exclude: list[str],
    cli_field: str,
    grpc_field: str,
) -> None:
    case = cases["01-basis-trade-10y"]
    argv = ["--add", _trades_file(tmp_path, trades, extra)] if trades else []
    for instrument in exclude:
        argv += ["--exclude", instrument]
    code, _, err = _cli(capsys, tmp_path, case, *argv)
    assert code == cli.EXIT_BAD_INPUT and cli_field in err, err
    request = what_if_request(
        case,
        add_trades=[book_pb2.Position(instrument=i, quantity=q, **extra) for i, q in trades],
        exclude_positions=exclude,
    )
    assert violations(call_error(lambda: stub.WhatIf(request, timeout=30))) == [grpc_field]


def test_too_many_trades_or_positions_name_the_request_list(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    """A list over the 20,000 limit is refused at the request's own field (it was reported at
    ``positions``, a field neither request has)."""
    case = cases["01-basis-trade-10y"]
    trades = [book_pb2.Position(instrument=FUTURE, quantity=1.0)] * 20_001
    request = what_if_request(case, add_trades=trades)
    assert violations(call_error(lambda: stub.WhatIf(request, timeout=30))) == ["add_trades"]
    optimise = optimise_request(case)
    optimise.account.positions.extend([optimise.account.positions[0]] * 20_000)
    fields = violations(call_error(lambda: stub.Optimise(optimise, timeout=30)))
    assert fields[0] == "account.positions", fields
