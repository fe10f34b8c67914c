"""Assemble and run the gRPC server: service, health, reflection, auth, TLS, shutdown.

``build_server(config)`` returns a started-but-not-serving :class:`RunningServer`; ``serve``
runs one until SIGTERM/SIGINT, then drains: health turns NOT_SERVING, new calls are refused,
calls in flight get ``config.grace`` seconds to finish.
"""

from __future__ import annotations

import gc
import hmac
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from xmargin.clients.v1 import service_pb2, service_pb2_grpc
from xmargin.schema import parse_json

from .admission import Admission, AdmissionInterceptor, AdmissionLimits
from .batching import BatchEngines
from .convert import Limits, RequestError, scenario_set_case
from .errors import HandlerInterceptor, RequestBytesInterceptor
from .probes import HealthServicer, enable_reflection
from .recorder import Recorder
from .scenario_store import DEFAULT_REGISTRATION_LIMITS, RegistrationLimits, ScenarioRegistry
from .service import XmarginServicer
from .solver_pool import SolverPool

__all__ = [
    "SERVICE_NAME",
    "RunningServer",
    "ServerConfig",
    "build_server",
    "load_scenario_file",
    "serve",
]

SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["XmarginService"].full_name
log = logging.getLogger("xmargin.server")
MB = 1024 * 1024
SWITCH_INTERVAL = 0.001


@dataclass(slots=True)
class ServerConfig:
    """Everything ``xmargin serve`` can set (see ``xmargin serve --help``)."""

    host: str = "127.0.0.1"
    port: int = 50051
    workers: int = 2
    max_queue: int = 8
    max_message_mb: int = 64
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    token: str | None = None
    scenario_sets: list[Path] = field(default_factory=list)
    grace: float = 30.0
    limits: Limits = field(default_factory=Limits)
    batch_engine: str = "threads"
    """OptimiseBatch's engine: ``threads`` (the solver pool), ``local`` (processes), ``dask``."""
    scheduler: str | None = None
    """Dask scheduler address (``tcp://host:port``); None with ``dask``: a LocalCluster."""
    audit: str | None = None
    """Audit store URL (``sqlite:///PATH.db`` or ``postgresql://...``); None: no audit."""
    store: str | None = None
    """Where registered scenario sets live (a store URL as ``audit``); None: the audit store
    if there is one, else an in-memory store (``xmargin serve`` passes a file instead)."""
    scenario_cache_mb: int = 256
    """Memory for scenario sets in use (LRU; the store keeps every set regardless)."""
    registration: RegistrationLimits = DEFAULT_REGISTRATION_LIMITS
    """What one client may hold in the scenario set store: ``(id, version)`` rows, bytes."""
    stream_window: int = 0
    """OptimiseStream: accounts of one call read but not yet answered; 0: 2 x workers."""
    default_deadline: float | None = 300.0
    """Seconds a unary call that came without a deadline may run (None: unbounded)."""
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    """Budgets of light calls and request bytes in flight, the per-client quota."""
    tokens: tuple[str, ...] = ()
    """More accepted bearer tokens besides ``token`` (one per client: quotas go by token)."""
    solver_nice: int = 0
    """How much lower the solver threads' CPU priority is than the server's (0: the same)."""
    request_window_kb: int = 1024
    """HTTP/2 flow-control window of one request stream, KiB (0: gRPC's default, which grows
    with the link's bandwidth-delay product): the most a client sends before the server has
    decided on its call, so a refused large request costs the server little to receive."""


class _Auth(HandlerInterceptor):
    """Bearer-token check on every method except health (so probes need no secret); a call
    without a valid token is refused before its request is read."""

    def __init__(self, tokens: list[str]) -> None:
        self._expected = [f"Bearer {token}".encode() for token in tokens]

    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        method = details.method
        if method.startswith("/grpc.health.v1.Health/"):
            return handler
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        given_bytes = given.encode() if isinstance(given, str) else bytes(given)
        # compare with every token (no early exit: the time says nothing about which matched)
        matches = [hmac.compare_digest(given_bytes, expected) for expected in self._expected]
        if any(matches):
            return handler
        return _refusal(handler, method)


