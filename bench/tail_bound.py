"""How far above the continuous relaxation the whole-lot optimum of a book provably lies.

``python -m xmargin.bench.tail_bound [SEED ...] [--tail FILE] [--time-limit S] [--out DIR]``,
run from the repository root. The books are those of the integral-tail benchmark
(``integral_tail.book_of``: size and generator from the seed): the seeds given, or those that
stopped at the whole-lot budget in ``--tail`` (an ``integral-tail.json``). Per book:

- b, the continuous optimum (``integral=False``): a lower bound of every whole-lot total;
- the default whole-lot solve: its total, status and time;
- the tests' independent MILP of margin-model.md (``tests/optimiser/independent_milp.py``: the
  full Rockafellar-Uryasev ES, whole lots as integer columns, scipy's HiGHS; another
  formulation than the solver's cuts), given ``--time-limit`` seconds: its best total and its
  dual bound D. ``--solver scip``: the same MILP in SCIP (pyscipopt, not a dependency of the
  project), a second solver's bound; writes ``tail-bound-scip.*``.

(D - b) / b above 1e-6 proves that the book's whole-lot optimum lies more than 1e-6 above the
relaxation: no rounding and no incumbent can meet the relaxation's bound there, and a proof of
optimality to 1e-6 needs a bound that branch and bound raises. Writes ``tail-bound.json`` and
``tail-bound.md``; the figures are recorded, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "measure"]

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
GAP = 1e-6
"""The issue's optimality tolerance (relative)."""


def measure(seed: int, time_limit: float, solver: str = "highs") -> dict[str, Any]:
    """One book: the relaxation, the default whole-lot solve and the independent MILP."""
    from tests.optimiser.independent_milp import independent_optimum
    from xmargin.bench.integral_tail import book_of
    from xmargin.optimiser import SolveOptions, optimise
    from xmargin.optimiser.optimise import needs_no_reduction_branch

    positions, scenarios, book = book_of(seed)
    relaxed = optimise(book, options=SolveOptions(integral=False)).optimised.total
    started = time.perf_counter()
    whole = optimise(book, options=SolveOptions(integral=True))
    whole_seconds = time.perf_counter() - started
    problem = whole.problem
    branches = (True, False) if needs_no_reduction_branch(problem) else (True,)
    started = time.perf_counter()
    found = [
        independent_optimum(book, problem.eligible, True, reduction, time_limit, solver=solver)
        for reduction in branches
    ]
    milp_seconds = time.perf_counter() - started

    def above(value: float) -> float:
        return (value - relaxed) / max(abs(relaxed), 1.0)

    return {
        "seed": seed,
        "positions": positions,
        "scenarios": scenarios,
        "relaxation": relaxed,
        "whole_lot": {
            "above": above(whole.optimised.total),
            "status": whole.status.value,
            "seconds": whole_seconds,
        },
        "milp": {
            "above": above(min(f.total for f in found)),
            "bound_above": above(min(f.bound for f in found)),
            "optimal": all(f.status == "optimal" for f in found),
            "seconds": milp_seconds,
            "solver": solver,
        },
    }


def _markdown(rows: list[dict[str, Any]], time_limit: float, solver: str) -> str:
    proven = [r for r in rows if r["milp"]["bound_above"] > GAP]
    lines = [
        "# Whole-lot optimum against the continuous relaxation",
        "",
        f"{len(rows)} books; the independent MILP ({solver}) had {time_limit:g} s each. "
        f"On {len(proven)} its dual bound lies more than {GAP:g} above the relaxation: "
        "their whole-lot optimum cannot meet the relaxation's bound.",
        "",
        "Figures are (total - relaxation) / relaxation, in millionths.",
        "",
        "| seed | n x S | default whole lots | its status, s | MILP best | MILP bound | MILP |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        w, m = r["whole_lot"], r["milp"]
        lines.append(
            f"| {r['seed']} | {r['positions']} x {r['scenarios']} | {1e6 * w['above']:.2f} | "
            f"{w['status']}, {w['seconds']:.1f} | {1e6 * m['above']:.2f} | "
            f"{1e6 * m['bound_above']:.2f} | {'optimal' if m['optimal'] else 'limit'}, "
            f"{m['seconds']:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmargin.bench.tail_bound")
    parser.add_argument("seeds", nargs="*", type=int)
    parser.add_argument("--tail", type=Path, help="take the books at the budget from this file")
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--solver", choices=("highs", "scip"), default="highs", help="scip: needs pyscipopt"
    )
    args = parser.parse_args(argv)
    seeds = list(args.seeds)
    if args.tail is not None:
        tail = json.loads(args.tail.read_text())["books"]
        seeds += [r["seed"] for r in tail if r["status"] == "TIME_LIMIT"]
    if not seeds:
        parser.error("give seeds or --tail")
    load_at_start = os.getloadavg()
    rows = []
    for seed in seeds:
        rows.append(measure(seed, args.time_limit, args.solver))
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "books": rows,
        "time_limit": args.time_limit,
        "solver": args.solver,
        "load_average": {"start": list(load_at_start), "end": list(os.getloadavg())},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "tail-bound" if args.solver == "highs" else f"tail-bound-{args.solver}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / f"{name}.md").write_text(_markdown(rows, args.time_limit, args.solver))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
