"""Batch runs: optimise many accounts that share one scenario set and one pair of models.

A batch is a list of :class:`SharedInputs` groups, each with its :class:`BatchAccount`\\ s. The
shared part (business date, cycle, factors, scenarios, shared instruments, models, program,
options) is JSON-ready case data sent to each worker **once**; a task carries only one account's
own parts (customer, clearing member, positions, extra instruments), and the worker merges them
into a case (:func:`merge_case`), validates it with :func:`parse_case` and optimises it.

Engines (all behind :class:`Engine`; ``run`` yields an :class:`AccountOutcome` per account as it
finishes, in completion order; a failing account yields a failure and never stops the others):

- :class:`LocalPoolEngine` (default): a :class:`~concurrent.futures.ProcessPoolExecutor` whose
  initializer receives the shared part; a worker that dies is replaced and its accounts re-run.
- :class:`DaskEngine`: Dask distributed, on a scheduler (``tcp://host:port``) or a
  ``LocalCluster``; the shared part is scattered with ``broadcast=True``.
- :class:`InlineEngine`: sequential, in the calling process (tests, tiny batches).

:func:`run_batch` ties an engine to the audit store (:mod:`xmargin.optimiser.audit`): accounts
already stored for the run are skipped, each outcome is committed as it arrives.

Batch file format ``xmargin-batch/1`` (see the README)::

    {"format": "xmargin-batch/1", "business_date": ..., "cycle": ..., "clearing_member": {...},
     "factors": [...], "scenarios": {...}, "instruments": [...], "models": {...},
     "program": {...}, "options": {...},
     "accounts": [{"id": "A-1", "customer": {"id": ...}, "positions": [...],
                   "instruments": [...], "clearing_member": {...}, "options": {...}}]}
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from xmargin.schema import clip

from .case_format import CASE_FORMAT, book_to_dict, parse_case
from .errors import CaseValidationError, SolverError
from .extras import require_extra
from .model import Book, ScenarioSet
from .optimise import optimise
from .results import Status

if TYPE_CHECKING:
    from .audit import AuditStore

__all__ = [
    "BATCH_FORMAT",
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

BATCH_FORMAT = "xmargin-batch/1"
SHARED_KEYS = (
    "business_date",
    "cycle",
    "factors",
    "scenarios",
    "models",
    "program",
    "options",
    "instruments",
    "clearing_member",
)
"""Keys of a batch file (and of a case) that accounts share. An account's ``instruments`` add to
the shared ones; its ``clearing_member`` replaces the shared one; its ``options`` update them."""
ACCOUNT_KEYS = frozenset(
    {"id", "name", "customer", "clearing_member", "positions", "instruments", "options"}
)
CASE_ACCOUNT_KEYS = ("name", "customer", "clearing_member", "positions", "instruments")
"""Keys of a single case file that belong to its account when a folder of cases is a batch."""
VOLATILE_RESULT_KEYS = (("solver", "build_seconds"), ("solver", "solve_seconds"))
"""Timings in a result that differ between two runs of the same request."""


@functools.cache
def xmargin_version() -> str:
    """The installed xmargin's version (``unknown`` when run from a bare source tree)."""
    try:
        return metadata.version("xmargin")
    except metadata.PackageNotFoundError:
        return "unknown"


# --- JSON helpers ---------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays unwrapped, NaN and infinity as null."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, no NaN: equal data gives equal text (and equal hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def sha256_of(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def strip_volatile(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result without its timings, for comparing two runs of one request."""
    out = json.loads(json.dumps(result))
    for section, key in VOLATILE_RESULT_KEYS:
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    return out


# --- the data of a batch --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class SharedInputs:
    """What every account of a group shares (JSON-ready case parts), and its content hash."""

    data: dict[str, Any]
    sha256: str

    @classmethod
    def of(cls, data: Mapping[str, Any], from_json: bool = False) -> SharedInputs:
        """``from_json``: the data was read from JSON, so it needs no cleaning (faster)."""
        if from_json:
            try:
                return cls(dict(data), sha256_of(data))
            except ValueError:  # NaN or infinity: JSON reads them, canonical JSON has null
                pass
        clean = jsonable(dict(data))
        return cls(clean, sha256_of(clean))

    @property
    def business_date(self) -> str:
        return str(self.data.get("business_date", ""))

    @property
    def cycle(self) -> str:
        return str(self.data.get("cycle", "EOD"))


