"""Admission: every call is admitted or refused before the server spends anything on it.

An interceptor wraps each method of the service so that its handler sees the call *before*
its request is read or parsed (a unary method is served as a client-streaming one whose body
is read only once the call is admitted, as raw bytes, and parsed only after the byte budget
has taken it). A call is refused with RESOURCE_EXHAUSTED and ``google.rpc.RetryInfo``, in
well under a millisecond of server time, when

- it is a compute call (Optimise, Explain, ComputeMargin, WhatIf, OptimiseBatch,
  OptimiseStream) and no solver slot is free, or the compute calls admitted already fill the
  slots;
- it is any other call and ``max_light`` of them are in flight;
- its client already has its quota of calls of that kind in flight (a quarter of the solver
  slots, half the light calls; a client is its peer certificate's identity, else its bearer
  token, else its IP address), so one client cannot starve the others;
- its request would take the bytes in flight over ``max_bytes`` (checked on the raw bytes,
  before they are parsed; a request stream, OptimiseStream, holds one message's bytes at a
  time, each message checked as it is read).

Health and reflection are never subject to admission (probes must answer under any load).
After a request of ``trim_bytes`` or more, the freed heap is handed back to the system
(glibc ``malloc_trim``), so the resident size falls back after large requests.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from .errors import HandlerInterceptor, OverloadedError, abort, report

__all__ = ["COMPUTE_METHODS", "Admission", "AdmissionInterceptor", "AdmissionLimits"]

log = logging.getLogger("xmargin.server")

COMPUTE_METHODS = frozenset(
    {"Optimise", "Explain", "ComputeMargin", "WhatIf", "OptimiseBatch", "OptimiseStream"}
)
"""Methods that take a solver slot; every other method of the service (CheckEligibility,
RegisterScenarioSet, GetScenarioSet, ListScenarioSets) is a light call."""
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
MB = 1024 * 1024
TRIM_DELAY = 0.25
LOG_EVERY = 1.0


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """The server-wide budgets and the per-client quota (see the module docstring)."""

    max_light: int = 4
    """Light calls (CheckEligibility, RegisterScenarioSet, ...) in flight at once."""
    max_bytes: int = 256 * MB
    """Request bytes in flight at once (a single request may be up to the message limit)."""
    client_quota: int | None = None
    """Solver calls one client may have in flight (running or queued); None: a quarter of the
    solver slots. Its light calls: at most half of ``max_light``."""
    retry_after: float = 0.25
    """The RetryInfo delay of a refusal, seconds."""
    trim_bytes: int = 8 * MB
    """After a request this large, give freed heap back to the system (0: never)."""


def _malloc_trim() -> Callable[[], None]:
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path) if path else None
        trim = None if libc is None else libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        trim = None
    if trim is None:
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0) and None


class Admission:
    """The counters behind admission; thread-safe. ``slots_free`` says how many solver slots
    are free now (the solver pool's count)."""

    def __init__(self, limits: AdmissionLimits, slots: int, slots_free: Callable[[], int]):
        self.limits = limits
        self.slots = slots
        self._slots_free = slots_free
        self.client_quota = limits.client_quota or max(1, slots // 4)
        self.client_light_quota = max(1, min(self.client_quota, limits.max_light // 2))
        self._lock = threading.Lock()
        self._compute = 0
        self._light = 0
        self._bytes = 0
        self._clients: Counter[tuple[str, bool]] = Counter()
        self.refused: Counter[str] = Counter()
        self._trim = _malloc_trim()
        self._trim_pending = False
        self._statuses: dict[str, grpc.Status] = {}
        self._unlogged: Counter[tuple[str, str]] = Counter()
        self._logged_at = -LOG_EVERY

    def enter(self, client: str, compute: bool) -> str | None:
        """Take a place for a call; the reason for a refusal, or None when admitted."""
        with self._lock:
            quota = self.client_quota if compute else self.client_light_quota
            if self._clients[(client, compute)] >= quota:
                kind = "solver" if compute else "light"
                why = f"this client already has {quota} {kind} calls in flight"
            elif compute and (self._compute >= self.slots or self._slots_free() <= 0):
                why = f"all {self.slots} solver slots are busy"
            elif not compute and self._light >= self.limits.max_light:
                why = f"{self.limits.max_light} light calls are in flight"
            else:
                self._clients[(client, compute)] += 1
                if compute:
                    self._compute += 1
                else:
                    self._light += 1
                return None
            self.refused[why.split(" ", 1)[0]] += 1
            return why

    def leave(self, client: str, compute: bool) -> None:
        with self._lock:
            self._clients[(client, compute)] -= 1
            if self._clients[(client, compute)] <= 0:
                del self._clients[(client, compute)]
            if compute:
                self._compute -= 1
            else:
                self._light -= 1

    def take_bytes(self, size: int) -> bool:
        with self._lock:
            if self._bytes + size > self.limits.max_bytes and self._bytes > 0:
                return False
            self._bytes += size
            return True

    def give_bytes(self, size: int) -> None:
        with self._lock:
            self._bytes -= size
        if self.limits.trim_bytes and size >= self.limits.trim_bytes:
            self._trim_soon()

    def _trim_soon(self) -> None:
        """Trim the heap a moment after a large call (once its request, its parsed form and
        its reply are freed: gRPC drops them after the handler returns); one trim at a time."""
        with self._lock:
            if self._trim_pending:
                return
            self._trim_pending = True

        def trim() -> None:
            with self._lock:
                self._trim_pending = False
            self._trim()

        timer = threading.Timer(TRIM_DELAY, trim)
        timer.daemon = True
        timer.start()

    def refusal_status(self, why: str) -> grpc.Status:
        status = self._statuses.get(why)
        if status is None:
            error = OverloadedError(f"{why}; retry with backoff")
            status = report(error, self.limits.retry_after).status()
            with self._lock:
                self._statuses[why] = status
        return status

    def log_refusal(self, method: str, why: str) -> None:
        """Count the refusal; every second at most, one JSON line per (method, reason) with
        the refusals since the last."""
        now = time.monotonic()
        with self._lock:
            self._unlogged[(method, why)] += 1
            if now - self._logged_at < LOG_EVERY:
                return
            self._logged_at = now
            counts, self._unlogged = self._unlogged, Counter()
        for (method_name, reason), count in counts.items():
            line = {
                "method": method_name,
                "request_id": "",
                "status": "RESOURCE_EXHAUSTED",
                "refused": reason,
                "count": count,
            }
            log.info(json.dumps(line))

    def in_flight(self) -> dict[str, int]:
        with self._lock:
            return {"compute": self._compute, "light": self._light, "bytes": self._bytes}


def client_identity(context: grpc.ServicerContext) -> str:
    """Who is calling: the peer certificate's identity (mutual TLS), else a fingerprint of the
    bearer token, else the peer's IP address (without its port)."""
    identities = context.peer_identities()
    if identities:
        return "cert:" + b",".join(identities).decode(errors="replace")
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            raw = value.encode() if isinstance(value, str) else bytes(value)
            return "token:" + hashlib.sha256(raw).hexdigest()[:16]
    peer = context.peer() or ""
    address = peer.split(":", 1)[1] if ":" in peer else peer  # ipv4:1.2.3.4:567, ipv6:[::1]:5
    return "peer:" + address.rsplit(":", 1)[0]


class AdmissionInterceptor(HandlerInterceptor):
    """Serves every method of ``service`` through :class:`Admission` (see the module
    docstring); health and reflection pass untouched."""

    def __init__(self, admission: Admission, service: str) -> None:
        self.admission = admission
        self.prefix = f"/{service}/"

    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        method = details.method
        if not method.startswith(self.prefix):
            return handler
        name = method[len(self.prefix) :]
        return _admitted(handler, self.admission, name, name in COMPUTE_METHODS)


def _refuse(context: grpc.ServicerContext, admission: Admission, name: str, why: str) -> None:
    """RESOURCE_EXHAUSTED with RetryInfo; the status is built once per reason, and refusals
    are logged as counts at most once a second (a refusal storm must not become a log storm)."""
    status = admission.refusal_status(why)
    admission.log_refusal(name, why)
    context.abort_with_status(status)


class _Held:
    """The request bytes one call holds in the byte budget (its latest message's)."""

    __slots__ = ("closed", "lock", "size")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.size = 0
        self.closed = False


def _admitted(
    handler: grpc.RpcMethodHandler, admission: Admission, name: str, compute: bool
) -> grpc.RpcMethodHandler:
    """``handler`` served as a request-streaming method with raw-bytes requests, so that it
    decides before it reads (and parses after the byte budget took the request)."""
    parse = handler.request_deserializer or (lambda raw: raw)
    respond = handler.response_serializer

    def requests(raw_requests: Iterator[bytes], held: _Held) -> Iterator[Any]:
        """The requests, each parsed once the byte budget took it; a message's bytes are held
        until the next one is read (or the call ends). A request stream may be read on
        another thread (OptimiseStream's reader): once the call is closed it takes no more."""
        for raw in raw_requests:
            with held.lock:
                if held.closed:
                    return
                admission.give_bytes(held.size)
                held.size = 0
                if not admission.take_bytes(len(raw)):
                    raise OverloadedError(
                        f"{admission.limits.max_bytes // MB} MiB of requests are in flight"
                    )
                held.size = len(raw)
            yield parse(raw)

    def first(context: grpc.ServicerContext, raw_requests: Iterator[bytes], held: _Held) -> Any:
        try:
            return next(requests(raw_requests, held))
        except OverloadedError as error:
            abort(context, report(error, admission.limits.retry_after))
        except StopIteration:
            context.abort(grpc.StatusCode.INTERNAL, "no request message")
        raise AssertionError("unreachable")  # abort raises

    behaviour = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )
    assert behaviour is not None

    @contextmanager
    def admitted(raw_requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
        """The call admitted (else refused), holding its place until the call ends: yields
        what ``behaviour`` takes, the first request or the request iterator."""
        client = client_identity(context)
        why = admission.enter(client, compute)
        if why is not None:
            _refuse(context, admission, name, why)
            raise AssertionError("unreachable")  # abort raises
        held = _Held()
        try:
            if handler.request_streaming:
                yield requests(raw_requests, held)
            else:
                yield first(context, raw_requests, held)
        finally:
            with held.lock:
                held.closed = True
                admission.give_bytes(held.size)
                held.size = 0
            admission.leave(client, compute)

    if handler.response_streaming:

        def serve_stream(
            raw_requests: Iterator[bytes], context: grpc.ServicerContext
        ) -> Iterator[Any]:
            with admitted(raw_requests, context) as request:
                yield from behaviour(request, context)

        return grpc.stream_stream_rpc_method_handler(serve_stream, None, respond)

    def serve(raw_requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
        with admitted(raw_requests, context) as request:
            return behaviour(request, context)

    return grpc.stream_unary_rpc_method_handler(serve, None, respond)
