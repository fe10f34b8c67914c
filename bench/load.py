"""Load and fault harness: a real ``xmargin serve`` on 127.0.0.1 under concurrent clients,
refusal storms, cancellations, registry abuse and a SIGTERM mid-load.

Not a unit test: it records figures. Every loop is bounded in count and time, and only
loopback addresses are used. Run it with::

    python -m xmargin.bench.load --out bench/results/load.json

It starts ``python -m xmargin.server --port P --workers 2 --max-queue 8`` (flags every version
of the server knows, so ``--label before`` can measure an older checkout put first on
``PYTHONPATH``), and measures, per scenario:

- ``clients_N`` (N = 4, 16, 64 callers, each looping a small Optimise for ``--seconds``): OK
  throughput, p50/p99 latency of OK answers, refusals and their latency, health-check latency;
- ``refusal_storm``: 4 callers as above while 32 others (one client) send large requests (a
  7,200-position integral book) as fast as they are refused: the 4's throughput, the refusal
  latency, and that of one more caller under the storm's identity in its own process (whose
  figures no thread contention in this process distorts);
- ``registry_abuse``: one caller registers 100 distinct scenario sets while 4 call Optimise;
- ``large_requests``: 16 ComputeMargin calls at once with a 20 MB inline scenario set: the
  server's memory before, at its peak and 2 s after;
- ``cancellations``: 4 hard solves cancelled after 1 s: how long until a small call is admitted
  again, and the server's CPU use in the second after;
- ``sigterm``: 16 callers, then SIGTERM with ``--grace 3``: seconds until the process exits;

and the server's resident memory every half second throughout (``rss``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xmargin.clients import convert
from xmargin.clients.v1 import book_pb2, service_pb2
from xmargin.clients.v1.service_pb2_grpc import XmarginServiceStub
from xmargin.optimiser.case_format import book_to_dict

from .books import make_book, with_pnl_vectors

__all__ = ["hard_case", "hard_request", "main", "run_load", "small_request"]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CASES = Path(
    os.environ.get("XMARGIN_CASES_DIR", Path(__file__).resolve().parents[2] / "shared" / "cases")
)
LEVELS = (4, 16, 64)
TOKEN_NAMES = [f"caller-{k}" for k in range(64)] + ["storm", "abuser"]


def reference_case() -> dict[str, Any]:
    """The worked case 01 (a few positions, 1,000 scenarios), a fresh copy to change at will."""
    case: dict[str, Any] = json.loads((CASES / "01-basis-trade-10y.json").read_text())
    return case


@cache
def small_request() -> service_pb2.OptimiseRequest:
    """The reference small call: :func:`reference_case` optimised."""
    case = reference_case()
    return convert.optimise_request(case, convert.run_context(case))


def hard_case(copies: int = 24) -> dict[str, Any]:
    """A case whose solve runs for many seconds on any machine: a generated book of
    ``25 x copies`` positions (at most 300) on 2,520 scenarios in whole lots, every instrument
    given as a noisy full-revaluation P&L vector (no factor structure: each account's ES is a
    Rockafellar-Uryasev LP over all its scenarios, not a few cutting planes)."""
    positions = min(300, 25 * copies)
    book = with_pnl_vectors(make_book(positions, 2520, 1, integral=True), 1.0, 7, noise=1.0)
    case = book_to_dict(book)
    case["options"] = dict(case.get("options", {}), integral=True)
    return case


@cache
def hard_request(copies: int = 24) -> service_pb2.OptimiseRequest:
    """:func:`hard_case` as an Optimise request."""
    case = hard_case(copies)
    return convert.optimise_request(case, convert.run_context(case))


def scenario_dates(count: int) -> list[str]:
    """``count`` distinct scenario ids: consecutive dates from 1950-01-01 (the case schema
    takes a scenario id as a YYYY-MM-DD date)."""
    first = dt.date(1950, 1, 1)
    return [(first + dt.timedelta(days=k)).isoformat() for k in range(count)]


def random_scenario_set(
    rng: np.random.Generator, factors: int, scenarios: int
) -> book_pb2.ScenarioSet:
    """``scenarios`` dated scenarios (:func:`scenario_dates`) of moves of the factors F0, F1,
    ..., F{factors - 1}, each drawn from N(0, 0.001^2), drawn row by row."""
    return book_pb2.ScenarioSet(
        factors=[f"F{j}" for j in range(factors)],
        ids=scenario_dates(scenarios),
        shocks=rng.normal(0, 1e-3, size=factors * scenarios).tolist(),
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    data = np.asarray(values) * 1e3
    return {
        "p50_ms": round(float(np.percentile(data, 50)), 2),
        "p99_ms": round(float(np.percentile(data, 99)), 2),
        "max_ms": round(float(data.max()), 2),
    }


class Server:
    """``python -m xmargin.server`` on a free loopback port, its RSS sampled every 0.5 s.
    With ``tokens`` every caller has its own bearer token (its identity for the per-client
    quota: on loopback every caller has the same address)."""

    def __init__(self, *flags: str, tokens: bool = False, path: str | None = None) -> None:
        self.port = _free_port()
        env = dict(os.environ)
        if path:  # another checkout's packages first (a folder holding xmargin/<package>)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
        self.tokens = tokens
        token_flags = [f"--token={name}" for name in TOKEN_NAMES] if tokens else []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "xmargin.server",
                "--port",
                str(self.port),
                *flags,
                *token_flags,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.target = f"127.0.0.1:{self.port}"
        self.started = time.monotonic()
        self.rss: list[tuple[float, float]] = []
        self._sampling = threading.Event()
        self._wait_serving()
        threading.Thread(target=self._sample, daemon=True).start()

    def _wait_serving(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(600):
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise RuntimeError("the server did not start")

    def rss_mib(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def _sample(self) -> None:
        while not self._sampling.wait(0.5) and self.process.poll() is None:
            rss = self.rss_mib()
            if rss is not None:
                self.rss.append((round(time.monotonic() - self.started, 1), round(rss, 1)))

    def stop(self) -> None:
        self._sampling.set()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@dataclass
class Tally:
    """What a group of callers saw: latencies of OK answers and of refusals, other codes."""

    ok: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    other: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, seconds: float, code: grpc.StatusCode) -> None:
        with self.lock:
            if code == grpc.StatusCode.OK:
                self.ok.append(seconds)
            elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                self.refused.append(seconds)
            else:
                self.other[code.name] = self.other.get(code.name, 0) + 1

    def timed(self, call: Callable[[], Any]) -> grpc.StatusCode:
        """Make ``call`` and record its latency and status code; the code."""
        started = time.perf_counter()
        try:
            call()
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
        self.record(time.perf_counter() - started, code)
        return code

    def summary(self, seconds: float) -> dict[str, Any]:
        return {
            "ok": len(self.ok),
            "ok_per_s": round(len(self.ok) / seconds, 2),
            "ok_latency": _percentiles(self.ok),
            "refused": len(self.refused),
            "refusal_latency": _percentiles(self.refused),
            "other": dict(self.other),
        }


def _caller(
    target: str,
    call: Callable[[XmarginServiceStub], Any],
    tally: Tally,
    end: float,
    max_calls: int = 100_000,
    pause_after_refusal: float = 0.05,
    token: str | None = None,
) -> None:
    """Loop ``call`` until ``end`` (at most ``max_calls`` times), on its own channel."""
    with _channel(target, token) as channel:
        stub = XmarginServiceStub(channel)
        for _ in range(max_calls):
            if time.monotonic() >= end:
                return
            code = tally.timed(lambda: call(stub))
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED and pause_after_refusal:
                time.sleep(pause_after_refusal)


def _channel(target: str, token: str | None) -> grpc.Channel:
    channel = grpc.insecure_channel(target)
    if token is None:
        return channel
    header = ("authorization", f"Bearer {token}")

    class _Token(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            metadata = [*(details.metadata or ()), header]
            return continuation(details._replace(metadata=metadata), request)

    return grpc.intercept_channel(channel, _Token())


def _health_prober(target: str, seconds: float, out: Any) -> None:
    """Health checks every 0.1 s for ``seconds`` (in its own process, so that the callers'
    threads do not make it wait for this process's GIL); their latencies go to ``out``."""
    latencies = []
    end = time.monotonic() + seconds
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < end:
            started = time.perf_counter()
            try:
                health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                latencies.append(time.perf_counter() - started)
            except grpc.RpcError:
                latencies.append(5.0)
            time.sleep(0.1)
    out.put(latencies)


def _refusal_prober(target: str, seconds: float, token: str | None, out: Any) -> None:
    """A small Optimise every 0.1 s for ``seconds`` from its own process (an uncontended
    client) under the storm's identity: (latency, code name) of each."""
    outcomes = []
    end = time.monotonic() + seconds
    with _channel(target, token) as channel:
        stub = XmarginServiceStub(channel)
        while time.monotonic() < end:
            started = time.perf_counter()
            try:
                stub.Optimise(small_request(), timeout=30)
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            outcomes.append((time.perf_counter() - started, code))
            time.sleep(0.1)
    out.put(outcomes)


Group = tuple[int, Callable[[XmarginServiceStub], Any], Tally, float, str]


def _run_group(server: Server, groups: list[Group], seconds: float) -> list[float]:
    """Run every group's callers for ``seconds``, with a health prober; its latencies. A group
    is (callers, call, tally, pause after a refusal, token: ``caller`` gives each caller its
    own, any other name is shared by the group)."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    prober = context.Process(target=_health_prober, args=(server.target, seconds, out))
    prober.start()
    end = time.monotonic() + seconds
    threads = []
    serial = 0
    for count, call, tally, pause, token in groups:
        for _ in range(count):
            name = f"caller-{serial % 64}" if token == "caller" else token
            serial += 1
            arguments = (server.target, call, tally, end, 100_000, pause)
            threads.append(
                threading.Thread(target=_caller, args=(*arguments, name if server.tokens else None))
            )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    health: list[float] = out.get(timeout=60)
    prober.join(10)
    return health


def _small(stub: XmarginServiceStub) -> Any:
    return stub.Optimise(small_request(), timeout=30)


def _large(stub: XmarginServiceStub) -> Any:
    return stub.Optimise(hard_request(), timeout=2)


def concurrency(server: Server, clients: int, seconds: float) -> dict[str, Any]:
    tally = Tally()
    health = _run_group(server, [(clients, _small, tally, 0.05, "caller")], seconds)
    return {"clients": clients, **tally.summary(seconds), "health": _percentiles(health)}


def refusal_storm(server: Server, seconds: float) -> dict[str, Any]:
    good, storm = Tally(), Tally()
    rss_before = server.rss_mib()
    groups: list[Group] = [(4, _small, good, 0.05, "caller"), (32, _large, storm, 0.0, "storm")]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    token = "storm" if server.tokens else None
    prober = context.Process(
        target=_refusal_prober, args=(server.target, seconds - 1.0, token, out)
    )
    prober.start()
    health = _run_group(server, groups, seconds)
    probes = out.get(timeout=120)
    prober.join(10)
    refusals = [t for t, code in probes if code == "RESOURCE_EXHAUSTED"]
    time.sleep(2.0)
    return {
        "good_callers": good.summary(seconds),
        "storm_callers": storm.summary(seconds),
        "prober_refusals": len(refusals),
        "prober_calls": len(probes),
        "prober_refusal_latency": _percentiles(refusals),
        "health": _percentiles(health),
        "rss_before_mib": rss_before,
        "rss_2s_after_mib": server.rss_mib(),
    }


def registry_abuse(server: Server, seconds: float, sets: int = 100) -> dict[str, Any]:
    """One caller registers ``sets`` distinct scenario sets (64 factors x 2,000 scenarios each)
    while four callers optimise: what the others see, and the server's memory after."""
    rng = np.random.default_rng(11)
    run = convert.run_context(reference_case())
    good, registrations = Tally(), Tally()
    end = time.monotonic() + seconds
    rss_before = server.rss_mib()

    def abuse() -> None:
        with _channel(server.target, "abuser" if server.tokens else None) as channel:
            stub = XmarginServiceStub(channel)
            for k in range(sets):
                if time.monotonic() >= end:
                    return
                request = service_pb2.RegisterScenarioSetRequest(
                    run=run, id=f"abuse-{k}", scenario_set=random_scenario_set(rng, 64, 2000)
                )
                registrations.timed(partial(stub.RegisterScenarioSet, request, timeout=30))

    abuser = threading.Thread(target=abuse)
    abuser.start()
    health = _run_group(server, [(4, _small, good, 0.05, "caller")], seconds)
    abuser.join(120)
    return {
        "registrations": registrations.summary(seconds),
        "good_callers": good.summary(seconds),
        "health": _percentiles(health),
        "rss_before_mib": rss_before,
        "rss_after_mib": server.rss_mib(),
    }


def large_requests(server: Server, callers: int = 16) -> dict[str, Any]:
    """``callers`` ComputeMargin calls at once, each with a 20,000 x 125 inline scenario set
    (a 20 MB request that nothing keeps): the server's memory before, at its peak and after."""
    case = reference_case()
    scenario_set = random_scenario_set(np.random.default_rng(3), 125, 20_000)
    for instrument in case["instruments"]:
        if "sensitivities" in instrument:
            instrument["sensitivities"] = (instrument["sensitivities"] * 125)[:125]
    case["factors"] = list(scenario_set.factors)
    request = service_pb2.ComputeMarginRequest(
        run=convert.run_context(case),
        account=convert.account_book(case),
        scenario_set=scenario_set,
        models=convert.models_message(case),
        program=convert.program_message(case),
    )
    tally = Tally()
    rss_before = server.rss_mib()
    peak = [rss_before or 0.0]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], server.rss_mib() or 0.0)

    def call() -> None:
        with _channel(server.target, "abuser" if server.tokens else None) as channel:
            tally.timed(lambda: XmarginServiceStub(channel).ComputeMargin(request, timeout=60))

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    time.sleep(2.0)
    done.set()
    watcher.join()
    return {
        "callers": callers,
        "request_mb": round(request.ByteSize() / 1e6, 1),
        "calls": tally.summary(1.0),
        "rss_before_mib": rss_before,
        "rss_peak_mib": round(peak[0], 1),
        "rss_2s_after_mib": server.rss_mib(),
    }


