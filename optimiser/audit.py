"""The audit store: every account's request and result, keyed by (business date, cycle, run
number, account), with the versions that produced it.

One schema on two databases:

- SQLite (default; stdlib ``sqlite3``, a file, WAL journal, ``synchronous=FULL``): ``sqlite:///
  relative.db``, ``sqlite:////absolute.db`` or a plain path.
- PostgreSQL by DSN (``postgresql://user:pass@host/db``; psycopg 3) for several servers.

Tables::

    xm_payloads  sha256 PRIMARY KEY, body        the shared inputs (scenarios, models, ...) once
    xm_runs      PRIMARY KEY (business_date, cycle, run_number, account)
                 status OK | FAILED, request_shared -> xm_payloads, request_account (JSON),
                 result (JSON), error_type / error_message / error_field, the totals,
                 xmargin_version, rulebook_name, rulebook_effective_date, models_sha256,
                 scenarios_sha256, seconds, engine, recorded_at

    xm_scenario_data  fingerprint PRIMARY KEY, factors / ids (JSON), shocks (S x K float64
                      bytes, row-major, little-endian): each scenario set's content once
    xm_scenario_sets  PRIMARY KEY (set_id, version), UNIQUE (set_id, fingerprint) ->
                      xm_scenario_data, counts, byte_count, registered_at, registered_by;
                      indexed by (registered_by, fingerprint, byte_count) for the
                      per-client limits (:class:`RegistrationLimits`)

The request of an account is ``merge_case(payload, request_account)``: the case that was solved.
Each outcome is one transaction. A stored OK row is never overwritten (a rerun skips it); a
FAILED row is replaced when the account is retried and succeeds or fails again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .batch.accounts import account_book, solve_account, xmargin_version
from .batch.data import AccountOutcome, BatchAccount, SharedInputs, result_totals
from .batch.format import merge_case
from .eligibility import default_rulebook
from .extras import require_extra
from .jsonvalues import canonical_json, compact_json, jsonable, sha256_of, strip_volatile
from .margin import evaluate
from .problem import build_problem

__all__ = [
    "SCENARIO_SCHEMA",
    "SCHEMA",
    "AuditRecord",
    "AuditStore",
    "RegistrationLimitError",
    "RegistrationLimits",
    "RegistrationUsage",
    "StoredScenarioSet",
    "Versions",
    "compare_results",
    "open_store",
    "reproduce",
    "scenario_fingerprint",
    "versions_for",
]

SCHEMA_VERSION = 1
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS xm_schema (version INTEGER PRIMARY KEY)""",
    """CREATE TABLE IF NOT EXISTS xm_payloads (
        sha256 TEXT PRIMARY KEY,
        body TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS xm_runs (
        business_date TEXT NOT NULL,
        cycle TEXT NOT NULL,
        run_number INTEGER NOT NULL,
        account TEXT NOT NULL,
        label TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('OK', 'FAILED')),
        request_shared TEXT NOT NULL REFERENCES xm_payloads (sha256),
        request_account TEXT NOT NULL,
        result TEXT,
        error_type TEXT,
        error_message TEXT,
        error_field TEXT,
        baseline_total DOUBLE PRECISION,
        before_total DOUBLE PRECISION,
        after_total DOUBLE PRECISION,
        xmargin_version TEXT NOT NULL,
        rulebook_name TEXT NOT NULL,
        rulebook_effective_date TEXT NOT NULL,
        models_sha256 TEXT NOT NULL,
        scenarios_sha256 TEXT NOT NULL,
        seconds DOUBLE PRECISION NOT NULL,
        recorded_at TEXT NOT NULL,
        PRIMARY KEY (business_date, cycle, run_number, account)
    )""",
)
RUN_COLUMNS = (
    "business_date",
    "cycle",
    "run_number",
    "account",
    "label",
    "status",
    "request_shared",
    "request_account",
    "result",
    "error_type",
    "error_message",
    "error_field",
    "baseline_total",
    "before_total",
    "after_total",
    "xmargin_version",
    "rulebook_name",
    "rulebook_effective_date",
    "models_sha256",
    "scenarios_sha256",
    "seconds",
    "recorded_at",
)
KEY_COLUMNS = ("business_date", "cycle", "run_number", "account")
RUN_NUMBER_MAX = 2**32 - 1
"""The largest run number: the gRPC contract's ``RunContext.run_number`` is a uint32, so every
run the command line stores is one a server's client can name too."""
SCENARIO_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS xm_scenario_data (
        fingerprint TEXT PRIMARY KEY,
        factors TEXT NOT NULL,
        ids TEXT NOT NULL,
        shocks {blob} NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS xm_scenario_sets (
        set_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        fingerprint TEXT NOT NULL REFERENCES xm_scenario_data (fingerprint),
        factor_count INTEGER NOT NULL,
        scenario_count INTEGER NOT NULL,
        byte_count BIGINT NOT NULL,
        registered_at TEXT NOT NULL,
        registered_by TEXT NOT NULL,
        PRIMARY KEY (set_id, version),
        UNIQUE (set_id, fingerprint)
    )""",
    """CREATE INDEX IF NOT EXISTS xm_scenario_sets_by_client
        ON xm_scenario_sets (registered_by, fingerprint, byte_count)""",
)
"""Scenario sets (``xmargin serve`` keeps registered sets here); ``{blob}`` is the dialect's
binary type. Rows are only ever added: nothing evicts or rewrites a registered set. The index
(created on opening, also in a store made before it existed) covers the per-client usage
query: its cost is one index range of the client's own rows, which the row limit bounds."""
SCENARIO_SET_COLUMNS = (
    "set_id",
    "version",
    "fingerprint",
    "factor_count",
    "scenario_count",
    "byte_count",
    "registered_at",
    "registered_by",
)
SHOCKS_DTYPE = np.dtype("<f8")
REGISTRATION_LOCK = 7242027
"""First key of the PostgreSQL advisory lock a limited registration holds (the second: the
client's); the schema's creation holds 7242026."""
SQLITE_PAGE_SIZE = 65536
"""Page size of a new SQLite store (SQLite's largest): an account's row holds ~0.5 MB of JSON
(its P&L vectors), which on 4 KiB pages is a chain of ~130 overflow pages; 64 KiB pages cut
SQLite's CPU per row about 3x and the bytes synced per commit. A store already created keeps
its own page size."""


def scenario_fingerprint(factors: list[str], ids: list[str], shocks: np.ndarray) -> str:
    """SHA-256 of a scenario set's canonical encoding: the JSON of ``[factors, ids]`` (default
    separators), then the S x K shocks as float64, row-major, little-endian."""
    digest = hashlib.sha256()
    digest.update(json.dumps([list(factors), list(ids)]).encode())
    digest.update(np.ascontiguousarray(shocks, dtype=SHOCKS_DTYPE).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class StoredScenarioSet:
    """A registered scenario set's metadata (no shocks): ``byte_count`` is the size of its
    shocks as float64 (S x K x 8)."""

    set_id: str
    version: int
    fingerprint: str
    factor_count: int
    scenario_count: int
    byte_count: int
    registered_at: str
    registered_by: str


@dataclass(frozen=True, slots=True)
class RegistrationLimits:
    """What one client (``registered_by``) may hold in the store; 0 turns a limit off.

    - ``max_sets``: its ``(set_id, version)`` rows.
    - ``max_bytes``: the shocks bytes (S x K x 8, the ``byte_count`` every set reports) of
      the distinct contents (fingerprints) among its rows.

    Content is counted against every client that registers it, once per client however many
    ids it registers it under, not against the first client to store it only: a client's
    usage is then a function of its own registrations (what ``ListScenarioSets`` shows as
    ``registered_by`` it), the same whatever others did before, so it can check it and
    never finds itself charged, or not, by another client's history. It over-counts the disk
    when clients share content, which errs on the safe side: the sum over clients bounds the
    store. Ids and factor names (JSON, ~13 bytes a scenario) are not counted."""

    max_sets: int = 0
    max_bytes: int = 0

    def __post_init__(self) -> None:
        for name in ("max_sets", "max_bytes"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0: no limit), not {value!r}")

    @property
    def active(self) -> bool:
        return self.max_sets > 0 or self.max_bytes > 0


@dataclass(frozen=True, slots=True)
class RegistrationUsage:
    """What one client holds: its rows and the bytes of its distinct contents."""

    sets: int
    bytes: int


class RegistrationLimitError(Exception):
    """A registration that would take ``client`` past a :class:`RegistrationLimits` limit:
    nothing was stored."""

    def __init__(
        self, client: str, limit: str, allowed: int, usage: RegistrationUsage, adding: int
    ) -> None:
        self.client, self.limit, self.allowed = client, limit, allowed
        self.usage, self.adding = usage, adding
        if limit == "sets":
            why = (
                f"client {client!r} has registered {usage.sets} scenario set versions (with "
                f"{usage.bytes} bytes of shocks); one more would pass the limit of {allowed}"
            )
        else:
            why = (
                f"client {client!r} has registered {usage.bytes} bytes of scenario shocks (in "
                f"{usage.sets} versions); this set's {adding} more would pass the limit of "
                f"{allowed} bytes"
            )
        super().__init__(why)


@dataclass(frozen=True, slots=True)
class Versions:
    """What produced an answer: the code, the rulebook in effect, the model parameters."""

    xmargin: str
    rulebook_name: str
    rulebook_effective_date: str
    models_sha256: str
    scenarios_sha256: str

    def to_dict(self) -> dict[str, str]:
        return {
            "xmargin": self.xmargin,
            "rulebook": self.rulebook_name,
            "rulebook_effective_date": self.rulebook_effective_date,
            "models_sha256": self.models_sha256,
            "scenarios_sha256": self.scenarios_sha256,
        }


def versions_for(shared: SharedInputs) -> Versions:
    """The versions of a group: the rulebook in effect on its business date, the hashes of its
    models (and program rules) and of its scenario set."""
    try:
        rulebook = default_rulebook(dt.date.fromisoformat(shared.business_date))
        name, effective = rulebook.name, rulebook.effective_date.isoformat()
    except ValueError:  # an invalid date (or none in effect) fails every account anyway
        name, effective = "unknown", ""
    models = {"models": shared.data.get("models"), "program": shared.data.get("program")}
    scenarios = {"factors": shared.data.get("factors"), "scenarios": shared.data.get("scenarios")}
    return Versions(xmargin_version(), name, effective, sha256_of(models), sha256_of(scenarios))


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored account: its key, outcome, request parts and versions."""

    business_date: str
    cycle: str
    run_number: int
    account: str
    label: str
    status: str
    request_shared: str
    request_account: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    versions: Versions
    seconds: float
    recorded_at: str

    @property
    def key(self) -> dict[str, Any]:
        """The run key (:data:`KEY_COLUMNS`): business date, cycle, run number, account."""
        return {column: getattr(self, column) for column in KEY_COLUMNS}

    def same_request(self, shared: SharedInputs, account: BatchAccount) -> bool:
        """Whether ``shared`` and ``account`` are the request stored here: the same shared
        inputs (by hash) and account parts equal as JSON data."""
        return self.request_shared == shared.sha256 and canonical_json(
            self.request_account
        ) == canonical_json(jsonable(account.data))

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "source": self.label,
            "status": self.status,
            "versions": self.versions.to_dict(),
            "request_shared_sha256": self.request_shared,
            "seconds": self.seconds,
            "recorded_at": self.recorded_at,
            "result": self.result,
            "error": self.error,
        }


class AuditStore:
    """A DB-API connection with the schema above. Open with :func:`open_store`.

    Thread-safe for one process (one connection behind a lock); several processes or servers
    may write the same database: the primary key keeps every account once.
    """

    def __init__(self, connection: Any, dialect: str, where: str) -> None:
        self._connection = connection
        self.dialect = dialect
        self.where = where
        self._lock = threading.Lock()
        self._prepared: dict[str, Versions] = {}
        with self._transaction() as cursor:
            if dialect == "postgresql":  # servers starting together create the tables once
                cursor.execute("SELECT pg_advisory_xact_lock(7242026)")
            for statement in SCHEMA:
                cursor.execute(statement)
            blob = "BYTEA" if dialect == "postgresql" else "BLOB"
            for statement in SCENARIO_SCHEMA:
                cursor.execute(statement.format(blob=blob))
            cursor.execute(
                self._sql("INSERT INTO xm_schema (version) VALUES (?) ON CONFLICT DO NOTHING"),
                (SCHEMA_VERSION,),
            )
            cursor.execute("SELECT MAX(version) FROM xm_schema")
            found = int(cursor.fetchone()[0])
            if found != SCHEMA_VERSION:
                raise RuntimeError(
                    f"{where}: audit schema {found}, this code reads {SCHEMA_VERSION}"
                )

    # --- plumbing ---------------------------------------------------------------------------

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.dialect == "postgresql" else statement

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._lock:
            cursor = self._connection.cursor()
            try:
                yield cursor
                self._connection.commit()
            except BaseException:
                self._connection.rollback()
                raise
            finally:
                cursor.close()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ----------------------------------------------------------------------------

    def prepare(self, shared: SharedInputs) -> Versions:
        """Store a group's shared inputs once (by content hash); its versions."""
        if shared.sha256 not in self._prepared:
            with self._transaction() as cursor:
                cursor.execute(
                    self._sql(
                        "INSERT INTO xm_payloads (sha256, body) VALUES (?, ?) "
                        "ON CONFLICT (sha256) DO NOTHING"
                    ),
                    (shared.sha256, canonical_json(shared.data)),
                )
            self._prepared[shared.sha256] = versions_for(shared)
        return self._prepared[shared.sha256]

    def record(
        self,
        shared: SharedInputs,
        account: BatchAccount,
        outcome: AccountOutcome,
        run_number: int,
    ) -> bool:
        """Commit one outcome. False when an OK row was already there (left as it was)."""
        return self.record_many(shared, [(account, outcome)], run_number) > 0

    def record_many(
        self,
        shared: SharedInputs,
        items: Sequence[tuple[BatchAccount, AccountOutcome]],
        run_number: int,
    ) -> int:
        """Commit several outcomes of one group in one transaction (a batch's commits come
        in chunks: one disk sync per chunk, not per account); how many rows were written
        (an OK row already there is left as it was)."""
        if not items:
            return 0
        versions = self.prepare(shared)
        recorded_at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        rows = [
            _run_row(shared, account, outcome, run_number, versions, recorded_at)
            for account, outcome in items
        ]
        written = 0
        with self._transaction() as cursor:
            for row in rows:
                cursor.execute(self._sql(_RECORD_STATEMENT), row)
                written += max(0, cursor.rowcount)
        return written

    # --- reading ----------------------------------------------------------------------------

    def completed_totals(
        self, business_date: str, cycle: str, run_number: int
    ) -> dict[str, tuple[float, float, float]]:
        """Accounts stored OK for a run, with their baseline, before and after totals."""
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT account, baseline_total, before_total, after_total FROM xm_runs "
                    "WHERE business_date = ? AND cycle = ? AND run_number = ? AND status = 'OK'"
                ),
                (business_date, cycle, run_number),
            )
            return {str(r[0]): (float(r[1]), float(r[2]), float(r[3])) for r in cursor.fetchall()}

    def accounts(
        self, business_date: str, cycle: str, run_number: int
    ) -> list[tuple[str, str, float | None, float | None]]:
        """(account, status, before, after) of every account stored for a run, by account."""
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT account, status, before_total, after_total FROM xm_runs "
                    "WHERE business_date = ? AND cycle = ? AND run_number = ? ORDER BY account"
                ),
                (business_date, cycle, run_number),
            )
            return [(str(a), str(s), b, f) for a, s, b, f in cursor.fetchall()]

    def count(self) -> int:
        with self._transaction() as cursor:
            cursor.execute("SELECT COUNT(*) FROM xm_runs")
            return int(cursor.fetchone()[0])

    def get(
        self, business_date: str, cycle: str, run_number: int, account: str
    ) -> AuditRecord | None:
        """The stored account, or None."""
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT {', '.join(RUN_COLUMNS)} FROM xm_runs WHERE business_date = ? "
                    "AND cycle = ? AND run_number = ? AND account = ?"
                ),
                (business_date, cycle, run_number, account),
            )
            row = cursor.fetchone()
        if row is None:
            return None
        data = dict(zip(RUN_COLUMNS, row, strict=True))
        error = None
        if data["error_type"] is not None:
            error = {
                "type": data["error_type"],
                "message": data["error_message"],
                "field": data["error_field"],
            }
        return AuditRecord(
            business_date=str(data["business_date"]),
            cycle=str(data["cycle"]),
            run_number=int(data["run_number"]),
            account=str(data["account"]),
            label=str(data["label"]),
            status=str(data["status"]),
            request_shared=str(data["request_shared"]),
            request_account=json.loads(data["request_account"]),
            result=json.loads(data["result"]) if data["result"] is not None else None,
            error=error,
            versions=Versions(
                str(data["xmargin_version"]),
                str(data["rulebook_name"]),
                str(data["rulebook_effective_date"]),
                str(data["models_sha256"]),
                str(data["scenarios_sha256"]),
            ),
            seconds=float(data["seconds"]),
            recorded_at=str(data["recorded_at"]),
        )

    def shared(self, sha256: str) -> dict[str, Any]:
        with self._transaction() as cursor:
            cursor.execute(self._sql("SELECT body FROM xm_payloads WHERE sha256 = ?"), (sha256,))
            row = cursor.fetchone()
        if row is None:
            raise KeyError(f"shared inputs {sha256} are not in the store")
        body: dict[str, Any] = json.loads(row[0])
        return body

    def request(self, record: AuditRecord) -> dict[str, Any]:
        """The case that was solved for ``record``."""
        return merge_case(self.shared(record.request_shared), record.request_account)

    # --- scenario sets ----------------------------------------------------------------------

    def register_scenario_set(
        self,
        set_id: str,
        factors: list[str],
        ids: list[str],
        shocks: np.ndarray,
        registered_by: str = "",
        fingerprint: str | None = None,
        limits: RegistrationLimits | None = None,
    ) -> StoredScenarioSet:
        """Store a (validated) scenario set under ``set_id``: the version already holding the
        same content, else the next version. Safe against other servers registering at the
        same time (a lost race is retried; the content is stored once per fingerprint).

        With ``limits``, a new row that would take ``registered_by`` past them raises
        :class:`RegistrationLimitError` and stores nothing; the version already holding the
        content is returned whatever the usage. The check and the insert are one transaction
        holding a per-client lock (SQLite: the write lock, ``BEGIN IMMEDIATE``; PostgreSQL: an
        advisory lock on the client), so registrations racing at the limit, on any server of
        the store, cannot both pass."""
        matrix = np.ascontiguousarray(shocks, dtype=SHOCKS_DTYPE)
        if matrix.shape != (len(ids), len(factors)):
            raise ValueError(f"shocks are {matrix.shape}, not {len(ids)} x {len(factors)}")
        fingerprint = fingerprint or scenario_fingerprint(factors, ids, matrix)
        body = matrix.tobytes()
        limited = limits if limits is not None and limits.active else None
        for _ in range(20):
            with self._transaction() as cursor:
                if limited is not None:
                    self._lock_client(cursor, registered_by)
                found = self._scenario_row(
                    cursor, "set_id = ? AND fingerprint = ?", (set_id, fingerprint)
                )
                if found is not None:
                    return found
                if limited is not None:
                    self._check_limits(cursor, registered_by, fingerprint, len(body), limited)
                cursor.execute(
                    self._sql(
                        "INSERT INTO xm_scenario_data (fingerprint, factors, ids, shocks) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (fingerprint) DO NOTHING"
                    ),
                    (fingerprint, json.dumps(list(factors)), json.dumps(list(ids)), body),
                )
                cursor.execute(
                    self._sql("SELECT MAX(version) FROM xm_scenario_sets WHERE set_id = ?"),
                    (set_id,),
                )
                latest = cursor.fetchone()[0]
                entry = StoredScenarioSet(
                    set_id,
                    int(latest or 0) + 1,
                    fingerprint,
                    len(factors),
                    len(ids),
                    len(body),
                    dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                    registered_by,
                )
                cursor.execute(
                    self._sql(
                        f"INSERT INTO xm_scenario_sets ({', '.join(SCENARIO_SET_COLUMNS)}) "
                        f"VALUES ({', '.join('?' for _ in SCENARIO_SET_COLUMNS)}) "
                        "ON CONFLICT DO NOTHING"
                    ),
                    tuple(getattr(entry, c) for c in SCENARIO_SET_COLUMNS),
                )
                if cursor.rowcount:
                    return entry
            # another server took that version (or registered this content) meanwhile: again
        raise RuntimeError(f"could not register scenario set {set_id!r}: too much contention")

    def _lock_client(self, cursor: Any, client: str) -> None:
        """Serialise this transaction with every other registration by ``client`` (until it
        ends): on SQLite the database's write lock, on PostgreSQL an advisory lock keyed by
        the client (other clients' registrations go on)."""
        if self.dialect == "postgresql":
            key = int.from_bytes(hashlib.sha256(client.encode()).digest()[:4], "big", signed=True)
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", (REGISTRATION_LOCK, key))
        elif not self._connection.in_transaction:
            cursor.execute("BEGIN IMMEDIATE")

    def _usage(self, cursor: Any, client: str) -> RegistrationUsage:
        cursor.execute(
            self._sql("SELECT COUNT(*) FROM xm_scenario_sets WHERE registered_by = ?"), (client,)
        )
        sets = int(cursor.fetchone()[0])
        cursor.execute(
            self._sql(
                "SELECT COALESCE(SUM(content_bytes), 0) FROM (SELECT MAX(byte_count) AS "
                "content_bytes FROM xm_scenario_sets WHERE registered_by = ? "
                "GROUP BY fingerprint) AS contents"
            ),
            (client,),
        )
        return RegistrationUsage(sets, int(cursor.fetchone()[0]))

    def _check_limits(
        self,
        cursor: Any,
        client: str,
        fingerprint: str,
        content_bytes: int,
        limits: RegistrationLimits,
    ) -> None:
        """Raise :class:`RegistrationLimitError` if one more row (and ``content_bytes`` more,
        unless ``client`` already registered this content) takes ``client`` past ``limits``."""
        usage = self._usage(cursor, client)
        if limits.max_sets and usage.sets + 1 > limits.max_sets:
            raise RegistrationLimitError(client, "sets", limits.max_sets, usage, 1)
        if not limits.max_bytes:
            return
        cursor.execute(
            self._sql(
                "SELECT COUNT(*) FROM xm_scenario_sets WHERE registered_by = ? AND fingerprint = ?"
            ),
            (client, fingerprint),
        )
        adding = 0 if int(cursor.fetchone()[0]) else content_bytes
        if usage.bytes + adding > limits.max_bytes:
            raise RegistrationLimitError(client, "bytes", limits.max_bytes, usage, adding)

    def scenario_usage(self, client: str) -> RegistrationUsage:
        """What ``client`` (a ``registered_by``) holds in the store, as the limits count it."""
        with self._transaction() as cursor:
            return self._usage(cursor, client)

    def _scenario_row(
        self, cursor: Any, where: str, args: tuple[Any, ...]
    ) -> StoredScenarioSet | None:
        cursor.execute(
            self._sql(
                f"SELECT {', '.join(SCENARIO_SET_COLUMNS)} FROM xm_scenario_sets WHERE {where} "
                "ORDER BY version DESC"
            ),
            args,
        )
        row = cursor.fetchone()
        return None if row is None else _stored_set(row)

    def scenario_set(self, set_id: str, version: int = 0) -> StoredScenarioSet | None:
        """A registered set's metadata; ``version`` 0: the latest. None when unknown."""
        with self._transaction() as cursor:
            if version:
                return self._scenario_row(cursor, "set_id = ? AND version = ?", (set_id, version))
            return self._scenario_row(cursor, "set_id = ?", (set_id,))

    def scenario_sets(
        self, set_id: str = "", after: tuple[str, int] | None = None, limit: int = 100
    ) -> list[StoredScenarioSet]:
        """Registered sets by (set_id, version), those after ``after``, at most ``limit``;
        only ``set_id``'s versions when it is given."""
        where: list[str] = ["1 = 1"]
        args: list[Any] = []
        if set_id:
            where.append("set_id = ?")
            args.append(set_id)
        if after is not None:
            where.append("(set_id > ? OR (set_id = ? AND version > ?))")
            args += [after[0], after[0], after[1]]
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT {', '.join(SCENARIO_SET_COLUMNS)} FROM xm_scenario_sets "
                    f"WHERE {' AND '.join(where)} ORDER BY set_id, version LIMIT {int(limit)}"
                ),
                tuple(args),
            )
            return [_stored_set(row) for row in cursor.fetchall()]

    def scenario_data(self, fingerprint: str) -> tuple[list[str], list[str], np.ndarray] | None:
        """The factors, ids and S x K shocks stored under ``fingerprint``; None if absent."""
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT factors, ids, shocks FROM xm_scenario_data WHERE fingerprint = ?"
                ),
                (fingerprint,),
            )
            row = cursor.fetchone()
        if row is None:
            return None
        factors, ids = json.loads(row[0]), json.loads(row[1])
        shocks = np.frombuffer(bytes(row[2]), dtype=SHOCKS_DTYPE).reshape(len(ids), len(factors))
        return factors, ids, shocks


