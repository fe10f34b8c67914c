"""Measure one solve configuration (size, backend, continuous or integral) in this process.

The harness runs each configuration in a fresh subprocess (:mod:`xmargin.bench.worker`), so
the memory high-water mark is that configuration's own. One repeat times, from a built book:

- ``problem``: ``build_problem`` (eligibility, arrays);
- ``build``: the backend's model build (cvxpy: formulation and compilation to the solver);
- ``solve``: the backend's solver time (highs: the cutting-plane loop; cvxpy: HiGHS);
- ``report``: the rest of ``optimise`` (snapping, the exact evaluator for the four states,
  marginal margins, attribution);
- ``wall``: all of the above, the figure the targets speak of;
- ``lp``, ``evaluation``: of build + solve, the time inside the LP solver and in exact
  evaluations of trial points (``SolverStats.lp_seconds``, ``evaluation_seconds``).

Before timing, a tiny book is solved once by the same backend (see :data:`WARM_UP_SIZE`), and
with ``warmup`` the configuration itself is solved that many times untimed.
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from xmargin.optimiser import SolveOptions, Status, build_problem, optimise

from .books import make_book, with_pnl_vectors
from .policies import policy_report
from .stats import current_rss_mib, peak_rss_mib, reset_peak_rss, summarise

__all__ = ["PHASES", "run_solve", "write_profile"]

PHASES = ("wall", "problem", "build", "solve", "report", "lp", "evaluation")
WARM_UP_SIZE = (20, 250)
"""The tiny book solved once before timing, so one-time costs (lazy imports inside the solver
stack: about 1 s on cvxpy's first solve) stay out of every configuration's figures."""
PROFILE_LINES = 35


def write_profile(profiler: cProfile.Profile, path: Path, title: str) -> None:
    """The top functions by cumulative and by own time, under ``title``."""
    text = io.StringIO()
    text.write(f"{title}\n\n")
    for key in ("cumulative", "tottime"):
        text.write(f"--- top {PROFILE_LINES} functions by {key} time ---\n")
        stats = pstats.Stats(profiler, stream=text)
        stats.strip_dirs().sort_stats(key).print_stats(PROFILE_LINES)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.getvalue())


def run_solve(spec: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run ``spec`` (positions, scenarios, seed, integral, backend, repeats, warmup,
    time_limit, tracemalloc, policies, profile, optional pnl_share and pnl_noise:
    :func:`xmargin.bench.books.with_pnl_vectors`); ``emit`` receives the partial result after
    every repeat, so a configuration killed at its time cap keeps what it measured."""
    positions, scenarios = int(spec["positions"]), int(spec["scenarios"])
    integral, backend = bool(spec["integral"]), str(spec["backend"])
    time_limit = spec.get("time_limit")
    options = SolveOptions(integral=integral, time_limit=time_limit)
    setup_started = time.perf_counter()
    book = make_book(positions, scenarios, int(spec["seed"]), integral=integral)
    if spec.get("pnl_share"):  # that share of the instruments given as P&L vectors
        share, noise = float(spec["pnl_share"]), float(spec.get("pnl_noise", 0.0))
        book = with_pnl_vectors(book, share, int(spec["seed"]), noise)
    problem = build_problem(book, options=options)
    result: dict[str, Any] = {
        "status": "running",
        "setup_seconds": time.perf_counter() - setup_started,
        "eligible_positions": int(problem.eligible.sum()),
        "pnl_vector_positions": int(problem.pnl_columns.size),
        "samples": [],
    }
    warm_up = make_book(*WARM_UP_SIZE, int(spec["seed"]))
    optimise(warm_up, backend=backend)
    gc.collect()
    peak_reset = reset_peak_rss()
    rss_before = current_rss_mib()
    samples: list[dict[str, Any]] = result["samples"]
    last = None
    for attempt in range(int(spec.get("warmup", 0)) + int(spec["repeats"])):
        started = time.perf_counter()
        fresh = build_problem(book, options=options, eligibility=problem.eligibility)
        built = time.perf_counter()
        last = optimise(fresh, backend=backend)
        wall = time.perf_counter() - started
        stats = last.stats
        backend_seconds = stats.build_seconds + stats.solve_seconds
        sample = {
            "warmup": attempt < int(spec.get("warmup", 0)),
            "wall": wall,
            "problem": built - started,
            "build": stats.build_seconds,
            "solve": stats.solve_seconds,
            "report": max(0.0, wall - (built - started) - backend_seconds),
            "lp": stats.lp_seconds,
            "evaluation": stats.evaluation_seconds,
            "rounds": stats.rounds,
            "status": last.status.value,
            "backend_used": stats.backend,
            "iterations": stats.iterations,
            "cuts": stats.cuts,
            "objective": stats.objective,
            "gap": stats.gap,
            "total": last.optimised.total,
        }
        samples.append(sample)
        emit(result)
        if last.status is not Status.OPTIMAL:
            break  # a time-limited solve would only take its limit again
    assert last is not None
    measured = [s for s in samples if not s["warmup"]] or samples[-1:]
    result["timing"] = {phase: summarise([s[phase] for s in measured]) for phase in PHASES}
    result["memory"] = {
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_mib": rss_before,
        "solve_increment_mib": max(0.0, peak_rss_mib() - rss_before),
        "peak_is_of_the_solves": peak_reset,
    }
    timed_out = last.status is Status.TIME_LIMIT
    result.update(
        status="timed_out" if timed_out else ("ok" if last.status is Status.OPTIMAL else "error"),
        solver_status=last.status.value,
        backend_used=last.stats.backend,
        fallback_from=last.stats.fallback_from,
        optimum=last.optimised.total,
        baseline=last.baseline.total,
        all_eligible=last.all_eligible.total,
        gap=last.stats.gap,
        iterations=last.stats.iterations,
        cuts=last.stats.cuts,
        rounds=last.stats.rounds,
        notes=list(last.notes),
        allocation_checksum=float(np.abs(last.allocation).sum()),
    )
    if spec.get("policies"):
        result["policies"] = policy_report(problem, last.optimised.total)
    emit(result)
    if spec.get("tracemalloc"):
        gc.collect()
        tracemalloc.start()
        optimise(build_problem(book, options=options), backend=backend)
        result["memory"]["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    if spec.get("profile"):
        profiler = cProfile.Profile()
        profiler.enable()
        optimise(build_problem(book, options=options), backend=backend)
        profiler.disable()
        kind = "integral" if integral else "continuous"
        title = (
            f"cProfile of one optimise() of a {positions} x {scenarios} {kind} account, "
            f"backend {backend} (profiler overhead included)"
        )
        write_profile(profiler, Path(spec["profile"]), title)
        result["profile"] = Path(spec["profile"]).name
    return result
