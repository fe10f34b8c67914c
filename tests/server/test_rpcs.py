"""Every RPC through the generated stubs on a real local server, against the in-process library."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2

from tests.conftest import close
from tests.server.harness import batch_of, optimise_request, what_if_request
from tests.server.test_errors import details
from xmargin.clients import convert
from xmargin.clients.messages import copy_shared_fields
from xmargin.clients.v1 import book_pb2, common_pb2, result_pb2, service_pb2
from xmargin.clients.v1.service_pb2_grpc import XmarginServiceStub
from xmargin.optimiser import build_problem, evaluate, optimise, parse_case
from xmargin.optimiser.margin import State

STATE_FIELDS = {
    "total": "total",
    "ficc_standalone": "ficc_standalone",
    "cme_standalone": "cme_standalone",
    "xm": "xm",
    "s_f": "S_F",
    "s_c": "S_C",
    "c_f": "C_F",
    "c_c": "C_C",
    "r": "r",
    "ficc_collects": "ficc_collects",
    "cme_collects": "cme_collects",
}


def same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def assert_state(message: result_pb2.MarginState, state: State) -> None:
    summary = state.summary()
    for proto_name, name in STATE_FIELDS.items():
        assert same(getattr(message, proto_name), float(summary[name])), proto_name
    assert message.cap_binding == summary["cap_binding"]
    assert np.allclose(list(message.xm_quantities), state.xm_quantity, rtol=1e-12, atol=0)


def test_optimise_equals_the_library_and_the_expected_figures(
    stub: XmarginServiceStub, case_data: dict[str, Any]
) -> None:
    request = optimise_request(case_data)
    response = stub.Optimise(request, timeout=60)
    local = optimise(parse_case(case_data))
    result = response.result
    assert response.run == request.run
    assert result.status == result_pb2.SOLVE_STATUS_OPTIMAL
    for name in ("baseline", "current", "optimised", "all_eligible"):
        assert_state(getattr(result, name), getattr(local, name))
    expected = case_data["expected"]
    assert close(result.optimised.total, expected["optimised"]["total"])
    assert close(result.baseline.total, expected["baseline"]["total"])
    assert {e.instrument: e.eligible for e in result.eligibility} == expected["eligible"]
    assert [a.xm_quantity for a in result.allocation] == pytest.approx(
        list(local.allocation), rel=1e-9, abs=1e-6
    )
    assert [t.instrument for t in result.transfers] == [t.instrument for t in local.transfers]
    assert [t.quantity for t in result.transfers] == pytest.approx(
        [t.quantity for t in local.transfers], rel=1e-9
    )
    for marginal, in_xm, in_standalone in zip(
        result.marginal_margin, local.marginal.in_xm, local.marginal.in_standalone, strict=True
    ):
        assert same(marginal.in_xm, float(in_xm))
        assert same(marginal.in_standalone, float(in_standalone))
    for attribution in result.attribution:
        shares = local.attribution.shares[attribution.account]
        assert list(attribution.shares) == pytest.approx(list(shares), rel=1e-9, abs=1e-6)
    stats = result.solver_stats
    assert stats.backend == local.stats.backend
    assert stats.rounds == local.stats.rounds >= 1  # the same deterministic solve
    lp, evaluation = stats.lp_time.ToNanoseconds(), stats.evaluation_time.ToNanoseconds()
    assert lp > 0 and evaluation > 0
    assert lp + evaluation <= stats.build_time.ToNanoseconds() + stats.solve_time.ToNanoseconds()
    assert same(result.savings, local.savings)


def test_optimise_with_a_warm_start_gives_the_cold_answer_after_a_change_in_positions(
    stub: XmarginServiceStub, case_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous answer's allocation (plus an id that vanished) reaches the solver, and the
    answer is the one a cold call gives; a non-finite warm start is ignored."""
    from xmargin.server import service

    seen: list[Any] = []
    real_optimise = service.optimise

    def spy(book: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("warm_start"))
        return real_optimise(book, **kwargs)

    monkeypatch.setattr(service, "optimise", spy)
    previous = stub.Optimise(optimise_request(case_data), timeout=60).result
    changed = copy.deepcopy(case_data)
    changed["positions"][0]["quantity"] *= 2  # still a whole number of lots
    request = optimise_request(changed)
    cold = stub.Optimise(request, timeout=60).result
    allocation = {a.instrument: a.xm_quantity for a in previous.allocation}
    request.warm_start.xm_quantity.update({**allocation, "VANISHED": 1.0})
    warm = stub.Optimise(request, timeout=60).result
    request.warm_start.xm_quantity["VANISHED"] = math.nan
    ignored = stub.Optimise(request, timeout=60).result
    for answer in (warm, ignored):
        assert answer.status == cold.status
        assert math.isclose(answer.optimised.total, cold.optimised.total, rel_tol=1e-6)
    assert [w is None for w in seen] == [True, True, False, False]
    assert dict(seen[2].allocation) == {**allocation, "VANISHED": 1.0}