def _stored_set(row: tuple[Any, ...]) -> StoredScenarioSet:
    data = dict(zip(SCENARIO_SET_COLUMNS, row, strict=True))
    return StoredScenarioSet(
        set_id=str(data["set_id"]),
        version=int(data["version"]),
        fingerprint=str(data["fingerprint"]),
        factor_count=int(data["factor_count"]),
        scenario_count=int(data["scenario_count"]),
        byte_count=int(data["byte_count"]),
        registered_at=str(data["registered_at"]),
        registered_by=str(data["registered_by"]),
    )


_RECORD_STATEMENT = (
    f"INSERT INTO xm_runs ({', '.join(RUN_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in RUN_COLUMNS)}) "
    f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in RUN_COLUMNS if c not in KEY_COLUMNS)
    + " WHERE xm_runs.status <> 'OK'"
)
"""Insert an account's row; a stored FAILED row is replaced, a stored OK row is kept."""


def _run_row(
    shared: SharedInputs,
    account: BatchAccount,
    outcome: AccountOutcome,
    run_number: int,
    versions: Versions,
    recorded_at: str,
) -> tuple[Any, ...]:
    """The ``xm_runs`` row of one outcome (columns in :data:`RUN_COLUMNS` order)."""
    result = outcome.result
    totals: tuple[float | None, ...] = (None, None, None)
    if result is not None:
        totals = result_totals(result)
    error = outcome.error
    return (
        shared.business_date,
        shared.cycle,
        run_number,
        account.account,
        account.label,
        "OK" if result is not None else "FAILED",
        shared.sha256,
        _account_json(account),
        None if result is None else outcome.result_json or compact_json(result),
        error.type if error else None,
        error.message if error else None,
        error.field if error else None,
        *totals,
        outcome.code_version or versions.xmargin,  # the code that solved it
        versions.rulebook_name,
        versions.rulebook_effective_date,
        versions.models_sha256,
        versions.scenarios_sha256,
        float(outcome.seconds),
        recorded_at,
    )


