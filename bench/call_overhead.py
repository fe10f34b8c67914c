"""What a unary Optimise call costs beyond its solve: a real gRPC round trip with the solve
replaced by its own answer, computed once beforehand.

A server is built in this process (``build_server``, one solver thread, local TCP) and the
reference account's scenario set is registered once. The server's ``optimise`` is then swapped
for a function that hands back the answer ``optimise`` gave for the same book before timing
began (after checking that the book it is handed has the account's positions), so that each
measured ``client.optimise(account, scenario_set=handle)`` does everything a call does except
the solve: the client's schema check and request build, serialisation, the TCP hop, the
server's request -> validated book (every check), the result -> response message, and the
client's conversion of the answer. Wall time per call and this process's CPU per call (client
and server together; the two run one after the other) are reported, with the client's own
share (its check, build and answer conversion) timed in turn. Run on its own::

    python -m xmargin.bench.call_overhead [--calls 200] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from xmargin.clients import XmarginClient
from xmargin.clients import convert as client_convert
from xmargin.clients.v1 import result_pb2
from xmargin.optimiser import optimise
from xmargin.optimiser.case_format import book_to_dict
from xmargin.optimiser.model import Book
from xmargin.optimiser.results import OptimisationResult
from xmargin.server import service
from xmargin.server.app import ServerConfig, build_server
from xmargin.server.convert import result_to_proto

from .books import make_book
from .stats import summarise

__all__ = ["run_call_overhead"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _canned(answer: OptimisationResult) -> Any:
    """An ``optimise`` stand-in that returns ``answer`` for a book of the same positions."""
    positions = answer.problem.book.positions

    def solved(book: Book, *args: Any, **kwargs: Any) -> OptimisationResult:
        if book.positions != positions:
            raise AssertionError("the harness was handed a different book")
        return answer

    return solved


def _timed(calls: int, call: Any) -> tuple[list[float], list[float]]:
    """Wall and process CPU seconds of each of ``calls`` calls of ``call``."""
    wall, cpu = [], []
    for _ in range(calls):
        started, started_cpu = time.perf_counter(), time.process_time()
        call()
        cpu.append(time.process_time() - started_cpu)
        wall.append(time.perf_counter() - started)
    return wall, cpu


def run_call_overhead(
    positions: int = 300,
    scenarios: int = 2520,
    seed: int = 20261124,
    calls: int = 200,
    columnar_requests: bool = True,
) -> dict[str, Any]:
    """Round trips of the reference account with the solve replaced by its answer; seconds.
    ``columnar_requests``: the client sends the account as columns (``account_columns``)."""
    book = make_book(positions, scenarios, seed)
    case = json.loads(json.dumps(book_to_dict(book)))
    account = {key: value for key, value in case.items() if key != "scenarios"}
    solve_started = time.perf_counter()
    answer = optimise(book)
    solve_seconds = time.perf_counter() - solve_started
    running = build_server(ServerConfig(port=_free_port(), workers=1))
    real_optimise = service._optimise
    service._optimise = _canned(answer)
    try:
        with XmarginClient(
            f"127.0.0.1:{running.port}", timeout=60.0, columnar_requests=columnar_requests
        ) as client:
            handle = client.register_scenario_set("bench-overhead", case)

            def round_trip() -> None:
                client.optimise(account, scenario_set=handle)

            _timed(10, round_trip)  # warm-up
            wall, cpu = _timed(calls, round_trip)
    finally:
        service._optimise = real_optimise
        running.stop()
    run = client_convert.run_context(account)
    payload = result_to_proto(answer, columnar=True).SerializeToString()  # as the client asks
    client_parts = {
        "check_case": lambda: client_convert.check_case(account, scenarios=False),
        "optimise_request": lambda: client_convert.optimise_request(
            account, run, scenarios=False, columns=columnar_requests
        ),
        "optimise_answer": lambda: client_convert.optimise_answer(
            result_pb2.OptimiseResult.FromString(payload)
        ),
    }
    parts = {}
    for name, part in client_parts.items():
        part_wall, part_cpu = _timed(max(20, calls // 4), part)
        parts[name] = {"wall": summarise(part_wall), "cpu": summarise(part_cpu)}
    return {
        "measured": (
            "client.optimise(account, scenario_set=handle) against a server in this process "
            "whose optimise returns the account's answer computed beforehand: the whole call "
            "but the solve"
        ),
        "positions": positions,
        "scenarios": scenarios,
        "calls": calls,
        "columnar_requests": columnar_requests,
        "round_trip_wall": summarise(wall),
        "round_trip_cpu": summarise(cpu),
        "client_parts": parts,
        "solve_once_seconds": solve_seconds,
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--rows", action="store_true", help="send the account as rows, not account_columns"
    )
    args = parser.parse_args(argv)
    result = run_call_overhead(calls=args.calls, columnar_requests=not args.rows)
    text = json.dumps(result, indent=1)
    if args.out is not None:
        args.out.write_text(text + "\n")
    wall, cpu = result["round_trip_wall"], result["round_trip_cpu"]
    shares = ", ".join(
        f"{name} {part['cpu']['median'] * 1e3:.2f}" for name, part in result["client_parts"].items()
    )
    print(
        f"call overhead (no solve): wall median {wall['median'] * 1e3:.2f} ms "
        f"(p25 {wall['p25'] * 1e3:.2f}, min {wall['min'] * 1e3:.2f}); "
        f"cpu median {cpu['median'] * 1e3:.2f} ms; load {result['load_average'][0]:.1f}; "
        f"client cpu medians (ms): {shares}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
