"""The reading steps of a call, one by one, on the reference account: CPU medians in process.

- ``server_book_columns``: the server's request bytes -> validated Book, the account sent as
  ``account_columns`` (what ``XmarginClient`` sends), the scenario set registered;
- ``server_book_rows``: the same, the account sent as rows;
- ``client_check_case``: the client's schema check of the account (``check_case``);
- ``parse_case_whole``: ``parse_case`` of the whole case dict, its scenario set included.

The steps run in turn, ``calls`` rounds of one each (so a change in the machine's speed falls
on all of them alike). Run on its own, and alternate it with another checkout's run for a
comparison::

    python -m xmargin.bench.call_steps [--calls 100] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xmargin.clients import convert as client_convert
from xmargin.clients.v1 import service_pb2
from xmargin.optimiser.case_format import book_to_dict, parse_case
from xmargin.server.convert import FieldPaths, Limits, scenario_set_case
from xmargin.server.service import SolverPool, XmarginServicer

from .books import make_book

__all__ = ["run_call_steps"]


def run_call_steps(
    positions: int = 300, scenarios: int = 2520, seed: int = 20261124, calls: int = 100
) -> dict[str, Any]:
    """Each step's CPU median and minimum (ms) over ``calls`` interleaved rounds."""
    case = json.loads(json.dumps(book_to_dict(make_book(positions, scenarios, seed))))
    account = {key: value for key, value in case.items() if key != "scenarios"}
    run = client_convert.run_context(account)

    def request_bytes(columns: bool) -> bytes:
        request = client_convert.optimise_request(account, run, scenarios=False, columns=columns)
        return request.SerializeToString()

    columns_bytes, rows_bytes = request_bytes(True), request_bytes(False)
    servicer = XmarginServicer(SolverPool(1, 1))
    registered = scenario_set_case(client_convert.case_scenario_set(case), "scenario_set", Limits())

    def server_book(payload: bytes) -> Any:
        request = service_pb2.OptimiseRequest.FromString(payload)
        return servicer._book(
            request, request.account, FieldPaths(), registered, schema_wording=True
        )

    steps: dict[str, Callable[[], Any]] = {
        "server_book_columns": lambda: server_book(columns_bytes),
        "server_book_rows": lambda: server_book(rows_bytes),
        "client_check_case": lambda: client_convert.check_case(account, scenarios=False),
        "parse_case_whole": lambda: parse_case(case),
    }
    for step in steps.values():  # warm-up
        for _ in range(5):
            step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(calls):
        for name, step in steps.items():
            started = time.process_time()
            step()
            seconds[name].append(time.process_time() - started)
    return {
        "measured": "CPU ms per step, medians and minima of interleaved rounds",
        "positions": positions,
        "scenarios": scenarios,
        "calls": calls,
        "steps": {
            name: {"median": statistics.median(values) * 1e3, "min": min(values) * 1e3}
            for name, values in seconds.items()
        },
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run_call_steps(calls=args.calls)
    text = json.dumps(result, indent=1)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(
        "; ".join(f"{name} {s['median']:.2f} ms" for name, s in result["steps"].items())
        + f"; load {result['load_average'][0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
