"""OptimiseStream against real servers: accounts up as a stream, answers back as they finish,
the same answers as OptimiseBatch, a bounded window of accounts in flight, and duplicate
customer ids refused (per account in a stream, the whole batch in OptimiseBatch)."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from tests.server.harness import TOKEN, batch_of, optimise_request, start
from xmargin.clients import convert
from xmargin.clients.v1 import book_pb2, service_pb2
from xmargin.clients.v1.service_pb2_grpc import XmarginServiceStub
from xmargin.server import RunningServer


def _header(case: dict[str, Any]) -> service_pb2.OptimiseBatchRequest:
    return batch_of(optimise_request(case))


def _messages(
    header: service_pb2.OptimiseBatchRequest, accounts: list[book_pb2.AccountBook]
) -> Iterator[service_pb2.OptimiseStreamRequest]:
    yield service_pb2.OptimiseStreamRequest(batch=header)
    for account in accounts:
        yield service_pb2.OptimiseStreamRequest(account=account)


def _renamed(case: dict[str, Any], customer: str) -> book_pb2.AccountBook:
    account = convert.account_book(case)
    account.customer.id = customer
    account.name = customer
    return account


def test_stream_answers_every_account_as_the_batch_does(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    names = sorted(cases)
    header = _header(cases[names[0]])
    accounts = [convert.account_book(cases[name]) for name in names]
    streamed = list(stub.OptimiseStream(_messages(header, accounts), timeout=120))
    batch = service_pb2.OptimiseBatchRequest()
    batch.CopyFrom(header)
    batch.accounts.extend(accounts)
    unary = {m.account_index: m for m in stub.OptimiseBatch(batch, timeout=120)}

    assert sorted(m.account_index for m in streamed) == list(range(len(names)))
    assert [m.progress.completed for m in streamed] == list(range(1, len(names) + 1))
    assert streamed[-1].progress.total == len(names)
    assert all(m.run == header.run for m in streamed)
    for message in streamed:
        other = unary[message.account_index]
        assert message.account_name == other.account_name
        assert message.WhichOneof("outcome") == other.WhichOneof("outcome")
        if message.HasField("result"):
            assert message.result.optimised.total == pytest.approx(
                other.result.optimised.total, rel=1e-9
            )
        else:
            assert message.error.code == other.error.code


def test_a_registered_set_serves_a_stream_by_reference(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    case = cases["02-butterfly-2s5s10s"]
    header = _header(case)
    ref = stub.RegisterScenarioSet(
        service_pb2.RegisterScenarioSetRequest(
            run=header.run, id="stream-set", scenario_set=header.scenario_set
        ),
        timeout=10,
    ).ref
    inline = list(stub.OptimiseStream(_messages(header, [convert.account_book(case)]), timeout=60))
    header.scenario_set_ref.CopyFrom(ref)
    by_ref = list(stub.OptimiseStream(_messages(header, [convert.account_book(case)]), timeout=60))
    assert by_ref[0].result.optimised.total == pytest.approx(
        inline[0].result.optimised.total, rel=1e-9
    )


def test_duplicate_customer_ids_are_refused(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    case = cases["01-basis-trade-10y"]
    header = _header(case)
    accounts = [_renamed(case, "A"), _renamed(case, "B"), _renamed(case, "A")]
    streamed = {
        m.account_index: m for m in stub.OptimiseStream(_messages(header, accounts), timeout=60)
    }
    assert streamed[0].HasField("result") and streamed[1].HasField("result")
    assert streamed[2].error.code == "INVALID_ARGUMENT"
    assert [v.field for v in streamed[2].error.field_violations] == ["accounts[2].customer.id"]

    batch = service_pb2.OptimiseBatchRequest()
    batch.CopyFrom(header)
    batch.accounts.extend(accounts)
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.OptimiseBatch(batch, timeout=60))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "accounts[2].customer.id" in (refused.value.details() or "")


def test_the_stream_is_refused_without_a_batch_first_or_with_accounts_in_it(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    case = cases["01-basis-trade-10y"]
    account = convert.account_book(case)
    no_header = iter([service_pb2.OptimiseStreamRequest(account=account)])
    with pytest.raises(grpc.RpcError) as first:
        list(stub.OptimiseStream(no_header, timeout=30))
    assert first.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    header = _header(case)
    header.accounts.append(account)
    with pytest.raises(grpc.RpcError) as inside:
        list(stub.OptimiseStream(_messages(header, []), timeout=30))
    assert inside.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    second = copy.deepcopy(_header(case))
    again = iter(
        [
            service_pb2.OptimiseStreamRequest(batch=second),
            service_pb2.OptimiseStreamRequest(batch=second),
        ]
    )
    with pytest.raises(grpc.RpcError) as twice:
        list(stub.OptimiseStream(again, timeout=30))
    assert twice.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(grpc.RpcError) as nothing:  # no message: no batch (the lead's decision)
        list(stub.OptimiseStream(iter([]), timeout=30))
    assert nothing.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "batch: is required" in (nothing.value.details() or "")


def test_a_bad_account_fails_alone(
    stub: XmarginServiceStub, cases: dict[str, dict[str, Any]]
) -> None:
    case = cases["01-basis-trade-10y"]
    bad = _renamed(case, "BAD")
    bad.positions[0].instrument = "NO-SUCH-INSTRUMENT"
    answers = {
        m.account_index: m
        for m in stub.OptimiseStream(
            _messages(_header(case), [bad, _renamed(case, "GOOD")]), timeout=60
        )
    }
    assert answers[0].error.code == "INVALID_ARGUMENT"
    assert answers[0].error.field_violations[0].field.startswith("accounts[0].")
    assert answers[1].HasField("result")
    assert answers[1].progress.failed == 1 or answers[0].progress.failed == 1


@pytest.mark.parametrize("engine", ["threads", "local"])
def test_the_window_bounds_the_accounts_in_flight(
    engine: str, cases: dict[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """With a window of 3, the server never holds more than 3 accounts read but unanswered
    (it stops reading; flow control holds the client back), on either engine."""
    running = start(workers=2, max_queue=2, stream_window=3, batch_engine=engine)
    case = cases["03-mixed-ineligible-hedges"]
    header = _header(case)
    header.run.request_id = f"window-{engine}"
    accounts = [_renamed(case, f"W{k}") for k in range(10)]
    try:
        with (
            caplog.at_level(logging.INFO, logger="xmargin.server"),
            grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel,
        ):
            answers = list(
                XmarginServiceStub(channel).OptimiseStream(_messages(header, accounts), timeout=120)
            )
    finally:
        running.stop(0)
    assert sorted(m.account_index for m in answers) == list(range(10))
    assert all(m.HasField("result") for m in answers)
    done = [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "xmargin.server" and '"stream_done"' in r.getMessage()
    ]
    done = [d for d in done if d["request_id"] == f"window-{engine}"]
    assert len(done) == 1
    assert done[0]["accounts"] == done[0]["answered"] == 10
    assert 1 <= done[0]["peak_in_flight"] <= 3


def test_the_stream_needs_the_token_like_every_call(
    token_server: RunningServer, cases: dict[str, dict[str, Any]]
) -> None:
    case = cases["01-basis-trade-10y"]
    with grpc.insecure_channel(f"127.0.0.1:{token_server.port}") as channel:
        stub = XmarginServiceStub(channel)
        messages = _messages(_header(case), [_renamed(case, "T1"), _renamed(case, "T2")])
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.OptimiseStream(messages, timeout=30))
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        answers = list(
            stub.OptimiseStream(
                _messages(_header(case), [_renamed(case, "T1")]),
                timeout=30,
                metadata=(("authorization", f"Bearer {TOKEN}"),),
            )
        )
    assert answers[0].HasField("result")


def test_a_cancelled_stream_stops_reading_and_solving(
    cases: dict[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """The client goes away after the first answer: the server reads no further than its
    window and answers nothing more (its stream_done line says so)."""
    running = start(workers=1, max_queue=2, stream_window=2)
    case = cases["03-mixed-ineligible-hedges"]
    header = _header(case)
    header.run.request_id = "cancelled-stream"
    sent: list[int] = []

    def endless() -> Iterator[service_pb2.OptimiseStreamRequest]:
        yield service_pb2.OptimiseStreamRequest(batch=header)
        for k in range(10_000):
            sent.append(k)
            yield service_pb2.OptimiseStreamRequest(account=_renamed(case, f"E{k}"))

    try:
        with (
            caplog.at_level(logging.INFO, logger="xmargin.server"),
            grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel,
        ):
            call = XmarginServiceStub(channel).OptimiseStream(endless(), timeout=60)
            first = next(call)
            call.cancel()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not _done_lines(caplog, "cancelled-stream"):
                time.sleep(0.05)
    finally:
        running.stop(0)
    assert first.HasField("result")
    done = _done_lines(caplog, "cancelled-stream")
    assert len(done) == 1
    assert done[0]["answered"] < 10
    assert done[0]["accounts"] <= done[0]["answered"] + 2 + 1  # the window, and one being read
    assert len(sent) < 10_000


def _done_lines(caplog: pytest.LogCaptureFixture, request_id: str) -> list[dict[str, Any]]:
    lines = [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "xmargin.server" and '"stream_done"' in r.getMessage()
    ]
    return [line for line in lines if line["request_id"] == request_id]


def test_an_audited_stream_records_each_account_once(
    tmp_path: Any, cases: dict[str, dict[str, Any]]
) -> None:
    """With --audit, each streamed account is stored; the same stream again is answered from
    the store (nothing solved twice), and the set registered is kept in the same store."""
    from xmargin.optimiser.audit import open_store

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    running = start(workers=2, max_queue=2, audit=url)
    case = cases["02-butterfly-2s5s10s"]
    header = _header(case)
    header.run.run_number = 1
    accounts = [_renamed(case, f"R{k}") for k in range(3)]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = XmarginServiceStub(channel)
            first = list(stub.OptimiseStream(_messages(header, accounts), timeout=60))
            again = list(stub.OptimiseStream(_messages(header, accounts), timeout=60))
            stub.RegisterScenarioSet(
                service_pb2.RegisterScenarioSetRequest(
                    run=header.run, id="audited", scenario_set=header.scenario_set
                ),
                timeout=10,
            )
    finally:
        running.stop(0)
    totals = {m.account_name: m.result.optimised.total for m in first}
    assert {m.account_name: m.result.optimised.total for m in again} == pytest.approx(totals)
    with open_store(url) as store:
        stored = store.accounts(header.run.business_date, "EOD", 1)
        assert sorted(a for a, status, _, _ in stored if status == "OK") == ["R0", "R1", "R2"]
        assert [s.set_id for s in store.scenario_sets()] == ["audited"]


class _Context:
    """Just enough of a ServicerContext for StreamRun: alive, no deadline, callbacks kept."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def add_callback(self, callback: Any) -> bool:
        self.callbacks.append(callback)
        return True

    def is_active(self) -> bool:
        return True


