"""A batch of accounts end to end on a pool of two worker processes.

Every account shares one scenario set (one business date). First, untimed, the accounts are
generated (in parallel) and stored as one pickle file each without the shared scenario set:
the stand-in for a day's accounts waiting in storage. Then three timed variants:

- ``engine``: the product's batch path, :func:`xmargin.optimiser.batch.run_groups` on a
  :class:`~xmargin.optimiser.batch.LocalPoolEngine` of ``workers`` processes: the shared part
  (scenarios, models, options) reaches each worker once, with its scenario set validated once
  in the parent; per account the worker merges the case, validates the account's own parts
  (``parse_case``, the scenario set trusted), optimises it and returns the result as a dict
  and as JSON text made once.
  The clock runs from the engine's pool start to the last answer; turning the accounts into
  batch groups (``batch_from_books``) happens before, untimed, and is reported. The engine's
  default start method is forkserver: the first engine run starts the fork server (with the
  solver stack preloaded), the second reuses it.
- ``engine_audit``: the same with every outcome stored in a SQLite audit store (commits in
  chunks, :class:`~xmargin.optimiser.batch.run.AuditCommits`).
- ``engine_dask``: the same path on the Dask engine (a ``LocalCluster`` of ``workers``
  processes, started inside the clock), when dask is installed.
- ``pool``: the bare minimum for comparison: a ``multiprocessing`` pool whose workers build
  the scenario set once, then per account load its file and call ``optimise`` (no validation,
  no result conversion). The clock runs from creating the pool to the last answer.
"""

from __future__ import annotations

import cProfile
import dataclasses
import multiprocessing
import pickle
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from xmargin.optimiser import optimise
from xmargin.optimiser.model import Book, ScenarioSet
from xmargin.optimiser.sample import generate_scenarios

from .books import make_book
from .solve import write_profile
from .stats import peak_rss_mib, summarise

__all__ = ["run_batch"]

_shared: dict[str, ScenarioSet] = {}


def _init_worker(scenarios: int, seed: int) -> None:
    _shared["scenarios"] = generate_scenarios(scenarios, seed)


def _store_account(task: tuple[int, int, int, str]) -> float:
    """Generate one account and store it without the shared scenario set; seconds taken."""
    positions, scenarios, seed, path = task
    started = time.perf_counter()
    book = make_book(positions, scenarios, seed, scenario_set=_shared["scenarios"])
    detached = ScenarioSet(ids=(), shocks=np.empty((0, book.scenarios.shocks.shape[1])))
    Path(path).write_bytes(pickle.dumps(dataclasses.replace(book, scenarios=detached)))
    return time.perf_counter() - started


def _load(path: str, scenarios: ScenarioSet) -> Book:
    stored: Book = pickle.loads(Path(path).read_bytes())
    return dataclasses.replace(stored, scenarios=scenarios)


def _optimise_account(path: str) -> dict[str, Any]:
    started = time.perf_counter()
    book = _load(path, _shared["scenarios"])
    loaded = time.perf_counter()
    result = optimise(book)
    finished = time.perf_counter()
    return {
        "status": result.status.value,
        "load": loaded - started,
        "optimise": finished - loaded,
    }


PROBE_LOOP = 3_000_000


def _burn(loops: int) -> float:
    """Seconds a pure-Python loop of ``loops`` steps takes (CPU-bound, no memory traffic)."""
    started = time.perf_counter()
    total = 0
    for step in range(loops):
        total += step & 7
    return time.perf_counter() - started


def parallel_probe(context: Any, workers: int) -> dict[str, Any]:
    """How much parallelism the machine gives right now: a CPU-bound loop alone, then in
    ``workers`` processes at once; ``effective_parallelism`` is workers x alone / together
    (``workers`` on an idle machine with that many real cores)."""
    alone = min(_burn(PROBE_LOOP) for _ in range(3))
    with context.Pool(workers) as pool:
        pool.map(_burn, [1000] * workers)  # started
        together = pool.map(_burn, [PROBE_LOOP] * workers)
    mean = sum(together) / len(together)
    return {
        "alone_seconds": alone,
        "together_seconds": together,
        "effective_parallelism": workers * alone / mean,
    }


def _profile_account(book: Book, path: Path) -> None:
    """cProfile of the product path for one account (merge, parse_case, optimise, to_dict)."""
    from xmargin.optimiser.batch import batch_from_books, solve_account

    group = batch_from_books([book])[0]
    solve_account(0, group.accounts[0], group.shared.data)  # warm
    profiler = cProfile.Profile()
    profiler.enable()
    solve_account(0, group.accounts[0], group.shared.data)
    profiler.disable()
    title = (
        f"cProfile of the batch engine's work for one {book.name} account: "
        "xmargin.optimiser.batch.solve_account (merge_case, parse_case, optimise, to_dict)"
    )
    write_profile(profiler, path, title)


