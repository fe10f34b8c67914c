"""Case-format field paths -> proto field paths, and proto enums -> case-format names."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from xmargin.clients import convert as client_convert
from xmargin.clients.v1 import book_pb2, common_pb2, result_pb2
from xmargin.optimiser import Eligibility, case_format, parse_case
from xmargin.optimiser.eligibility import Reason
from xmargin.server.convert import (
    FieldPaths,
    Limits,
    RequestError,
    add_eligibility,
    book_case,
    eligibility_reasons,
    parse,
    scenario_set_case,
)

TRANSLATIONS = [
    ("business_date", "run.business_date"),
    ("cycle", "run.cycle"),
    ("clearing_member.id", "account.clearing_member.id"),
    ("customer.xm_enrolled", "account.customer.xm_enrolled"),
    ("factors", "scenario_set.factors"),
    ("factors[2]", "scenario_set.factors[2]"),
    ("scenarios.ids[7]", "scenario_set.ids[7]"),
    ("scenarios.shocks", "scenario_set.shocks"),
    ("scenarios.shocks[3]", "scenario_set.shocks"),
    ("scenarios.shocks[2][1]", "scenario_set.shocks[21]"),
    ("instruments[4].kind", "account.instruments[4].kind"),
    ("instruments[0].sensitivities", "account.instruments[0].sensitivities.values"),
    ("instruments[0].sensitivities[9]", "account.instruments[0].sensitivities.values[9]"),
    ("instruments[1].pnl[3]", "account.instruments[1].pnl.values[3]"),
    ("positions[5].lot", "account.positions[5].lot"),
    ("models.FICC", "models.ficc"),
    ("models.CME.stress_ids[1]", "models.cme.stress_ids[1]"),
    ("models.FICC.addon_rate[0]", "models.ficc.addon_rate[0]"),
    ("program.savings_cap", "program.savings_cap"),
    ("options.max_transfers", "options.max_transfers"),
    ("name", "account.name"),  # was "name", a field the request does not have
    ("positions", "account.positions"),  # the list as a whole (too long): was "positions"
    ("instruments", "account.instruments"),
]


@pytest.mark.parametrize("case_path, proto_path", TRANSLATIONS)
def test_single_account_paths(case_path: str, proto_path: str) -> None:
    assert FieldPaths(factor_count=10).translate(case_path) == proto_path


def test_batch_and_assembled_paths() -> None:
    paths = FieldPaths(account="accounts[3]", scenarios="scenario_set_ref")
    assert paths.translate("positions[1].quantity") == "accounts[3].positions[1].quantity"
    assert paths.translate("customer.id") == "accounts[3].customer.id"
    assert paths.translate("name") == "accounts[3].name"
    assert paths.translate("scenarios.ids") == "scenario_set_ref.ids"
    assembled = FieldPaths(
        positions=["account.positions[0]", "add_trades[0]"],
        instruments=["account.instruments[0]", "add_instruments[0]"],
    )
    assert assembled.translate("positions[1].quantity") == "add_trades[0].quantity"
    assert assembled.translate("instruments[1].pnl[2]") == "add_instruments[0].pnl.values[2]"
    assert assembled.translate("positions") == "add_trades"  # was "positions"
    assert assembled.translate("instruments") == "add_instruments"
    columns = FieldPaths(risk_starts=[0])
    assert columns.translate("positions") == "account_columns.position_instrument"
    assert columns.translate("instruments") == "account_columns.instrument_id"
    bare = FieldPaths(account="")
    assert bare.translate("clearing_member.bd_fcm") == "clearing_member.bd_fcm"


def test_scenario_set_shape_is_checked_before_reshaping() -> None:
    message = book_pb2.ScenarioSet(
        factors=["a", "b"], ids=["2026-11-23", "2026-11-24"], shocks=[1.0, 2.0, 3.0]
    )
    with pytest.raises(RequestError) as caught:
        scenario_set_case(message, "scenario_set", Limits())
    ((path, why),) = caught.value.violations
    assert path == "scenario_set.shocks" and "2 x 2 = 4" in why
    message.shocks.append(4.0)
    resolved = scenario_set_case(message, "scenario_set", Limits())
    assert resolved.shocks == [[1.0, 2.0], [3.0, 4.0]]


def _request_case(request: Any, registered: Any, paths: FieldPaths, numpy_vectors: bool) -> Any:
    """The case dict the server builds from an OptimiseRequest under a registered set."""
    return book_case(
        request.run,
        request.account,
        registered,
        request.models,
        request.program,
        request.options,
        paths,
        Limits(),
        numpy_vectors=numpy_vectors,
    )


@pytest.mark.parametrize("numpy_vectors", [True, False])
def test_a_converted_scenario_set_is_not_validated_again_per_account(
    cases: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, numpy_vectors: bool
) -> None:
    case = cases["07-cme-stress-addons"]
    request = client_convert.optimise_request(case, client_convert.run_context(case))
    registered = scenario_set_case(request.scenario_set, "scenario_set", Limits())
    calls: list[int] = []
    real = case_format.parse_scenarios

    def counting(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(case_format, "parse_scenarios", counting)
    for _ in range(2):
        paths = FieldPaths()
        converted = _request_case(request, registered, paths, numpy_vectors)
        book = parse(converted, paths, parse_case)
        assert book.scenarios is registered.validated.scenarios  # the validated set, kept
    assert calls == []
    fresh = copy.copy(converted)  # its numpy vectors too; equal scenario lists, not the same
    fresh["scenarios"] = {
        "ids": list(converted["scenarios"]["ids"]),
        "shocks": [list(row) for row in converted["scenarios"]["shocks"]],
    }
    parse(fresh, FieldPaths(), parse_case)
    assert calls == [1]  # trusted by identity only: a copy is validated


def test_eligibility_becomes_one_message_per_position_with_its_reasons() -> None:
    judged = [
        Eligibility(True, ()),
        Eligibility(False, (Reason.PRODUCT_EXCLUDED, Reason.MATURITY_WITHIN_ONE_YEAR)),
    ]
    out = result_pb2.OptimiseResult().eligibility
    add_eligibility(out, ["UST-10Y", "BILL-3M"], judged)
    assert [(e.instrument, e.eligible, list(e.reasons)) for e in out] == [
        ("UST-10Y", True, []),
        (
            "BILL-3M",
            False,
            [
                common_pb2.ELIGIBILITY_REASON_PRODUCT_EXCLUDED,
                common_pb2.ELIGIBILITY_REASON_MATURITY_WITHIN_ONE_YEAR,
            ],
        ),
    ]
    with pytest.raises(ValueError):  # ids and eligibility of different lengths
        add_eligibility(out, ["ONE"], judged)


def test_a_reason_the_proto_lacks_is_unspecified() -> None:
    assert eligibility_reasons(["PRODUCT_EXCLUDED", "NOT_A_REASON"]) == [
        common_pb2.ELIGIBILITY_REASON_PRODUCT_EXCLUDED,
        common_pb2.ELIGIBILITY_REASON_UNSPECIFIED,
    ]


def test_vectors_found_in_bounds_are_not_checked_again_but_their_lengths_are(
    cases: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Optimise handler checks the request's numpy vectors in bulk once and says so
    (``CaseDict.vectors_checked``): ``parse_case`` then skips only that bulk check. A vector of
    the wrong length is still refused, and one out of range is refused naming its element when
    the flag is not set."""
    case = cases["07-cme-stress-addons"]
    request = client_convert.optimise_request(case, client_convert.run_context(case))
    registered = scenario_set_case(request.scenario_set, "scenario_set", Limits())

    def converted() -> Any:
        return _request_case(request, registered, FieldPaths(), numpy_vectors=True)

    calls: list[int] = []
    real = case_format.vectors_in_bounds

    def counting(vectors: Any) -> bool:
        calls.append(1)
        return real(vectors)

    monkeypatch.setattr(case_format, "vectors_in_bounds", counting)
    checked = converted()
    assert checked.vectors and real(checked.vectors)
    checked.vectors_checked = True
    parse(checked, FieldPaths(), parse_case)
    assert calls == []
    parse(converted(), FieldPaths(), parse_case)
    assert calls == [1]

    short = converted()
    index, (name, values) = next(iter(short.vectors.items()))
    short.vectors[index] = (name, values[:-1])
    short.vectors_checked = True
    with pytest.raises(RequestError) as caught:
        parse(short, FieldPaths(), parse_case)
    assert [path for path, _ in caught.value.violations] == [
        f"account.instruments[{index}].{name}.values"
    ]

    wild = converted()
    index, (name, values) = next(iter(wild.vectors.items()))
    bad = values.copy()
    bad[1] = float("nan")
    wild.vectors[index] = (name, bad)
    with pytest.raises(RequestError) as caught:
        parse(wild, FieldPaths(), parse_case)
    assert [path for path, _ in caught.value.violations] == [
        f"account.instruments[{index}].{name}.values[1]"
    ]


def test_vectors_checked_does_not_cover_arrays_found_in_the_case(
    cases: dict[str, dict[str, Any]],
) -> None:
    """``vectors_checked`` speaks for the ``vectors`` the caller gave: a bad numpy array inside
    the case itself is still checked and refused."""
    import numpy as np

    case = copy.deepcopy(cases["07-cme-stress-addons"])
    index = next(i for i, item in enumerate(case["instruments"]) if "sensitivities" in item)
    bad = np.array(case["instruments"][index]["sensitivities"], dtype=np.float64)
    bad[0] = float("inf")
    case["instruments"][index]["sensitivities"] = bad
    with pytest.raises(case_format.CaseValidationError) as caught:
        parse_case(case, vectors={}, vectors_checked=True)
    assert [v.path for v in caught.value.violations] == [f"instruments[{index}].sensitivities[0]"]
