"""Admission and cancellation meet main's RPCs (the merge of ``service``): every method of the
service is a solver or a light call, Explain and OptimiseStream take solver slots, bytes that
do not parse still answer INVALID_ARGUMENT behind admission, and a cancelled OptimiseStream
stops its running solve."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc
import pytest

from tests.server.harness import batch_of, start
from xmargin.bench.load import hard_request
from xmargin.clients.v1 import explain_pb2, service_pb2
from xmargin.clients.v1.service_pb2_grpc import XmarginServiceStub
from xmargin.server import AdmissionLimits
from xmargin.server.admission import COMPUTE_METHODS

LIGHT = {"CheckEligibility", "RegisterScenarioSet", "GetScenarioSet", "ListScenarioSets"}


def test_every_method_is_classified() -> None:
    methods = {m.name for m in service_pb2.DESCRIPTOR.services_by_name["XmarginService"].methods}
    assert {"Explain", "OptimiseStream"} <= COMPUTE_METHODS
    assert methods == COMPUTE_METHODS | LIGHT  # a new RPC must be given its kind


def _wait(condition: object, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_a_full_server_refuses_explain_and_unparsable_bytes_still_get_invalid_argument() -> None:
    running = start(workers=1, max_queue=0, admission=AdmissionLimits(client_quota=2))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            raw = channel.unary_unary("/xmargin.v1.XmarginService/Optimise")
            with pytest.raises(grpc.RpcError) as bad:
                raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            stub = XmarginServiceStub(channel)
            hard = stub.Optimise.future(hard_request(12), timeout=60)
            assert _wait(lambda: running.pool.available() == 0, 30), "the solve never started"
            with pytest.raises(grpc.RpcError) as refused:
                stub.Explain(explain_pb2.ExplainRequest(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            hard.cancel()
            assert _wait(lambda: running.pool.available() == 1, 5), "the slot stayed taken"
    finally:
        running.stop(0)


def _stream(request: service_pb2.OptimiseRequest) -> Iterator[service_pb2.OptimiseStreamRequest]:
    yield service_pb2.OptimiseStreamRequest(batch=batch_of(request))
    yield service_pb2.OptimiseStreamRequest(account=request.account)
    time.sleep(60)  # keep the request side open: the client cancels first


def _logged(caplog: pytest.LogCaptureFixture, method: str) -> list[str]:
    """The statuses of the server's log lines of ``method``."""
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "xmargin.server"]
    return [line["status"] for line in lines if line.get("method") == method]


def test_a_cancelled_stream_stops_its_running_solve(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="xmargin.server")
    running = start(workers=1, max_queue=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            call = XmarginServiceStub(channel).OptimiseStream(_stream(hard_request(12)))
            assert _wait(lambda: running.pool.available() == 0, 30), "the solve never started"
            time.sleep(0.5)  # into the solve
            call.cancel()
            cancelled = time.monotonic()
            assert _wait(lambda: running.pool.available() == 1, 5), "the solve kept running"
            assert time.monotonic() - cancelled < 3.0
            assert _wait(lambda: _logged(caplog, "OptimiseStream"), 5), "no log line"
            assert _logged(caplog, "OptimiseStream") == ["CANCELLED"]
    finally:
        running.stop(0)
