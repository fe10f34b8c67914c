"""Solving one account of a batch: merge its parts into a case, validate, optimise, report.

The shared part's scenario set (the bulk of a case: S x K shocks) is validated once per batch:
:func:`validate_shared` checks it as :func:`parse_case` would, and :func:`prepare_shared` lets
:func:`parse_case` take that validated set for every case merged from the same shared dict
(:func:`~xmargin.optimiser.case_format.trust_scenarios`: by identity of its lists), so an
account costs the validation of its own parts only. Engines call :func:`prepare_shared` where
the shared part lands (a pool worker's initializer, with the parent's validated set);
:func:`solve_account` calls it too, which costs a dictionary look-up once prepared.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from xmargin.schema import clip

from ..case_format import ScenarioData, parse_case, trust_scenarios
from ..errors import CaseValidationError, SolverError
from ..jsonvalues import json_and_text
from ..model import Book
from ..optimise import optimise
from ..results import Status
from .data import AccountError, AccountOutcome, BatchAccount
from .format import check_shared, field_in_batch, merge_case

__all__ = [
    "account_book",
    "prepare_shared",
    "solve_account",
    "validate_shared",
    "xmargin_version",
]

_PREPARED: OrderedDict[int, Mapping[str, Any]] = OrderedDict()
"""Shared dicts already prepared in this process, by id (each kept alive while listed)."""
_PREPARED_LOCK = threading.Lock()
_PREPARED_MAX = 16


@functools.cache
def xmargin_version() -> str:
    """The installed xmargin's version (``unknown`` when run from a bare source tree)."""
    try:
        return metadata.version("xmargin")
    except metadata.PackageNotFoundError:
        return "unknown"


def validate_shared(shared: Mapping[str, Any]) -> ScenarioData | None:
    """The shared part's scenario set, validated as :func:`parse_case` validates a case's;
    None when the shared part does not validate (each account then reports the violations)."""
    try:
        book = check_shared(shared)
    except CaseValidationError:
        return None
    return ScenarioData(tuple(book.factors), book.scenarios)


def prepare_shared(
    shared: Mapping[str, Any], validated: ScenarioData | None = None
) -> Mapping[str, Any]:
    """Validate ``shared``'s scenario set once in this process (or take ``validated``, the
    same set validated elsewhere, e.g. by the parent of a pool worker) and let
    :func:`parse_case` trust it for the cases merged from this very dict. Returns ``shared``.
    The caller must not change the shared dict's scenario lists afterwards."""
    key = id(shared)
    with _PREPARED_LOCK:
        if _PREPARED.get(key) is shared:
            _PREPARED.move_to_end(key)
            return shared
    factors, scenarios = shared.get("factors"), shared.get("scenarios")
    ids = scenarios.get("ids") if isinstance(scenarios, Mapping) else None
    shocks = scenarios.get("shocks") if isinstance(scenarios, Mapping) else None
    if isinstance(factors, list) and isinstance(ids, list) and isinstance(shocks, list):
        if validated is None:
            validated = validate_shared(shared)
        if validated is not None and (
            validated.factors == tuple(factors)
            and validated.scenarios.ids == tuple(ids)
            and validated.scenarios.shocks.shape == (len(ids), len(factors))
        ):
            trust_scenarios(validated, factors, ids, shocks)
    with _PREPARED_LOCK:
        _PREPARED[key] = shared
        while len(_PREPARED) > _PREPARED_MAX:
            _PREPARED.popitem(last=False)
    return shared


def account_book(account: BatchAccount, shared: Mapping[str, Any]) -> Book:
    """The validated book of one account under the batch's shared inputs (its case: the shared
    parts with the account's merged in, :func:`merge_case`)."""
    return parse_case(merge_case(prepare_shared(shared), account.data))


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
        book = account_book(account, shared)
        result = optimise(book, backend=backend)
        if result.status in (Status.INFEASIBLE, Status.ERROR):
            return failed(AccountError("SolverError", f"solver status {result.status.value}"))
        answer, answer_json = json_and_text(result.to_dict())  # serialised once, here
    except CaseValidationError as error:
        n_shared = len(shared.get("instruments", []) or [])
        where = field_in_batch(error.field, account, n_shared)
        message = "; ".join(
            f"{field_in_batch(v.path, account, n_shared)}: {v.message}"
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
        index,
        account.account,
        account.label,
        answer,
        None,
        seconds,
        xmargin_version(),
        result_json=answer_json,
    )
