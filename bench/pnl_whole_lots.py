"""Whole lots on books given as P&L vectors: Kelley's cuts against the direct RU LP.

``python -m xmargin.bench.pnl_whole_lots [--limit 20] [--out FILE.json]`` generates books whose
every instrument is a full-revaluation P&L vector (``with_pnl_vectors``, share 1.0; every other
book with 1x noise), 30 to 300 positions on 500 or 2,520 scenarios, and solves each in whole
lots with the fast path's two formulations in turn (``HighsBackend("cuts")``, the default's,
and ``HighsBackend("ru")``; the order alternates by book) under the same time limit. Per book:
the continuous optimum (a lower bound of every whole-lot total), and per formulation the wall
time, status and exact objective. The figures are recorded, never asserted.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from xmargin.bench.books import make_book, with_pnl_vectors
from xmargin.optimiser import SolveOptions, build_problem
from xmargin.optimiser.solvers.highs_backend import HighsBackend

__all__ = ["BOOKS", "main", "measure"]

BOOKS = tuple(
    (positions, scenarios) for positions in (30, 60, 100, 200, 300) for scenarios in (500, 2520)
)


def measure(positions: int, scenarios: int, seed: int, limit: float) -> dict[str, Any]:
    """One book (noise 1 on odd seeds): the continuous bound, then both formulations."""
    noise = float(seed % 2)
    book = with_pnl_vectors(make_book(positions, scenarios, seed, integral=True), 1.0, seed, noise)
    continuous = HighsBackend().solve(build_problem(book, options=SolveOptions(integral=False)))
    problem = build_problem(book, options=SolveOptions(integral=True))
    row: dict[str, Any] = {
        "positions": positions,
        "scenarios": scenarios,
        "seed": seed,
        "noise": noise,
        "continuous_objective": continuous.objective,
    }
    order = ("cuts", "ru") if seed % 2 else ("ru", "cuts")
    for formulation in order:
        started = time.perf_counter()
        raw = HighsBackend(formulation).solve(problem, time_limit=limit)
        found = raw.xm_quantity is not None  # else no allocation within the limit
        row[formulation] = {
            "seconds": time.perf_counter() - started,
            "status": raw.status.value,
            "objective": raw.objective if found else None,
            "above_continuous": (raw.objective - continuous.objective)
            / max(1.0, abs(continuous.objective))
            if found
            else None,
        }
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=20.0, help="time limit per solve (s)")
    parser.add_argument("--seed", type=int, default=100, help="seed of the first book")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = []
    for i, (positions, scenarios) in enumerate(BOOKS):
        rows.append(measure(positions, scenarios, args.seed + i, args.limit))
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"limit": args.limit, "books": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
