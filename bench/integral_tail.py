"""The integral tail: whole-lot time against the same book's continuous time, over many books.

``python -m xmargin.bench.integral_tail [--books N] [--seed K] [--out DIR]`` draws N generated
books (positions from ``POSITIONS``, scenarios from ``SCENARIOS``, the sample generator's
templates; book i uses seed K + i), solves each continuous and in whole lots with the default
options (the fast path, no time limit: the whole-lot phase then has its default tail budget)
and records per book: both times, their ratio, the whole-lot status and answer source, and how
far the whole-lot total sits above the continuous one (relative). It writes
``integral-tail.json`` and ``integral-tail.md`` (p50, p90, p99 and max of the ratio, the books
at the budget, the slowest seeds). The figures are recorded, never asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["POSITIONS", "SCENARIOS", "book_of", "main", "measure", "summary"]

POSITIONS = (30, 60, 100, 300, 1000, 3000)
SCENARIOS = (500, 1260, 2520, 5000)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def book_of(seed: int) -> tuple[int, int, Any]:
    """The bench's book of ``seed``: its positions and scenarios (drawn from ``POSITIONS`` and
    ``SCENARIOS`` by the seed) and the generated book."""
    from xmargin.optimiser.sample import generate_book

    rng = np.random.default_rng(seed)
    positions = int(rng.choice(POSITIONS))
    scenarios = int(rng.choice(SCENARIOS))
    return positions, scenarios, generate_book(positions, scenarios, seed)


def measure(seed: int) -> dict[str, Any]:
    """One book: its size from ``seed``, continuous and whole-lot solves."""
    from xmargin.optimiser import SolveOptions, optimise

    positions, scenarios, book = book_of(seed)
    started = time.perf_counter()
    continuous = optimise(book, options=SolveOptions(integral=False))
    middle = time.perf_counter()
    whole = optimise(book, options=SolveOptions(integral=True))
    finished = time.perf_counter()
    relaxed = continuous.optimised.total
    return {
        "seed": seed,
        "positions": positions,
        "scenarios": scenarios,
        "continuous_seconds": middle - started,
        "whole_lot_seconds": finished - middle,
        "ratio": (finished - middle) / max(middle - started, 1e-9),
        "status": whole.status.value,
        "source": whole.stats.source.value,
        "above_relaxation": (whole.optimised.total - relaxed) / max(abs(relaxed), 1.0),
        "message": whole.stats.message,
    }


def _quantile(values: list[float], q: float) -> float:
    return float(np.quantile(values, q)) if values else math.nan


def _at_budget(row: dict[str, Any]) -> bool:
    return row["status"] == "TIME_LIMIT" and not _unproven(row)


def _unproven(row: dict[str, Any]) -> bool:
    """Stopped before its budget: a MIP HiGHS called optimal did not hold its incumbent."""
    return row["status"] == "TIME_LIMIT" and "stopped unproven" in str(row.get("message", ""))


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The distribution of the whole-lot / continuous time ratio, the books at the budget and
    those stopped unproven."""
    ratios = [float(r["ratio"]) for r in rows]
    slowest = sorted(rows, key=lambda r: -float(r["ratio"]))[:5]
    return {
        "books": len(rows),
        "ratio": {
            "p50": _quantile(ratios, 0.5),
            "p90": _quantile(ratios, 0.9),
            "p99": _quantile(ratios, 0.99),
            "max": max(ratios, default=math.nan),
        },
        "at_budget": sum(_at_budget(r) for r in rows),
        "unproven": sum(_unproven(r) for r in rows),
        "by_positions": {
            str(n): {
                "books": len(sized),
                "p50": _quantile([float(r["ratio"]) for r in sized], 0.5),
                "max": max(float(r["ratio"]) for r in sized),
                "at_budget": sum(_at_budget(r) for r in sized),
            }
            for n in POSITIONS
            if (sized := [r for r in rows if r["positions"] == n])
        },
        "slowest": [
            {k: r[k] for k in ("seed", "positions", "scenarios", "ratio", "status")}
            for r in slowest
        ],
    }


def _markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    ratio = s["ratio"]
    lines = [
        "# Integral tail: whole-lot time / continuous time",
        "",
        f"{s['books']} generated books; ratio p50 {ratio['p50']:.1f}x, p90 {ratio['p90']:.1f}x, "
        f"p99 {ratio['p99']:.1f}x, max {ratio['max']:.1f}x; {s['at_budget']} at the default "
        "whole-lot budget (best allocation found, not proven to 1e-6)"
        + (
            f"; {s['unproven']} stopped unproven before it (a MIP HiGHS called optimal did not "
            "hold the incumbent it was given)."
            if s.get("unproven")
            else "."
        ),
    ]
    if "load_average" in result:
        load = result["load_average"]
        lines.append(
            f"Load average (1, 5, 15 min) at start {', '.join(f'{x:.2f}' for x in load['start'])}"
            f", at end {', '.join(f'{x:.2f}' for x in load['end'])}."
        )
    lines += [
        "",
        "| positions | books | ratio p50 | ratio max | at the budget |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {n} | {b['books']} | {b['p50']:.1f} | {b['max']:.1f} | {b['at_budget']} |"
        for n, b in s["by_positions"].items()
    ]
    lines += [
        "",
        "| seed | positions | scenarios | ratio | status |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['seed']} | {r['positions']} | {r['scenarios']} | {r['ratio']:.1f} | {r['status']} |"
        for r in s["slowest"]
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmargin.bench.integral_tail")
    parser.add_argument("--books", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--max-seconds", type=float, default=None, help="stop drawing books")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    rows = []
    for i in range(args.books):
        if args.max_seconds is not None and time.perf_counter() - started > args.max_seconds:
            break
        rows.append(measure(args.seed + i))
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "books": rows,
        "summary": summary(rows),
        "load_average": {"start": list(load_at_start), "end": list(os.getloadavg())},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "integral-tail.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "integral-tail.md").write_text(_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
