"""The server's audit trail (``xmargin serve --audit URL``): every Optimise and every account
of an OptimiseBatch in the audit store of :mod:`xmargin.optimiser.audit`, keyed by the
request's business date, cycle, run number and account (the customer id), exactly once.

A key already stored OK is answered from the store: the same request gets the stored answer
back (its allocation evaluated again on the stored request, its solver statistics as stored;
nothing solved, nothing written), a different request gets ALREADY_EXISTS (a new computation
takes a new run number). A stored failure is retried and its row replaced, as ``xmargin batch``
does. Two servers racing on one key: the first write wins and the other returns its answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import TypeAdapter, ValidationError

from xmargin.optimiser.audit import AuditRecord, AuditStore
from xmargin.optimiser.batch import (
    AccountError,
    AccountOutcome,
    BatchAccount,
    SharedInputs,
)
from xmargin.schema.case_v1 import Id, IsoDate

from .batching import error_proto, rebuild_result
from .convert import RequestError, result_to_proto
from .errors import AuditError, RunConflictError

__all__ = ["Recorder"]

log = logging.getLogger("xmargin.server")
LIST_BEYOND = 32
"""Up to this many accounts are looked up one by one; more, with one listing of the run."""
Answer = tuple[AccountOutcome, BaseException | None]
"""An outcome to give the client, and the exception behind it when it is a failure."""
_ACCOUNT_KEY: TypeAdapter[str] = TypeAdapter(Id)
_DATE_KEY: TypeAdapter[str] = TypeAdapter(IsoDate)


def _storable(value: str, adapter: TypeAdapter[str] = _ACCOUNT_KEY) -> bool:
    """Whether ``value`` can be part of a stored key: an account (customer) id, or with
    ``_DATE_KEY`` a business date, as the case schema allows them. The store is asked about no
    other: the request is refused when it is parsed (INVALID_ARGUMENT naming the field), where
    a look-up of a customer id holding a NUL failed on PostgreSQL (UNAVAILABLE: text cannot hold
    NUL)."""
    try:
        adapter.validate_python(value, strict=True)
    except ValidationError:
        return False
    return True


class Recorder:
    """Reads and writes the audit store for the servicer (thread-safe, as the store is)."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store

    @staticmethod
    def run_number(run_number: int) -> int:
        """The run number of a request; an audited run needs one (>= 1)."""
        if run_number < 1:
            raise RequestError(
                [("run.run_number", "is required (>= 1): the server keeps an audit store")]
            )
        return int(run_number)

    def prior(
        self, shared: SharedInputs, accounts: Sequence[BatchAccount], run_number: int
    ) -> dict[int, Answer]:
        """Answers of accounts whose key is already stored OK (by position in ``accounts``):
        the stored answer for the same request, ALREADY_EXISTS for another one."""
        if not _storable(shared.business_date, _DATE_KEY):
            return {}  # no key of this run can be stored: the request is refused on parsing
        try:
            keyed = [(i, a) for i, a in enumerate(accounts) if _storable(a.account)]
            if len(keyed) > LIST_BEYOND:  # one query for the run, then the stored ones
                listed = self.store.accounts(shared.business_date, shared.cycle, run_number)
                stored = {account for account, status, _, _ in listed if status == "OK"}
            else:
                stored = {account.account for _, account in keyed}
            out: dict[int, Answer] = {}
            for position, account in keyed:
                if account.account in stored:
                    record = self.store.get(
                        shared.business_date, shared.cycle, run_number, account.account
                    )
                    if record is not None and record.status == "OK":
                        out[position] = self._answer(position, shared, account, record)
            return out
        except (AuditError, RunConflictError):
            raise
        except Exception as error:
            log.exception("audit store read failed")
            raise AuditError(f"the audit store failed: {type(error).__name__}") from error

    def record(
        self,
        shared: SharedInputs,
        account: BatchAccount,
        outcome: AccountOutcome,
        run_number: int,
        error: BaseException | None = None,
    ) -> Answer:
        """Store ``outcome`` (``error`` its exception); what to give the client: ``outcome``,
        or the stored answer when another call stored this key first. An account without a key
        is not stored."""
        if not account.account:
            return outcome, error
        try:
            if self.store.record(shared, account, outcome, run_number):
                return outcome, error
            record = self.store.get(shared.business_date, shared.cycle, run_number, account.account)
            assert record is not None and record.status == "OK"
            return self._answer(outcome.index, shared, account, record)
        except Exception as caught:
            log.exception("audit store write failed for account %r", account.account)
            failure = AuditError(f"the audit store failed: {type(caught).__name__}; retry")
            failed = AccountOutcome(
                outcome.index,
                outcome.account,
                outcome.label,
                None,
                AccountError("AuditError", str(failure)),
                outcome.seconds,
                outcome.code_version,
                error_proto(failure).SerializeToString(),
            )
            return failed, failure

    def _answer(
        self, index: int, shared: SharedInputs, account: BatchAccount, record: AuditRecord
    ) -> Answer:
        """The stored answer to the same request, or ALREADY_EXISTS."""
        if not record.same_request(shared, account):
            key = {column: str(value) for column, value in record.key.items()}
            conflict = RunConflictError(key, record.recorded_at)
            refused = AccountOutcome(
                index,
                account.account,
                account.label,
                None,
                AccountError("RunConflictError", str(conflict)),
                0.0,
                record.versions.xmargin,
                error_proto(conflict).SerializeToString(),
            )
            return refused, conflict
        assert record.result is not None
        result = rebuild_result(self.store.request(record), record.result)
        replay = AccountOutcome(
            index,
            account.account,
            account.label,
            record.result,
            None,
            record.seconds,
            record.versions.xmargin,
            result_to_proto(result).SerializeToString(),
        )
        return replay, None