def test_a_long_stream_keeps_nothing_of_the_accounts_it_answered() -> None:
    """Regression: each solve's future (holding its account and answer) was once registered on
    the call, so a stream held every account until it ended (server RSS grew ~2.6 MB per
    reference-size account). Now the call holds one callback and no finished solve."""
    from xmargin.optimiser.batch import AccountOutcome, BatchAccount, SharedInputs
    from xmargin.server import SolverPool
    from xmargin.server.batch_stream import StreamRun
    from xmargin.server.batching import BatchEngines

    pool = SolverPool(2, 2)
    context = _Context()

    def solve(index: int, account: BatchAccount, shared: Any, backend: Any) -> AccountOutcome:
        return AccountOutcome(index, account.account, account.label, {}, None, payload=b"")

    run = StreamRun(
        pool=pool,
        engines=BatchEngines("threads"),
        solve=solve,  # type: ignore[arg-type]
        inputs=SharedInputs.of({}),
        window=3,
        run=service_pb2.OptimiseBatchRequest().run,
        context=context,  # type: ignore[arg-type]
        make_account=lambda book, label: BatchAccount(book.customer.id, {}, label),
        prior=lambda account: None,
        finish=lambda account, outcome: outcome,
    )
    count = 500
    messages = (
        service_pb2.OptimiseStreamRequest(
            account=book_pb2.AccountBook(customer=book_pb2.Customer(id=f"C{k}"))
        )
        for k in range(count)
    )
    try:
        answers = list(run.answers(messages, 0.0))
    finally:
        pool.shutdown()
    assert sorted(m.account_index for m in answers) == list(range(count))
    assert len(context.callbacks) == 1
    assert not run._pending
    assert run.peak_in_flight <= 3


def test_a_stream_on_a_full_server_is_refused_before_anything_is_answered(
    cases: dict[str, dict[str, Any]],
) -> None:
    running = start(workers=1, max_queue=0)
    case = cases["01-basis-trade-10y"]
    running.pool.hold()  # the only slot, taken by "another call"
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = XmarginServiceStub(channel)
            messages = _messages(_header(case), [_renamed(case, "F1"), _renamed(case, "F2")])
            with pytest.raises(grpc.RpcError) as full:
                list(stub.OptimiseStream(messages, timeout=30))
            running.pool.release()
            answers = list(
                stub.OptimiseStream(_messages(_header(case), [_renamed(case, "F1")]), timeout=30)
            )
    finally:
        running.stop(0)
    assert full.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert answers[0].HasField("result")
