"""Hypothesis fuzzing of request messages: the server answers OK or a client-error status with
details, never UNKNOWN or INTERNAL, and keeps serving."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.harness import start
from xmargin.clients import convert
from xmargin.clients.messages import copy_shared_fields
from xmargin.clients.v1 import book_pb2, explain_pb2, service_pb2
from xmargin.clients.v1.service_pb2_grpc import XmarginServiceStub
from xmargin.server import AdmissionLimits, RunningServer

# A client's fault, reported with details; INFEASIBLE is a valid answer to a valid request.
ACCEPTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}

FLOATS = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6),
    st.floats(),  # any double, huge and tiny included
    st.sampled_from([0.0, -0.0, 1.0, -1.0, float("nan"), float("inf"), -float("inf")]),
)
SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_DOUBLE: FLOATS,
    FieldDescriptor.TYPE_STRING: st.one_of(
        st.text(max_size=12),
        st.sampled_from(["", "2026-11-24", "2020-01-01", "TY", "N1", "F1", "s0", "SPONSORED"]),
    ),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_UINT32: st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1)),
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**40), 2**40),
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: st.integers(0, 14),
}


def tiny_case() -> dict[str, Any]:
    """A small valid case (3 factors, 40 scenarios): fast to solve, every field present."""
    factors = ["F1", "F2", "F3"]
    first = dt.date(2026, 9, 1)
    ids = [(first + dt.timedelta(days=i)).isoformat() for i in range(40)]
    shocks = [[((i * 7 + k * 3) % 11 - 5) * 0.8 for k in range(3)] for i in range(40)]
    return {
        "business_date": "2026-11-24",
        "cycle": "EOD",
        "clearing_member": {
            "id": "FCM",
            "bd_fcm": True,
            "cme_clearing_member": True,
            "ficc_netting_member": True,
        },
        "customer": {"id": "C1", "xm_enrolled": True, "ficc_account_type": "SPONSORED"},
        "factors": factors,
        "scenarios": {"ids": ids, "shocks": shocks},
        "instruments": [
            {
                "id": "N1",
                "ccp": "FICC",
                "kind": "NOTE",
                "maturity": "2034-05-15",
                "coupon": 4.0,
                "sensitivities": [0.0, -0.0004, -0.0006],
            },
            {
                "id": "F1",
                "ccp": "CME",
                "kind": "FUTURE",
                "contract": "TY",
                "sensitivities": [0.0, -40.0, -55.0],
            },
            {
                "id": "O1",
                "ccp": "CME",
                "kind": "OPTION",
                "contract": "TY",
                "pnl": [((i * 5) % 9 - 4) * 10.0 for i in range(40)],
            },
        ],
        "positions": [
            {"instrument": "N1", "quantity": 1e8, "xm_quantity": 1e8, "lot": 1e6},
            {"instrument": "F1", "quantity": -900, "xm_quantity": 0, "lot": 1},
            {"instrument": "O1", "quantity": 50},
        ],
        "models": {
            "FICC": {"lookback": 40, "confidence": 0.95, "horizon_days": 3, "measure": "ES"},
            "CME": {
                "confidence": 0.95,
                "horizon_days": 2,
                "stress_ids": [ids[3]],
                "stress_weight": 0.2,
                "addon_rate": [0.1, 0.1, 0.1],
                "addon_threshold": [1e4, 1e4, 1e4],
            },
        },
        "program": {"savings_cap": 0.8},
        "options": {"integral": False, "time_limit": 5.0},
    }


def _mutate(data: st.DataObject, message: Message, depth: int = 0) -> None:
    """Change one field somewhere below ``message``: a scalar value, a list's length or
    element, a sub-message cleared or mutated further."""
    fields = list(message.DESCRIPTOR.fields)
    field = data.draw(st.sampled_from(fields), label="field")
    value = getattr(message, field.name)
    repeated = field.is_repeated
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return
    if field.message_type is not None:
        if repeated:
            action = data.draw(st.sampled_from(["add", "delete", "mutate", "clear"]))
            if action == "add" or not value:
                _mutate(data, value.add(), depth + 1) if depth < 4 else value.add()
            elif action == "delete":
                del value[data.draw(st.integers(0, len(value) - 1))]
            elif action == "clear":
                del value[:]
            else:
                _mutate(data, value[data.draw(st.integers(0, len(value) - 1))], depth + 1)
        elif depth >= 4 or data.draw(st.booleans(), label="clear"):
            message.ClearField(field.name)
        else:
            _mutate(data, value, depth + 1)
        return
    strategy = SCALARS[field.type]
    if repeated:
        action = data.draw(st.sampled_from(["append", "delete", "set", "clear"]))
        if action == "append" or not value:
            value.append(data.draw(strategy))
        elif action == "delete":
            del value[data.draw(st.integers(0, len(value) - 1))]
        elif action == "clear":
            del value[:]
        else:
            value[data.draw(st.integers(0, len(value) - 1))] = data.draw(strategy)
    else:
        setattr(message, field.name, data.draw(strategy))


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[RunningServer]:
    # admission wide enough for the 8 concurrent senders of one client: this is about parsing
    running = start(
        workers=2, max_queue=16, admission=AdmissionLimits(max_light=16, client_quota=18)
    )
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def fuzz_channel(fuzz_server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{fuzz_server.port}") as channel:
        yield channel


def _other_customer(account: book_pb2.AccountBook) -> book_pb2.AccountBook:
    """The same book under another customer id (a batch holds each customer once)."""
    other = book_pb2.AccountBook()
    other.CopyFrom(account)
    other.customer.id = f"{account.customer.id}-2"
    return other


def _requests() -> dict[str, tuple[str, Message]]:
    case = tiny_case()
    run = convert.run_context(case, request_id="fuzz")
    full = convert.optimise_request(case, run)
    return {
        "Optimise": ("Optimise", full),
        "ComputeMargin": (
            "ComputeMargin",
            copy_shared_fields(full, service_pb2.ComputeMarginRequest()),
        ),
        "WhatIf": (
            "WhatIf",
            copy_shared_fields(
                full,
                service_pb2.WhatIfRequest(
                    add_trades=[book_pb2.Position(instrument="F1", quantity=100)],
                    exclude_positions=["O1"],
                ),
            ),
        ),
        "CheckEligibility": (
            "CheckEligibility",
            service_pb2.CheckEligibilityRequest(
                run=run,
                clearing_member=full.account.clearing_member,
                customer=full.account.customer,
                instruments=full.account.instruments,
            ),
        ),
        "RegisterScenarioSet": (
            "RegisterScenarioSet",
            service_pb2.RegisterScenarioSetRequest(
                run=run,
                id="fuzz",
                scenario_set=full.scenario_set,
            ),
        ),
        "Explain": (
            "Explain",
            copy_shared_fields(full, explain_pb2.ExplainRequest()),
        ),
        "OptimiseBatch": (
            "OptimiseBatch",
            copy_shared_fields(
                full,
                service_pb2.OptimiseBatchRequest(
                    accounts=[full.account, _other_customer(full.account)]
                ),
            ),
        ),
    }


REQUESTS = _requests()


def _check(stub: XmarginServiceStub, method: str, request: Message) -> grpc.StatusCode:
    try:
        if method == "OptimiseBatch":
            for item in stub.OptimiseBatch(request, timeout=30):
                if item.WhichOneof("outcome") == "error":
                    assert item.error.code in {c.name for c in ACCEPTED}, item.error
            return grpc.StatusCode.OK
        getattr(stub, method)(request, timeout=30)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
        assert code in ACCEPTED, f"{code}: {error.details()}"
        if code is not grpc.StatusCode.OK:
            assert rpc_status.from_call(error) is not None, "error without google.rpc details"
        return code


@pytest.mark.parametrize("name", list(REQUESTS))
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_requests_get_ok_or_a_client_error(
    fuzz_channel: grpc.Channel, name: str, data: st.DataObject
) -> None:
    method, template = REQUESTS[name]
    request = type(template)()
    request.CopyFrom(template)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        _mutate(data, request)
    _check(XmarginServiceStub(fuzz_channel), method, request)


def test_the_unmutated_requests_are_answered_ok(fuzz_channel: grpc.Channel) -> None:
    stub = XmarginServiceStub(fuzz_channel)
    for method, request in REQUESTS.values():
        assert _check(stub, method, request) is grpc.StatusCode.OK, method


def test_server_keeps_serving_after_the_fuzzing(fuzz_channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(fuzz_channel)
    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    _, request = REQUESTS["Optimise"]
    response = XmarginServiceStub(fuzz_channel).Optimise(request, timeout=30)
    assert response.result.optimised.total >= 0


# --- raw bytes: random, truncated, bit-flipped, deeply nested -----------------------------------

METHODS = {
    "Optimise": False,
    "OptimiseBatch": True,
    "ComputeMargin": False,
    "WhatIf": False,
    "CheckEligibility": False,
    "RegisterScenarioSet": False,
}


def _nested(depth: int, group: bool) -> bytes:
    """Field 1 inside field 1 inside ... ``depth`` deep (length-delimited, or groups)."""
    if group:
        return b"\x0b" * depth + b"\x0c" * depth
    body = b""
    for _ in range(depth):
        body = b"\x0a" + _varint(len(body)) + body
    return body


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _raw_requests(count: int, seed: int = 20261124) -> list[tuple[str, bytes]]:
    """``count`` (method, bytes) pairs, the same every run (a seeded generator)."""
    rng = random.Random(seed)
    valid = {name: REQUESTS[name][1].SerializeToString() for name in METHODS}
    out: list[tuple[str, bytes]] = []
    cheap = ["ComputeMargin", "CheckEligibility", "RegisterScenarioSet"]  # no solve
    for k in range(count):
        kind = k % 5
        # bytes that may still parse as a valid request go to the methods that do not solve
        method = rng.choice(cheap if kind in (2, 4) else list(METHODS))
        if kind == 0:
            raw = rng.randbytes(rng.randint(0, 400))
        elif kind == 1:
            good = valid[method]
            raw = good[: rng.randint(0, len(good) - 1)]
        elif kind == 2:
            flipped = bytearray(valid[method])
            for _ in range(rng.randint(1, 4)):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            raw = bytes(flipped)
        elif kind == 3:
            raw = _nested(rng.choice([50, 101, 1000, 20_000]), rng.random() < 0.5)
        else:  # a valid prefix and random tail, or a huge length prefix
            good = valid[method]
            raw = good[: rng.randint(0, len(good))] + rng.choice(
                [rng.randbytes(rng.randint(1, 40)), b"\x0a\xff\xff\xff\xff\x0f"]
            )
        out.append((method, raw))
    return out


def test_raw_bytes_never_get_internal(fuzz_channel: grpc.Channel) -> None:
    """>= 2,000 requests of random, truncated, bit-flipped and deeply nested bytes: a client
    error status every time (INVALID_ARGUMENT for bytes that do not parse), never INTERNAL or
    UNKNOWN, and the server keeps serving."""
    calls = {
        name: (
            fuzz_channel.unary_stream(f"/xmargin.v1.XmarginService/{name}")
            if streaming
            else fuzz_channel.unary_unary(f"/xmargin.v1.XmarginService/{name}")
        )
        for name, streaming in METHODS.items()
    }
    requests = _raw_requests(2_000)
    codes: dict[grpc.StatusCode, int] = {}

    def send(item: tuple[str, bytes]) -> grpc.StatusCode:
        method, raw = item
        try:
            if METHODS[method]:
                for _ in calls[method](raw, timeout=30):
                    pass
            else:
                calls[method](raw, timeout=30)
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(8) as pool:
        for code in pool.map(send, requests):
            codes[code] = codes.get(code, 0) + 1
    assert set(codes) <= ACCEPTED, codes
    assert codes.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > 1_000, codes
    health = health_pb2_grpc.HealthStub(fuzz_channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == (
        health_pb2.HealthCheckResponse.SERVING
    )


# --- every violation comes back ------------------------------------------------------------------


def _set_path(message: Message, path: str, value: Any) -> None:
    """Set a proto field by a path like ``account.positions[0].lot``."""
    parts = path.replace("]", "").replace("[", ".").split(".")
    target: Any = message
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else getattr(target, part)
    last = parts[-1]
    if last.isdigit():
        target[int(last)] = value
    else:
        setattr(target, last, value)


BAD_FIELDS: dict[str, Any] = {
    "account.positions[0].quantity": 1e300,
    "account.positions[1].lot": 1e20,
    "account.instruments[0].maturity": "20340515",
    "account.instruments[0].sensitivities.values[1]": 1e300,
    "account.instruments[1].ccp": 0,
    "account.instruments[2].kind": 0,
    "account.instruments[2].pnl.values[3]": float("nan"),
    "account.customer.ficc_account_type": "FOO",
    "models.cme.measure": 0,
    "models.ficc.confidence": 1.5,
    "models.ficc.horizon_days": 1e9,
    "models.cme.addon_rate[0]": 1e15,
    "run.business_date": "20261124",
}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(bad=st.sets(st.sampled_from(sorted(BAD_FIELDS)), min_size=1, max_size=6))
def test_every_violation_comes_back_as_a_field_violation(
    fuzz_channel: grpc.Channel, bad: set[str]
) -> None:
    request = service_pb2.ComputeMarginRequest()
    request.CopyFrom(REQUESTS["ComputeMargin"][1])
    for path in bad:
        _set_path(request, path, BAD_FIELDS[path])
    with pytest.raises(grpc.RpcError) as raised:
        XmarginServiceStub(fuzz_channel).ComputeMargin(request, timeout=30)
    error = raised.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    status = rpc_status.from_call(error)
    assert status is not None
    reported: set[str] = set()
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            reported |= {v.field for v in bad_request.field_violations}
    assert bad <= reported, (bad - reported, reported)


def test_a_zero_enum_is_refused_naming_the_field(fuzz_channel: grpc.Channel) -> None:
    """MEASURE_UNSPECIFIED (what protobufjs sends for an unknown name) is not silently ES."""
    request = service_pb2.ComputeMarginRequest()
    request.CopyFrom(REQUESTS["ComputeMargin"][1])
    request.models.ficc.measure = book_pb2.MEASURE_UNSPECIFIED
    with pytest.raises(grpc.RpcError) as raised:
        XmarginServiceStub(fuzz_channel).ComputeMargin(request, timeout=30)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "models.ficc.measure" in raised.value.details()


def test_long_strings_are_cut_in_the_error(fuzz_channel: grpc.Channel) -> None:
    request = service_pb2.ComputeMarginRequest()
    request.CopyFrom(REQUESTS["ComputeMargin"][1])
    request.account.customer.ficc_account_type = "X" * 5000
    request.run.business_date = "Y" * 5000
    with pytest.raises(grpc.RpcError) as raised:
        XmarginServiceStub(fuzz_channel).ComputeMargin(request, timeout=30)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert len(raised.value.details()) < 1_000