def cancellations(server: Server, hard: int = 4, wait_limit: float = 30.0) -> dict[str, Any]:
    """``hard`` hard solves, each cancelled after 1 s; then how soon a small call gets in."""
    with _channel(server.target, "caller-0" if server.tokens else None) as channel:
        stub = XmarginServiceStub(channel)
        futures = [stub.Optimise.future(hard_request()) for _ in range(hard)]
        time.sleep(1.0)
        for future in futures:
            future.cancel()
        cancelled = time.monotonic()
        admitted = None
        attempts = 0
        last = "none"
        while time.monotonic() - cancelled < wait_limit:
            attempts += 1
            try:
                left = wait_limit - (time.monotonic() - cancelled)
                stub.Optimise(small_request(), timeout=max(0.1, left))
                admitted = time.monotonic() - cancelled
                last = "OK"
                break
            except grpc.RpcError as error:
                last = error.code().name
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    break  # let in but not answered in time (queued behind the hard solves)
            time.sleep(0.05)
        before = server.cpu_seconds()
        time.sleep(1.0)
        busy = server.cpu_seconds() - before
    return {
        "hard_calls": hard,
        "small_call_admitted_after_s": None if admitted is None else round(admitted, 3),
        "attempts": attempts,
        "last_code": last,
        "server_cpu_share_next_second": round(busy, 3),
    }


