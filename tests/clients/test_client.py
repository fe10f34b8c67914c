"""XmarginClient against real local servers: every method, each typed exception, retries and
deadlines, the client's independence of the solver stack, and the README's example."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import CASE_FILES, REPO_ROOT, close
from tests.server.harness import TOKEN, Certificates, start
from xmargin.clients import (
    AuthenticationError,
    BatchItem,
    DeadlineExceededError,
    InfeasibleError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    RetryPolicy,
    ScenarioSetHandle,
    UnavailableError,
    XmarginClient,
)
from xmargin.clients.v1 import service_pb2, service_pb2_grpc
from xmargin.optimiser import optimise, parse_case
from xmargin.server import RunningServer, SolverPool, XmarginServicer

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[XmarginClient]:
    with XmarginClient(f"127.0.0.1:{server.port}", timeout=60) as opened:
        yield opened


def test_optimise_from_a_case_file(client: XmarginClient, case_path: Path) -> None:
    case = json.loads(case_path.read_text())
    answer = client.optimise(case_path)
    assert answer.status == "OPTIMAL"
    assert close(answer.optimised.total, case["expected"]["optimised"]["total"])
    assert close(answer.baseline.total, case["expected"]["baseline"]["total"])
    assert close(answer.current.S_F, case["expected"]["current"]["S_F"])
    assert answer.eligible == case["expected"]["eligible"]
    local = optimise(parse_case(case))
    assert [t.instrument for t in answer.transfers] == [t.instrument for t in local.transfers]
    assert answer.savings == pytest.approx(local.savings, rel=1e-9, abs=1e-6)
    json.dumps(answer.to_dict())  # plain data all the way down


def test_optimise_warm_started_from_the_previous_answer(
    client: XmarginClient, case_path: Path
) -> None:
    """The answer itself, or its allocation, as the warm start: the same answer."""
    case = json.loads(case_path.read_text())
    previous = client.optimise(case)
    for warm_start in (previous, dict(previous.allocation)):
        warm = client.optimise(case, warm_start=warm_start)
        assert warm.status == previous.status
        assert close(warm.optimised.total, previous.optimised.total)
        assert warm.solver["rounds"] >= 1
        assert warm.solver["lp_seconds"] + warm.solver["evaluation_seconds"] <= (
            warm.solver["build_seconds"] + warm.solver["solve_seconds"]
        )


def test_optimise_batch_yields_every_account_with_progress(
    client: XmarginClient, cases: dict[str, dict[str, Any]]
) -> None:
    broken = copy.deepcopy(cases["02-butterfly-2s5s10s"])
    broken["positions"][0]["instrument"] = "NOT-LISTED"
    broken["customer"]["id"] = "CUST-broken"  # a batch holds each customer once
    books = [*CASE_FILES, broken]
    seen: list[BatchItem] = []
    items = list(client.optimise_batch(books, progress=seen.append))
    assert seen == items
    assert sorted(item.index for item in items) == list(range(len(books)))
    assert [item.completed for item in items] == list(range(1, len(books) + 1))
    (failure,) = [item for item in items if not item.ok]
    assert failure.index == len(books) - 1
    assert failure.failure is not None and failure.failure.code == "INVALID_ARGUMENT"
    assert (
        failure.failure.field_violations[0][0]
        == f"accounts[{len(books) - 1}].positions[0].instrument"
    )
    assert items[-1].failed == 1


def test_compute_margin_of_the_current_and_of_a_given_allocation(
    client: XmarginClient, cases: dict[str, dict[str, Any]]
) -> None:
    case = cases["01-basis-trade-10y"]
    current = client.compute_margin(case)
    assert close(current.state.total, case["expected"]["current"]["total"])
    nothing = client.compute_margin(case, allocation={})
    assert close(nothing.state.total, case["expected"]["baseline"]["total"])
    assert nothing.state.xm == 0.0
    assert set(current.attribution) == {
        "ficc_standalone",
        "cme_standalone",
        "xm_ficc_model",
        "xm_cme_model",
    }


def test_what_if_reports_each_trade(
    client: XmarginClient, cases: dict[str, dict[str, Any]]
) -> None:
    case = cases["01-basis-trade-10y"]
    answer = client.what_if(case, add_trades=[{"instrument": "TYZ6", "quantity": 200}])
    (trade,) = answer.trades
    assert trade.instrument == "TYZ6" and trade.eligible
    assert trade.margin_change_xm is not None
    assert trade.best_margin_change == min(trade.margin_change_standalone, trade.margin_change_xm)
    assert answer.margin_change == pytest.approx(answer.after_best.total - answer.before.total)
    assert close(answer.before.total, case["expected"]["current"]["total"])


def test_check_eligibility(client: XmarginClient, case_data: dict[str, Any]) -> None:
    answer = client.check_eligibility(case_data)
    held = {p["instrument"] for p in case_data["positions"]}
    assert {k: v for k, v in answer.eligible.items() if k in held} == case_data["expected"][
        "eligible"
    ]
    assert all(bool(answer.reasons[k]) != answer.eligible[k] for k in answer.eligible)


def test_register_scenario_set_then_refer_to_it(
    client: XmarginClient, cases: dict[str, dict[str, Any]]
) -> None:
    case = cases["06-ficc-var-measure"]
    handle = client.register_scenario_set("client-test-set", case)
    assert handle.version >= 1 and handle.scenario_count == len(case["scenarios"]["ids"])
    assert client.register_scenario_set("client-test-set", case) == handle
    by_reference = client.optimise(case, scenario_set=handle)
    inline = client.optimise(case)
    assert by_reference.optimised.total == pytest.approx(inline.optimised.total, rel=1e-12)


def test_invalid_request_names_the_field_and_why(
    client: XmarginClient, cases: dict[str, dict[str, Any]]
) -> None:
    case = copy.deepcopy(cases["01-basis-trade-10y"])
    case["positions"][1]["lot"] = -1
    sent = client.attempts
    with pytest.raises(InvalidRequestError) as caught:
        client.optimise(case, request_id="bad-lot")
    (violation,) = caught.value.violations
    assert violation.field == "positions[1].lot"  # the case's path: refused before sending
    assert "> 0" in violation.description
    assert client.attempts == sent


def test_unknown_scenario_set_is_not_found(
    client: XmarginClient, cases: dict[str, dict[str, Any]]
) -> None:
    missing = ScenarioSetHandle("no-such-set", 3, "", 0, 0)
    with pytest.raises(NotFoundError) as caught:
        client.optimise(cases["01-basis-trade-10y"], scenario_set=missing)
    assert caught.value.resource == "no-such-set@3"


def test_infeasible_carries_the_advice(
    client: XmarginClient, cases: dict[str, dict[str, Any]]
) -> None:
    case = copy.deepcopy(cases["01-basis-trade-10y"])
    case["positions"][0]["xm_quantity"] = 123.5 * case["positions"][0]["lot"]
    with pytest.raises(InfeasibleError) as caught:
        client.optimise(case, integral=True, max_transfers=0)
    assert caught.value.reason == "INFEASIBLE"
    assert "max_transfers" in caught.value.advice


def test_deadline_is_honoured(client: XmarginClient, cases: dict[str, dict[str, Any]]) -> None:
    started = time.perf_counter()
    with pytest.raises(DeadlineExceededError):
        client.optimise(cases["03-mixed-ineligible-hedges"], timeout=0.002)
    assert time.perf_counter() - started < 1.0


@pytest.fixture
def held_slot(small_server: RunningServer) -> Iterator[threading.Event]:
    release = threading.Event()
    future = small_server.pool.submit(release.wait, 30)
    yield release
    release.set()
    future.result(timeout=30)


def test_overload_is_retried_then_raised(
    small_server: RunningServer, cases: dict[str, dict[str, Any]], held_slot: threading.Event
) -> None:
    with XmarginClient(f"127.0.0.1:{small_server.port}", retry=FAST_RETRY) as overloaded:
        with pytest.raises(OverloadedError) as caught:
            overloaded.optimise(cases["04-firm-not-eligible"])
        assert overloaded.attempts == FAST_RETRY.max_attempts
        assert caught.value.retry_delay is not None and caught.value.retry_delay > 0


def test_retries_stop_at_the_deadline(
    small_server: RunningServer, cases: dict[str, dict[str, Any]], held_slot: threading.Event
) -> None:
    patient = RetryPolicy(max_attempts=1000, initial_backoff=0.05, max_backoff=0.1)
    with XmarginClient(f"127.0.0.1:{small_server.port}", retry=patient) as overloaded:
        started = time.perf_counter()
        with pytest.raises(OverloadedError):
            overloaded.optimise(cases["04-firm-not-eligible"], timeout=0.6)
        elapsed = time.perf_counter() - started
    assert elapsed < 1.5
    assert 1 < overloaded.attempts < 1000


def test_unreachable_server_is_unavailable_after_retries(
    cases: dict[str, dict[str, Any]],
) -> None:
    with XmarginClient("127.0.0.1:1", retry=FAST_RETRY, timeout=5) as nowhere:
        with pytest.raises(UnavailableError):
            nowhere.check_eligibility(cases["04-firm-not-eligible"])
        assert nowhere.attempts == FAST_RETRY.max_attempts


def test_bearer_token(token_server: RunningServer, cases: dict[str, dict[str, Any]]) -> None:
    case = cases["04-firm-not-eligible"]
    with XmarginClient(f"127.0.0.1:{token_server.port}") as anonymous:
        with pytest.raises(AuthenticationError):
            anonymous.optimise(case)
        assert anonymous.attempts == 1  # not retried
    with XmarginClient(f"127.0.0.1:{token_server.port}", token=TOKEN) as trusted:
        assert trusted.optimise(case).status == "OPTIMAL"


def test_mutual_tls(certificates: Certificates, cases: dict[str, dict[str, Any]]) -> None:
    running = start(
        workers=1,
        max_queue=1,
        tls_cert=certificates.server_cert,
        tls_key=certificates.server_key,
        client_ca=certificates.ca,
    )
    try:
        with XmarginClient(
            f"localhost:{running.port}",
            root_certificates=certificates.ca,
            client_certificate=certificates.client_cert,
            client_key=certificates.client_key,
        ) as trusted:
            assert trusted.check_eligibility(cases["01-basis-trade-10y"]).eligible
        with XmarginClient(
            f"localhost:{running.port}",
            root_certificates=certificates.ca,
            client_certificate=certificates.rogue_cert,
            client_key=certificates.rogue_key,
            retry=FAST_RETRY,
            timeout=10,
        ) as rogue:
            with pytest.raises(UnavailableError):
                rogue.check_eligibility(cases["01-basis-trade-10y"])
    finally:
        running.stop(0)


class FlakyServicer(XmarginServicer):
    """Answers UNAVAILABLE to the first ``failures`` Optimise calls, then serves them."""

    def __init__(self, failures: int) -> None:
        super().__init__(SolverPool(1, 2))
        self.failures = failures
        self.calls = 0
        self._lock = threading.Lock()

    def Optimise(  # noqa: N802
        self, request: service_pb2.OptimiseRequest, context: grpc.ServicerContext
    ) -> service_pb2.OptimiseResponse:
        with self._lock:
            self.calls += 1
            failing = self.calls <= self.failures
        if failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return super().Optimise(request, context)


def test_unavailable_then_ok_is_retried(cases: dict[str, dict[str, Any]]) -> None:
    servicer = FlakyServicer(failures=2)
    server = grpc.server(ThreadPoolExecutor(4))
    service_pb2_grpc.add_XmarginServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with XmarginClient(f"127.0.0.1:{port}", retry=FAST_RETRY, seed=7) as client:
            answer = client.optimise(cases["04-firm-not-eligible"])
            assert answer.status == "OPTIMAL"
            assert servicer.calls == 3
            assert client.attempts == 3
            bad = copy.deepcopy(cases["04-firm-not-eligible"])  # the firm is not eligible:
            bad["positions"][0]["xm_quantity"] = bad["positions"][0]["quantity"]  # the server says
            with pytest.raises(InvalidRequestError):
                client.optimise(bad)
            assert client.attempts == 4  # INVALID_ARGUMENT is not retried
    finally:
        server.stop(0).wait()
        servicer.pool.shutdown()


def test_client_imports_without_the_solver_stack() -> None:
    code = (
        "import sys\n"
        "for name in ('numpy', 'cvxpy', 'highspy', 'scipy', 'xmargin.optimiser'):\n"
        "    sys.modules[name] = None  # any import of them now fails\n"
        "from xmargin.clients import XmarginClient, InvalidRequestError\n"
        "client = XmarginClient('127.0.0.1:1')\n"
        "client.close()\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def readme_client_example() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"<!-- client-example -->\s*```python\n(.*?)```", readme, re.DOTALL)
    assert match is not None, "README lost its client example"
    return match.group(1)


def test_readme_client_example_runs_as_written(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = readme_client_example()
    assert "localhost:50051" in code
    monkeypatch.chdir(REPO_ROOT)  # the example's case path is relative to the repository
    exec(compile(code.replace("localhost:50051", f"127.0.0.1:{server.port}"), "README", "exec"), {})
    printed = capsys.readouterr().out
    expected = json.loads(CASE_FILES[0].read_text())["expected"]["optimised"]["total"]
    assert "OPTIMAL" in printed
    assert f"{expected:,.2f}" in printed


def test_batch_on_a_full_server_is_retried_then_raised(
    small_server: RunningServer, held_slot: threading.Event
) -> None:
    with XmarginClient(f"127.0.0.1:{small_server.port}", retry=FAST_RETRY) as overloaded:
        with pytest.raises(OverloadedError):
            list(overloaded.optimise_batch(CASE_FILES[:2]))
        assert overloaded.attempts == FAST_RETRY.max_attempts


def test_columnar_requests_get_the_rows_answer_and_the_same_refusals(
    server: RunningServer, case_path: Path
) -> None:
    """XmarginClient(columnar_requests=True) sends the account as account_columns: the same
    answer as the rows (timings aside), and a bad case refused before sending, as before."""
    case = json.loads(case_path.read_text())
    target = f"127.0.0.1:{server.port}"
    with (
        XmarginClient(target, timeout=60) as rows,
        XmarginClient(target, timeout=60, columnar_requests=True) as columns,
    ):
        want, got = rows.optimise(case).to_dict(), columns.optimise(case).to_dict()
        for answer in (want, got):
            for name in ("build_seconds", "solve_seconds", "lp_seconds", "evaluation_seconds"):
                answer["solver"].pop(name)
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)  # NaN too
        bad = copy.deepcopy(case)
        bad["positions"][0]["quantity"] = "1"  # a string: the strict schema refuses it
        bad["instruments"][0]["kind_"] = "NOTE"  # a misspelt key
        refusals = []
        for client in (rows, columns):
            sent = client.attempts
            with pytest.raises(InvalidRequestError) as caught:
                client.optimise(bad)
            assert client.attempts == sent  # not sent
            refusals.append([(v.field, v.description) for v in caught.value.violations])
        assert refusals[0] == refusals[1] and len(refusals[0]) == 2
