"""What the batch engine adds per account on top of ``optimise``, phase by phase (issue 15).

In one process, sequentially (no pool, so no scheduling noise), on ``accounts`` reference-size
accounts (:data:`~xmargin.bench.books.REFERENCE_POSITIONS` positions on one shared scenario set
of :data:`~xmargin.bench.books.REFERENCE_SCENARIOS` scenarios), the median per account of
``optimise(book)`` (the anchor), of the engine's whole step ``solve_account`` (as a pool
worker runs it after its initializer), and of each part the engine adds, as it was before and
as it is after issue 15's changes, in the same run:

- ``validate``: ``parse_case`` of the merged case; before, it validated the whole case, the
  shared scenario set included; after, the set validated once per batch is trusted;
- ``serialise``: the result to JSON; before, ``jsonable`` in the worker and ``canonical_json``
  again in the parent's audit store; after, encoded once in the worker (``json_and_text``);
- ``store``: the audit row; before, one commit per account; after, committed in chunks
  (``AuditStore.record_many``) with the worker's text;
- ``merge_case`` and ``pickle_outcome`` (the answer's trip to the parent), common to both.

Two more figures, reported beside the sums (not in them): ``pickle_account`` (the account's
trip to its worker: pickled in the parent, read back in the worker) and ``account_json`` (the
audit store's JSON of the account's own parts, its P&L vectors most of it, made in the parent).

``overhead_*`` is the sum of the added parts; ``*_over_optimise`` its ratio to ``optimise``.
Run::

    python -m xmargin.bench.batch_overhead [accounts] [out.json]
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from xmargin.optimiser import optimise
from xmargin.optimiser.audit import _account_json, open_store
from xmargin.optimiser.batch import (
    AccountOutcome,
    BatchAccount,
    SharedInputs,
    batch_from_books,
    canonical_json,
    jsonable,
    merge_case,
    solve_account,
)
from xmargin.optimiser.batch.accounts import prepare_shared
from xmargin.optimiser.case_format import parse_case
from xmargin.optimiser.jsonvalues import json_and_text
from xmargin.optimiser.sample import generate_scenarios

from .books import REFERENCE_POSITIONS, REFERENCE_SCENARIOS, REFERENCE_SEED, make_book
from .environment import environment

__all__ = ["measure"]


def _ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _timed(call: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = call(*args)
    return value, time.perf_counter() - started


def _unprepared(shared: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the shared part whose scenario lists are new objects: nothing trusts them."""
    scenarios = shared["scenarios"]
    fresh = {"ids": list(scenarios["ids"]), "shocks": list(scenarios["shocks"])}
    return {**shared, "scenarios": fresh}


def _serialise_before(result: Any) -> str:
    """Before: the worker walked the result (``jsonable``), the parent encoded it for the store."""
    return canonical_json(jsonable(result.to_dict()))


def _serialise_after(result: Any) -> str:
    """After: encoded once, in the worker; the store writes that text."""
    return json_and_text(result.to_dict())[1]


def _store_seconds(
    path: Path,
    shared: SharedInputs,
    items: list[tuple[BatchAccount, AccountOutcome]],
    chunked: bool,
) -> float:
    """Seconds per account to store ``items``. Before (``chunked`` False): one commit per
    account, the result encoded by the store; after: the outcomes committed together, their
    results' text (made in the worker) written as it is."""
    with open_store(path) as store:
        store.prepare(shared)
        started = time.perf_counter()
        if chunked:
            store.record_many(shared, items, 1)
        else:
            for account, outcome in items:
                store.record(shared, account, dataclasses.replace(outcome, result_json=None), 1)
        return (time.perf_counter() - started) / len(items)


def measure(accounts: int = 20) -> dict[str, Any]:
    """Per-account medians (ms) of each phase, before and after; see the module docstring."""
    scenarios = generate_scenarios(REFERENCE_SCENARIOS, REFERENCE_SEED)
    books = [
        make_book(
            REFERENCE_POSITIONS, REFERENCE_SCENARIOS, REFERENCE_SEED + i, scenario_set=scenarios
        )
        for i in range(accounts)
    ]
    [group] = batch_from_books(books)
    shared = prepare_shared(group.shared.data)  # what a pool worker's initializer does once
    phases: dict[str, list[float]] = {}

    def timed(name: str, call: Callable[..., Any], *args: Any) -> Any:
        value, seconds = _timed(call, *args)
        phases.setdefault(name, []).append(seconds)
        return value

    items: list[tuple[BatchAccount, AccountOutcome]] = []
    solve_account(0, group.accounts[0], shared)  # warm up (imports, caches)
    for index, (book, account) in enumerate(zip(books, group.accounts, strict=True)):
        timed("optimise", optimise, book)
        outcome = timed("solve_account", solve_account, index, account, shared)
        assert outcome.ok, outcome.error
        items.append((account, outcome))
        case = timed("merge_case", merge_case, shared, account.data)
        result = optimise(timed("validate_after", parse_case, case))
        timed("validate_before", parse_case, merge_case(_unprepared(shared), account.data))
        timed("serialise_before", _serialise_before, result)
        timed("serialise_after", _serialise_after, result)
        timed("pickle_outcome", lambda o: pickle.loads(pickle.dumps(o)), outcome)
        timed("pickle_account", lambda a: pickle.loads(pickle.dumps(a)), account)
        timed("account_json", _account_json, account)
    with tempfile.TemporaryDirectory() as folder:
        before = _store_seconds(Path(folder) / "a.db", group.shared, items, chunked=False)
        after = _store_seconds(Path(folder) / "b.db", group.shared, items, chunked=True)
        phases["store_before"], phases["store_after"] = [before], [after]
    figures = {f"{k}_ms": _ms(v) for k, v in phases.items()}
    common = figures["merge_case_ms"] + figures["pickle_outcome_ms"]
    before = sum(figures[f"{k}_before_ms"] for k in ("validate", "serialise", "store")) + common
    after = sum(figures[f"{k}_after_ms"] for k in ("validate", "serialise", "store")) + common
    return {
        "accounts": accounts,
        "positions": REFERENCE_POSITIONS,
        "scenarios": REFERENCE_SCENARIOS,
        "per_account_median_ms": figures,
        "overhead_before_ms": before,
        "overhead_after_ms": after,
        "overhead_before_over_optimise": before / figures["optimise_ms"],
        "overhead_after_over_optimise": after / figures["optimise_ms"],
        "environment": environment(),
    }


def main(argv: list[str]) -> None:
    accounts = int(argv[0]) if argv else 20
    report = measure(accounts)
    text = json.dumps(report, indent=2, default=str)
    if len(argv) > 1:
        Path(argv[1]).write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