def _account_json(account: BatchAccount) -> str:
    """The account's own request parts as stored: compact JSON (its P&L vectors are most of
    it; :func:`compact_json` writes each float so that it reads back exactly)."""
    return compact_json(account.data)


def open_store(url: str | Path, create: bool = True) -> AuditStore:
    """``sqlite:///path.db`` (or a plain path) or ``postgresql://...`` (psycopg 3).

    ``create=False`` (readers) raises :class:`FileNotFoundError` for a SQLite file that does
    not exist rather than creating an empty store."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        psycopg = require_extra("psycopg", "postgres", "the PostgreSQL audit store")

        return AuditStore(psycopg.connect(text, autocommit=False), "postgresql", _redact(text))
    path = text.removeprefix("sqlite:///") if text.startswith("sqlite:///") else text
    if "://" in path:
        raise ValueError(f"unknown audit store {text!r}: use sqlite:///PATH or postgresql://...")
    if not create and not Path(path).is_file():
        raise FileNotFoundError(f"no audit store at {Path(path).resolve()}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=SQLITE_BUSY_SECONDS, check_same_thread=False)
    connection.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")  # a new file's; else ignored
    _write_ahead_log(connection)
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    return AuditStore(connection, "sqlite", path)


SQLITE_BUSY_SECONDS = 30.0
"""How long a SQLite store waits for another connection's lock before it fails."""


