"""Does highspy release the GIL while it solves? Time 2 solves sequentially, in 2 threads and in
2 processes (the figure behind the server's choice of a thread pool; see the README).

    python -m xmargin.bench.gil_probe [--scenarios 2520] [--positions 300] [--repeats 3]

The LP is the Rockafellar-Uryasev form of two expected shortfalls (a standalone and an XM
account) over ``--scenarios`` scenarios of 10 factors for ``--positions`` positions: the
shape of the reference account of architecture.md, written out row by row so that the solve
is long enough to time. Only ``Highs.run`` is timed; the model is loaded beforehand.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import highspy
import numpy as np

__all__ = ["main", "make_model", "measure"]


def make_model(scenarios: int, positions: int, seed: int = 0) -> highspy.Highs:
    """min t1 + t2 + sum(u1 + u2)/n_tail, u1_s >= L_s(q - x) - t1, u2_s >= L_s(x) - t2."""
    rng = np.random.default_rng(seed)
    pnl = rng.standard_normal((scenarios, 10)) @ rng.standard_normal((10, positions))
    quantity = rng.uniform(-1.0, 1.0, positions)
    n_tail = 0.01 * scenarios
    inf = highspy.kHighsInf
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("threads", 1)
    n_cols = positions + 2 + 2 * scenarios
    lower = np.concatenate([np.minimum(0, quantity), [-inf, -inf], np.zeros(2 * scenarios)])
    upper = np.concatenate([np.maximum(0, quantity), [inf, inf], np.full(2 * scenarios, inf)])
    cost = np.concatenate([np.zeros(positions), [1.0, 1.0], np.full(2 * scenarios, 1 / n_tail)])
    highs.addVars(n_cols, lower, upper)
    highs.changeColsCost(n_cols, np.arange(n_cols, dtype=np.int32), cost)
    row_length = positions + 2
    starts = np.arange(2 * scenarios, dtype=np.int32) * row_length
    position_columns = np.arange(positions, dtype=np.int32)
    indices, values = [], []
    for account in (0, 1):
        sign = -1.0 if account == 0 else 1.0  # loss of q - x is -P(q - x) = P x - P q
        for s in range(scenarios):
            u_column = positions + 2 + account * scenarios + s
            indices.append(np.concatenate([position_columns, [positions + account, u_column]]))
            values.append(np.concatenate([sign * -pnl[s], [1.0, 1.0]]))
    row_lower = np.concatenate([-(pnl @ quantity), np.zeros(scenarios)])
    highs.addRows(
        2 * scenarios,
        row_lower,
        np.full(2 * scenarios, inf),
        2 * scenarios * row_length,
        starts,
        np.concatenate(indices).astype(np.int32),
        np.concatenate(values),
    )
    return highs


def _solve_in_process(args: tuple[int, int, int]) -> tuple[float, float]:
    highs = make_model(*args)
    start = time.perf_counter()
    highs.run()
    return start, time.perf_counter()


def measure(scenarios: int, positions: int) -> dict[str, float]:
    """Wall seconds for two solves (sequential, two threads, two processes) and the CPU/wall
    ratio of the threaded run."""
    models = [make_model(scenarios, positions, seed) for seed in (1, 2)]
    start = time.perf_counter()
    for highs in models:
        highs.run()
    sequential = time.perf_counter() - start

    models = [make_model(scenarios, positions, seed) for seed in (1, 2)]
    threads = [threading.Thread(target=highs.run) for highs in models]
    start, cpu_start = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    threaded = time.perf_counter() - start
    # CPU seconds per wall second while the two threads solve: near 2 only if both run at
    # once (the GIL released); at most 1 under the GIL, whatever else loads the machine.
    thread_parallelism = (time.process_time() - cpu_start) / threaded

    with ProcessPoolExecutor(2) as pool:
        spans = list(pool.map(_solve_in_process, [(scenarios, positions, s) for s in (1, 2)]))
    processes = max(end for _, end in spans) - min(begin for begin, _ in spans)
    return {
        "sequential": sequential,
        "threads": threaded,
        "processes": processes,
        "thread_parallelism": thread_parallelism,
    }


def python_progress_during_solve(scenarios: int, positions: int) -> float:
    """Pure-Python loop iterations per second while another thread solves, relative to the
    rate alone: about 0 if the solve holds the GIL, 0.5 to 1 if it releases it (1 with a free
    core). Insensitive to other load on the machine, unlike wall-clock speed-ups."""

    def spin(seconds: float) -> float:
        count, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            count += 1
        return count / seconds

    alone = spin(0.5)
    highs = make_model(scenarios, positions, 3)
    solver = threading.Thread(target=highs.run)
    solver.start()
    time.sleep(0.05)
    during = spin(0.5)
    solver.join()
    return during / alone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=2520)
    parser.add_argument("--positions", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(
        f"highspy {highspy.Highs().version()}, {os.cpu_count()} cores, "
        f"{args.scenarios} scenarios x {args.positions} positions, 2 solves"
    )
    for _ in range(args.repeats):
        progress = python_progress_during_solve(args.scenarios, args.positions)
        print(f"Python thread progress while highspy solves: {progress:.2f} of its solo rate")
        figures = measure(args.scenarios, args.positions)
        speedup = figures["sequential"] / figures["threads"]
        print(
            f"sequential {figures['sequential']:.3f} s  2 threads {figures['threads']:.3f} s  "
            f"2 processes {figures['processes']:.3f} s  thread speed-up {speedup:.2f}x  "
            f"CPU/wall in threads {figures['thread_parallelism']:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
