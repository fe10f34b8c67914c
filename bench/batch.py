"""A batch of accounts end to end: a pool of worker processes generates and optimises them.

Every account shares one scenario set (one business date). Each worker builds that set once
(its initializer), then for each account seed generates the book (the stand-in for loading an
account) and optimises it with the fast path. The clock runs from creating the pool to the last
answer, so it includes the workers' start (imports) and the scenario set.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

from xmargin.optimiser import optimise
from xmargin.optimiser.model import ScenarioSet
from xmargin.optimiser.sample import generate_scenarios

from .books import make_book
from .stats import peak_rss_mib, summarise

__all__ = ["run_batch"]

_shared: dict[str, Any] = {}


def _init_worker(scenarios: int, seed: int) -> None:
    _shared["scenarios"] = generate_scenarios(scenarios, seed)


def _one_account(task: tuple[int, int, int]) -> dict[str, Any]:
    positions, scenarios, seed = task
    scenario_set: ScenarioSet = _shared["scenarios"]
    started = time.perf_counter()
    book = make_book(positions, scenarios, seed, scenario_set=scenario_set)
    generated = time.perf_counter()
    result = optimise(book)
    finished = time.perf_counter()
    return {
        "seed": seed,
        "pid": os.getpid(),
        "status": result.status.value,
        "generate": generated - started,
        "optimise": finished - generated,
        "baseline": result.baseline.total,
        "optimum": result.optimised.total,
    }


def run_batch(spec: dict[str, Any]) -> dict[str, Any]:
    """Optimise ``spec["accounts"]`` accounts of ``positions`` x ``scenarios`` on
    ``spec["workers"]`` processes (start method ``spec["start_method"]``, default spawn)."""
    accounts, workers = int(spec["accounts"]), int(spec["workers"])
    positions, scenarios, seed = int(spec["positions"]), int(spec["scenarios"]), int(spec["seed"])
    tasks = [(positions, scenarios, seed + 1 + k) for k in range(accounts)]
    context = multiprocessing.get_context(spec.get("start_method", "spawn"))
    started = time.perf_counter()
    with context.Pool(workers, initializer=_init_worker, initargs=(scenarios, seed)) as pool:
        answers = list(pool.imap_unordered(_one_account, tasks, chunksize=4))
    total = time.perf_counter() - started
    generate = [a["generate"] for a in answers]
    solve = [a["optimise"] for a in answers]
    return {
        "status": "ok" if all(a["status"] == "OPTIMAL" for a in answers) else "partial",
        "accounts": accounts,
        "workers": workers,
        "positions": positions,
        "scenarios": scenarios,
        "start_method": context.get_start_method(),
        "total_seconds": total,
        "accounts_per_second": accounts / total,
        "worker_seconds": {
            "generate_sum": sum(generate),
            "optimise_sum": sum(solve),
            "generate_per_account": summarise(generate),
            "optimise_per_account": summarise(solve),
        },
        "not_optimal": sum(a["status"] != "OPTIMAL" for a in answers),
        "savings_total": sum(a["baseline"] - a["optimum"] for a in answers),
        "parent_peak_rss_mib": peak_rss_mib(),
    }
