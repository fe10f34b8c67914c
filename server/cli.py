"""``xmargin serve``: run the gRPC server (``main(argv)`` takes the arguments after ``serve``)."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

from .admission import MB, AdmissionLimits
from .app import ServerConfig, serve
from .scenario_store import DEFAULT_REGISTRATION_LIMITS, RegistrationLimits, default_store_url

__all__ = ["build_parser", "main"]


def _count(text: str) -> int:
    """An integer >= 0 (argparse's message otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative (0 turns the limit off)")
    return value


def _at_least_one(text: str) -> int:
    """An integer >= 1 (a limit of 0 would refuse every call)."""
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def _port(text: str) -> int:
    """A TCP port, 0-65535 (0: any free port)."""
    value = _count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535)")
    return value


def _seconds(text: str) -> float:
    """A finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.0 <= value < math.inf:  # False for NaN too
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmargin serve", description="Serve the xmargin.v1 gRPC API."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=50051, help="port (0: any free port)")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="solver threads (default: one per core)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=8,
        help="calls that may wait for a solver thread; beyond: RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--max-message-mb",
        type=_at_least_one,
        default=64,
        help="largest request or response message, MiB (default 64)",
    )
    parser.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM)")
    parser.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    parser.add_argument(
        "--client-ca",
        type=Path,
        help="CA bundle (PEM) for client certificates: turns on mutual TLS",
    )
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        help="require 'authorization: Bearer TOKEN' (default $XMARGIN_TOKEN); repeat it to "
        "give each client its own token (quotas go by token)",
    )
    parser.add_argument(
        "--scenario-set",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="preload a scenario set (repeatable)",
    )
    parser.add_argument(
        "--batch-engine",
        choices=["threads", "local", "dask"],
        help="OptimiseBatch's engine: threads (default: the solver threads), local (a pool of "
        "--workers processes per batch) or dask (--scheduler, else a LocalCluster of --workers)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="Dask scheduler for OptimiseBatch (implies --batch-engine dask)",
    )
    parser.add_argument(
        "--audit",
        metavar="URL",
        help="record every Optimise and batch account: sqlite:///PATH.db or postgresql://...",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help="where registered scenario sets live (sqlite:///PATH.db or postgresql://...; "
        "servers sharing one share their sets); default: the --audit store, else "
        "$XDG_DATA_HOME/xmargin/store.db",
    )
    parser.add_argument(
        "--scenario-cache-mb",
        type=_count,
        default=256,
        help="memory for scenario sets in use, MiB, least recently used dropped first (they "
        "stay in the store; default 256)",
    )
    parser.add_argument(
        "--max-client-sets",
        type=_count,
        default=DEFAULT_REGISTRATION_LIMITS.max_sets,
        help="scenario set versions one client (certificate, token or IP) may register in "
        "the store, counted across restarts; beyond: RESOURCE_EXHAUSTED (default "
        f"{DEFAULT_REGISTRATION_LIMITS.max_sets}; 0: no limit)",
    )
    parser.add_argument(
        "--max-client-store-mb",
        type=_count,
        default=DEFAULT_REGISTRATION_LIMITS.max_bytes // MB,
        help="MiB of scenario shocks one client may register in the store, each distinct "
        "content once; beyond: RESOURCE_EXHAUSTED (default "
        f"{DEFAULT_REGISTRATION_LIMITS.max_bytes // MB}; 0: no limit)",
    )
    parser.add_argument(
        "--stream-window",
        type=_count,
        default=0,
        help="OptimiseStream: accounts of one call read but not yet answered (default 2 x "
        "--workers); the client is held back beyond it",
    )
    parser.add_argument(
        "--grace",
        type=_seconds,
        default=30.0,
        help="seconds in-flight calls get to finish on SIGTERM (default 30)",
    )
    parser.add_argument(
        "--max-light",
        type=_at_least_one,
        default=4,
        help="calls other than solves (CheckEligibility, RegisterScenarioSet, ...) in flight "
        "at once; beyond: RESOURCE_EXHAUSTED (default 4)",
    )
    parser.add_argument(
        "--max-inflight-mb",
        type=_at_least_one,
        default=256,
        help="request bytes in flight at once, MiB; beyond: RESOURCE_EXHAUSTED (default 256)",
    )
    parser.add_argument(
        "--client-quota",
        type=_count,
        default=0,
        help="solver calls one client (certificate, token or IP) may have running or queued "
        "(default 0: a quarter of --workers + --max-queue; its light calls: half --max-light)",
    )
    parser.add_argument(
        "--default-deadline",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="deadline of a call that comes without one: its solve stops then and it answers "
        "DEADLINE_EXCEEDED (default 300; 0: none)",
    )
    parser.add_argument(
        "--solver-nice",
        type=int,
        default=0,
        choices=range(20),
        metavar="N",
        help="run the solver threads N steps of CPU priority (nice) below the server's gRPC "
        "threads, so that refusals get the CPU first; it also gives the solves less CPU "
        "against other processes on the machine (default 0: the same priority)",
    )
    parser.add_argument(
        "--request-window-kb",
        type=_count,
        default=1024,
        help="HTTP/2 receive window of one request stream, KiB: what a client may send before "
        "the server has admitted or refused its call (default 1024; 0: gRPC's, which grows "
        "with the bandwidth-delay product)",
    )
    return parser


def main(argv: list[str]) -> int:
    """Parse ``argv`` (without the ``serve`` word), serve until SIGTERM; the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    engine = args.batch_engine or ("dask" if args.scheduler else "threads")
    if args.scheduler and engine != "dask":
        parser.error("--scheduler needs --batch-engine dask")
    env_token = os.environ.get("XMARGIN_TOKEN")
    tokens = list(args.token) or ([env_token] if env_token else [])
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    config = ServerConfig(
        host=args.host,
        port=args.port,
        workers=args.workers,
        max_queue=args.max_queue,
        max_message_mb=args.max_message_mb,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        client_ca=args.client_ca,
        token=tokens[0] if tokens else None,
        tokens=tuple(tokens[1:]),
        admission=AdmissionLimits(
            max_light=args.max_light,
            max_bytes=args.max_inflight_mb * MB,
            client_quota=args.client_quota or None,
        ),
        scenario_sets=list(args.scenario_set),
        grace=args.grace,
        batch_engine=engine,
        scheduler=args.scheduler,
        audit=args.audit,
        store=args.store or (None if args.audit else default_store_url()),
        scenario_cache_mb=args.scenario_cache_mb,
        registration=RegistrationLimits(args.max_client_sets, args.max_client_store_mb * MB),
        stream_window=args.stream_window,
        default_deadline=args.default_deadline or None,
        solver_nice=args.solver_nice,
        request_window_kb=args.request_window_kb,
    )
    try:
        return serve(config)
    except (OSError, ValueError) as error:
        print(f"xmargin serve: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
