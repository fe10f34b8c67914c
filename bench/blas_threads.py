"""BLAS threads: the default (one per process) against the BLAS library's own setting.

``python -m xmargin.bench.blas_threads [--repeats N] [--rounds R] [--out DIR]``: for each size
of the sweep, the fast path's continuous ``optimise()`` in a fresh subprocess under each
setting -- ``default`` (``XMARGIN_BLAS_THREADS`` unset: one thread, ``optimiser/blas.py``)
and ``library`` (``XMARGIN_BLAS_THREADS=0``: OpenBLAS's own pool, one thread per core) -- the
two in turn, R rounds (the order reversed every other round), N timed solves each after one
untimed. Per size it records each setting's median wall and CPU time per solve, the ratio
default / library of each round and their median, and that the two totals agree. Issue #15's
target: no configuration slower with the default settings than with one BLAS thread (the
default is one thread; the library's setting is what a host that never configured BLAS gets).
Writes ``blas-threads.json`` and ``blas-threads.md``. The figures are recorded, never
asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

__all__ = ["SIZES", "main", "measure_child"]

SIZES = ((300, 2520), (1000, 5000), (1500, 5000), (3000, 5000))
SETTINGS = {"default": None, "library": "0"}
SEED = 20261124


def measure_child(positions: int, scenarios: int, repeats: int) -> dict[str, Any]:
    """In this process: ``repeats`` timed continuous solves of a generated book."""
    from threadpoolctl import threadpool_info

    from xmargin.bench.books import make_book
    from xmargin.optimiser import SolveOptions, build_problem, optimise
    from xmargin.optimiser.blas import blas_threads

    options = SolveOptions(integral=False)
    book = make_book(positions, scenarios, SEED)
    problem = build_problem(book, options=options)
    optimise(problem)  # untimed: imports, HiGHS's first instance, the BLAS pool
    walls, cpus, total = [], [], 0.0
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = optimise(problem)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        total = result.optimised.total
    blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return {
        "wall_ms": 1e3 * median(walls),
        "cpu_ms": 1e3 * median(cpus),
        "total": total,
        "asked_threads": blas_threads(),
        "blas_threads": blas,
    }


def _run(setting: str, positions: int, scenarios: int, repeats: int) -> dict[str, Any]:
    from xmargin.optimiser.blas import ENV

    env = dict(os.environ)
    for name in (ENV, "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)  # the library's own setting: nothing in the environment
    threads = SETTINGS[setting]
    if threads is not None:
        env[ENV] = threads
    command = [sys.executable, "-m", "xmargin.bench.blas_threads", "--child"]
    command += [str(positions), str(scenarios), str(repeats)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure(repeats: int, rounds: int) -> dict[str, Any]:
    sizes = []
    for positions, scenarios in SIZES:
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SETTINGS}
        ratios = []
        for round_ in range(rounds):
            order = list(SETTINGS) if round_ % 2 == 0 else list(reversed(SETTINGS))
            pair = {name: _run(name, positions, scenarios, repeats) for name in order}
            for name, run in pair.items():
                runs[name].append(run)
            ratios.append(pair["default"]["wall_ms"] / pair["library"]["wall_ms"])
            print(
                f"{positions} x {scenarios} round {round_ + 1}: default "
                f"{pair['default']['wall_ms']:.1f} ms, library {pair['library']['wall_ms']:.1f} ms",
                file=sys.stderr,
                flush=True,
            )
        totals = [run["total"] for name in SETTINGS for run in runs[name]]
        spread = (max(totals) - min(totals)) / max(1.0, abs(min(totals)))
        sizes.append(
            {
                "positions": positions,
                "scenarios": scenarios,
                "runs": runs,
                "ratios": ratios,
                "ratio_median": median(ratios),
                "totals_relative_spread": spread,
            }
        )
    return {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "repeats": repeats,
        "rounds": rounds,
        "sizes": sizes,
    }


def report(data: dict[str, Any]) -> str:
    lines = [
        "# BLAS threads: the default (one) against the BLAS library's own setting",
        "",
        f"Run {data['started_at']}; load average {data['load_average']}; {data['cpus']} CPUs; "
        f"{data['rounds']} rounds of fresh processes per setting, in turn, "
        f"{data['repeats']} timed solves each (continuous, fast path).",
        "",
        "| positions x scenarios | default (1 thread) wall / CPU | library's own (threads) "
        "wall / CPU | default / library, median of rounds (range) | totals agree |",
        "|---|---|---|---|---|",
    ]
    for size in data["sizes"]:
        cells = []
        for name in SETTINGS:
            runs = size["runs"][name]
            wall = median(run["wall_ms"] for run in runs)
            cpu = median(run["cpu_ms"] for run in runs)
            threads = sorted({t for run in runs for t in run["blas_threads"]})
            shown = f" ({', '.join(map(str, threads))})" if name == "library" else ""
            cells.append(f"{wall:.1f} / {cpu:.1f} ms{shown}")
        ratios = size["ratios"]
        lines.append(
            f"| {size['positions']:,} x {size['scenarios']:,} | {cells[0]} | {cells[1]} | "
            f"{size['ratio_median']:.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | "
            f"{size['totals_relative_spread']:.1e} relative |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmargin.bench.blas_threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--child", nargs=3, type=int, metavar=("N", "S", "REPEATS"))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_child(*args.child)))
        return 0
    if args.repeats < 1 or args.rounds < 1:
        parser.error("--repeats and --rounds must be at least 1")
    data = measure(args.repeats, args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "blas-threads.json").write_text(json.dumps(data, indent=1) + "\n")
    text = report(data)
    (args.out / "blas-threads.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
