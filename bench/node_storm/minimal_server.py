"""A minimal gRPC server to tell the xmargin server's own tail from the host's.

It serves only what the storm's probes measure: the standard health service, and an Optimise
method (as client streaming, like the real server's admission) that refuses every call with
RESOURCE_EXHAUSTED at call start, before reading its body. ``BUSY`` background threads stand in
for solver threads (a numpy loss product, a partial sort and a pure-Python loop, so that they
hold the GIL part of the time as a solve does). ``sync`` runs gRPC's thread-pool server, ``aio``
its asyncio server::

    python bench/node_storm/minimal_server.py sync|aio PORT BUSY

then, in two processes, ``node storm.js PORT 10 DIR large callers`` and
``node storm.js PORT 10 DIR large probes`` (see storm.js). Nothing here is xmargin's code: if
the minimal server's health and refusal tails match the real server's, the tail belongs to the
host (CPU contention on its cores), not to the server.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "xmargin.v1.XmarginService"


def stand_in_solver() -> None:
    """Loop forever on a solve's mix of work: BLAS, a partial sort, Python bytecode."""
    rng = np.random.default_rng(0)
    scenarios, exposures = rng.random((2520, 300)), rng.random((300, 5))
    while True:
        losses = scenarios @ exposures
        np.partition(losses[:, 0], 100)
        total = 0.0
        for i in range(2000):
            total += i * 0.5


def start_stand_ins(count: int) -> None:
    for _ in range(count):
        threading.Thread(target=stand_in_solver, daemon=True).start()


def serve_sync(port: int, busy: int) -> None:
    def refuse(requests: Any, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "no solver slot free")

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Optimise": grpc.stream_unary_rpc_method_handler(refuse)}
    )
    server = grpc.server(ThreadPoolExecutor(16), handlers=[handler])
    checks = health.HealthServicer()
    checks.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    start_stand_ins(busy)
    server.wait_for_termination()


async def serve_aio(port: int, busy: int) -> None:
    async def refuse(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "no solver slot free")

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Optimise": grpc.stream_unary_rpc_method_handler(refuse)}
    )
    server = grpc.aio.server(handlers=[handler])
    checks = health.aio.HealthServicer()
    await checks.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    start_stand_ins(busy)
    await server.wait_for_termination()


if __name__ == "__main__":
    kind, port, busy = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if kind == "sync":
        serve_sync(port, busy)
    else:
        asyncio.run(serve_aio(port, busy))