@dataclass(frozen=True, slots=True)
class BatchAccount:
    """One account's own case parts. ``account`` (its customer id) keys the audit store;
    ``label`` says where it came from (``accounts[3]`` or a file path)."""

    account: str
    data: dict[str, Any]
    label: str


@dataclass(frozen=True, slots=True)
class BatchGroup:
    """Accounts that share one :class:`SharedInputs`."""

    shared: SharedInputs
    accounts: list[BatchAccount]


@dataclass(frozen=True, slots=True)
class AccountError:
    """Why an account failed: the exception type, its message and, for bad input, the field."""

    type: str
    message: str
    field: str | None = None
    advice: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "field": self.field}


@dataclass(frozen=True, slots=True)
class AccountOutcome:
    """One account's answer (``result``, the JSON of ``OptimisationResult.to_dict()``) or its
    failure (``error``); ``index`` is its place in the list given to the engine."""

    index: int
    account: str
    label: str
    result: dict[str, Any] | None = None
    error: AccountError | None = None
    seconds: float = 0.0
    code_version: str = ""
    """The xmargin version of the process that solved it (a Dask worker may differ)."""
    payload: bytes | None = None
    """An :data:`AccountSolver` hook's own encoding of the answer (the gRPC server's proto)."""

    @property
    def ok(self) -> bool:
        return self.error is None


def merge_case(shared: Mapping[str, Any], account: Mapping[str, Any]) -> dict[str, Any]:
    """The case of one account: the shared parts, the account's instruments after the shared
    ones, its clearing member (else the shared one), its options over the shared options."""
    case: dict[str, Any] = {"format": CASE_FORMAT}
    case.update({k: v for k, v in shared.items() if k in SHARED_KEYS})
    case["name"] = account.get("name") or account.get("id") or _customer_id(account) or "account"
    case["customer"] = account.get("customer")
    case["positions"] = account.get("positions", [])
    case["instruments"] = list(shared.get("instruments", [])) + list(account.get("instruments", []))
    if "clearing_member" in account:
        case["clearing_member"] = account["clearing_member"]
    if "options" in account:
        case["options"] = {**dict(shared.get("options") or {}), **dict(account["options"])}
    return case


