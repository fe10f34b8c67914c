"""Each error path of the service: status code, message and google.rpc details."""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tests.server.harness import TOKEN, Certificates, optimise_request, start, what_if_request
from xmargin.clients.v1 import common_pb2, service_pb2
from xmargin.clients.v1.service_pb2_grpc import XmarginServiceStub
from xmargin.server import RunningServer


def call_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def details(error: grpc.RpcError) -> list[Any]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status attached"
    out: list[Any] = []
    for any_detail in status.details:
        for kind in (
            error_details_pb2.BadRequest,
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
            error_details_pb2.ResourceInfo,
        ):
            if any_detail.Is(kind.DESCRIPTOR):
                message = kind()
                any_detail.Unpack(message)
                out.append(message)
    return out


def violations(error: grpc.RpcError) -> list[str]:
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    (bad_request,) = [d for d in details(error) if isinstance(d, error_details_pb2.BadRequest)]
    return [v.field for v in bad_request.field_violations]


def _nan_sensitivity(request: service_pb2.OptimiseRequest) -> None:
    request.account.instruments[0].sensitivities.values[3] = math.nan


def _short_shocks(request: service_pb2.OptimiseRequest) -> None:
    del request.scenario_set.shocks[-1]


def _unknown_instrument(request: service_pb2.OptimiseRequest) -> None:
    request.account.positions[1].instrument = "NOT-LISTED"


def _ineligible_in_xm(request: service_pb2.OptimiseRequest) -> None:
    request.account.clearing_member.ficc_netting_member = False  # then nothing is eligible


def _no_cycle(request: service_pb2.OptimiseRequest) -> None:
    request.run.cycle = common_pb2.CYCLE_UNSPECIFIED


def _bad_confidence(request: service_pb2.OptimiseRequest) -> None:
    request.models.cme.confidence = 1.5


def _unknown_backend(request: service_pb2.OptimiseRequest) -> None:
    request.options.backend = "no-such-solver"


def _wrong_sensitivity_count(request: service_pb2.OptimiseRequest) -> None:
    request.account.instruments[1].sensitivities.values.append(1.0)


def _bad_date(request: service_pb2.OptimiseRequest) -> None:
    request.run.business_date = "24/11/2026"


def _unknown_kind(request: service_pb2.OptimiseRequest) -> None:
    request.account.instruments[0].kind = 99


def _no_scenarios(request: service_pb2.OptimiseRequest) -> None:
    request.ClearField("scenario_set")


def _whole_lots_and_relaxation(request: service_pb2.OptimiseRequest) -> None:
    request.options.integral = True  # an old client's "whole lots" ...
    request.options.continuous = True  # ... and the relaxation: was answered as a relaxation


BAD_INPUTS = {
    "nan": (_nan_sensitivity, "account.instruments[0].sensitivities.values[3]"),
    "dimensions": (_short_shocks, "scenario_set.shocks"),
    "unknown instrument": (_unknown_instrument, "account.positions[1].instrument"),
    "ineligible in XM": (_ineligible_in_xm, "account.positions[0].xm_quantity"),
    "no cycle": (_no_cycle, "run.cycle"),
    "model parameter": (_bad_confidence, "models.cme.confidence"),
    "unknown backend": (_unknown_backend, "options.backend"),
    "vector length": (_wrong_sensitivity_count, "account.instruments[1].sensitivities.values"),
    "date": (_bad_date, "run.business_date"),
    "enum value": (_unknown_kind, "account.instruments[0].kind"),
    "missing oneof": (_no_scenarios, "scenario_set"),
    "integral and continuous": (_whole_lots_and_relaxation, "options.continuous"),
}


@pytest.mark.parametrize("mutate, field", BAD_INPUTS.values(), ids=list(BAD_INPUTS))
def test_bad_input_is_invalid_argument_naming_the_proto_field(
    stub: XmarginServiceStub,
    cases: dict[str, dict[str, Any]],
    mutate: Callable[[service_pb2.OptimiseRequest], None],
    field: str,
) -> None:
    request = optimise_request(cases["01-basis-trade-10y"])
    mutate(request)
    error = call_error(lambda: stub.Optimise(request, timeout=30))
    assert violations(error) == [field]
    assert field in (error.details() or "")


