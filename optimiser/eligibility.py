"""Eligibility of positions for cross-margining, from a rulebook that is data.

A rulebook (``rulebooks/*.json``) carries its effective date, the clearing-member and customer
requirements, the eligible and excluded FICC kinds, the remaining-maturity rule and the CME
contract list. A rule change is a new rulebook file, not a code change.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from xmargin.schema import clip, parse_json

from .errors import CaseValidationError, expect_type, unknown_key_reason
from .model import FICC_ACCOUNT_TYPES, Book, Ccp, ClearingMember, Customer, Instrument

__all__ = [
    "Eligibility",
    "EligibilityJudge",
    "Reason",
    "Rulebook",
    "default_rulebook",
    "evaluate_eligibility",
    "instrument_eligibility",
    "load_rulebook",
]


class Reason(enum.StrEnum):
    """Reason codes of eligibility.md; a position can fail several checks."""

    CLEARING_MEMBER_NOT_ELIGIBLE = "CLEARING_MEMBER_NOT_ELIGIBLE"
    CUSTOMER_NOT_ENROLLED = "CUSTOMER_NOT_ENROLLED"
    PRODUCT_NOT_ELIGIBLE = "PRODUCT_NOT_ELIGIBLE"
    PRODUCT_EXCLUDED = "PRODUCT_EXCLUDED"
    MATURITY_WITHIN_ONE_YEAR = "MATURITY_WITHIN_ONE_YEAR"
    CONTRACT_NOT_ELIGIBLE = "CONTRACT_NOT_ELIGIBLE"
    OPTION_NOT_ELIGIBLE = "OPTION_NOT_ELIGIBLE"


@dataclass(frozen=True, slots=True)
class Eligibility:
    """A position's eligibility on a business date and every reason it fails."""

    eligible: bool
    reasons: tuple[Reason, ...]


@dataclass(frozen=True, slots=True)
class Rulebook:
    name: str
    effective_date: dt.date
    require_bd_fcm: bool
    require_cme_clearing_member: bool
    require_ficc_netting_member: bool
    customer_ficc_account_types: frozenset[str]
    ficc_eligible_kinds: frozenset[str]
    ficc_repo_kinds: frozenset[str]
    ficc_excluded_kinds: frozenset[str]
    ficc_min_remaining_maturity_years: int
    cme_eligible_contracts: frozenset[str]
    cme_eligible_kinds: frozenset[str]
    cme_option_kinds: frozenset[str]

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Rulebook:
        """A rulebook from its JSON data, read strictly: every key of the bundled file and no
        other (a misspelt key was a KeyError, an extra one ignored), true/false for the member
        requirements (``"false"`` was read as true), a whole number of years, lists of
        names. Raises :class:`CaseValidationError` at ``rulebook.KEY``."""
        if not isinstance(data, dict):
            raise CaseValidationError("rulebook", _shown(data), "must be an object")
        _exact_keys(data, RULEBOOK_KEYS, "rulebook")
        member = data["clearing_member"]
        if not isinstance(member, dict):
            raise CaseValidationError(
                "rulebook.clearing_member", _shown(member), "must be an object"
            )
        _exact_keys(member, MEMBER_KEYS, "rulebook.clearing_member")
        for key, value in member.items():
            if not isinstance(value, bool):
                raise CaseValidationError(
                    f"rulebook.clearing_member.{key}", _shown(value), "must be true or false"
                )

        def names(key: str) -> frozenset[str]:
            value = data[key]
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise CaseValidationError(
                    f"rulebook.{key}", _shown(value), "must be a list of names"
                )
            return frozenset(value)

        account_types = names("customer_ficc_account_types")
        unknown = sorted(account_types - FICC_ACCOUNT_TYPES)
        if unknown:
            raise CaseValidationError(
                "rulebook.customer_ficc_account_types",
                unknown[0],
                f"must be among {', '.join(sorted(FICC_ACCOUNT_TYPES))}",
            )
        years = data["ficc_min_remaining_maturity_years"]
        if isinstance(years, bool) or not isinstance(years, int) or years < 0:
            raise CaseValidationError(
                "rulebook.ficc_min_remaining_maturity_years",
                _shown(years),
                "must be a whole number of years >= 0",
            )
        if not isinstance(data["name"], str):
            raise CaseValidationError("rulebook.name", _shown(data["name"]), "must be a string")
        try:
            effective = dt.date.fromisoformat(str(data["effective_date"]))
        except ValueError as error:
            raise CaseValidationError(
                "rulebook.effective_date", _shown(data["effective_date"]), "must be YYYY-MM-DD"
            ) from error
        return cls(
            name=data["name"],
            effective_date=effective,
            require_bd_fcm=member["bd_fcm"],
            require_cme_clearing_member=member["cme_clearing_member"],
            require_ficc_netting_member=member["ficc_netting_member"],
            customer_ficc_account_types=account_types,
            ficc_eligible_kinds=names("ficc_eligible_kinds"),
            ficc_repo_kinds=names("ficc_repo_kinds"),
            ficc_excluded_kinds=names("ficc_excluded_kinds"),
            ficc_min_remaining_maturity_years=years,
            cme_eligible_contracts=names("cme_eligible_contracts"),
            cme_eligible_kinds=names("cme_eligible_kinds"),
            cme_option_kinds=names("cme_option_kinds"),
        )