def split_case(case: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A whole case as (shared parts, account parts); ``merge_case`` puts them back together.
    The ``expected`` block of a worked case is not input and is left out."""
    shared = {k: case[k] for k in SHARED_KEYS if k in case and k not in CASE_ACCOUNT_KEYS}
    account = {k: case[k] for k in CASE_ACCOUNT_KEYS if k in case}
    return shared, account


def _customer_id(account: Mapping[str, Any]) -> str | None:
    customer = account.get("customer")
    if isinstance(customer, Mapping) and isinstance(customer.get("id"), str) and customer["id"]:
        return str(customer["id"])
    return None


def _check_shared(shared: Mapping[str, Any]) -> None:
    """Validate the shared parts once (a case with no positions), so a bad scenario set or
    model rejects the whole batch instead of failing every account alike."""
    probe = merge_case(
        shared, {"customer": {"id": "-", "ficc_account_type": "NONE"}, "positions": []}
    )
    probe.setdefault("clearing_member", {"id": "-"})
    parse_case(probe)


def _account_of(data: Any, where: str) -> BatchAccount:
    if not isinstance(data, Mapping):
        raise CaseValidationError(where, data, "must be an object")
    unknown = sorted(set(data) - ACCOUNT_KEYS)
    if unknown:
        close = difflib.get_close_matches(str(unknown[0])[:200], sorted(ACCOUNT_KEYS), n=1)
        hint = f"did you mean {where}.{close[0]}?" if close else f"known: {sorted(ACCOUNT_KEYS)}"
        raise CaseValidationError(f"{where}.{unknown[0]}", data[unknown[0]], f"unknown key; {hint}")
    customer = _customer_id(data)
    if customer is None:
        raise CaseValidationError(f"{where}.customer.id", None, "is required (the audit key)")
    return BatchAccount(customer, dict(data), where)


def _unique(accounts: Sequence[BatchAccount]) -> None:
    seen: dict[str, str] = {}
    for account in accounts:
        if account.account in seen:
            raise CaseValidationError(
                f"{account.label}.customer.id",
                account.account,
                f"repeats {seen[account.account]}: one account per customer in a batch",
            )
        seen[account.account] = account.label


def parse_batch(data: Any) -> BatchGroup:
    """Validate a batch file's JSON (format ``xmargin-batch/1``) into one group."""
    if not isinstance(data, Mapping):
        raise CaseValidationError("<batch>", data, "must be an object")
    if data.get("format") != BATCH_FORMAT:
        raise CaseValidationError("format", data.get("format"), f"must be {BATCH_FORMAT!r}")
    accounts_data = data.get("accounts")
    if not isinstance(accounts_data, list) or not accounts_data:
        raise CaseValidationError("accounts", accounts_data, "must be a non-empty list")
    shared_data = {k: data[k] for k in SHARED_KEYS if k in data}
    _check_shared(shared_data)
    shared = SharedInputs.of(shared_data, from_json=True)
    accounts = [_account_of(a, f"accounts[{i}]") for i, a in enumerate(accounts_data)]
    _unique(accounts)
    return BatchGroup(shared, accounts)


def load_batch(
    path: str | Path, rejected: list[AccountOutcome] | None = None
) -> list[BatchGroup]:
    """A batch file, or a folder of case files (``*.json``, grouped by identical shared parts).

    With a ``rejected`` list, a file of a folder that cannot be read as a case (unreadable, not
    JSON, no customer id, ...) fails on its own: its failed outcome is appended there and the
    other files still run. Without one, the first such file raises."""
    source = Path(path)
    if source.is_dir():
        files = sorted(source.glob("*.json"))
        if not files:
            raise CaseValidationError("<folder>", str(source), "holds no *.json case files")
        cases = []
        for file in files:
            try:
                cases.append((str(file), _read(file)))
            except CaseValidationError as error:
                if rejected is None:
                    raise
                rejected.append(_rejected(str(file), error))
        return _group_cases(cases, rejected)
    data = _read(source)
    if isinstance(data, Mapping) and data.get("format") == BATCH_FORMAT:
        return [parse_batch(data)]
    return _group_cases([(str(source), data)])


def _rejected(label: str, error: CaseValidationError) -> AccountOutcome:
    """The failed outcome of a case file that never became an account."""
    return AccountOutcome(
        index=-1,
        account="",
        label=label,
        error=AccountError(type(error).__name__, str(error), error.field),
    )


def _read(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # JSONDecodeError, huge numbers
        raise CaseValidationError(
            "<file>", str(file), f"cannot be read as JSON: {clip(str(error))}"
        ) from error


def _group_cases(
    cases: Iterable[tuple[str, Any]], rejected: list[AccountOutcome] | None = None
) -> list[BatchGroup]:
    groups: dict[str, BatchGroup] = {}
    for label, case in cases:
        try:
            if not isinstance(case, Mapping):
                raise CaseValidationError(label, case, "must be a case object")
            shared_data, account_data = split_case(case)
            customer = _customer_id(account_data)
            if customer is None:
                raise CaseValidationError(
                    f"{label}: customer.id", None, "is required (the audit key)"
                )
            shared = SharedInputs.of(shared_data, from_json=True)
        except CaseValidationError as error:
            if rejected is None:
                raise
            rejected.append(_rejected(label, error))
            continue
        if shared.sha256 not in groups:
            groups[shared.sha256] = BatchGroup(shared, [])
        groups[shared.sha256].accounts.append(BatchAccount(customer, account_data, label))
    out = list(groups.values())
    _unique([a for g in out for a in g.accounts])
    return out


def batch_to_dict(group: BatchGroup) -> dict[str, Any]:
    """A group as a batch file (format ``xmargin-batch/1``); :func:`parse_batch` reads it."""
    return {
        "format": BATCH_FORMAT,
        **group.shared.data,
        "accounts": [dict(account.data) for account in group.accounts],
    }


def batch_from_books(books: Sequence[Book]) -> list[BatchGroup]:
    """Books (for instance ``generate_book(..., scenario_set=one_set)``) as batch groups: books
    with equal scenarios, models, program and options share one serialised shared part."""
    groups: list[tuple[Book, dict[str, Any], BatchGroup]] = []
    for index, book in enumerate(books):
        case = book_to_dict(_without_scenarios(book))
        shared_part, account_part = split_case(case)
        account = BatchAccount(book.customer.id, jsonable(account_part), f"books[{index}]")
        for first, first_shared, group in groups:
            if _same_scenarios(first, book) and first_shared == shared_part:
                group.accounts.append(account)
                break
        else:
            full_shared, _ = split_case(book_to_dict(dataclasses.replace(book, instruments={})))
            shared = SharedInputs.of(full_shared)
            groups.append((book, shared_part, BatchGroup(shared, [account])))
    out = [group for _, _, group in groups]
    _unique([a for g in out for a in g.accounts])
    return out


def _without_scenarios(book: Book) -> Book:
    """The book without its scenario rows (cheap to serialise; the shared part carries them)."""
    empty = ScenarioSet(ids=(), shocks=np.zeros((0, len(book.factors))))
    return dataclasses.replace(book, scenarios=empty)


def _same_scenarios(first: Book, book: Book) -> bool:
    return first.scenarios is book.scenarios or (
        first.scenarios.ids == book.scenarios.ids
        and np.array_equal(first.scenarios.shocks, book.scenarios.shocks)
    )


# --- one account ----------------------------------------------------------------------------


def _field_in_batch(field: str, account: BatchAccount, n_shared_instruments: int) -> str:
    """A case field named where the batch file holds it (``accounts[3].positions[0].lot``)."""
    if not account.label.startswith("accounts["):
        return field
    if field.startswith("instruments["):
        index = int(field[len("instruments[") : field.index("]")])
        if index < n_shared_instruments:
            return field
        rest = field[field.index("]") + 1 :]
        return f"{account.label}.instruments[{index - n_shared_instruments}]{rest}"
    head = field.split(".")[0].split("[")[0]
    if head in account.data or head in ("customer", "positions", "name"):
        return f"{account.label}.{field}"
    return field


def solve_account(
    index: int, account: BatchAccount, shared: Mapping[str, Any], backend: str | None = None
) -> AccountOutcome:
    """Merge, validate and optimise one account; any failure becomes the outcome's error."""
    started = time.perf_counter()

    def failed(error: AccountError) -> AccountOutcome:
        seconds = time.perf_counter() - started
        return AccountOutcome(
            index, account.account, account.label, None, error, seconds, xmargin_version()
        )

    try:
        book = parse_case(merge_case(shared, account.data))
        result = optimise(book, backend=backend)
        if result.status in (Status.INFEASIBLE, Status.ERROR):
            return failed(AccountError("SolverError", f"solver status {result.status.value}"))
        answer = jsonable(result.to_dict())
    except CaseValidationError as error:
        n_shared = len(shared.get("instruments", []) or [])
        where = _field_in_batch(error.field, account, n_shared)
        message = "; ".join(
            f"{_field_in_batch(v.path, account, n_shared)}: {v.message}"
            + ("" if v.value is None else f" (got {clip(repr(v.value))})")
            for v in error.violations[:20]
        )
        return failed(AccountError("CaseValidationError", message, where))
    except SolverError as error:
        return failed(AccountError(type(error).__name__, str(error), None, error.advice))
    except Exception as error:  # an account never stops the batch
        return failed(AccountError(type(error).__name__, str(error) or repr(error)))
    seconds = time.perf_counter() - started
    return AccountOutcome(
        index, account.account, account.label, answer, None, seconds, xmargin_version()
    )


# --- engines --------------------------------------------------------------------------------

AccountSolver = Callable[[int, BatchAccount, Mapping[str, Any], "str | None"], AccountOutcome]
"""What an engine runs per account: ``solve(index, account, shared, backend)``;
:func:`solve_account` by default. Process and Dask engines pickle it to their workers, so a
replacement must be picklable (a module-level function or an instance of a module's class)."""


@runtime_checkable
class Engine(Protocol):
    """Runs accounts that share ``shared``; yields each outcome as it finishes."""

    name: str

    def run(
        self, accounts: Sequence[BatchAccount], shared: SharedInputs
    ) -> Iterator[AccountOutcome]: ...

    def close(self) -> None: ...


class InlineEngine:
    """Sequential, in this process: the test double, and the engine for a handful of accounts."""

    name = "inline"

    def __init__(self, backend: str | None = None, solve: AccountSolver = solve_account) -> None:
        self.backend = backend
        self.solve = solve

    def run(
        self, accounts: Sequence[BatchAccount], shared: SharedInputs
    ) -> Iterator[AccountOutcome]:
        for index, account in enumerate(accounts):
            yield self.solve(index, account, shared.data, self.backend)

    def close(self) -> None:
        return None


# Worker-process state of LocalPoolEngine: the shared part, set once by the pool initializer.
_WORKER_SHARED: dict[str, Any] = {}
_WORKER_BACKEND: list[str | None] = [None]
_WORKER_SOLVE: list[AccountSolver] = [solve_account]


def _init_worker(
    shared: dict[str, Any], backend: str | None, solve: AccountSolver = solve_account
) -> None:
    _WORKER_SHARED.clear()
    _WORKER_SHARED.update(shared)
    _WORKER_BACKEND[0] = backend
    _WORKER_SOLVE[0] = solve


def _solve_in_worker(index: int, account: BatchAccount) -> AccountOutcome:
    return _WORKER_SOLVE[0](index, account, _WORKER_SHARED, _WORKER_BACKEND[0])


def _default_start_method() -> str:
    """forkserver where it exists: safe beside threads (gRPC, progress), and fast to start once
    the server has imported the solver stack; spawn elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


class LocalPoolEngine:
    """A process pool on this machine; the shared part reaches each worker once, through the
    pool initializer. A worker that dies breaks the pool: a new pool re-runs the accounts that
    had not finished, at most ``max_restarts`` times, then they fail with ``WorkerLost``."""

    name = "local"

    def __init__(
        self,
        workers: int | None = None,
        start_method: str | None = None,
        backend: str | None = None,
        max_in_flight: int | None = None,
        max_restarts: int = 2,
        solve: AccountSolver = solve_account,
    ) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.solve = solve
        self.start_method = start_method or _default_start_method()
        self.backend = backend
        self.max_in_flight = max_in_flight or 4 * self.workers
        self.max_restarts = max_restarts
        self._pool: ProcessPoolExecutor | None = None
        self.restarts = 0
        """How many times the last run replaced a broken pool."""

    def _context(self) -> multiprocessing.context.BaseContext:
        context = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            context.set_forkserver_preload(["xmargin.optimiser.batch", "xmargin.optimiser"])
        return context

    def worker_pids(self) -> list[int]:
        """Process ids of the running pool's workers (empty between runs)."""
        pool = self._pool
        processes = getattr(pool, "_processes", None) or {}
        return [int(pid) for pid in processes]

    def run(
        self, accounts: Sequence[BatchAccount], shared: SharedInputs
    ) -> Iterator[AccountOutcome]:
        pending = list(range(len(accounts)))
        self.restarts = restarts = 0
        while pending:
            lost: list[int] = []
            pool = ProcessPoolExecutor(
                max_workers=min(self.workers, len(pending)),
                mp_context=self._context(),
                initializer=_init_worker,
                initargs=(shared.data, self.backend, self.solve),
            )
            self._pool = pool
            running: dict[Future[AccountOutcome], int] = {}
            try:
                while pending or running:
                    while pending and len(running) < self.max_in_flight and not lost:
                        index = pending.pop(0)
                        try:
                            running[pool.submit(_solve_in_worker, index, accounts[index])] = index
                        except BrokenProcessPool:
                            lost.append(index)
                    if not running:
                        break
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for future in done:
                        index = running.pop(future)
                        try:
                            yield future.result()
                        except BrokenProcessPool:
                            lost.append(index)
                        except Exception as error:  # pickling and the like
                            account = accounts[index]
                            failure = AccountError(type(error).__name__, str(error))
                            yield AccountOutcome(
                                index, account.account, account.label, None, failure
                            )
                    if lost:  # the rest of the pool's work is lost too
                        for future, index in list(running.items()):
                            try:
                                yield future.result()
                            except Exception:
                                lost.append(index)
                        running.clear()
                        break
            finally:
                for future in running:
                    future.cancel()
                pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
            if lost:
                lost.sort()
                restarts += 1
                self.restarts = restarts
                if restarts > self.max_restarts:
                    for index in lost + pending:
                        account = accounts[index]
                        failure = AccountError(
                            "WorkerLost", f"a worker process died {restarts} times; not retried"
                        )
                        yield AccountOutcome(index, account.account, account.label, None, failure)
                    return
                pending = lost + pending

    def close(self) -> None:
        return None


def _dask_solve(
    index: int,
    account: BatchAccount,
    shared: dict[str, Any],
    backend: str | None,
    solve: AccountSolver = solve_account,
) -> AccountOutcome:
    return solve(index, account, shared, backend)


class DaskEngine:
    """Dask distributed: a scheduler at ``scheduler`` (``tcp://host:port``; its workers need
    xmargin installed), else a ``LocalCluster`` of ``workers`` processes, one thread each. The
    shared part is scattered to every worker once (``broadcast=True``); a task carries one
    account. Dask re-runs the tasks of a worker that dies on another one."""

    name = "dask"

    def __init__(
        self,
        scheduler: str | None = None,
        workers: int | None = None,
        backend: str | None = None,
        client: Any = None,
        connect_timeout: float = 10.0,
        solve: AccountSolver = solve_account,
    ) -> None:
        self.scheduler = scheduler
        self.solve = solve
        self.connect_timeout = connect_timeout
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.backend = backend
        if client is None:  # fail now, with the extra to install, not at the first account
            require_extra("distributed", "batch", "the Dask batch engine")
        self._client = client
        self._owns_client = client is None
        self._cluster: Any = None
        self.shared_key: str | None = None
        """The key of the scattered shared inputs of the current run (each worker holds it)."""

    @property
    def client(self) -> Any:
        """The distributed Client (a LocalCluster starts on first use)."""
        if self._client is None:
            from distributed import Client, LocalCluster

            if self.scheduler:
                self._client = Client(self.scheduler, timeout=self.connect_timeout)
            else:
                self._cluster = LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",  # any free port: never clash on 8787
                    silence_logs=40,  # logging.ERROR
                    env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
                )
                self._client = Client(self._cluster)
        return self._client

    def connect(self) -> Any:
        """Connect to the scheduler (or start the LocalCluster) now; the Client."""
        return self.client

    def run(
        self, accounts: Sequence[BatchAccount], shared: SharedInputs
    ) -> Iterator[AccountOutcome]:
        from distributed import as_completed

        client = self.client
        # a list, so that the dict is one piece of data (a dict would scatter its values)
        [shared_future] = client.scatter([shared.data], broadcast=True, hash=False)
        self.shared_key = str(shared_future.key)
        token = f"{shared.sha256[:12]}-{time.time_ns()}"
        futures = {
            client.submit(
                _dask_solve,
                index,
                account,
                shared_future,
                self.backend,
                self.solve,
                key=f"xmargin-account-{token}-{index}",
                pure=False,
            ): index
            for index, account in enumerate(accounts)
        }
        try:
            for future in as_completed(list(futures)):
                index = futures[future]
                try:
                    yield future.result()
                except Exception as error:  # KilledWorker, lost scheduler, ...
                    account = accounts[index]
                    failure = AccountError(type(error).__name__, str(error) or repr(error))
                    yield AccountOutcome(index, account.account, account.label, None, failure)
                finally:
                    future.release()
        finally:
            client.cancel(list(futures))
            client.cancel([shared_future])

    def close(self) -> None:
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


ENGINES = ("local", "dask", "inline")


def make_engine(
    name: str = "local",
    workers: int | None = None,
    scheduler: str | None = None,
    backend: str | None = None,
) -> Engine:
    """``local`` (process pool), ``dask`` (``scheduler`` or a LocalCluster) or ``inline``."""
    if name == "local":
        return LocalPoolEngine(workers, backend=backend)
    if name == "dask":
        return DaskEngine(scheduler, workers, backend=backend)
    if name == "inline":
        return InlineEngine(backend)
    raise ValueError(f"unknown engine {name!r}; use one of {ENGINES}")


# --- a batch with its audit -----------------------------------------------------------------


@dataclass(slots=True)
class BatchSummary:
    """Totals over a batch's accounts (computed now or found already stored); ``before`` is
    the current allocation's total margin, ``after`` the optimised one."""

    engine: str
    accounts: int = 0
    computed: int = 0
    skipped: int = 0
    failed: int = 0
    baseline_total: float = 0.0
    before_total: float = 0.0
    after_total: float = 0.0
    seconds: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[AccountOutcome] = field(default_factory=list)

    @property
    def savings(self) -> float:
        """Margin released against the current allocations."""
        return self.before_total - self.after_total

    @property
    def savings_vs_baseline(self) -> float:
        return self.baseline_total - self.after_total

    def add_totals(self, baseline: float, before: float, after: float) -> None:
        self.baseline_total += baseline
        self.before_total += before
        self.after_total += after

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "accounts": self.accounts,
            "computed": self.computed,
            "skipped_already_stored": self.skipped,
            "failed": self.failed,
            "succeeded": self.accounts - self.failed,
            "total_margin_baseline": self.baseline_total,
            "total_margin_before": self.before_total,
            "total_margin_after": self.after_total,
            "savings": self.savings,
            "savings_vs_baseline": self.savings_vs_baseline,
            "seconds": self.seconds,
            "accounts_per_second": self.computed / self.seconds if self.seconds > 0 else None,
            "failures": self.failures,
        }