def test_compute_margin_equals_the_exact_evaluator(
    stub: XmarginServiceStub, case_data: dict[str, Any]
) -> None:
    request = copy_shared_fields(optimise_request(case_data), service_pb2.ComputeMarginRequest())
    response = stub.ComputeMargin(request, timeout=30)
    problem = build_problem(parse_case(case_data))
    assert response.run == request.run
    assert_state(response.state, evaluate(problem, problem.current_xm))
    assert_state(response.baseline, evaluate(problem, np.zeros(problem.n_positions)))
    assert close(response.state.total, case_data["expected"]["current"]["total"])
    assert len(response.attribution) == 4
    flags = {e.instrument: e.eligible for e in response.eligibility}
    assert flags == case_data["expected"]["eligible"]
    assert [e.instrument for e in response.eligibility] == list(problem.position_ids)
    for entry, judged in zip(response.eligibility, problem.eligibility, strict=True):
        assert list(entry.reasons) == [
            common_pb2.EligibilityReason.Value(f"ELIGIBILITY_REASON_{r}") for r in judged.reasons
        ]


def test_check_eligibility_gives_the_expected_flags_and_reasons(
    stub: XmarginServiceStub, case_data: dict[str, Any]
) -> None:
    account = convert.account_book(case_data)
    instruments = []
    for instrument in account.instruments:
        instrument.ClearField("risk")  # eligibility needs no risk
        instruments.append(instrument)
    request = service_pb2.CheckEligibilityRequest(
        run=convert.run_context(case_data),
        clearing_member=account.clearing_member,
        customer=account.customer,
        instruments=instruments,
    )
    response = stub.CheckEligibility(request, timeout=10)
    assert response.run == request.run
    held = {p["instrument"] for p in case_data["positions"]}
    flags = {r.instrument: r.eligible for r in response.results if r.instrument in held}
    assert flags == case_data["expected"]["eligible"]
    for result in response.results:
        assert result.eligible == (len(result.reasons) == 0)
    assert "effective" in response.rulebook