def test_oversize_scenario_set_is_invalid_argument(
    small_stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    request = optimise_request(cases["01-basis-trade-10y"])
    request.scenario_set.ids.extend(f"extra-{i}" for i in range(1500))
    error = call_error(lambda: small_stub.Optimise(request, timeout=30))
    assert violations(error) == ["scenario_set.ids"]


def test_message_beyond_the_size_limit_is_refused(
    small_stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    request = optimise_request(cases["01-basis-trade-10y"])
    request.account.name = "x" * (1024 * 1024 + 1)
    error = call_error(lambda: small_stub.Optimise(request, timeout=30))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_what_if_with_an_unknown_exclusion_names_it(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    request = what_if_request(cases["01-basis-trade-10y"], exclude_positions=["TYZ6", "NOPE"])
    error = call_error(lambda: stub.WhatIf(request, timeout=30))
    assert violations(error) == ["exclude_positions[1]"]


def test_infeasible_pin_and_transfer_limit_is_failed_precondition(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    case = copy.deepcopy(cases["01-basis-trade-10y"])
    lot = case["positions"][0]["lot"]
    case["positions"][0]["xm_quantity"] = 123.5 * lot  # not on the lot grid: it has to move
    request = optimise_request(case, integral=True, max_transfers=0)  # ... but nothing may
    error = call_error(lambda: stub.Optimise(request, timeout=60))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    (info,) = [d for d in details(error) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert info.reason == "INFEASIBLE"
    assert "max_transfers" in info.metadata["advice"]


def test_unknown_scenario_set_reference_is_not_found(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    request = optimise_request(cases["01-basis-trade-10y"])
    request.scenario_set_ref.id, request.scenario_set_ref.version = "never-registered", 7
    error = call_error(lambda: stub.Optimise(request, timeout=30))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    (info,) = [d for d in details(error) if isinstance(d, error_details_pb2.ResourceInfo)]
    assert info.resource_name == "never-registered@7"


def test_deadline_too_short_is_deadline_exceeded(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    request = optimise_request(cases["03-mixed-ineligible-hedges"])
    error = call_error(lambda: stub.Optimise(request, timeout=0.003))
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.fixture
def busy_pool(small_server: RunningServer) -> Iterator[threading.Event]:
    """Hold the small server's only solver slot until the test releases it."""
    release = threading.Event()
    future = small_server.pool.submit(release.wait, 30)
    yield release
    release.set()
    future.result(timeout=30)


def test_overload_is_resource_exhausted_at_once_with_retry_info(
    small_stub: XmarginServiceStub, cases: dict[str, dict[str, Any]], busy_pool: threading.Event
) -> None:
    request = optimise_request(cases["01-basis-trade-10y"])
    started = time.perf_counter()
    error = call_error(lambda: small_stub.Optimise(request, timeout=30))
    waited = time.perf_counter() - started
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert waited < 5.0  # refused at once, not queued behind the held slot (30 s)
    assert any(isinstance(d, error_details_pb2.RetryInfo) for d in details(error))
    busy_pool.set()  # the slot frees as soon as the holder finishes: then calls go through
    give_up = time.monotonic() + 10
    while True:
        try:
            reply = small_stub.Optimise(request, timeout=30)
            break
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < give_up, "the freed slot never came back"
            time.sleep(0.02)
    assert reply.result.optimised.total > 0


def test_batch_beyond_the_account_limit_is_invalid_argument(
    small_stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    single = optimise_request(cases["01-basis-trade-10y"])
    request = service_pb2.OptimiseBatchRequest(
        run=single.run,
        accounts=[single.account] * 4,
        scenario_set=single.scenario_set,
        models=single.models,
    )
    error = call_error(lambda: list(small_stub.OptimiseBatch(request, timeout=30)))
    assert violations(error) == ["accounts"]


def test_missing_or_wrong_token_is_unauthenticated(
    token_server: RunningServer, cases: dict[str, dict[str, Any]]
) -> None:
    request = optimise_request(cases["04-firm-not-eligible"])
    with grpc.insecure_channel(f"127.0.0.1:{token_server.port}") as channel:
        stub = XmarginServiceStub(channel)
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            error = call_error(lambda m=metadata: stub.Optimise(request, timeout=30, metadata=m))
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        batch = service_pb2.OptimiseBatchRequest(run=request.run, accounts=[request.account])
        error = call_error(lambda: list(stub.OptimiseBatch(batch, timeout=30)))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", f"Bearer {TOKEN}"),)
        assert stub.Optimise(request, timeout=30, metadata=good).run == request.run
        probe = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert probe.status == health_pb2.HealthCheckResponse.SERVING  # probes need no token


@pytest.fixture(scope="module")
def mtls_server(certificates: Certificates) -> Iterator[RunningServer]:
    running = start(
        workers=1,
        max_queue=2,
        tls_cert=certificates.server_cert,
        tls_key=certificates.server_key,
        client_ca=certificates.ca,
    )
    yield running
    running.stop(0)


def _secure_stub(
    port: int, ca: bytes, cert: bytes | None = None, key: bytes | None = None
) -> tuple[grpc.Channel, XmarginServiceStub]:
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    channel = grpc.secure_channel(f"localhost:{port}", credentials)
    return channel, XmarginServiceStub(channel)


def test_mutual_tls_accepts_the_right_client_certificate_only(
    mtls_server: RunningServer, certificates: Certificates, cases: dict[str, dict[str, Any]]
) -> None:
    request = optimise_request(cases["04-firm-not-eligible"])
    ca = certificates.ca.read_bytes()
    good = (certificates.client_cert.read_bytes(), certificates.client_key.read_bytes())
    rogue = (certificates.rogue_cert.read_bytes(), certificates.rogue_key.read_bytes())
    channel, stub = _secure_stub(mtls_server.port, ca, *good)
    with channel:
        assert stub.Optimise(request, timeout=30).run == request.run
    for cert, key in (rogue, (None, None)):
        channel, stub = _secure_stub(mtls_server.port, ca, cert, key)
        with channel:
            error = call_error(lambda s=stub: s.Optimise(request, timeout=10))
            assert error.code() is grpc.StatusCode.UNAVAILABLE


def test_tls_without_client_certificates(
    certificates: Certificates, cases: dict[str, dict[str, Any]]
) -> None:
    running = start(
        workers=1, max_queue=1, tls_cert=certificates.server_cert, tls_key=certificates.server_key
    )
    try:
        request = optimise_request(cases["04-firm-not-eligible"])
        channel, stub = _secure_stub(running.port, certificates.ca.read_bytes())
        with channel:
            assert stub.Optimise(request, timeout=30).run == request.run
        with grpc.insecure_channel(f"localhost:{running.port}") as plain:
            error = call_error(lambda: XmarginServiceStub(plain).Optimise(request, timeout=5))
            assert error.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop(0)


@pytest.mark.parametrize(
    "remaining, requested, expected",
    [(None, None, None), (None, 7.0, 7.0), (10.0, None, 8.0), (10.0, 3.0, 3.0), (1.0, 5.0, 0.8)],
)
def test_the_deadline_bounds_the_solver_time_limit(
    remaining: float | None, requested: float | None, expected: float | None
) -> None:
    from xmargin.server.batching import solve_budget

    limit = solve_budget(remaining, requested)
    assert limit == (None if expected is None else pytest.approx(expected))


def test_a_deadline_with_no_time_to_solve_is_refused() -> None:
    from xmargin.server.batching import solve_budget
    from xmargin.server.errors import DeadlineError

    with pytest.raises(DeadlineError):
        solve_budget(0.001, None)


def test_the_call_deadline_reaches_the_solver(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from xmargin.server import service

    seen: list[float | None] = []
    real_optimise = service.optimise

    def spy(book: Any, options: Any = None, backend: Any = None) -> Any:
        seen.append(options.time_limit)
        return real_optimise(book, options=options, backend=backend)

    monkeypatch.setattr(service, "optimise", spy)
    request = optimise_request(cases["01-basis-trade-10y"])
    stub.Optimise(request, timeout=5.0)
    request.options.time_limit.FromMilliseconds(1500)
    stub.Optimise(request, timeout=30.0)
    stub.Optimise(request)  # no deadline: the request's own limit
    assert seen[0] is not None and 5.0 * 0.6 < seen[0] < 5.0  # 80% of what is left
    assert seen[1:] == [pytest.approx(1.5), pytest.approx(1.5)]


def test_batch_on_a_full_server_is_resource_exhausted(
    small_stub: XmarginServiceStub, cases: dict[str, dict[str, Any]], busy_pool: threading.Event
) -> None:
    single = optimise_request(cases["01-basis-trade-10y"])
    request = service_pb2.OptimiseBatchRequest(
        run=single.run,
        accounts=[single.account],
        scenario_set=single.scenario_set,
        models=single.models,
    )
    error = call_error(lambda: list(small_stub.OptimiseBatch(request, timeout=30)))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_thousands_of_violations_reach_the_caller_as_invalid_argument(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    """2,000 positions of unknown instruments: the caller gets INVALID_ARGUMENT with as many
    violations as fit in the capped details and a last one counting the rest -- not
    RESOURCE_EXHAUSTED from a trailer over the client's metadata limit (a default grpc-core
    client refuses trailers above 16 KiB)."""
    request = optimise_request(cases["01-basis-trade-10y"])
    template = request.account.positions[0]
    for i in range(2000):
        position = request.account.positions.add()
        position.CopyFrom(template)
        position.instrument = f"UNKNOWN{i:05d}"
    error = call_error(lambda: stub.Optimise(request, timeout=60))
    fields = violations(error)
    assert 10 < len(fields) < 2000, len(fields)
    (bad_request,) = [d for d in details(error) if isinstance(d, error_details_pb2.BadRequest)]
    last = bad_request.field_violations[-1]
    assert last.field == "<request>" and "more violations" in last.description
    rest = int(last.description.split()[1])
    assert len(fields) - 1 + rest >= 2000  # every unknown instrument is counted