def _totals(result: Mapping[str, Any]) -> tuple[float, float, float]:
    return (
        float(result["baseline"]["total"]),
        float(result["current"]["total"]),
        float(result["optimised"]["total"]),
    )


def run_batch(
    accounts: Sequence[BatchAccount] | Sequence[Book],
    shared: SharedInputs | None = None,
    engine: Engine | str = "local",
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    audit: AuditStore | None = None,
    run_number: int = 1,
    keep_outcomes: bool = False,
    on_outcome: Callable[[AccountOutcome, int, int], None] | None = None,
) -> BatchSummary:
    """Optimise every account and return the totals.

    ``accounts`` are :class:`BatchAccount`\\ s sharing ``shared``, or :class:`Book`\\ s (grouped
    by :func:`batch_from_books`; ``shared`` is then None). ``engine`` is an :class:`Engine` (left
    open) or a name for :func:`make_engine` (closed at the end). With ``audit``, accounts already
    stored for (business date, cycle, ``run_number``) are skipped and each outcome is committed
    as it arrives. ``on_outcome(outcome, done, total)`` is called after each one (progress).
    """
    books = [a for a in accounts if isinstance(a, Book)]
    if shared is None and len(books) == len(accounts):
        groups = batch_from_books(books)
    elif shared is not None and not books:
        groups = [BatchGroup(shared, [a for a in accounts if isinstance(a, BatchAccount)])]
    else:
        raise TypeError("give BatchAccounts with their SharedInputs, or Books and no shared")
    return run_groups(
        groups,
        engine,
        workers=workers,
        scheduler=scheduler,
        audit=audit,
        run_number=run_number,
        keep_outcomes=keep_outcomes,
        on_outcome=on_outcome,
    )


