"""gRPC round trip of the reference account against a real local server.

The harness starts ``xmargin serve --port <free port>`` as a subprocess, waits for its health
check to report SERVING, registers the account's scenario set once, then calls ``Optimise``
through the typed client (:class:`xmargin.clients.XmarginClient`) with the set referred to by
id and version. A measured round trip is one ``client.optimise(case, scenario_set=handle)``:
the client's case-dict -> proto conversion, serialisation, the local TCP hop, the server's
proto -> case conversion and validation (``parse_case``), ``build_problem``, the solve, the exact
evaluation, the result -> proto conversion, and the client's conversion of the answer. Not
inside it: the server's start and the scenario set's registration. The server's own log line
(``duration_ms``) splits server time from the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xmargin.clients import XmarginClient
from xmargin.clients import convert as client_convert
from xmargin.optimiser.case_format import book_to_dict

from .books import make_book
from .call_overhead import run_call_overhead
from .stats import percentile, summarise

__all__ = [
    "CallAborted",
    "InProcessCall",
    "request_to_book",
    "run_grpc",
    "server_command",
    "server_overhead",
]

READY_TIMEOUT = 120.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_command(port: int, workers: int) -> list[str]:
    """``xmargin serve`` from this interpreter's environment (``python -m`` if no script)."""
    script = shutil.which("xmargin", path=str(Path(sys.executable).parent))
    head = [script] if script else [sys.executable, "-m", "xmargin.optimiser.cli"]
    return [*head, "serve", "--port", str(port), "--workers", str(workers)]


def _wait_serving(target: str, server: subprocess.Popen[bytes], log: Path) -> float:
    started = time.perf_counter()
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.perf_counter() - started < READY_TIMEOUT:
            if server.poll() is not None:
                raise RuntimeError(f"server exited with {server.returncode}: {log.read_text()}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.perf_counter() - started
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"server not SERVING after {READY_TIMEOUT} s")


def _server_durations(log: Path, method: str) -> list[float]:
    """``duration_ms`` (as seconds) of each logged call of ``method``, in order."""
    durations = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and str(entry.get("method", "")).endswith(method):
            if "duration_ms" in entry:
                durations.append(float(entry["duration_ms"]) / 1e3)
    return durations


def request_to_book(request: Any, repeat: int = 20) -> dict[str, Any]:
    """The server's request -> validated book, in this process, on a registered scenario set:
    ``book_case`` + ``parse_case`` as ComputeMargin/WhatIf do (risk vectors into numpy) and as
    Optimise does (the batch path, vectors as lists); seconds, wall and CPU."""
    from xmargin.optimiser import parse_case
    from xmargin.server.convert import FieldPaths, Limits, book_case, parse, scenario_set_case

    limits = Limits()
    registered = scenario_set_case(request.scenario_set, "scenario_set", limits)

    def convert(numpy_vectors: bool) -> Any:
        paths = FieldPaths()
        case = book_case(
            request.run,
            request.account,
            registered,
            request.models,
            request.program,
            request.options,
            paths,
            limits,
            numpy_vectors=numpy_vectors,
        )
        return parse(case, paths, parse_case)

    out: dict[str, Any] = {}
    for name, numpy_vectors in (("numpy_vectors", True), ("lists", False)):
        wall, cpu = [], []
        for _ in range(repeat):
            started, started_cpu = time.perf_counter(), time.process_time()
            convert(numpy_vectors)
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        out[name] = {"wall": summarise(wall), "cpu": summarise(cpu)}
    return out


class CallAborted(Exception):  # noqa: N818 (it is what happened to the call)
    """The servicer ended an :class:`InProcessCall` with ``status`` (an error status)."""

    def __init__(self, status: Any) -> None:
        super().__init__(status.details)
        self.status = status


class InProcessCall:
    """A gRPC call's context as the servicer sees it, for calling it in this process: no
    deadline, never cancelled, one anonymous local caller; an abort raises
    :class:`CallAborted`."""

    def time_remaining(self) -> None:
        return None

    def peer_identities(self) -> None:
        return None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def peer(self) -> str:
        return "in-process:local"

    def add_callback(self, callback: Any) -> bool:
        return True

    def is_active(self) -> bool:
        return True

    def abort_with_status(self, status: Any) -> None:
        raise CallAborted(status)


