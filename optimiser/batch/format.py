"""The batch file format ``xmargin-batch/1``, folders of cases, and case <-> batch parts.

A batch file holds the shared case parts at its top level and each account's own parts in
``accounts`` (see the README)::

    {"format": "xmargin-batch/1", "business_date": ..., "cycle": ..., "clearing_member": {...},
     "factors": [...], "scenarios": {...}, "instruments": [...], "models": {...},
     "program": {...}, "options": {...},
     "accounts": [{"id": "A-1", "customer": {"id": ...}, "positions": [...],
                   "instruments": [...], "clearing_member": {...}, "options": {...}}]}

A folder of case files is a batch too: its cases are grouped by identical shared parts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xmargin.schema import clip, parse_json

from ..case_format import CASE_FORMAT, book_to_dict, parse_case
from ..errors import CaseValidationError, unknown_key_reason
from ..jsonvalues import jsonable
from ..model import Book, ScenarioSet
from .data import AccountError, AccountOutcome, BatchAccount, BatchGroup, SharedInputs

__all__ = [
    "ACCOUNT_KEYS",
    "BATCH_FORMAT",
    "CASE_ACCOUNT_KEYS",
    "SHARED_KEYS",
    "batch_from_books",
    "batch_to_dict",
    "check_shared",
    "field_in_batch",
    "load_batch",
    "merge_case",
    "parse_batch",
    "split_case",
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
BATCH_KEYS = frozenset({"format", "accounts", *SHARED_KEYS})
"""Every key a batch file may have."""
CASE_ACCOUNT_KEYS = ("name", "customer", "clearing_member", "positions", "instruments")
"""Keys of a single case file that belong to its account when a folder of cases is a batch."""


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


def check_shared(shared: Mapping[str, Any]) -> Book:
    """Validate the shared parts once (a case with no positions), so a bad scenario set or
    model rejects the whole batch instead of failing every account alike; the probe's book."""
    probe = merge_case(
        shared, {"customer": {"id": "-", "ficc_account_type": "NONE"}, "positions": []}
    )
    probe.setdefault("clearing_member", {"id": "-"})
    return parse_case(probe)


def _account_of(data: Any, where: str) -> BatchAccount:
    if not isinstance(data, Mapping):
        raise CaseValidationError(where, data, "must be an object")
    unknown = sorted(set(data) - ACCOUNT_KEYS)
    if unknown:
        reason = unknown_key_reason(unknown[0], ACCOUNT_KEYS, f"{where}.")
        raise CaseValidationError(f"{where}.{unknown[0]}", data[unknown[0]], reason)
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
    unknown = sorted(set(data) - BATCH_KEYS, key=str)
    if unknown:
        reason = unknown_key_reason(unknown[0], BATCH_KEYS)
        raise CaseValidationError(str(unknown[0]), data[unknown[0]], reason)
    accounts_data = data.get("accounts")
    if not isinstance(accounts_data, list) or not accounts_data:
        raise CaseValidationError("accounts", accounts_data, "must be a non-empty list")
    shared_data = {k: data[k] for k in SHARED_KEYS if k in data}
    check_shared(shared_data)
    shared = SharedInputs.of(shared_data, from_json=True)
    accounts = [_account_of(a, f"accounts[{i}]") for i, a in enumerate(accounts_data)]
    _unique(accounts)
    return BatchGroup(shared, accounts)


def load_batch(path: str | Path, rejected: list[AccountOutcome] | None = None) -> list[BatchGroup]:
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
    if isinstance(data, Mapping) and (data.get("format") == BATCH_FORMAT or "accounts" in data):
        return [parse_batch(data)]  # a file with accounts is a batch file, of this format or not
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
        return parse_json(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # JSONDecodeError, huge numbers
        raise CaseValidationError(
            "<file>", None, f"{file}: cannot be read as JSON: {clip(str(error))}"
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
        "accounts": [jsonable(account.data) for account in group.accounts],
    }


def batch_from_books(books: Sequence[Book]) -> list[BatchGroup]:
    """Books (for instance ``generate_book(..., scenario_set=one_set)``) as batch groups: books
    with equal scenarios, models, program and options share one serialised shared part. Each
    account keeps its instruments' risk vectors as the book's float64 arrays (cheap to send to
    a worker, taken by :func:`parse_case` without a walk; :func:`batch_to_dict` writes lists)."""
    groups: list[tuple[Book, dict[str, Any], BatchGroup]] = []
    for index, book in enumerate(books):
        case = book_to_dict(_without_scenarios(book))
        shared_part, account_part = split_case(case)
        account = BatchAccount(
            book.customer.id, _with_arrays(account_part, book), f"books[{index}]"
        )
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


def _with_arrays(account_part: dict[str, Any], book: Book) -> dict[str, Any]:
    """The account part as JSON values, but each instrument's vector the book's float64 array
    (``book_to_dict`` lists the instruments in the book's order)."""
    data: dict[str, Any] = jsonable(account_part)
    for item, instrument in zip(
        data.get("instruments", []), book.instruments.values(), strict=True
    ):
        for name in ("sensitivities", "pnl"):
            vector = getattr(instrument, name)
            if vector is not None:
                item[name] = np.ascontiguousarray(vector, dtype=np.float64)
    return data


def _without_scenarios(book: Book) -> Book:
    """The book without its scenario rows (cheap to serialise; the shared part carries them)."""
    empty = ScenarioSet(ids=(), shocks=np.zeros((0, len(book.factors))))
    return dataclasses.replace(book, scenarios=empty)


def _same_scenarios(first: Book, book: Book) -> bool:
    return first.scenarios is book.scenarios or (
        first.scenarios.ids == book.scenarios.ids
        and np.array_equal(first.scenarios.shocks, book.scenarios.shocks)
    )


def field_in_batch(field: str, account: BatchAccount, n_shared_instruments: int) -> str:
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
    if head == "name" and "name" not in account.data and "id" in account.data:
        return f"{account.label}.id{field[len(head) :]}"  # the case's name is the account's id
    if head in account.data or head in ("customer", "positions", "name"):
        return f"{account.label}.{field}"
    return field