def run_groups(
    groups: Sequence[BatchGroup],
    engine: Engine | str = "local",
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    audit: AuditStore | None = None,
    run_number: int = 1,
    keep_outcomes: bool = False,
    on_outcome: Callable[[AccountOutcome, int, int], None] | None = None,
) -> BatchSummary:
    """:func:`run_batch` over several groups (a folder of cases with different scenario sets)."""
    owned = isinstance(engine, str)
    runner = make_engine(engine, workers, scheduler) if isinstance(engine, str) else engine
    summary = BatchSummary(engine=runner.name)
    total = sum(len(g.accounts) for g in groups)
    summary.accounts = total
    done = 0
    started = time.perf_counter()
    try:
        for group in groups:
            todo = list(group.accounts)
            if audit is not None:
                stored = audit.completed_totals(
                    group.shared.business_date, group.shared.cycle, run_number
                )
                for account in group.accounts:
                    if account.account in stored:
                        summary.skipped += 1
                        summary.add_totals(*stored[account.account])
                todo = [a for a in group.accounts if a.account not in stored]
                done += len(group.accounts) - len(todo)
                audit.prepare(group.shared)
            if not todo:
                continue
            for outcome in runner.run(todo, group.shared):
                done += 1
                summary.computed += 1
                if audit is not None:
                    audit.record(group.shared, todo[outcome.index], outcome, run_number)
                if outcome.result is not None:
                    summary.add_totals(*_totals(outcome.result))
                else:
                    assert outcome.error is not None
                    summary.failed += 1
                    summary.failures.append(
                        {"account": outcome.account, "source": outcome.label}
                        | outcome.error.to_dict()
                    )
                if keep_outcomes:
                    summary.outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome, done, total)
    finally:
        summary.seconds = time.perf_counter() - started
        if owned:
            runner.close()
    return summary
