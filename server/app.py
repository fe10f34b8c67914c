"""Assemble and run the gRPC server: service, health, reflection, auth, TLS, shutdown.

``build_server(config)`` returns a started-but-not-serving :class:`RunningServer`; ``serve``
runs one until SIGTERM/SIGINT, then drains: health turns NOT_SERVING, new calls are refused,
calls in flight get ``config.grace`` seconds to finish.
"""

from __future__ import annotations

import hmac
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from xmargin.clients.v1 import service_pb2, service_pb2_grpc

from .batching import BatchEngines
from .convert import Limits, RequestError, scenario_set_case
from .recorder import Recorder
from .service import ScenarioRegistry, SolverPool, XmarginServicer

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
    default_deadline: float | None = 300.0
    """Seconds a unary call that came without a deadline may run (None: unbounded)."""


class _Auth(grpc.ServerInterceptor):
    """Bearer-token check on every method except health (so probes need no secret)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method.startswith("/grpc.health.v1.Health/"):
            return continuation(handler_call_details)
        given = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        given_bytes = given.encode() if isinstance(given, str) else bytes(given)
        if hmac.compare_digest(given_bytes, self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        return _refusal(handler, method)


def _refusal(handler: grpc.RpcMethodHandler | None, method: str) -> grpc.RpcMethodHandler | None:
    if handler is None:
        return None

    def deny(request: Any, context: grpc.ServicerContext) -> Any:
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

    def deny_stream(request: Any, context: grpc.ServicerContext) -> Any:
        deny(request, context)
        yield  # pragma: no cover (abort raises)

    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            deny_stream, handler.request_deserializer, handler.response_serializer
        )
    return grpc.unary_unary_rpc_method_handler(
        deny, handler.request_deserializer, handler.response_serializer
    )


def load_scenario_file(path: Path, limits: Limits) -> tuple[str, Any]:
    """A scenario set from a JSON file: a case file (its factors and scenarios, id = its name or
    the file's stem) or ``{"id", "factors", "ids", "shocks"}`` with shocks as S rows of K."""
    from xmargin.clients.v1 import book_pb2

    data = json.loads(Path(path).read_text())
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
    health: health.HealthServicer
    pool: SolverPool
    port: int
    config: ServerConfig

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, refuse new calls, let calls in flight finish, stop the pool."""
        self.set_serving(False)
        self.server.stop(self.config.grace if grace is None else grace).wait()
        self.pool.shutdown()
        self.servicer.engines.close()
        if self.servicer.recorder is not None:
            self.servicer.recorder.store.close()


def _read(path: Path | None) -> bytes | None:
    return Path(path).read_bytes() if path is not None else None


def build_server(config: ServerConfig) -> RunningServer:
    """Create, bind and start a server (health NOT_SERVING until scenario sets are loaded)."""
    tls = config.tls_cert is not None or config.tls_key is not None
    if tls and (config.tls_cert is None or config.tls_key is None):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    if config.client_ca is not None and not tls:
        raise ValueError("--client-ca (mutual TLS) needs --tls-cert and --tls-key")
    pool = SolverPool(config.workers, config.max_queue)
    recorder = None
    if config.audit:
        from xmargin.optimiser.audit import open_store

        try:
            recorder = Recorder(open_store(config.audit))
        except Exception as error:  # a bad URL, no driver, the database is down
            why = f"{type(error).__name__}: {error}"
            raise ValueError(f"cannot open the audit store: {why}") from error
    try:
        engines = BatchEngines(config.batch_engine, config.workers, config.scheduler)
    except BaseException:
        if recorder is not None:
            recorder.store.close()
        raise
    servicer = XmarginServicer(
        pool, ScenarioRegistry(), config.limits, engines, recorder, config.default_deadline
    )
    max_bytes = config.max_message_mb * MB
    interceptors = [_Auth(config.token)] if config.token else []
    # Handler threads: every admitted solve waits on one, plus a few for cheap calls, health,
    # reflection and refusals (RESOURCE_EXHAUSTED must not queue behind solves).
    handlers = ThreadPoolExecutor(pool.capacity + 8, thread_name_prefix="xmargin-rpc")
    server = grpc.server(
        handlers,
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    service_pb2_grpc.add_XmarginServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{config.host}:{config.port}"
    if tls:
        assert config.tls_cert is not None and config.tls_key is not None
        credentials = grpc.ssl_server_credentials(
            [(_read(config.tls_key), _read(config.tls_cert))],
            root_certificates=_read(config.client_ca),
            require_client_auth=config.client_ca is not None,
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    running = RunningServer(server, servicer, health_servicer, pool, port, config)
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
    running = build_server(config)
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
            }
        )
    )
    if ready is not None:
        ready(running)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        started = time.perf_counter()
        log.info(json.dumps({"event": "draining", "grace_s": config.grace}))
        running.stop()
        log.info(
            json.dumps(
                {"event": "stopped", "drain_ms": round((time.perf_counter() - started) * 1e3, 1)}
            )
        )
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