def _refusal(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """A handler that answers UNAUTHENTICATED without reading the request."""

    def deny(requests: Any, context: grpc.ServicerContext) -> Any:
        log.info(
            json.dumps(
                {
                    "method": method.rsplit("/", 1)[-1],
                    "request_id": "",
                    "status": "UNAUTHENTICATED",
                    "duration_ms": 0.0,
                }
            )
        )
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    def deny_stream(requests: Any, context: grpc.ServicerContext) -> Any:
        deny(requests, context)
        yield  # pragma: no cover (abort raises)

    if handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny_stream, None, handler.response_serializer)
    return grpc.stream_unary_rpc_method_handler(deny, None, handler.response_serializer)


def load_scenario_file(path: Path, limits: Limits) -> tuple[str, Any]:
    """A scenario set from a JSON file: a case file (its factors and scenarios, id = its name or
    the file's stem) or ``{"id", "factors", "ids", "shocks"}`` with shocks as S rows of K."""
    from xmargin.clients.v1 import book_pb2

    data = parse_json(Path(path).read_text())
    if "scenarios" in data:
        set_id = data.get("name") or Path(path).stem
        factors, ids, rows = data["factors"], data["scenarios"]["ids"], data["scenarios"]["shocks"]
    else:
        set_id = data.get("id") or Path(path).stem
        factors, ids, rows = data["factors"], data["ids"], data["shocks"]
    message = book_pb2.ScenarioSet(
        factors=factors, ids=ids, shocks=[value for row in rows for value in row]
    )
    return set_id, scenario_set_case(message, "scenario_set", limits)


@dataclass(slots=True)
class RunningServer:
    """A started server and its parts; ``port`` is the bound port (useful with port 0)."""

    server: grpc.Server
    servicer: XmarginServicer
    health: HealthServicer
    pool: SolverPool
    port: int
    config: ServerConfig
    admission: Admission

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def stop(self, grace: float | None = None) -> bool:
        """Drain within ``grace`` seconds: NOT_SERVING (then Watch streams end), new calls
        refused, calls in flight get the grace to finish; at its end gRPC cancels the rest,
        which stops their solves (see :mod:`.cancellation`). True when every solver thread
        was free again within a second after that."""
        self.set_serving(False)
        self.health.enter_graceful_shutdown()
        self.health.close_watches()
        self.server.stop(self.config.grace if grace is None else grace).wait()
        self.pool.shutdown(wait=False)
        idle = self.pool.wait_idle(1.0)
        self.servicer.engines.close()
        if self.servicer.recorder is not None:
            self.servicer.recorder.store.close()
        self.servicer.registry.close()
        return idle


def _read(path: Path | None) -> bytes | None:
    return Path(path).read_bytes() if path is not None else None


def _registry(config: ServerConfig, recorder: Recorder | None) -> ScenarioRegistry:
    """The scenario registry on ``config.store``, else the audit store, else in memory."""
    cache_bytes = config.scenario_cache_mb * MB
    if config.store and (recorder is None or config.store != config.audit):
        from xmargin.optimiser.audit import open_store

        try:
            store = open_store(config.store)
        except Exception as error:
            why = f"{type(error).__name__}: {error}"
            raise ValueError(f"cannot open the scenario set store: {why}") from error
        return ScenarioRegistry(store, cache_bytes, owns_store=True, limits=config.registration)
    if recorder is not None:
        return ScenarioRegistry(
            recorder.store, cache_bytes, owns_store=False, limits=config.registration
        )
    return ScenarioRegistry(cache_bytes=cache_bytes, limits=config.registration)


