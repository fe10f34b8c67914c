"""``xmargin serve --audit URL``: every Optimise and every OptimiseBatch account is stored once
under (business date, cycle, run number, customer id); the same request again gets the stored
answer, another request under that key ALREADY_EXISTS; ``xmargin audit show --reproduce``
reproduces what the server stored. On SQLite, and on PostgreSQL when $XMARGIN_TEST_PG_DSN is
set (a fresh schema per test)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.server.harness import optimise_request, start
from tests.server.test_engines import batch_request, run_batch
from tests.server.test_errors import call_error, details, violations
from xmargin.clients import convert
from xmargin.clients.messages import copy_shared_fields
from xmargin.clients.v1 import result_pb2, service_pb2
from xmargin.clients.v1.service_pb2_grpc import XmarginServiceStub
from xmargin.optimiser import cli
from xmargin.optimiser.audit import open_store
from xmargin.server import RunningServer
from xmargin.server.convert import rows_to_columns

DATE, CYCLE = "2026-11-24", "EOD"


@pytest.fixture
def audited(store_url: str) -> Iterator[RunningServer]:
    running = start(workers=2, max_queue=4, audit=store_url)
    yield running
    running.stop(0)


@pytest.fixture
def audited_stub(audited: RunningServer) -> Iterator[XmarginServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{audited.port}") as channel:
        yield XmarginServiceStub(channel)


def audit_cli(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, Any]:
    """``xmargin audit ARGS --audit URL``: exit code and parsed JSON output."""
    capsys.readouterr()
    code = cli.main(["-q", "audit", *args, "--audit", url])
    return code, json.loads(capsys.readouterr().out)


def show(
    capsys: pytest.CaptureFixture[str], url: str, run: int, account: str
) -> tuple[int, dict[str, Any]]:
    key = ["--business-date", DATE, "--cycle", CYCLE, "--run-number", str(run)]
    return audit_cli(capsys, url, "show", *key, "--account", account, "--reproduce")


def stored_rows(url: str) -> int:
    with open_store(url) as store:
        count: int = store.count()
    return count


def test_optimise_is_recorded_once_and_audit_show_reproduces_it(
    audited_stub: XmarginServiceStub,
    store_url: str,
    cases: dict[str, dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    case = cases["01-basis-trade-10y"]
    customer = case["customer"]["id"]
    request = optimise_request(case)
    assert request.run.run_number == 1
    first = audited_stub.Optimise(request, timeout=60)

    code, stored = show(capsys, store_url, 1, customer)
    assert code == 0 and stored["status"] == "OK"
    assert stored["key"] == {
        "business_date": DATE,
        "cycle": CYCLE,
        "run_number": 1,
        "account": customer,
    }
    assert stored["reproduce"]["matches"] is True
    assert stored["result"]["optimised"]["total"] == first.result.optimised.total
    assert list(stored["result"]["optimised"]["allocation"].values()) == list(
        first.result.optimised.xm_quantities
    )

    # The same request again (a retry): the stored answer, nothing solved or written.
    request.run.request_id = "a-retry"
    again = audited_stub.Optimise(request, timeout=60)
    assert again.result == first.result  # timings included: they are the stored ones
    assert again.run.request_id == "a-retry"
    assert stored_rows(store_url) == 1
    assert show(capsys, store_url, 1, customer)[1]["recorded_at"] == stored["recorded_at"]

    # The account sent as columns (account_columns) is the same case: the stored answer,
    # nothing solved or written (a different case under this key would be refused below).
    as_columns = optimise_request(case, columns=True)
    assert not as_columns.account.positions and as_columns.account_columns.position_instrument
    assert audited_stub.Optimise(as_columns, timeout=60).result == first.result
    assert stored_rows(store_url) == 1

    # Asked for columns, the stored answer comes back with its rows moved into them.
    request.columnar_result = True
    columnar = audited_stub.Optimise(request, timeout=60)
    expected = result_pb2.OptimiseResult()
    expected.CopyFrom(first.result)
    rows_to_columns(expected)
    assert columnar.result == expected and len(expected.position_columns.instrument) > 0
    assert stored_rows(store_url) == 1

    # Another request under the same key is refused; a new run number takes it.
    changed = optimise_request(case)
    changed.account.positions[0].quantity *= 2
    error = call_error(lambda: audited_stub.Optimise(changed, timeout=60))
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "new run number" in (error.details() or "")
    (info,) = [d for d in details(error) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert info.reason == "RUN_ALREADY_RECORDED"
    assert info.metadata["account"] == customer and info.metadata["run_number"] == "1"
    changed.run.run_number = 2
    second_run = audited_stub.Optimise(changed, timeout=60)
    assert second_run.result.current.total != first.result.current.total
    assert stored_rows(store_url) == 2


def test_a_failed_run_is_recorded_and_reproduced_and_bad_input_is_not(
    audited_stub: XmarginServiceStub,
    store_url: str,
    cases: dict[str, dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    case = copy.deepcopy(cases["01-basis-trade-10y"])
    lot = case["positions"][0]["lot"]
    case["positions"][0]["xm_quantity"] = 123.5 * lot  # off the lot grid, and nothing may move
    infeasible = optimise_request(case, integral=True, max_transfers=0)
    infeasible.run.run_number = 3
    error = call_error(lambda: audited_stub.Optimise(infeasible, timeout=60))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    code, stored = show(capsys, store_url, 3, case["customer"]["id"])
    assert code == 0 and stored["status"] == "FAILED"
    assert stored["error"]["type"] == "InfeasibleError"
    assert stored["reproduce"]["matches"] is True

    no_run = optimise_request(cases["02-butterfly-2s5s10s"])
    no_run.run.run_number = 0
    error = call_error(lambda: audited_stub.Optimise(no_run, timeout=60))
    assert violations(error) == ["run.run_number"]
    bad = optimise_request(cases["02-butterfly-2s5s10s"])
    bad.account.positions[1].lot = -1.0
    assert violations(call_error(lambda: audited_stub.Optimise(bad, timeout=60))) == [
        "account.positions[1].lot"
    ]
    assert stored_rows(store_url) == 1  # only the infeasible run


def test_every_batch_account_is_recorded_once_and_a_rerun_gets_the_stored_answers(
    audited: RunningServer,
    store_url: str,
    cases: dict[str, dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = sorted(cases)
    request = batch_request(cases, names, broken_at=2)
    request.run.run_number = 5
    # One account of run 5 comes first as a single Optimise with the batch's shared inputs.
    single = copy_shared_fields(request, service_pb2.OptimiseRequest(account=request.accounts[0]))
    with grpc.insecure_channel(f"127.0.0.1:{audited.port}") as channel:
        alone = XmarginServiceStub(channel).Optimise(single, timeout=60)
    first = run_batch(audited.port, request)

    valid = len(names)
    assert [m.progress.completed for m in first] == list(range(1, valid + 2))
    assert first[-1].progress.failed == 1
    results = {m.account_index: m.result for m in first if m.WhichOneof("outcome") == "result"}
    assert sorted(results) == [i for i in range(valid + 1) if i != 2]
    assert results[0] == alone.result  # the stored answer, not a second solve
    assert stored_rows(store_url) == valid  # the invalid account is not a run

    code, listing = audit_cli(
        capsys, store_url, "list", "--business-date", DATE, "--cycle", CYCLE, "--run-number", "5"
    )
    assert code == 0
    customers = sorted(request.accounts[i].customer.id for i in results)
    assert [a["account"] for a in listing["accounts"]] == customers
    assert {a["status"] for a in listing["accounts"]} == {"OK"}

    last = max(results)
    code, stored = show(capsys, store_url, 5, request.accounts[last].customer.id)
    assert code == 0 and stored["reproduce"]["matches"] is True
    assert stored["source"] == f"accounts[{last}]"
    assert stored["result"]["optimised"]["total"] == results[last].optimised.total

    rerun = run_batch(audited.port, request)  # after a crash, say: the same run again
    assert {m.account_index: m.result for m in rerun if m.HasField("result")} == results
    assert stored_rows(store_url) == valid


def test_serve_with_the_process_pool_and_sqlite_audit_end_to_end(
    tmp_path: Path, cases: dict[str, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """``xmargin serve --batch-engine local --audit sqlite:///...`` as a real process."""
    from tests.server.test_process import ServerProcess

    url = f"sqlite:///{tmp_path / 'served.db'}"
    served = ServerProcess("--workers", "2", "--batch-engine", "local", "--audit", url)
    try:
        serving = next(e for e in served.events() if e.get("event") == "serving")
        assert serving["batch_engine"] == "local" and serving["audit"].endswith("served.db")
        request = batch_request(cases, sorted(cases)[:3])
        messages = run_batch(served.port, request)
    finally:
        served.process.terminate()
        served.process.wait(30)
    assert all(m.HasField("result") for m in messages) and len(messages) == 3
    for message in messages:
        customer = request.accounts[message.account_index].customer.id
        code, stored = show(capsys, url, 1, customer)
        assert code == 0 and stored["reproduce"]["matches"] is True
        assert stored["result"]["optimised"]["total"] == message.result.optimised.total