def _write_ahead_log(connection: sqlite3.Connection) -> None:
    """Switch the file to WAL. The switch takes the file's exclusive lock and SQLite answers
    "database is locked" at once, without its busy wait, while another connection holds a lock
    (4 stores opened together on a new file: 17 failures in 300 tries): retried here for
    :data:`SQLITE_BUSY_SECONDS`."""
    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _redact(dsn: str) -> str:
    """A DSN without its password, for messages."""
    scheme, _, rest = dsn.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return dsn
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


# --- reproduction ---------------------------------------------------------------------------


def compare_results(
    stored: Mapping[str, Any],
    fresh: Mapping[str, Any],
    rel_tol: float = 1e-9,
    path: str = "result",
) -> list[str]:
    """Where two results differ (timings ignored): a list of ``path: stored != fresh``."""
    differences: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if key not in a or key not in b:
                    differences.append(f"{path}.{key}: only in {'fresh' if key in b else 'stored'}")
                else:
                    walk(a[key], b[key], f"{path}.{key}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{path}[{i}]")
        elif (
            isinstance(a, int | float)
            and isinstance(b, int | float)
            and not isinstance(a, bool)
            and not isinstance(b, bool)
        ):
            if abs(a - b) > rel_tol * max(1.0, abs(a), abs(b)):
                differences.append(f"{path}: {a!r} != {b!r}")
        elif a != b:
            differences.append(f"{path}: {a!r} != {b!r}")

    walk(strip_volatile(stored), strip_volatile(fresh), path)
    return differences