def _window_options(window_kb: int) -> list[tuple[str, int]]:
    """gRPC options for a fixed per-stream receive window of ``window_kb`` KiB (no
    bandwidth-delay probing, which would grow it); none for 0."""
    if window_kb <= 0:
        return []
    return [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", window_kb * 1024)]


def build_server(config: ServerConfig) -> RunningServer:
    """Create, bind and start a server (health NOT_SERVING until scenario sets are loaded)."""
    tls = config.tls_cert is not None or config.tls_key is not None
    if tls and (config.tls_cert is None or config.tls_key is None):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    if config.client_ca is not None and not tls:
        raise ValueError("--client-ca (mutual TLS) needs --tls-cert and --tls-key")
    pool = SolverPool(config.workers, config.max_queue, config.solver_nice)
    recorder = None
    if config.audit:
        from xmargin.optimiser.audit import open_store

        try:
            recorder = Recorder(open_store(config.audit))
        except Exception as error:  # a bad URL, no driver, the database is down
            why = f"{type(error).__name__}: {error}"
            raise ValueError(f"cannot open the audit store: {why}") from error
    try:
        registry = _registry(config, recorder)
        engines = BatchEngines(config.batch_engine, config.workers, config.scheduler)
    except BaseException:
        if recorder is not None:
            recorder.store.close()
        raise
    servicer = XmarginServicer(
        pool,
        registry,
        config.limits,
        engines,
        recorder,
        stream_window=config.stream_window,
        default_deadline=config.default_deadline,
    )
    max_bytes = config.max_message_mb * MB
    tokens = [t for t in (config.token, *config.tokens) if t]
    admission = Admission(config.admission, pool.capacity, pool.available)
    # Outermost first: the token check and admission decide before the request is read; the
    # request's bytes are then parsed (admission calls the deserializer the inner handler
    # declares) leniently, so bytes that do not parse answer INVALID_ARGUMENT, not INTERNAL.
    # RequestBytesInterceptor must be inside admission: it wraps unary handlers only, and
    # admission serves every method as a request-streaming one.
    interceptors: list[grpc.ServerInterceptor] = [_Auth(tokens)] if tokens else []
    interceptors.append(AdmissionInterceptor(admission, SERVICE_NAME))
    interceptors.append(RequestBytesInterceptor())
    # Handler threads: one for every call admission lets in (compute and light), and spares
    # for health, reflection, Watch streams and refusals, which therefore never queue.
    spare = 16
    handlers = ThreadPoolExecutor(
        pool.capacity + config.admission.max_light + spare, thread_name_prefix="xmargin-rpc"
    )
    server = grpc.server(
        handlers,
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            ("grpc.so_reuseport", 0),
            *_window_options(config.request_window_kb),
        ],
    )
    service_pb2_grpc.add_XmarginServiceServicer_to_server(servicer, server)
    health_servicer = HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection((SERVICE_NAME, health.SERVICE_NAME), server)
    address = f"{config.host}:{config.port}"
    if tls:
        assert config.tls_cert is not None and config.tls_key is not None
        credentials = grpc.ssl_server_credentials(
            [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())],
            root_certificates=_read(config.client_ca),
            require_client_auth=config.client_ca is not None,
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    running = RunningServer(server, servicer, health_servicer, pool, port, config, admission)
    running.set_serving(False)
    server.start()
    for path in config.scenario_sets:
        set_id, scenarios = load_scenario_file(path, config.limits)
        try:
            entry = servicer.preload(set_id, scenarios)
        except RequestError as error:
            raise ValueError(f"{path}: {error}") from error
        log.info(
            json.dumps(
                {
                    "event": "scenario_set_loaded",
                    "id": entry.set_id,
                    "version": entry.version,
                    "scenarios": len(scenarios.ids),
                }
            )
        )
    running.set_serving(True)
    return running


def serve(config: ServerConfig, ready: Callable[[RunningServer], None] | None = None) -> int:
    """Run until SIGTERM or SIGINT, then drain gracefully; returns the exit status."""
    # Health checks and refusals wait for the GIL behind the threads that convert requests:
    # switch threads every millisecond rather than every five.
    sys.setswitchinterval(SWITCH_INTERVAL)
    running = build_server(config)
    # Everything built so far (modules, the service, preloaded scenario sets) lives as long as
    # the server: out of the collector's full passes, which otherwise scanned it every few
    # calls (reference account, 150 calls, loaded machine: 5 full collections of 105-146 ms
    # at most, 340-440 ms in all, against 7 of at most 7-13 ms, 29-30 ms in all).
    gc.freeze()
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    log.info(
        json.dumps(
            {
                "event": "serving",
                "host": config.host,
                "port": running.port,
                "workers": config.workers,
                "max_queue": config.max_queue,
                "tls": config.tls_cert is not None,
                "mtls": config.client_ca is not None,
                "auth": config.token is not None,
                "batch_engine": config.batch_engine,
                "scheduler": config.scheduler,
                "audit": None
                if running.servicer.recorder is None
                else running.servicer.recorder.store.where,
                "store": running.servicer.registry.store.where,
            }
        )
    )
    if ready is not None:
        ready(running)
    idle = False
    try:
        while not stop.wait(0.5):
            pass
    finally:
        started = time.perf_counter()
        log.info(json.dumps({"event": "draining", "grace_s": config.grace}))
        idle = running.stop()
        drain_ms = round((time.perf_counter() - started) * 1e3, 1)
        log.info(json.dumps({"event": "stopped", "drain_ms": drain_ms, "solvers_idle": idle}))
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not idle:  # a solve that would not stop: do not let it hold the exit
        logging.shutdown()
        os._exit(0)
    return 0