def test_a_cancelled_batch_rerun_stores_every_account_once(
    store_url: str, cases: dict[str, dict[str, Any]]
) -> None:
    """The client goes away after the first account; what finished is stored, the rest is
    stopped; the rerun gets the stored answers back and computes only the rest."""
    import time

    running = start(workers=1, max_queue=2, audit=store_url)
    names = sorted(cases)
    request = batch_request(cases, [])
    for copy_number in range(8):
        for name in names:
            account = convert.account_book(cases[name])
            account.customer.id = f"{account.customer.id}-{copy_number}"
            request.accounts.append(account)
    total = len(request.accounts)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            call = XmarginServiceStub(channel).OptimiseBatch(request, timeout=60)
            first = next(iter(call))
            call.cancel()
        stored, settled = -1, time.monotonic() + 10
        while time.monotonic() < settled:  # until the engine has stopped writing
            time.sleep(0.3)
            now = stored_rows(store_url)
            if now == stored:
                break
            stored = now
        assert 1 <= stored < total
        rerun = run_batch(running.port, request)
    finally:
        running.stop(0)
    assert len(rerun) == total and all(m.HasField("result") for m in rerun)
    assert stored_rows(store_url) == total
    again = next(m for m in rerun if m.account_index == first.account_index)
    assert again.result == first.result  # the stored answer, not a second solve
