"""``xmargin serve`` as a real process: preloaded scenario set, JSON log lines, and a SIGTERM
that lets the calls in flight finish (health turns NOT_SERVING first)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import CASE_FILES
from tests.server.harness import batch_of, optimise_request
from xmargin.clients import convert
from xmargin.clients.v1.service_pb2_grpc import XmarginServiceStub
from xmargin.server.cli import build_parser

SERVE_WITH_VAR_BUDGET = (
    "import importlib, sys; "
    "importlib.import_module('xmargin.optimiser.optimise').VAR_SEARCH_SECONDS = {seconds!r}; "
    "from xmargin.server.cli import main; raise SystemExit(main(sys.argv[1:]))"
)
"""``python -c`` code that serves as ``python -m xmargin.server`` does, with the exact-VaR
phase's budget set first."""


class ServerProcess:
    """``python -m xmargin.server`` with its stderr read line by line in the background."""

    def __init__(self, *args: str, var_search_seconds: float | None = None) -> None:
        """``var_search_seconds``: the exact-VaR phase's own budget in the server
        (``optimise.VAR_SEARCH_SECONDS``, set in the child before it serves)."""
        if var_search_seconds is None:
            command = ["-m", "xmargin.server"]
        else:
            command = ["-c", SERVE_WITH_VAR_BUDGET.format(seconds=float(var_search_seconds))]
        self.process = subprocess.Popen(
            [sys.executable, *command, "--port", "0", *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self._serving = threading.Event()
        self.port = 0
        threading.Thread(target=self._read, daemon=True).start()
        if not self._serving.wait(60):
            self.process.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            event = self.event(line)
            if event.get("event") == "serving":
                self.port = int(event["port"])
                self._serving.set()

    @staticmethod
    def event(line: str) -> dict[str, Any]:
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}

    def events(self) -> list[dict[str, Any]]:
        return [e for e in map(self.event, list(self.lines)) if e]


@pytest.fixture(scope="module")
def served() -> Iterator[ServerProcess]:
    process = ServerProcess("--workers", "2", "--grace", "20", "--scenario-set", str(CASE_FILES[0]))
    yield process
    if process.process.poll() is None:
        process.process.kill()
        process.process.wait()


def test_preloaded_scenario_set_is_usable_by_reference(served: ServerProcess) -> None:
    loaded = [e for e in served.events() if e.get("event") == "scenario_set_loaded"]
    case = json.loads(CASE_FILES[0].read_text())
    assert loaded == [
        {
            "event": "scenario_set_loaded",
            "id": case["name"],
            "version": 1,
            "scenarios": len(case["scenarios"]["ids"]),
        }
    ]
    request = optimise_request(case)
    request.scenario_set_ref.id, request.scenario_set_ref.version = case["name"], 1
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        response = XmarginServiceStub(channel).Optimise(request, timeout=60)
    assert response.result.optimised.total > 0
    time.sleep(0.1)
    logged = [e for e in served.events() if e.get("request_id") == request.run.request_id]
    assert [(e["method"], e["status"]) for e in logged] == [("Optimise", "OK")]


def test_sigterm_finishes_the_calls_in_flight(served: ServerProcess) -> None:
    cases = [json.loads(path.read_text()) for path in CASE_FILES]
    shared = optimise_request(cases[0])
    accounts = [convert.account_book(case) for _ in range(5) for case in cases]
    for copy, account in enumerate(accounts):  # one account per customer in a batch
        account.customer.id = f"{account.customer.id}-{copy}"
    batch = batch_of(shared, accounts)
    statuses: list[int] = []
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())

        def follow_health() -> None:
            try:
                for reply in watch:
                    statuses.append(reply.status)
                    if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                        watch.cancel()
            except grpc.RpcError:
                pass

        follower = threading.Thread(target=follow_health, daemon=True)
        follower.start()
        received = []
        for message in XmarginServiceStub(channel).OptimiseBatch(batch, timeout=120):
            if not received:
                served.process.send_signal(signal.SIGTERM)
            received.append(message)
        follower.join(10)
    assert len(received) == len(accounts)
    assert all(m.WhichOneof("outcome") == "result" for m in received)
    assert served.process.wait(30) == 0
    assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
    assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
    events = [e.get("event") for e in served.events()]
    assert events.index("draining") < events.index("stopped")
    batch_lines = [e for e in served.events() if e.get("method") == "OptimiseBatch"]
    assert [e["status"] for e in batch_lines] == ["OK"]


def test_cli_flags_are_documented() -> None:
    help_text = build_parser().format_help()
    for flag in (
        "--port",
        "--host",
        "--workers",
        "--max-queue",
        "--tls-cert",
        "--tls-key",
        "--client-ca",
        "--token",
        "--max-message-mb",
        "--scenario-set",
        "--default-deadline",
        "--max-light",
        "--max-inflight-mb",
        "--client-quota",
    ):
        assert flag in help_text


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--default-deadline", "nan"),
        ("--default-deadline", "inf"),
        ("--default-deadline", "-1"),
        ("--grace", "nan"),
        ("--grace", "-1"),
        ("--max-message-mb", "0"),
        ("--max-inflight-mb", "0"),
        ("--max-light", "0"),
        ("--scenario-cache-mb", "-1"),
        ("--client-quota", "-1"),
        ("--stream-window", "-1"),
        ("--request-window-kb", "-1"),
        ("--port", "-1"),
        ("--port", "65536"),
    ],
)
def test_cli_refuses_a_flag_value_that_cannot_configure_a_server(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    """Each bad value exits 2 naming its flag before anything is served (a NaN or negative
    default deadline or grace, a zero message or in-flight limit, a negative quota or window
    each started a server)."""
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args([flag, value])
    assert refused.value.code == 2
    assert flag in capsys.readouterr().err


def test_cli_keeps_the_documented_zeros() -> None:
    """0 still means what the help says: no default deadline, gRPC's window, the default
    stream window and client quota, no grace."""
    args = build_parser().parse_args(
        [
            "--default-deadline", "0", "--request-window-kb", "0", "--stream-window", "0",
            "--client-quota", "0", "--grace", "0", "--port", "0",
        ]
    )  # fmt: skip
    assert (args.default_deadline, args.request_window_kb, args.stream_window) == (0.0, 0, 0)
    assert (args.client_quota, args.grace, args.port) == (0, 0.0, 0)


def test_cli_rejects_mutual_tls_without_a_server_certificate(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not used")
    from xmargin.server.cli import main

    assert main(["--port", "0", "--client-ca", str(ca)]) == 2


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_health_is_not_serving_while_scenario_sets_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from xmargin.server import ServerConfig, app, build_server

    loading, release = threading.Event(), threading.Event()
    real_load = app.load_scenario_file

    def slow_load(path: Path, limits: Any) -> Any:
        loading.set()
        release.wait(30)
        return real_load(path, limits)

    monkeypatch.setattr(app, "load_scenario_file", slow_load)
    port = _free_port()
    config = ServerConfig(port=port, workers=1, max_queue=0, scenario_sets=[CASE_FILES[0]])
    built: list[Any] = []
    builder = threading.Thread(target=lambda: built.append(build_server(config)))
    builder.start()
    try:
        assert loading.wait(30)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            during = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
            release.set()
            builder.join(30)
            after = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert during == health_pb2.HealthCheckResponse.NOT_SERVING
        assert after == health_pb2.HealthCheckResponse.SERVING
    finally:
        release.set()
        builder.join(30)
        for running in built:
            running.stop(0)
