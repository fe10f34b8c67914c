"""The reference account's solve in evaluation floors, measured in one run.

``python -m xmargin.bench.floor [--repeats N] [--out DIR]``: an evaluation floor is what any
exact evaluation of one allocation must at least do -- a plain numpy loss product of the
account's shape (S scenarios x n positions times n x 5 accounts) plus a partial sort of each
tail -- and the fast path's ``optimise()`` of the reference account (continuous) is reported as
a multiple of it. Floor and solve are timed in turn (N solves, each followed by 50 floors), so
both see the same machine; medians of wall and CPU time. Writes ``floor.json`` and ``floor.md``.
The figures are recorded, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "measure"]

FLOORS_PER_SOLVE = 50


def measure(repeats: int, seed: int) -> dict[str, Any]:
    from xmargin.bench.books import REFERENCE_POSITIONS, REFERENCE_SCENARIOS, make_book
    from xmargin.optimiser import SolveOptions, build_problem, optimise

    options = SolveOptions(integral=False)
    book = make_book(REFERENCE_POSITIONS, REFERENCE_SCENARIOS, seed)
    problem = build_problem(book, options=options)
    unit_pnl = np.ascontiguousarray(problem.unit_pnl())  # (S, n)
    accounts = np.random.default_rng(seed).uniform(size=(5, problem.n_positions))
    tails = [(w.window, math.floor(w.n_tail)) for w in problem.models.values()]

    def floor() -> None:
        losses = unit_pnl @ accounts.T  # (S, 5)
        for window, whole in tails:
            np.partition(-losses[window], whole, axis=0)

    optimise(problem)
    floors: list[tuple[float, float]] = []
    solves: list[tuple[float, float]] = []
    result = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = optimise(build_problem(book, options=options, eligibility=problem.eligibility))
        solves.append((time.perf_counter() - wall, time.process_time() - cpu))
        for _ in range(FLOORS_PER_SOLVE):
            wall, cpu = time.perf_counter(), time.process_time()
            floor()
            floors.append((time.perf_counter() - wall, time.process_time() - cpu))
    assert result is not None
    stats = result.stats
    figures = {
        "floor_wall_ms": 1e3 * float(np.median([f[0] for f in floors])),
        "floor_cpu_ms": 1e3 * float(np.median([f[1] for f in floors])),
        "solve_wall_ms": 1e3 * float(np.median([s[0] for s in solves])),
        "solve_cpu_ms": 1e3 * float(np.median([s[1] for s in solves])),
        "rounds": stats.rounds,
        "iterations": stats.iterations,
        "build_ms": 1e3 * stats.build_seconds,
        "solve_ms": 1e3 * stats.solve_seconds,
        "lp_ms": 1e3 * stats.lp_seconds,
        "evaluation_ms": 1e3 * stats.evaluation_seconds,
        "gap": stats.gap,
        "total": result.optimised.total,
    }
    figures["floors_wall"] = figures["solve_wall_ms"] / figures["floor_wall_ms"]
    figures["floors_cpu"] = figures["solve_cpu_ms"] / figures["floor_cpu_ms"]
    return figures


def markdown(document: dict[str, Any]) -> str:
    f = document["figures"]
    return (
        "# The reference account in evaluation floors\n\n"
        f"Run {document['started_at']}; load average {document['load_average']}; "
        f"{document['repeats']} solves, {FLOORS_PER_SOLVE} floors after each.\n\n"
        "| figure | wall (median) | CPU (median) |\n|---|---|---|\n"
        f"| evaluation floor | {f['floor_wall_ms']:.3f} ms | {f['floor_cpu_ms']:.3f} ms |\n"
        f"| optimise(), reference, continuous | {f['solve_wall_ms']:.1f} ms | "
        f"{f['solve_cpu_ms']:.1f} ms |\n"
        f"| in floors | {f['floors_wall']:.0f} | {f['floors_cpu']:.0f} |\n\n"
        f"Last solve: {f['rounds']} rounds, {f['iterations']} simplex iterations, build "
        f"{f['build_ms']:.1f} ms, solve {f['solve_ms']:.1f} ms (LP {f['lp_ms']:.1f} ms, "
        f"evaluation {f['evaluation_ms']:.1f} ms), gap {f['gap']:.1e}, total "
        f"{f['total']:,.2f} USD.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmargin.bench.floor")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    from xmargin.bench.books import REFERENCE_SEED
    from xmargin.optimiser.blas import configure_blas_threads

    configure_blas_threads()
    seed = REFERENCE_SEED if args.seed is None else args.seed
    document = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "repeats": args.repeats,
        "seed": seed,
        "figures": measure(args.repeats, seed),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "floor.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / "floor.md").write_text(markdown(document))
    print(markdown(document))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
