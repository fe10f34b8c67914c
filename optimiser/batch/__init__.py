"""Batch runs: optimise many accounts that share one scenario set and one pair of models.

A batch is a list of :class:`SharedInputs` groups, each with its :class:`BatchAccount`\\ s. The
shared part (business date, cycle, factors, scenarios, shared instruments, models, program,
options) is JSON-ready case data sent to each worker **once**; a task carries only an account's
own parts (customer, clearing member, positions, extra instruments; their risk vectors may be
float64 arrays, as :func:`batch_from_books` makes them), and the worker merges them into a case
(:func:`merge_case`), validates it with :func:`parse_case` and optimises it.

Engines (all behind :class:`Engine`; ``run`` yields an :class:`AccountOutcome` per account as it
finishes, in completion order; a failing account yields a failure and never stops the others):

- :class:`LocalPoolEngine` (default): a :class:`~concurrent.futures.ProcessPoolExecutor` whose
  initializer receives the shared part; a worker that dies is replaced and its accounts re-run.
- :class:`DaskEngine`: Dask distributed, on a scheduler (``tcp://host:port``) or a
  ``LocalCluster``; the shared part is scattered with ``broadcast=True``.
- :class:`InlineEngine`: sequential, in the calling process (tests, tiny batches).

:func:`run_batch` ties an engine to the audit store (:mod:`xmargin.optimiser.audit`): accounts
already stored for the run are skipped, each outcome is committed as it arrives.

Modules: :mod:`.data` (the data classes), :mod:`.format` (the batch file format, folders of
cases, merging and splitting cases), :mod:`.accounts` (solving one account), :mod:`.engines`
(the engines), :mod:`.run` (the run loop with the audit store). Batch file format
``xmargin-batch/1`` (see the README)::

    {"format": "xmargin-batch/1", "business_date": ..., "cycle": ..., "clearing_member": {...},
     "factors": [...], "scenarios": {...}, "instruments": [...], "models": {...},
     "program": {...}, "options": {...},
     "accounts": [{"id": "A-1", "customer": {"id": ...}, "positions": [...],
                   "instruments": [...], "clearing_member": {...}, "options": {...}}]}
"""

from __future__ import annotations

from ..jsonvalues import canonical_json, jsonable, sha256_of, strip_volatile
from .accounts import solve_account, xmargin_version
from .data import (
    AccountError,
    AccountOutcome,
    AccountSolver,
    BatchAccount,
    BatchGroup,
    SharedInputs,
)
from .engines import ENGINES, DaskEngine, Engine, InlineEngine, LocalPoolEngine, make_engine
from .format import (
    BATCH_FORMAT,
    SHARED_KEYS,
    batch_from_books,
    batch_to_dict,
    field_in_batch,
    load_batch,
    merge_case,
    parse_batch,
    split_case,
)
from .run import BatchSummary, run_batch, run_groups

__all__ = [
    "BATCH_FORMAT",
    "ENGINES",
    "SHARED_KEYS",
    "AccountError",
    "AccountOutcome",
    "AccountSolver",
    "BatchAccount",
    "BatchGroup",
    "BatchSummary",
    "DaskEngine",
    "Engine",
    "InlineEngine",
    "LocalPoolEngine",
    "SharedInputs",
    "batch_from_books",
    "batch_to_dict",
    "canonical_json",
    "field_in_batch",
    "jsonable",
    "load_batch",
    "make_engine",
    "merge_case",
    "parse_batch",
    "run_batch",
    "run_groups",
    "sha256_of",
    "solve_account",
    "split_case",
    "strip_volatile",
    "xmargin_version",
]