def sigterm(server: Server, clients: int = 16, settle: float = 3.0) -> dict[str, Any]:
    """``clients`` callers (and two hard solves) running, then SIGTERM."""
    tally = Tally()
    end = time.monotonic() + settle + 60
    threads = [
        threading.Thread(
            target=_caller,
            args=(server.target, _small, tally, end, 100_000, 0.05),
            kwargs={"token": f"caller-{k}" if server.tokens else None},
        )
        for k in range(clients)
    ]
    with _channel(server.target, "caller-0" if server.tokens else None) as channel:
        stub = XmarginServiceStub(channel)
        hard = [stub.Optimise.future(hard_request()) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(settle)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(60)
            exited: float | None = round(time.monotonic() - signalled, 2)
        except subprocess.TimeoutExpired:
            exited = None
        for future in hard:
            future.cancel()
    for thread in threads:
        thread.join(70)
    return {"grace_s": 3.0, "exit_after_s": exited, "calls": tally.summary(settle)}


SCENARIOS = (
    *(f"clients_{n}" for n in LEVELS),
    "refusal_storm",
    "large_requests",
    "registry_abuse",
    "cancellations",
    "sigterm",
)


def run_load(
    label: str,
    seconds: float,
    tokens: bool,
    levels: tuple[int, ...] = LEVELS,
    server_path: str | None = None,
    extra_flags: tuple[str, ...] = (),
    scenarios: tuple[str, ...] = SCENARIOS,
) -> dict[str, Any]:
    """The ``scenarios`` against fresh servers (``extra_flags`` added to the server's command
    line); the figures as a JSON-able dict."""
    hard_request()  # built once, before any clock runs
    flags = ("--workers", "2", "--max-queue", "8", "--grace", "3", *extra_flags)
    results: dict[str, Any] = {
        "label": label,
        "server_code": "given checkout" if server_path else "this checkout",
        "seconds_per_scenario": seconds,
        "flags": flags,
        "tokens": tokens,
    }
    server = Server(*flags, tokens=tokens, path=server_path)
    try:
        results["rss_idle_mib"] = server.rss_mib()
        for clients in levels:
            if f"clients_{clients}" in scenarios:
                results[f"clients_{clients}"] = concurrency(server, clients, seconds)
        if "refusal_storm" in scenarios:
            results["refusal_storm"] = refusal_storm(server, seconds)
        if "large_requests" in scenarios:
            results["large_requests"] = large_requests(server)
        if "registry_abuse" in scenarios:
            results["registry_abuse"] = registry_abuse(server, seconds)
        if "cancellations" in scenarios:
            results["cancellations"] = cancellations(server)
        results["rss"] = server.rss
    finally:
        server.stop()
    if "sigterm" in scenarios:
        server = Server(*flags, tokens=tokens, path=server_path)
        try:
            results["sigterm"] = sigterm(server)
        finally:
            server.stop()
    return results


def markdown(runs: list[dict[str, Any]]) -> str:
    """A summary table of one or more runs (before / after)."""
    lines = ["# Load and fault harness", ""]
    lines.append("| scenario | figure | " + " | ".join(r["label"] for r in runs) + " |")
    lines.append("|---|---|" + "---|" * len(runs))

    def row(scenario: str, name: str, get: Callable[[dict[str, Any]], Any]) -> None:
        values = []
        for run in runs:
            try:
                values.append(str(get(run)))
            except (KeyError, TypeError):
                values.append("-")
        lines.append(f"| {scenario} | {name} | " + " | ".join(values) + " |")

    for clients in LEVELS:
        key = f"clients_{clients}"
        row(key, "OK/s", _under(key, lambda level: level["ok_per_s"]))
        row(key, "OK p50 / p99 ms", _under(key, lambda level: _pair(level["ok_latency"])))
        row(key, "refused (p50 / p99 ms)", _under(key, _refusals))
        row(key, "health p50 / max ms", _under(key, lambda level: _health(level["health"])))
    storm = "refusal_storm"
    row(storm, "good callers OK/s", lambda r: r[storm]["good_callers"]["ok_per_s"])
    row(storm, "good OK p50 / p99 ms", lambda r: _pair(r[storm]["good_callers"]["ok_latency"]))
    row(storm, "storm refused (p50 / p99 ms)", lambda r: _refusals(r[storm]["storm_callers"]))
    row(storm, "health p50 / max ms", lambda r: _health(r[storm]["health"]))
    row(
        storm,
        "one uncontended caller refused (p50 / p99 ms)",
        lambda r: (
            f"{r[storm]['prober_refusals']}/{r[storm]['prober_calls']} "
            f"({_pair(r[storm]['prober_refusal_latency'])})"
        ),
    )
    row(storm, "RSS before / 2 s after MiB", lambda r: _rss(r[storm]))
    abuse = "registry_abuse"
    row(abuse, "registrations OK / refused", lambda r: _ok_refused(r[abuse]["registrations"]))
    row(abuse, "good callers OK/s", lambda r: r[abuse]["good_callers"]["ok_per_s"])
    row(abuse, "health p50 / max ms", lambda r: _health(r[abuse]["health"]))
    row(abuse, "RSS before / after MiB", lambda r: _rss(r[abuse]))
    large = "large_requests"
    row(large, "calls OK / refused / other", lambda r: _codes(r[large]["calls"]))
    row(large, "RSS before / peak / 2 s after MiB", lambda r: _rss3(r[large]))
    cancel = "cancellations"
    row(cancel, "small call admitted after s", lambda r: r[cancel]["small_call_admitted_after_s"])
    row(
        cancel, "server CPU in the next second", lambda r: r[cancel]["server_cpu_share_next_second"]
    )
    row("sigterm", "exit after s (grace 3)", lambda r: r["sigterm"]["exit_after_s"])
    row("rss", "idle / max over the run MiB", lambda r: _rss_range(r))
    lines.append("")
    for run in runs:
        if run.get("note"):
            lines.append(f"- **{run['label']}**: {run['note']}")
    lines.append("")
    return "\n".join(lines)


def _under(key: str, pick: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """``pick`` applied to a run's ``key`` entry."""
    return lambda run: pick(run[key])


def _pair(latency: dict[str, Any]) -> str:
    return f"{latency['p50_ms']} / {latency['p99_ms']}"


def _health(latency: dict[str, Any]) -> str:
    return f"{latency['p50_ms']} / {latency['max_ms']}"


def _refusals(summary: dict[str, Any]) -> str:
    return f"{summary['refused']} ({_pair(summary['refusal_latency'])})"


def _ok_refused(summary: dict[str, Any]) -> str:
    return f"{summary['ok']} / {summary['refused']}"


def _rss(figures: dict[str, Any]) -> str:
    after = figures.get("rss_2s_after_mib", figures.get("rss_after_mib"))
    return f"{figures['rss_before_mib']:.0f} / {after:.0f}"


def _codes(summary: dict[str, Any]) -> str:
    return f"{summary['ok']} / {summary['refused']} / {summary['other'] or 0}"


def _rss3(figures: dict[str, Any]) -> str:
    return (
        f"{figures['rss_before_mib']:.0f} / {figures['rss_peak_mib']:.0f} / "
        f"{figures['rss_2s_after_mib']:.0f}"
    )


def _rss_range(run: dict[str, Any]) -> str:
    peak = max(value for _, value in run["rss"])
    return f"{run['rss_idle_mib']:.0f} / {peak:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmargin.bench.load", description=__doc__)
    parser.add_argument("--label", default="after", help="name of this run (before/after)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each scenario")
    parser.add_argument("--out", type=Path, default=Path("bench/results/load.json"))
    parser.add_argument(
        "--no-tokens",
        action="store_true",
        help="callers send no bearer tokens (for a server that takes only one, as before)",
    )
    parser.add_argument(
        "--server-path",
        help="run the server with this folder first on PYTHONPATH (a folder with "
        "xmargin/optimiser, xmargin/server, ... of another checkout: the 'before' figures)",
    )
    parser.add_argument(
        "--merge", action="store_true", help="keep the other labels' runs already in --out"
    )
    parser.add_argument(
        "--server-flags",
        default="",
        help="more flags for the server, one string ('--solver-nice 0'): a before/after pair "
        "of settings on the same code",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument(
        "--note", default="", help="what this run is (the machine's load, the settings, ...)"
    )
    parser.add_argument(
        "--write-requests",
        type=Path,
        metavar="DIR",
        help="only write the small and the large Optimise request's bytes (small.bin, "
        "hard.bin) into DIR, for a client that is not ours (bench/node_storm)",
    )
    args = parser.parse_args(argv)
    if args.write_requests:
        args.write_requests.mkdir(parents=True, exist_ok=True)
        (args.write_requests / "small.bin").write_bytes(small_request().SerializeToString())
        (args.write_requests / "hard.bin").write_bytes(hard_request().SerializeToString())
        return 0
    chosen = tuple(name for name in args.scenarios.split(",") if name)
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")
    run = run_load(
        args.label,
        args.seconds,
        not args.no_tokens,
        server_path=args.server_path,
        extra_flags=tuple(args.server_flags.split()),
        scenarios=chosen,
    )
    if args.note:
        run["note"] = args.note
    runs = []
    if args.merge and args.out.exists():
        runs = [r for r in json.loads(args.out.read_text())["runs"] if r["label"] != args.label]
    runs.append(run)
    runs.sort(key=lambda r: r["label"] != "before")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(runs))
    print(markdown(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
