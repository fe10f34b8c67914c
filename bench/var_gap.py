"""How far the exact-VaR phase's answers sit above the exact-VaR optimum.

``python -m xmargin.bench.var_gap [--books N] [--seed K] [--out DIR] [--time-limit S]``, run
from the repository root: the optimum comes from the tests' independent MILP of margin-model.md
(``tests/optimiser/independent_milp.py``: VaR by binary tail selection, scipy's HiGHS), which
is not part of the installed package. Book i (seed K + i) is generated with 2-30 positions and
100, 200 or 300 scenarios, FICC's model measuring VaR 99% (every third book CME's too), and is
solved continuous and in whole lots with the default options (no time limit: the VaR phase has
its default budget; ``--time-limit``: that many seconds per solve, the phase's deadline). Per
solve it records the relative gap of the exact total at the ES stand-in's answer and at the
answer to the MILP's best (the better of its two XM branches, ``optimal`` when both were proven
within their 120 s), and the solve's time. The MILP's results are kept in
``var-gap-oracle.json`` in the output folder and read back on a later run (the same books
measured on other code). The figures are recorded, never asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "measure", "var_book"]

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
ORACLE_SECONDS = 120.0


def var_book(seed: int) -> Any:
    """The generated book of ``seed``: FICC's model measuring VaR (CME's too when seed % 3 is 0)."""
    from xmargin.optimiser.model import Ccp, Measure
    from xmargin.optimiser.sample import generate_book

    rng = np.random.default_rng(seed)
    book = generate_book(int(rng.integers(2, 31)), int(rng.choice([100, 200, 300])), seed)
    houses = (Ccp.FICC, Ccp.CME) if seed % 3 == 0 else (Ccp.FICC,)
    models = {
        ccp: dataclasses.replace(model, measure=Measure.VAR) if ccp in houses else model
        for ccp, model in book.models.items()
    }
    return dataclasses.replace(book, models=models)


def measure(
    seed: int, integral: bool, oracle: dict[str, Any], time_limit: float | None = None
) -> dict[str, Any]:
    """One book in one mode (``time_limit``: the solve's, None for the default budget);
    ``oracle`` caches the MILP's result by book and mode."""
    from tests.optimiser.independent_milp import independent_optimum
    from xmargin.optimiser import SolveOptions, optimise
    from xmargin.optimiser.model import Measure
    from xmargin.optimiser.solvers.local_search import exact_objective

    book = var_book(seed)
    book = dataclasses.replace(book, options=SolveOptions(integral=integral, time_limit=time_limit))
    started = time.perf_counter()
    result = optimise(book)
    seconds = time.perf_counter() - started
    problem = result.problem
    key = f"{seed}:{'whole' if integral else 'continuous'}"
    if key not in oracle:
        found = [
            independent_optimum(book, problem.eligible, integral, reduction, ORACLE_SECONDS)
            for reduction in (True, False)
        ]
        oracle[key] = {
            "value": min(branch.total for branch in found),
            "optimal": all(branch.status == "optimal" for branch in found),
        }
    best = float(oracle[key]["value"])
    answer = exact_objective(problem, result.allocation)
    stand_in = float(result.stand_in_total) if result.stand_in_total is not None else answer
    return {
        "seed": seed,
        "integral": integral,
        "positions": len(book.positions),
        "scenarios": int(book.scenarios.shocks.shape[0]),
        "var_models": sum(m.measure is Measure.VAR for m in book.models.values()),
        "seconds": seconds,
        "source": result.stats.source.value,
        "stand_in_gap": (stand_in - best) / max(abs(best), 1.0),
        "gap": (answer - best) / max(abs(best), 1.0),
        "oracle_optimal": bool(oracle[key]["optimal"]),
    }


def _markdown(rows: list[dict[str, Any]], load: dict[str, list[float]]) -> str:
    gaps = np.array([r["gap"] for r in rows])
    stand_in = np.array([r["stand_in_gap"] for r in rows])
    seconds = np.array([r["seconds"] for r in rows])
    lines = [
        "# Exact-VaR phase: gap to the independent MILP's exact-VaR optimum",
        "",
        f"{len(rows)} solves ({len(rows) // 2} books, continuous and whole lots); "
        f"the MILP proved {sum(r['oracle_optimal'] for r in rows)} of them optimal.",
        f"Gap of the answer: median {np.median(gaps):.2g}, p90 {np.quantile(gaps, 0.9):.2g}, "
        f"max {gaps.max():.2g}; {int((gaps > 1e-6).sum())} above 1e-6. At the ES stand-in's "
        f"answer: median {np.median(stand_in):.2g}, max {stand_in.max():.2g}. Solve time "
        f"median {np.median(seconds):.2f} s, max {seconds.max():.2f} s.",
        f"Load average (1, 5, 15 min) at start {', '.join(f'{x:.2f}' for x in load['start'])}, "
        f"at end {', '.join(f'{x:.2f}' for x in load['end'])}.",
        "",
        "| seed | mode | positions | scenarios | VaR models | stand-in gap | gap | source | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['seed']} | {'whole' if r['integral'] else 'cont'} | {r['positions']} | "
        f"{r['scenarios']} | {r['var_models']} | {r['stand_in_gap']:.2g} | {r['gap']:.2g}"
        f"{'' if r['oracle_optimal'] else ' (MILP unproven)'} | {r['source']} | "
        f"{r['seconds']:.2f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmargin.bench.var_gap")
    parser.add_argument("--books", type=int, default=24)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--time-limit", type=float, default=None, help="seconds per solve (default: none)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "var-gap-oracle.json"
    oracle: dict[str, Any] = json.loads(cache.read_text()) if cache.exists() else {}
    load_at_start = os.getloadavg()
    rows = []
    for seed in range(args.seed, args.seed + args.books):
        for integral in (False, True):
            rows.append(measure(seed, integral, oracle, args.time_limit))
            print(json.dumps(rows[-1]), flush=True)
            cache.write_text(json.dumps(oracle, indent=1) + "\n")
    load = {"start": list(load_at_start), "end": list(os.getloadavg())}
    result = {"solves": rows, "load_average": load}
    (args.out / "var-gap.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "var-gap.md").write_text(_markdown(rows, load))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