def _proven(result: Mapping[str, Any]) -> bool:
    """Whether a stored result is a proven optimum (the same request solves to it again)."""
    return bool(result.get("solver", {}).get("source") == "OPTIMUM")


def stored_figures_differences(
    shared: SharedInputs, account: BatchAccount, result: Mapping[str, Any]
) -> list[str]:
    """Where a stored result's optimised figures differ (relative 1e-9) from those of its own
    allocation evaluated exactly again under the stored request: the margin states (the case
    format's ``expected`` names) and the transfer cost; none when the answer holds."""
    problem = build_problem(account_book(account, shared.data))
    stored = result.get("optimised", {})
    allocation = stored.get("allocation", {})
    if set(allocation) != set(problem.position_ids):
        return ["result.optimised.allocation: not the request's positions"]
    x = np.array([allocation[pid] for pid in problem.position_ids], dtype=np.float64)
    fresh = {**evaluate(problem, x).summary(), "transfer_cost": problem.transfer_cost(x)}
    return compare_results(
        {k: v for k, v in stored.items() if k in fresh}, fresh, path="result.optimised"
    )


def reproduce(store: AuditStore, record: AuditRecord) -> dict[str, Any]:
    """Solve the stored request again; say whether it matches the stored outcome (the result
    to a relative 1e-9, timings aside; or the same error for a stored failure).

    A stored answer that is not a proven optimum (``solver.source`` other than OPTIMUM: the
    best found when a time budget ran out, an exact-VaR search, the current allocation kept)
    depends on how far its solve got in its budget, so a new solve may end elsewhere. It
    matches when its own figures hold: its allocation, evaluated exactly again, gives the stored
    figures (:func:`stored_figures_differences`); how the new solve differs is reported beside
    (``solve_differences``)."""
    shared = SharedInputs.of(store.shared(record.request_shared))
    account = BatchAccount(record.account, record.request_account, record.label)
    outcome = solve_account(0, account, shared.data)
    fresh_error = outcome.error.to_dict() if outcome.error is not None else None
    solve_differences: list[str] = []
    if record.result is not None and outcome.result is not None:
        differences = compare_results(record.result, outcome.result)
        if differences and not _proven(record.result):
            solve_differences = differences
            differences = stored_figures_differences(shared, account, record.result)
    elif record.result is None and outcome.result is None:
        differences = (
            [] if record.error == fresh_error else [f"error: {record.error} != {fresh_error}"]
        )
    else:
        was = "succeeded" if record.result is not None else "failed"
        differences = [f"status: the stored run {was}, this one did not"]
    now = versions_for(shared)
    then = record.versions
    return {
        "matches": not differences,
        "differences": differences[:50],
        "stored_answer_proven": record.result is None or _proven(record.result),
        "solve_differences": solve_differences[:50],
        "stored_versions": then.to_dict(),
        "current_versions": now.to_dict(),
        "versions_changed": [
            name
            for name, stored, current in zip(
                now.to_dict(), then.to_dict().values(), now.to_dict().values(), strict=True
            )
            if stored != current
        ],
        "result": outcome.result,
        "error": fresh_error,
    }