def server_overhead(case: dict[str, Any], calls: int) -> dict[str, Any]:
    """What the server adds to a solve, in this process and without transport: the unary
    Optimise handler (registered scenario set; request -> book, the solver pool's hand-off,
    result -> response message) against ``optimise`` of the same book, called in turn
    ``calls`` times after 3 unmeasured pairs; seconds (``overhead`` per pair: handler - solve)."""
    from xmargin.clients.v1 import book_pb2
    from xmargin.optimiser import optimise, parse_case
    from xmargin.server.convert import Limits, scenario_set_case
    from xmargin.server.service import SolverPool, XmarginServicer

    servicer = XmarginServicer(SolverPool(1, 1))
    request = client_convert.optimise_request(case, client_convert.run_context(case))
    entry = servicer.registry.register(
        "bench", scenario_set_case(request.scenario_set, "scenario_set", Limits()), "bench"
    )
    request.scenario_set_ref.CopyFrom(book_pb2.ScenarioSetRef(id=entry.set_id, version=1))
    request.columnar_result = True  # as XmarginClient.optimise asks
    book = parse_case(case)
    handler, solve = [], []
    for index in range(calls + 3):
        started = time.perf_counter()
        servicer.Optimise(request, InProcessCall())  # type: ignore[arg-type]
        middle = time.perf_counter()
        optimise(book)
        if index >= 3:
            handler.append(middle - started)
            solve.append(time.perf_counter() - middle)
    servicer.pool.shutdown()
    return {
        "measured": (
            "in process: servicer.Optimise(request with a registered set) against "
            "optimise(book) of the same account, in turn; overhead = handler - solve per pair"
        ),
        "handler": summarise(handler),
        "solve": summarise(solve),
        "overhead": summarise([h - s for h, s in zip(handler, solve, strict=True)]),
    }


def run_grpc(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure ``spec["calls"]`` Optimise round trips after ``spec["warmup"]`` unmeasured ones."""
    positions, scenarios = int(spec["positions"]), int(spec["scenarios"])
    book = make_book(positions, scenarios, int(spec["seed"]))
    case = json.loads(json.dumps(book_to_dict(book)))
    account = {key: value for key, value in case.items() if key != "scenarios"}
    port = _free_port()
    target = f"127.0.0.1:{port}"
    workdir = Path(tempfile.mkdtemp(prefix="xmargin-bench-grpc-"))
    log = workdir / "server.log"
    command = server_command(port, int(spec.get("server_workers", os.cpu_count() or 1)))
    with log.open("wb") as log_file:
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        ready_seconds = _wait_serving(target, server, log)
        columnar = bool(spec.get("columnar_requests", True))
        with XmarginClient(
            target, timeout=float(spec.get("call_timeout", 120.0)), columnar_requests=columnar
        ) as client:
            handle = client.register_scenario_set("bench-reference", case)
            request_build = []
            for _ in range(3):
                started = time.perf_counter()
                request = client_convert.optimise_request(
                    account, client_convert.run_context(account), columns=columnar
                )
                request_build.append(time.perf_counter() - started)
            request_bytes = request.ByteSize()
            for _ in range(int(spec["warmup"])):
                client.optimise(account, scenario_set=handle)
            latencies = []
            answer = None
            for _ in range(int(spec["calls"])):
                started = time.perf_counter()
                answer = client.optimise(account, scenario_set=handle)
                latencies.append(time.perf_counter() - started)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    server_seconds = _server_durations(log, "Optimise")[-len(latencies) :] if latencies else []
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "status": "ok",
        "positions": positions,
        "scenarios": scenarios,
        "command": " ".join(Path(command[0]).name if i == 0 else a for i, a in enumerate(command)),
        "scenario_set": "registered once (RegisterScenarioSet), referred to by id and version",
        "measured": (
            "client.optimise(case, scenario_set=handle): client conversion, serialisation, "
            "local TCP, server conversion and validation, build, solve, exact evaluation, "
            "response conversion both sides; not the server start or the registration"
        ),
        "server_ready_seconds": ready_seconds,
        "warmup_calls": int(spec["warmup"]),
        "calls": len(latencies),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "latency": summarise(latencies),
        "server_side": summarise(server_seconds),
        "client_request_build": summarise(request_build),
        "request_bytes": request_bytes,
        "request_to_book": request_to_book(
            client_convert.optimise_request(case, client_convert.run_context(case))
        ),
        "server_overhead_in_process": server_overhead(case, int(spec["calls"])),
        "columnar_requests": columnar,
        "overhead_no_solve": run_call_overhead(
            positions, scenarios, int(spec["seed"]), 100, columnar_requests=columnar
        ),
        "optimum": None if answer is None else answer.optimised.total,
        "answer_status": None if answer is None else str(answer.status),
    }
