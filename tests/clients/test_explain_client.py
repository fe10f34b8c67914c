"""The Explain RPC through the typed client: the library's explanation, carried in full."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CASE_FILES, assert_tree_close
from xmargin.clients import InvalidRequestError, XmarginClient
from xmargin.optimiser import load_case, optimise
from xmargin.optimiser.explain import explain_result
from xmargin.server import RunningServer

EXPLAINED = [path for path in CASE_FILES if path.stem.startswith(("01", "03", "06", "07"))]


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[XmarginClient]:
    with XmarginClient(f"127.0.0.1:{server.port}", timeout=60) as opened:
        yield opened


@pytest.mark.parametrize("case_path", EXPLAINED, ids=[p.stem for p in EXPLAINED])
def test_explain_carries_the_librarys_explanation(client: XmarginClient, case_path: Path) -> None:
    answer = client.explain(case_path)
    local = explain_result(optimise(load_case(case_path)))
    got = answer.explanation
    assert answer.result is not None and answer.result.status == "OPTIMAL"
    assert got["positions"] == list(local.problem.position_ids)
    for state in ("current", "optimised"):
        mine = local.states[state]
        theirs = got[state]
        assert theirs["total"] == pytest.approx(mine.total, rel=1e-9)
        assert theirs["by_position"] == pytest.approx(mine.by_position.tolist(), rel=1e-9, abs=1e-6)
        for name, figure in mine.figures.items():
            sent = theirs[name] if name.endswith("standalone") else theirs["xm"][name.lower()]
            assert sent["measure"] == f"MEASURE_{figure.measure.upper()}"  # VaR: MEASURE_VAR
            assert [s["id"] for s in sent["tail"]] == list(figure.tail_ids)
            assert sent["margin"] == pytest.approx(figure.margin, rel=1e-9)
            parts = sum(sent["by_factor"]) + sent["unexplained_by_factors"] + sent["floor"]
            assert parts == pytest.approx(sent["margin"], rel=1e-9, abs=1e-6)
    change = got["change"]
    credits = sum(t["saving"] for t in change["transfers"]) + change["unassigned"]
    assert credits == pytest.approx(change["savings"], rel=1e-9, abs=1e-6)
    assert change["savings"] == pytest.approx(
        answer.result.current.total - answer.result.optimised.total, rel=1e-9
    )
    json.dumps(answer.to_dict())


def test_explain_current_only_solves_nothing(client: XmarginClient) -> None:
    answer = client.explain(EXPLAINED[0], current_only=True)
    assert answer.result is None
    assert answer.explanation["current"]["total"] > 0
    assert "optimised" not in answer.explanation and "change" not in answer.explanation


def test_explain_by_a_registered_scenario_set_explains_the_same(client: XmarginClient) -> None:
    case = json.loads(EXPLAINED[0].read_text())
    handle = client.register_scenario_set("explain-test-set", case)
    inline = client.explain(case, current_only=True)
    by_reference = client.explain(case, current_only=True, scenario_set=handle)
    assert_tree_close(by_reference.explanation, inline.explanation)


def test_explain_rejects_an_invalid_case(client: XmarginClient) -> None:
    case = json.loads(EXPLAINED[0].read_text())
    case["models"]["FICC"]["confidence"] = 1.5
    with pytest.raises(InvalidRequestError) as raised:
        client.explain(case)
    assert any("confidence" in v.field for v in raised.value.violations)