def _bare_pool(
    context: Any, paths: list[str], workers: int, scenarios: int, seed: int
) -> dict[str, Any]:
    started = time.perf_counter()
    with context.Pool(workers, initializer=_init_worker, initargs=(scenarios, seed)) as pool:
        answers = list(pool.imap_unordered(_optimise_account, paths, chunksize=4))
    total = time.perf_counter() - started
    return {
        "status": "ok" if all(a["status"] == "OPTIMAL" for a in answers) else "partial",
        "total_seconds": total,
        "accounts_per_second": len(paths) / total,
        "start_method": context.get_start_method(),
        "measured": (
            "pool start (imports, scenario set per worker), load each stored account, "
            "optimise(book), the status back to the parent"
        ),
        "load_per_account": summarise([a["load"] for a in answers]),
        "optimise_per_account": summarise([a["optimise"] for a in answers]),
        "optimise_sum": sum(a["optimise"] for a in answers),
        "not_optimal": sum(a["status"] != "OPTIMAL" for a in answers),
    }


def _engine(
    books: list[Book], workers: int, audit_path: Path | None, kind: str = "local"
) -> dict[str, Any]:
    """The product's batch path (see the module docstring) on engine ``kind``."""
    from xmargin.optimiser.batch import batch_from_books, make_engine, run_groups

    started = time.perf_counter()
    groups = batch_from_books(books)
    prepare = time.perf_counter() - started
    engine = make_engine(kind, workers=workers)
    store = None
    if audit_path is not None:
        from xmargin.optimiser.audit import open_store

        store = open_store(audit_path)
    try:
        started = time.perf_counter()
        summary = run_groups(groups, engine, audit=store)
        total = time.perf_counter() - started
    finally:
        engine.close()
        if store is not None:
            store.close()
    return {
        "status": "ok" if summary.failed == 0 else "partial",
        "total_seconds": total,
        "accounts_per_second": summary.computed / total,
        "start_method": getattr(engine, "start_method", None),
        "measured": (
            f"run_groups on the {kind} engine ({type(engine).__name__}): "
            + ("LocalCluster start" if kind == "dask" else "pool start")
            + ", the shared part to each worker once (its scenario set validated once), per "
            "account merge + parse_case of its own parts + optimise + to_dict and its JSON text, "
            "answers back to the parent"
            + (", stored in a SQLite audit store (commits in chunks)" if audit_path else "")
        ),
        "groups": len(groups),
        "prepare_seconds_untimed": prepare,
        "failed": summary.failed,
        "failures": summary.failures[:3],
    }


def run_batch(spec: dict[str, Any]) -> dict[str, Any]:
    """Optimise ``spec["accounts"]`` accounts of ``positions`` x ``scenarios`` on
    ``spec["workers"]`` processes, by each variant of the module docstring."""
    accounts, workers = int(spec["accounts"]), int(spec["workers"])
    positions, scenarios, seed = int(spec["positions"]), int(spec["scenarios"]), int(spec["seed"])
    context = multiprocessing.get_context("spawn")
    folder = Path(tempfile.mkdtemp(prefix="xmargin-bench-batch-"))
    variants: dict[str, Any] = {}
    try:
        paths = [str(folder / f"account-{k}.pickle") for k in range(accounts)]
        tasks = [(positions, scenarios, seed + 1 + k, paths[k]) for k in range(accounts)]
        started = time.perf_counter()
        with context.Pool(workers, initializer=_init_worker, initargs=(scenarios, seed)) as pool:
            generate = pool.map(_store_account, tasks, chunksize=8)
        generate_seconds = time.perf_counter() - started
        stored_mib = sum(Path(p).stat().st_size for p in paths) / 2**20
        shared = generate_scenarios(scenarios, seed)
        books = [_load(path, shared) for path in paths]
        engines = (
            ("engine", None, "local"),
            ("engine_audit", folder / "audit.db", "local"),
            ("engine_dask", None, "dask"),
        )
        for name, audit, kind in engines:
            try:
                variants[name] = _engine(books, workers, audit, kind)
            except Exception as error:  # recorded; the other variants still run
                variants[name] = {"status": "error", "error": f"{type(error).__name__}: {error}"}
        if spec.get("profile"):
            _profile_account(books[0], Path(spec["profile"]))
        del books
        variants["pool"] = _bare_pool(context, paths, workers, scenarios, seed)
        probe = parallel_probe(context, workers)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    headline = "engine" if variants["engine"].get("status") == "ok" else "pool"
    return {
        "status": variants[headline]["status"],
        "accounts": accounts,
        "workers": workers,
        "positions": positions,
        "scenarios": scenarios,
        "headline_variant": headline,
        "total_seconds": variants[headline]["total_seconds"],
        "accounts_per_second": variants[headline]["accounts_per_second"],
        "variants": variants,
        "parallel_probe": probe,
        "profile": Path(spec["profile"]).name if spec.get("profile") else None,
        "generate_seconds_untimed": generate_seconds,
        "generate_per_account": summarise(generate),
        "stored_mib": stored_mib,
        "parent_peak_rss_mib": peak_rss_mib(),
    }
