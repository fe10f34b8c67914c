"""OptimiseBatch on the batch engines (``xmargin serve --batch-engine local|dask``): the same
answers as the default solver threads, streamed per account with progress, failures per
account, admission control and the deadline kept."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from tests.conftest import assert_tree_close
from tests.server.harness import batch_of, optimise_request, start
from xmargin.clients import convert
from xmargin.clients.v1 import book_pb2, service_pb2
from xmargin.clients.v1.service_pb2_grpc import XmarginServiceStub
from xmargin.server import RunningServer
from xmargin.server.batching import BatchEngines, ProtoSolve
from xmargin.server.cli import build_parser


def batch_request(
    cases: dict[str, dict[str, Any]], names: list[str], broken_at: int | None = None
) -> service_pb2.OptimiseBatchRequest:
    """The accounts of ``names`` on case 01's scenarios, models and options; with
    ``broken_at``, an account with a negative lot is put at that index."""
    shared = optimise_request(cases["01-basis-trade-10y"])
    accounts = [convert.account_book(cases[name]) for name in names]
    if broken_at is not None:
        broken = convert.account_book(cases["02-butterfly-2s5s10s"])
        broken.customer.id = "CUST-broken"
        broken.positions[1].lot = -1.0
        accounts.insert(broken_at, broken)
    return batch_of(shared, accounts)


def comparable(message: service_pb2.OptimiseBatchResponse) -> dict[str, Any]:
    """An account's outcome without what differs between two runs (timings, progress)."""
    data = json_format.MessageToDict(message)
    data.pop("progress", None)
    stats = data.get("result", {}).get("solverStats", {})
    for timing in ("buildTime", "solveTime", "lpTime", "evaluationTime"):
        stats.pop(timing, None)
    return data


def run_batch(
    port: int, request: service_pb2.OptimiseBatchRequest
) -> list[service_pb2.OptimiseBatchResponse]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return list(XmarginServiceStub(channel).OptimiseBatch(request, timeout=120))


@pytest.fixture(scope="module")
def local_server() -> Iterator[RunningServer]:
    """A server whose batches run on a pool of two worker processes."""
    running = start(workers=2, max_queue=4, batch_engine="local")
    yield running
    running.stop(0)