@pytest.mark.parametrize(
    "break_it, violations",
    [
        (
            lambda i: setattr(i[1], "id", i[0].id),
            [("instruments[1].id", "duplicate instrument id")],
        ),
        (lambda i: setattr(i[0], "id", ""), [("instruments[0].id", "must hold at least 1")]),
    ],
    ids=["duplicate id", "empty id"],
)
def test_check_eligibility_names_each_bad_id_once_at_its_field(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]], break_it: Any, violations: Any
) -> None:
    """The positions CheckEligibility makes of the instruments repeated each id's fault at
    a path the request does not have (``instruments[1].id.instrument``)."""
    case = cases["02-butterfly-2s5s10s"]
    account = convert.account_book(case)
    request = service_pb2.CheckEligibilityRequest(
        run=convert.run_context(case),
        clearing_member=account.clearing_member,
        customer=account.customer,
        instruments=account.instruments,
    )
    break_it(request.instruments)
    with pytest.raises(grpc.RpcError) as caught:
        stub.CheckEligibility(request, timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    (found,) = [d for d in details(caught.value) if isinstance(d, error_details_pb2.BadRequest)]
    got = [(v.field, v.description) for v in found.field_violations]
    assert [field for field, _ in got] == [field for field, _ in violations], got
    for (_, description), (_, want) in zip(got, violations, strict=True):
        assert want in description


def _library_total(case: dict[str, Any]) -> float:
    problem = build_problem(parse_case(case))
    return evaluate(problem, problem.current_xm).total


def test_what_if_excluding_and_adding_matches_the_library(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    case = cases["02-butterfly-2s5s10s"]
    future = next(p for p in case["positions"] if p["instrument"] == "FVZ6")
    excluded = "TNZ6"
    request = what_if_request(
        case,
        add_trades=[book_pb2.Position(instrument="FVZ6", quantity=-500)],
        exclude_positions=[excluded],
    )
    response = stub.WhatIf(request, timeout=30)
    assert response.run == request.run
    assert same(response.before.total, _library_total(case))
    modified = copy.deepcopy(case)
    modified["positions"] = [p for p in modified["positions"] if p["instrument"] != excluded]
    for position in modified["positions"]:
        if position["instrument"] == "FVZ6":
            position["quantity"] = future["quantity"] - 500
    assert same(response.after_standalone.total, _library_total(modified))
    (impact,) = response.trades
    assert impact.eligible and impact.HasField("margin_change_xm")
    assert impact.best_margin_change == min(
        impact.margin_change_standalone, impact.margin_change_xm
    )
    assert same(response.margin_change, response.after_best.total - response.before.total)


def test_what_if_with_a_new_ineligible_instrument_stays_standalone(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    case = cases["01-basis-trade-10y"]
    option = {
        "id": "OZNZ6C112",
        "ccp": "CME",
        "kind": "OPTION",
        "contract": "TY",
        "pnl": [0.001 * (i % 7 - 3) for i in range(len(case["scenarios"]["ids"]))],
    }
    request = what_if_request(
        case,
        add_instruments=[convert.instrument_message(option)],
        add_trades=[book_pb2.Position(instrument="OZNZ6C112", quantity=100)],
    )
    response = stub.WhatIf(request, timeout=30)
    (impact,) = response.trades
    assert not impact.eligible
    assert common_pb2.ELIGIBILITY_REASON_OPTION_NOT_ELIGIBLE in impact.reasons
    assert not impact.HasField("margin_change_xm")
    assert impact.best_placement == service_pb2.PLACEMENT_STANDALONE
    with_option = copy.deepcopy(case)
    with_option["instruments"].append(option)
    with_option["positions"].append({"instrument": "OZNZ6C112", "quantity": 100})
    assert same(response.after_best.total, _library_total(with_option))


def test_register_scenario_set_then_optimise_by_reference(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    case = cases["05-integral-small-lots"]
    inline = optimise_request(case)
    register = service_pb2.RegisterScenarioSetRequest(
        run=inline.run, id="shared-1000d", scenario_set=inline.scenario_set
    )
    first = stub.RegisterScenarioSet(register, timeout=10)
    again = stub.RegisterScenarioSet(register, timeout=10)
    assert first.run == register.run
    assert (first.ref.version, first.fingerprint) == (again.ref.version, again.fingerprint)
    assert first.scenario_count == len(case["scenarios"]["ids"])
    assert first.factor_count == len(case["factors"])
    changed = service_pb2.RegisterScenarioSetRequest()
    changed.CopyFrom(register)
    changed.scenario_set.shocks[0] += 1.0
    bumped = stub.RegisterScenarioSet(changed, timeout=10)
    assert bumped.ref.version == first.ref.version + 1
    assert bumped.fingerprint != first.fingerprint

    by_ref = service_pb2.OptimiseRequest()
    by_ref.CopyFrom(inline)
    by_ref.scenario_set_ref.CopyFrom(first.ref)
    assert by_ref.WhichOneof("scenarios") == "scenario_set_ref"
    referenced = stub.Optimise(by_ref, timeout=60).result
    direct = stub.Optimise(inline, timeout=60).result
    assert same(referenced.optimised.total, direct.optimised.total)
    assert list(referenced.optimised.xm_quantities) == pytest.approx(
        list(direct.optimised.xm_quantities), rel=1e-9, abs=1e-6
    )


def _batch_request(
    cases: dict[str, dict[str, Any]], accounts: list[book_pb2.AccountBook]
) -> service_pb2.OptimiseBatchRequest:
    return batch_of(optimise_request(cases["01-basis-trade-10y"]), accounts)


def test_optimise_batch_streams_every_account_and_reports_failures_per_account(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    names = sorted(cases)
    accounts = [convert.account_book(cases[name]) for name in names]
    broken = convert.account_book(cases["02-butterfly-2s5s10s"])
    broken.positions[1].lot = -1.0
    broken.customer.id = "CUST-broken"  # a batch holds each customer once
    accounts.insert(3, broken)
    request = _batch_request(cases, accounts)
    messages = list(stub.OptimiseBatch(request, timeout=120))

    assert sorted(m.account_index for m in messages) == list(range(len(accounts)))
    assert [m.progress.completed for m in messages] == list(range(1, len(accounts) + 1))
    assert all(m.progress.total == len(accounts) for m in messages)
    assert messages[-1].progress.failed == 1
    assert all(m.run == request.run for m in messages)
    failure = next(m for m in messages if m.account_index == 3)
    assert failure.WhichOneof("outcome") == "error"
    assert failure.error.code == "INVALID_ARGUMENT"
    assert [v.field for v in failure.error.field_violations] == ["accounts[3].positions[1].lot"]

    shared = cases["01-basis-trade-10y"]
    for message in messages:
        if message.account_index == 3:
            continue
        name = names[message.account_index - (message.account_index > 3)]
        assert message.WhichOneof("outcome") == "result"
        alone = dict(
            cases[name],
            models=shared["models"],
            program=shared.get("program", {}),
            options=shared["options"],
        )
        local = optimise(parse_case(alone))
        assert same(message.result.optimised.total, local.optimised.total), name
        assert same(message.result.current.total, local.current.total), name


def test_batch_with_bad_shared_models_is_refused_as_a_whole(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    request = _batch_request(cases, [convert.account_book(cases["01-basis-trade-10y"])])
    request.models.cme.confidence = 1.5
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.OptimiseBatch(request, timeout=30))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "models.cme.confidence" in (caught.value.details() or "")


def test_a_batch_of_no_account_is_refused(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    """The contract says 1 to 10,000 accounts; an empty batch ended with no message and OK."""
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.OptimiseBatch(_batch_request(cases, []), timeout=30))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "accounts: must hold 1 to" in (caught.value.details() or "")


def test_every_request_is_logged_as_one_json_line(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    request = optimise_request(cases["04-firm-not-eligible"])
    request.run.request_id = "log-line-check-42"
    caplog.set_level("INFO", logger="xmargin.server")
    stub.Optimise(request, timeout=30)
    lines = [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "xmargin.server" and "log-line-check-42" in r.getMessage()
    ]
    assert len(lines) == 1
    assert lines[0]["method"] == "Optimise"
    assert lines[0]["status"] == "OK"
    assert lines[0]["duration_ms"] > 0


def test_a_refused_stream_is_logged_with_its_status(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    request = _batch_request(cases, [convert.account_book(cases["01-basis-trade-10y"])])
    request.models.cme.confidence = 1.5
    request.run.request_id = "log-line-refused-batch"
    caplog.set_level("INFO", logger="xmargin.server")
    with pytest.raises(grpc.RpcError):
        list(stub.OptimiseBatch(request, timeout=30))
    lines = [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "xmargin.server" and "log-line-refused-batch" in r.getMessage()
    ]
    assert [(line["method"], line["status"]) for line in lines] == [
        ("OptimiseBatch", "INVALID_ARGUMENT")
    ]


def test_reflection_lists_the_service_and_resolves_its_methods(channel: grpc.Channel) -> None:
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    database = ProtoReflectionDescriptorDatabase(channel)
    services = database.get_services()
    assert "xmargin.v1.XmarginService" in services
    assert "grpc.health.v1.Health" in services
    pool = DescriptorPool(database)
    service = pool.FindServiceByName("xmargin.v1.XmarginService")
    assert {m.name for m in service.methods} == {
        "Optimise",
        "OptimiseBatch",
        "ComputeMargin",
        "WhatIf",
        "CheckEligibility",
        "RegisterScenarioSet",
        "Explain",
        "GetScenarioSet",
        "ListScenarioSets",
        "OptimiseStream",
    }


def test_a_client_with_only_reflection_reads_the_columnar_answer(
    channel: grpc.Channel, cases: dict[str, dict[str, Any]]
) -> None:
    """A client without the generated stubs (reflection and JSON only) asks for the columnar
    answer and reads in position_columns the figures the rows give."""
    from google.protobuf import json_format, message_factory
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    method = pool.FindServiceByName("xmargin.v1.XmarginService").methods_by_name["Optimise"]
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        "/xmargin.v1.XmarginService/Optimise",
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )
    body = json_format.MessageToDict(optimise_request(cases["03-mixed-ineligible-hedges"]))
    rows = json_format.MessageToDict(call(json_format.ParseDict(body, request_type()), timeout=60))
    body["columnarResult"] = True
    answer = call(json_format.ParseDict(body, request_type()), timeout=60)
    columns = json_format.MessageToDict(answer)["result"]["positionColumns"]
    allocation = rows["result"]["allocation"]
    assert columns["instrument"] == [a["instrument"] for a in allocation]
    assert columns["xmQuantity"] == [a.get("xmQuantity", 0.0) for a in allocation]
    assert columns["eligible"] == [e.get("eligible", False) for e in rows["result"]["eligibility"]]
    assert "allocation" not in json_format.MessageToDict(answer)["result"]


def test_health_reports_serving(channel: grpc.Channel) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "xmargin.v1.XmarginService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
