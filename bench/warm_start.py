"""Warm start: an intraday (ITD) re-solve after a small change in positions, cold against warm.

``python -m xmargin.bench.warm_start [--repeats N] [--changes C] [--out DIR]`` solves the
reference account (continuous, the fast path), then builds the next cycle's book: C positions'
quantities changed by up to +-20% (whole lots, same sign), one position gone. It re-solves that
book cold and warm-started from the first answer (``optimise(..., warm_start=previous)``), N
times each, cold and warm in turn so that both see the same machine, twice: with the current
allocation as it was (the transfers not booked yet) and with the current allocation moved to
the previous answer (booked). Per variant it records the median wall and CPU time of
``optimise``, rounds, simplex iterations, LP and evaluation time, and how far the warm total
sits from the cold one (relative). It writes ``warm-start.json`` and ``warm-start.md``. The
figures are recorded, never asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "measure", "next_cycle"]

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def next_cycle(book: Any, changes: int, seed: int, booked: Any = None) -> Any:
    """``book`` a cycle later: ``changes`` quantities moved by up to +-20% (whole lots, same
    sign), one position gone; with ``booked`` (an allocation by instrument id) the current XM
    quantities are that allocation (clipped to the new holdings)."""
    rng = np.random.default_rng(seed)
    positions = list(book.positions)
    for i in rng.choice(len(positions), changes, replace=False):
        position = positions[i]
        lots = max(1.0, round(abs(position.quantity) / position.lot * rng.uniform(0.8, 1.2)))
        quantity = float(np.sign(position.quantity) or 1.0) * lots * position.lot
        positions[i] = dataclasses.replace(position, quantity=quantity)
    del positions[int(rng.integers(len(positions)))]
    moved = []
    for position in positions:
        xm = position.xm_quantity if booked is None else booked[position.instrument]
        low, high = min(0.0, position.quantity), max(0.0, position.quantity)
        moved.append(dataclasses.replace(position, xm_quantity=float(np.clip(xm, low, high))))
    return dataclasses.replace(book, positions=tuple(moved))


def _timed(book: Any, options: Any, warm_start: Any) -> tuple[float, float, Any]:
    from xmargin.optimiser import optimise

    cpu, wall = time.process_time(), time.perf_counter()
    result = optimise(book, options=options, warm_start=warm_start)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def measure(repeats: int, changes: int, seed: int) -> dict[str, Any]:
    """Both variants (not booked, booked), cold and warm."""
    from xmargin.bench.books import REFERENCE_POSITIONS, REFERENCE_SCENARIOS, make_book
    from xmargin.optimiser import SolveOptions, optimise

    options = SolveOptions(integral=False)
    book = make_book(REFERENCE_POSITIONS, REFERENCE_SCENARIOS, seed)
    previous = optimise(book, options=options)
    allocation = dict(zip(previous.problem.position_ids, previous.allocation, strict=True))
    variants: dict[str, Any] = {}
    for name, booked in (("not_booked", None), ("booked", allocation)):
        changed = next_cycle(book, changes, seed, booked)
        runs: dict[str, list[tuple[float, float, Any]]] = {"cold": [], "warm": []}
        optimise(changed, options=options)  # warm-up
        for _ in range(repeats):
            runs["cold"].append(_timed(changed, options, None))
            runs["warm"].append(_timed(changed, options, previous))
        figures: dict[str, Any] = {}
        for kind, samples in runs.items():
            stats = samples[-1][2].stats
            figures[kind] = {
                "wall_ms": 1e3 * float(np.median([s[0] for s in samples])),
                "cpu_ms": 1e3 * float(np.median([s[1] for s in samples])),
                "rounds": stats.rounds,
                "iterations": stats.iterations,
                "lp_ms": 1e3 * float(np.median([s[2].stats.lp_seconds for s in samples])),
                "evaluation_ms": 1e3
                * float(np.median([s[2].stats.evaluation_seconds for s in samples])),
                "total": samples[-1][2].optimised.total,
            }
        cold, warm = figures["cold"], figures["warm"]
        figures["warm_over_cold_cpu"] = warm["cpu_ms"] / cold["cpu_ms"]
        figures["relative_difference"] = abs(warm["total"] - cold["total"]) / max(
            1.0, abs(cold["total"])
        )
        variants[name] = figures
    return variants


def markdown(document: dict[str, Any]) -> str:
    lines = [
        "# Warm start: ITD re-solve of the reference account after a small change",
        "",
        f"Run {document['started_at']}; load average {document['load_average']}; "
        f"{document['repeats']} repeats, cold and warm in turn; {document['changes']} "
        "quantities changed by up to +-20%, one position gone. Medians of `optimise()`.",
        "",
        "| current allocation | solve | wall | CPU | rounds | iterations | LP | evaluation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, figures in document["variants"].items():
        for kind in ("cold", "warm"):
            f = figures[kind]
            lines.append(
                f"| {name.replace('_', ' ')} | {kind} | {f['wall_ms']:.1f} ms | "
                f"{f['cpu_ms']:.1f} ms | {f['rounds']} | {f['iterations']} | "
                f"{f['lp_ms']:.1f} ms | {f['evaluation_ms']:.1f} ms |"
            )
    lines.append("")
    for name, figures in document["variants"].items():
        lines.append(
            f"- {name.replace('_', ' ')}: warm / cold CPU {figures['warm_over_cold_cpu']:.2f}, "
            f"totals {figures['relative_difference']:.1e} apart (relative)"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmargin.bench.warm_start")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    import datetime as dt
    import os

    from xmargin.bench.books import REFERENCE_SEED
    from xmargin.optimiser.blas import configure_blas_threads

    configure_blas_threads()
    seed = REFERENCE_SEED if args.seed is None else args.seed
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    document = {
        "started_at": started,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "repeats": args.repeats,
        "changes": args.changes,
        "seed": seed,
        "variants": measure(args.repeats, args.changes, seed),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "warm-start.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / "warm-start.md").write_text(markdown(document))
    print(markdown(document))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