def test_a_batch_on_the_process_pool_equals_the_default_threads(
    server: RunningServer,
    local_server: RunningServer,
    cases: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engines = local_server.servicer.engines
    made: list[Any] = []
    make = engines.make

    def spy(*args: Any) -> Any:
        made.append(make(*args))
        return made[-1]

    monkeypatch.setattr(engines, "make", spy)
    request = batch_request(cases, sorted(cases), broken_at=3)
    threads = run_batch(server.port, request)
    processes = run_batch(local_server.port, request)
    assert [type(engine).__name__ for engine in made] == ["LocalPoolEngine"]

    total = len(request.accounts)
    assert [m.progress.completed for m in processes] == list(range(1, total + 1))
    assert processes[-1].progress.failed == 1 and processes[-1].progress.total == total
    by_index = {m.account_index: comparable(m) for m in processes}
    assert sorted(by_index) == list(range(total))
    assert_tree_close(by_index, {m.account_index: comparable(m) for m in threads}, rel=1e-9)
    failure = next(m for m in processes if m.account_index == 3)
    assert failure.error.code == "INVALID_ARGUMENT"
    assert [v.field for v in failure.error.field_violations] == ["accounts[3].positions[1].lot"]
    assert all(m.WhichOneof("outcome") == "result" for m in processes if m.account_index != 3)


@pytest.mark.slow
def test_a_batch_on_a_dask_local_cluster_equals_the_default_threads(
    server: RunningServer, cases: dict[str, dict[str, Any]]
) -> None:
    pytest.importorskip("distributed")
    running = start(workers=2, max_queue=4, batch_engine="dask")
    try:
        request = batch_request(cases, sorted(cases)[:3], broken_at=1)
        on_dask = run_batch(running.port, request)
    finally:
        running.stop(0)
    threads = run_batch(server.port, request)
    assert [m.progress.completed for m in on_dask] == [1, 2, 3, 4]
    assert_tree_close(
        {m.account_index: comparable(m) for m in on_dask},
        {m.account_index: comparable(m) for m in threads},
        rel=1e-9,
    )


def test_a_full_server_refuses_a_process_pool_batch_at_once(
    cases: dict[str, dict[str, Any]],
) -> None:
    """One slot, held by a stuck call: the batch gets RESOURCE_EXHAUSTED, nothing runs."""
    running = start(workers=1, max_queue=0, batch_engine="local")
    release = threading.Event()
    try:
        running.pool.submit(release.wait, 30)
        with pytest.raises(grpc.RpcError) as caught:
            run_batch(running.port, batch_request(cases, ["01-basis-trade-10y"]))
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        release.set()
        running.stop(0)


def test_the_deadline_bounds_each_accounts_time_limit_where_it_is_solved(
    cases: dict[str, dict[str, Any]],
) -> None:
    """The worker hook derives the limit when the account starts, from the call's deadline."""
    import time

    from xmargin.optimiser.batch import BatchAccount, split_case

    seen: list[float | None] = []

    def spy(book: Any, options: Any = None, backend: Any = None) -> Any:
        seen.append(options.time_limit)
        raise RuntimeError("stop here")

    shared, own = split_case(cases["01-basis-trade-10y"])
    account = BatchAccount("CUST-1", own, "accounts[0]")
    ProtoSolve(time.time() + 10.0, spy)(0, account, shared)
    late = ProtoSolve(time.time() + 0.001, spy)(0, account, shared)
    limit = seen[0]
    assert limit is not None and 7.0 < limit <= 8.0  # 80% of the ~10 s left
    assert late.error is not None and late.error.type == "DeadlineError" and len(seen) == 1
    assert late.payload is not None
    error = service_pb2.AccountError.FromString(late.payload)
    assert error.code == "DEADLINE_EXCEEDED"


def test_serve_flags_choose_the_engine() -> None:
    from xmargin.server import cli

    args = build_parser().parse_args(["--batch-engine", "local", "--audit", "sqlite:///a.db"])
    assert (args.batch_engine, args.audit) == ("local", "sqlite:///a.db")
    with pytest.raises(SystemExit):  # a scheduler is for dask only
        cli.main(["--batch-engine", "local", "--scheduler", "tcp://127.0.0.1:1"])
    with pytest.raises(ValueError, match="unknown batch engine"):
        BatchEngines("spark")
    assert BatchEngines("threads").threaded and not BatchEngines("local").threaded


def test_an_empty_account_list_is_refused_and_an_empty_account_fails_alone(
    local_server: RunningServer, cases: dict[str, dict[str, Any]]
) -> None:
    """The contract says 1 to 10,000 accounts: none is INVALID_ARGUMENT (it streamed nothing
    and ended OK); an empty account is that account's failure."""
    request = batch_request(cases, [])
    with pytest.raises(grpc.RpcError) as caught:
        run_batch(local_server.port, request)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    request.accounts.append(book_pb2.AccountBook())  # no customer, no positions
    [message] = run_batch(local_server.port, request)
    assert message.error.code == "INVALID_ARGUMENT"


def test_a_cancelled_process_pool_batch_kills_the_accounts_it_was_solving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two accounts that would solve for minutes, on the process pool; the call is cancelled
    once they are under way: the pool's workers are gone within seconds and the slot is free."""
    import time
    from pathlib import Path

    from xmargin.bench.load import hard_case

    case = hard_case(2)
    hard = optimise_request(case)
    accounts = [convert.account_book(case) for _ in range(2)]
    for k, account in enumerate(accounts):
        account.customer.id = f"CUST-{k}"
    request = batch_of(hard, accounts)
    running = start(workers=2, max_queue=0, batch_engine="local")  # a pool of two processes
    made: list[Any] = []
    make = running.servicer.engines.make

    def spy(*args: Any) -> Any:
        made.append(make(*args))
        return made[-1]

    monkeypatch.setattr(running.servicer.engines, "make", spy)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            call = XmarginServiceStub(channel).OptimiseBatch(request, timeout=300)
            deadline = time.monotonic() + 60
            while not made or len(made[0].worker_pids()) < 2:
                assert time.monotonic() < deadline, "the batch never started"
                time.sleep(0.05)
            workers = made[0].worker_pids()
            time.sleep(1.0)  # the workers are solving
            call.cancel()
            cancelled = time.monotonic()
            while any(Path(f"/proc/{pid}").exists() for pid in workers):
                assert time.monotonic() - cancelled < 3.0, "the workers kept solving"
                time.sleep(0.05)
            while running.pool.available() < running.pool.capacity:
                assert time.monotonic() - cancelled < 3.0, "the slot stayed taken"
                time.sleep(0.05)
    finally:
        running.stop(0)