RULEBOOK_KEYS = frozenset(
    {
        "name",
        "effective_date",
        "clearing_member",
        "customer_ficc_account_types",
        "ficc_eligible_kinds",
        "ficc_repo_kinds",
        "ficc_excluded_kinds",
        "ficc_min_remaining_maturity_years",
        "cme_eligible_contracts",
        "cme_eligible_kinds",
        "cme_option_kinds",
    }
)
"""Every key of a rulebook file, each required."""
MEMBER_KEYS = frozenset({"bd_fcm", "cme_clearing_member", "ficc_netting_member"})


def _shown(value: object) -> object:
    return f"<{type(value).__name__} of {len(value)}>" if isinstance(value, dict | list) else value


def _exact_keys(data: dict[str, object], known: frozenset[str], where: str) -> None:
    for key in sorted(set(data) - known):
        reason = unknown_key_reason(key, known)
        raise CaseValidationError(f"{where}.{key}", _shown(data[key]), reason)
    for key in sorted(known - set(data)):
        raise CaseValidationError(f"{where}.{key}", None, "is required")


def load_rulebook(path: str | Path) -> Rulebook:
    """Read a rulebook JSON file (UTF-8; a key named twice in one object is refused, as in a
    case file: plain ``json.loads`` kept the last one)."""
    try:
        data = parse_json(Path(path).read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError
        raise CaseValidationError(
            "<file>", None, f"{path}: not valid JSON: {clip(str(error))}"
        ) from error
    return Rulebook.from_dict(data)


@functools.cache
def _bundled_rulebooks() -> tuple[Rulebook, ...]:
    """The bundled rulebooks, oldest first (read once: they ship with the package)."""
    folder = resources.files("xmargin.optimiser") / "rulebooks"
    books = [
        Rulebook.from_dict(parse_json(entry.read_text(encoding="utf-8")))
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    ]
    return tuple(sorted(books, key=lambda book: book.effective_date))


def default_rulebook(business_date: dt.date | None = None) -> Rulebook:
    """The latest bundled rulebook in effect on ``business_date`` (the latest one if None)."""
    if isinstance(business_date, dt.datetime):  # a date's subclass: compares with no date
        raise TypeError("business_date: must be date or None, got datetime")
    expect_type(business_date, (dt.date, type(None)), "business_date")
    books = _bundled_rulebooks()
    if business_date is None:
        return books[-1]
    in_effect = [book for book in books if book.effective_date <= business_date]
    if not in_effect:
        raise CaseValidationError(
            "business_date", business_date.isoformat(), "precedes every bundled rulebook"
        )
    return in_effect[-1]


@functools.lru_cache(maxsize=256)
def _add_years(day: dt.date, years: int) -> dt.date:
    year = day.year + years
    if not dt.MINYEAR <= year <= dt.MAXYEAR:
        raise CaseValidationError(
            "business_date", day.isoformat(), f"the rulebook cannot add {years} years to it"
        )
    try:
        return day.replace(year=year)
    except ValueError:  # 29 February
        return day.replace(year=year, day=28)


def _firm_reasons(rulebook: Rulebook, member: ClearingMember, customer: Customer) -> list[Reason]:
    reasons = []
    if (
        (rulebook.require_bd_fcm and not member.bd_fcm)
        or (rulebook.require_cme_clearing_member and not member.cme_clearing_member)
        or (rulebook.require_ficc_netting_member and not member.ficc_netting_member)
    ):
        reasons.append(Reason.CLEARING_MEMBER_NOT_ELIGIBLE)
    if (
        not customer.xm_enrolled
        or customer.ficc_account_type not in rulebook.customer_ficc_account_types
    ):
        reasons.append(Reason.CUSTOMER_NOT_ENROLLED)
    return reasons


def _product_reasons(
    rulebook: Rulebook, instrument: Instrument, within_horizon: Callable[[dt.date | None], bool]
) -> list[Reason]:
    """The product's reasons; ``within_horizon``: whether a FICC maturity (None: unknown) falls
    within the rulebook's minimum remaining maturity (:meth:`EligibilityJudge._within_horizon`)."""
    reasons: list[Reason] = []
    if instrument.ccp is Ccp.CME:
        if instrument.kind in rulebook.cme_option_kinds:
            reasons.append(Reason.OPTION_NOT_ELIGIBLE)
        elif (
            instrument.kind not in rulebook.cme_eligible_kinds
            or instrument.contract not in rulebook.cme_eligible_contracts
        ):
            reasons.append(Reason.CONTRACT_NOT_ELIGIBLE)
        return reasons
    is_repo = instrument.kind in rulebook.ficc_repo_kinds
    security_kind = instrument.collateral_kind if is_repo else instrument.kind
    maturity = instrument.collateral_maturity if is_repo else instrument.maturity
    if security_kind in rulebook.ficc_excluded_kinds:
        reasons.append(Reason.PRODUCT_EXCLUDED)
    elif security_kind not in rulebook.ficc_eligible_kinds:
        reasons.append(Reason.PRODUCT_NOT_ELIGIBLE)
    if within_horizon(maturity):
        reasons.append(Reason.MATURITY_WITHIN_ONE_YEAR)
    return reasons


def instrument_eligibility(
    rulebook: Rulebook,
    member: ClearingMember,
    customer: Customer,
    instrument: Instrument,
    business_date: dt.date,
) -> Eligibility:
    """Eligibility of one instrument held by ``customer`` at ``member`` on ``business_date``:
    the firm's reasons, then the product's (none: eligible)."""
    return EligibilityJudge(rulebook, member, customer, business_date)(instrument)


class EligibilityJudge:
    """:func:`instrument_eligibility` for many instruments of one book: the firm's reasons
    are found once, and the product reasons once per distinct product (clearing house, kind,
    contract, collateral kind, and for FICC whether each maturity falls within the rulebook's
    horizon), so a book of many similar positions costs one dict look-up per position."""

    def __init__(
        self,
        rulebook: Rulebook,
        member: ClearingMember,
        customer: Customer,
        business_date: dt.date,
    ) -> None:
        self._rulebook = rulebook
        self._business_date = business_date
        self._firm = tuple(_firm_reasons(rulebook, member, customer))
        self._horizon: dt.date | None = None  # found at the first FICC product
        self._seen: dict[tuple[object, ...], Eligibility] = {}

    def _within_horizon(self, maturity: dt.date | None) -> bool:
        """What the product reasons ask of a FICC maturity: none, or on or before the
        horizon (both are MATURITY_WITHIN_ONE_YEAR)."""
        if self._horizon is None:
            years = self._rulebook.ficc_min_remaining_maturity_years
            self._horizon = _add_years(self._business_date, years)
        return maturity is None or maturity <= self._horizon

    def __call__(self, instrument: Instrument) -> Eligibility:
        ficc = instrument.ccp is Ccp.FICC
        key = (
            instrument.ccp,
            instrument.kind,
            instrument.contract,
            instrument.collateral_kind,
            ficc and self._within_horizon(instrument.maturity),
            ficc and self._within_horizon(instrument.collateral_maturity),
        )
        found = self._seen.get(key)
        if found is None:
            reasons = self._firm + tuple(
                _product_reasons(self._rulebook, instrument, self._within_horizon)
            )
            found = self._seen[key] = Eligibility(eligible=not reasons, reasons=reasons)
        return found


def evaluate_eligibility(book: Book, rulebook: Rulebook | None = None) -> list[Eligibility]:
    """Eligibility of each of ``book.positions``, in order."""
    expect_type(book, Book, "book")
    expect_type(rulebook, (Rulebook, type(None)), "rulebook")
    rulebook = rulebook or default_rulebook(book.business_date)
    judge = EligibilityJudge(rulebook, book.clearing_member, book.customer, book.business_date)
    instruments = book.instruments
    return [judge(instruments[position.instrument]) for position in book.positions]
