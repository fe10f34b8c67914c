"""Eligibility for cross-margining: reason codes per rule, and a rulebook that is data."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CASES_DIR
from xmargin.optimiser import (
    CaseValidationError,
    Ccp,
    ClearingMember,
    Customer,
    Instrument,
    InstrumentKind,
    Reason,
    Rulebook,
    build_problem,
    default_rulebook,
    evaluate_eligibility,
    load_rulebook,
    parse_case,
)
from xmargin.optimiser import eligibility as eligibility_module
from xmargin.optimiser.eligibility import Eligibility, instrument_eligibility

BUSINESS_DATE = dt.date(2026, 11, 24)
FAR = dt.date(2034, 5, 15)
MEMBER = ClearingMember("FCM-A", bd_fcm=True, cme_clearing_member=True, ficc_netting_member=True)
CUSTOMER = Customer("CUST-1", xm_enrolled=True, ficc_account_type="SPONSORED")
LISTED = ("TU", "Z3N", "FV", "TY", "TN", "US", "TWE", "UB", "ZQ", "SR1", "SR3")
EXCLUDED = ("TIPS", "STRIPS", "AGENCY", "MBS", "BILL", "FRN")


def security(kind: str = "NOTE", maturity: dt.date = FAR) -> Instrument:
    return Instrument(
        id=f"{kind}-{maturity}", ccp=Ccp.FICC, kind=InstrumentKind(kind), maturity=maturity
    )


def repo(collateral_kind: str = "NOTE", collateral_maturity: dt.date = FAR) -> Instrument:
    return Instrument(
        id="RP",
        ccp=Ccp.FICC,
        kind=InstrumentKind.REPO,
        maturity=BUSINESS_DATE + dt.timedelta(days=30),  # the repo itself is short
        collateral_kind=InstrumentKind(collateral_kind),
        collateral_maturity=collateral_maturity,
    )


def future(contract: str = "TY") -> Instrument:
    return Instrument(
        id=f"{contract}Z6", ccp=Ccp.CME, kind=InstrumentKind.FUTURE, contract=contract
    )


def option(contract: str = "TY") -> Instrument:
    return Instrument(
        id=f"O{contract}Z6C", ccp=Ccp.CME, kind=InstrumentKind.OPTION, contract=contract
    )


def judge(
    instrument: Instrument,
    *,
    member: ClearingMember = MEMBER,
    customer: Customer = CUSTOMER,
    business_date: dt.date = BUSINESS_DATE,
    rulebook: Rulebook | None = None,
) -> Eligibility:
    return instrument_eligibility(
        rulebook or default_rulebook(business_date), member, customer, instrument, business_date
    )


def assert_reasons(result: Eligibility, *expected: Reason) -> None:
    assert sorted(result.reasons) == sorted(expected)
    assert len(set(result.reasons)) == len(result.reasons), "a reason appears once"
    assert result.eligible is (not expected)


def rulebook_data() -> dict[str, Any]:
    """The bundled default rulebook as data, to modify."""
    folder = resources.files("xmargin.optimiser") / "rulebooks"
    entries = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".json"))
    assert entries, "at least one rulebook is bundled"
    data = json.loads((folder / entries[-1]).read_text())
    assert isinstance(data, dict)
    return data


def case_json(stem: str) -> dict[str, Any]:
    data = json.loads((CASES_DIR / f"{stem}.json").read_text())
    assert isinstance(data, dict)
    return data


# --- FICC products ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["NOTE", "BOND"])
def test_fixed_coupon_notes_and_bonds_are_eligible(kind: str) -> None:
    assert_reasons(judge(security(kind)))


@pytest.mark.parametrize("kind", EXCLUDED)
def test_excluded_kinds(kind: str) -> None:
    assert_reasons(judge(security(kind)), Reason.PRODUCT_EXCLUDED)


def test_bill_within_a_year_fails_two_checks() -> None:
    bill = security("BILL", BUSINESS_DATE + dt.timedelta(days=91))
    assert_reasons(judge(bill), Reason.PRODUCT_EXCLUDED, Reason.MATURITY_WITHIN_ONE_YEAR)


def test_note_within_a_year() -> None:
    assert_reasons(judge(security("NOTE", dt.date(2027, 9, 12))), Reason.MATURITY_WITHIN_ONE_YEAR)


@pytest.mark.parametrize("days", [0, -1, -400])
def test_note_maturing_today_or_matured(days: int) -> None:
    note = security("NOTE", BUSINESS_DATE + dt.timedelta(days=days))
    assert_reasons(judge(note), Reason.MATURITY_WITHIN_ONE_YEAR)


def test_one_year_boundary_exactly() -> None:
    """More than one year is required: exactly one year is ineligible, one day more is fine."""
    one_year = dt.date(2027, 11, 24)
    assert_reasons(judge(security("NOTE", one_year)), Reason.MATURITY_WITHIN_ONE_YEAR)
    assert_reasons(
        judge(security("NOTE", one_year - dt.timedelta(days=1))), Reason.MATURITY_WITHIN_ONE_YEAR
    )
    assert_reasons(judge(security("NOTE", one_year + dt.timedelta(days=1))))


def test_boundary_moves_with_the_business_date() -> None:
    """Eligibility is per business date: a note drops out on the day it is a year from maturity."""
    note = security("NOTE", dt.date(2027, 11, 24))
    assert judge(note, business_date=dt.date(2026, 11, 23)).eligible
    assert not judge(note, business_date=dt.date(2026, 11, 24)).eligible


def test_one_year_boundary_from_a_leap_day() -> None:
    leap = dt.date(2028, 2, 29)
    assert not judge(security("NOTE", dt.date(2029, 2, 27)), business_date=leap).eligible
    assert judge(security("NOTE", dt.date(2029, 3, 1)), business_date=leap).eligible


def test_one_judge_for_a_book_keeps_each_maturity_on_its_own_side_of_the_horizon() -> None:
    """One EligibilityJudge for a whole book caches its product reasons by whether each FICC
    maturity falls within the horizon: every instrument still gets what a fresh judge gives it
    alone, in either order (the boundary day, a day beyond, far, matured; repos by collateral)."""
    one_year = dt.date(2027, 11, 24)
    maturities = [one_year, one_year + dt.timedelta(days=1), FAR, BUSINESS_DATE, one_year]
    book = [security("NOTE", day) for day in maturities]
    book += [repo("NOTE", day) for day in maturities]
    book += [security("BILL", dt.date(2027, 2, 1)), security("BOND", FAR), future(), option()]
    rulebook = default_rulebook(BUSINESS_DATE)
    alone = [judge(instrument, rulebook=rulebook) for instrument in book]
    assert any(e.eligible for e in alone) and not all(e.eligible for e in alone)
    for order in (book, book[::-1]):
        shared = eligibility_module.EligibilityJudge(rulebook, MEMBER, CUSTOMER, BUSINESS_DATE)
        judged = {id(instrument): shared(instrument) for instrument in order}
        assert [judged[id(instrument)] for instrument in book] == alone


# --- repo: judged on its collateral ----------------------------------------------------------


def test_repo_on_a_long_note_is_eligible_though_the_repo_is_short() -> None:
    assert_reasons(judge(repo("NOTE", FAR)))
    assert_reasons(judge(repo("BOND", dt.date(2051, 11, 15))))


def test_repo_on_a_note_within_a_year() -> None:
    assert_reasons(
        judge(repo("NOTE", BUSINESS_DATE + dt.timedelta(days=200))),
        Reason.MATURITY_WITHIN_ONE_YEAR,
    )


def test_repo_collateral_boundary() -> None:
    assert not judge(repo("NOTE", dt.date(2027, 11, 24))).eligible
    assert judge(repo("NOTE", dt.date(2027, 11, 25))).eligible


@pytest.mark.parametrize("kind", EXCLUDED)
def test_repo_on_excluded_collateral(kind: str) -> None:
    assert_reasons(judge(repo(kind, FAR)), Reason.PRODUCT_EXCLUDED)


def test_repo_on_a_bill() -> None:
    bill = repo("BILL", BUSINESS_DATE + dt.timedelta(days=28))
    assert_reasons(judge(bill), Reason.PRODUCT_EXCLUDED, Reason.MATURITY_WITHIN_ONE_YEAR)


def test_repo_on_repo_is_not_a_product() -> None:
    assert_reasons(judge(repo("REPO", FAR)), Reason.PRODUCT_NOT_ELIGIBLE)


def test_repo_not_judged_on_its_own_maturity_field() -> None:
    """A long repo on short collateral fails; a short repo on long collateral passes."""
    long_repo_short_collateral = Instrument(
        id="RP2",
        ccp=Ccp.FICC,
        kind=InstrumentKind.REPO,
        maturity=FAR,
        collateral_kind=InstrumentKind.NOTE,
        collateral_maturity=BUSINESS_DATE + dt.timedelta(days=100),
    )
    assert_reasons(judge(long_repo_short_collateral), Reason.MATURITY_WITHIN_ONE_YEAR)


# --- CME products ----------------------------------------------------------------------------


@pytest.mark.parametrize("contract", LISTED)
def test_listed_futures_are_eligible(contract: str) -> None:
    assert_reasons(judge(future(contract)))


@pytest.mark.parametrize("contract", ["ED", "ZN", "ty", "TYZ6", ""])
def test_unlisted_contract(contract: str) -> None:
    assert_reasons(judge(future(contract)), Reason.CONTRACT_NOT_ELIGIBLE)


@pytest.mark.parametrize("contract", ["TY", "US", "SR3"])
def test_options_are_never_eligible(contract: str) -> None:
    assert_reasons(judge(option(contract)), Reason.OPTION_NOT_ELIGIBLE)


def test_option_on_an_unlisted_contract_is_an_option_first() -> None:
    result = judge(option("ED"))
    assert not result.eligible
    assert Reason.OPTION_NOT_ELIGIBLE in result.reasons


def test_cme_products_have_no_maturity_rule() -> None:
    """The maturity check is a FICC rule: a future carrying a near maturity stays eligible."""
    near = Instrument(
        id="TUZ6",
        ccp=Ccp.CME,
        kind=InstrumentKind.FUTURE,
        contract="TU",
        maturity=BUSINESS_DATE + dt.timedelta(days=20),
    )
    assert_reasons(judge(near))


# --- the firm and the customer apply to every position ---------------------------------------

ALL_PRODUCTS = [
    security("NOTE"),
    security("BOND"),
    security("TIPS"),
    security("BILL", BUSINESS_DATE + dt.timedelta(days=30)),
    repo("NOTE"),
    future("TY"),
    future("ED"),
    option("TY"),
]


@pytest.mark.parametrize(
    "member",
    [
        ClearingMember("F", bd_fcm=False, cme_clearing_member=True, ficc_netting_member=True),
        ClearingMember("F", bd_fcm=True, cme_clearing_member=False, ficc_netting_member=True),
        ClearingMember("F", bd_fcm=True, cme_clearing_member=True, ficc_netting_member=False),
        ClearingMember("F", bd_fcm=False, cme_clearing_member=False, ficc_netting_member=False),
    ],
    ids=["not-bd-fcm", "not-cme-member", "not-ficc-member", "none"],
)
def test_clearing_member_reason_on_every_position(member: ClearingMember) -> None:
    for instrument in ALL_PRODUCTS:
        alone = judge(instrument)
        result = judge(instrument, member=member)
        assert_reasons(result, Reason.CLEARING_MEMBER_NOT_ELIGIBLE, *alone.reasons)


@pytest.mark.parametrize(
    "customer",
    [
        Customer("C", xm_enrolled=False, ficc_account_type="SPONSORED"),
        Customer("C", xm_enrolled=True, ficc_account_type="PROPRIETARY"),
        Customer("C", xm_enrolled=True, ficc_account_type=""),
        Customer("C", xm_enrolled=True, ficc_account_type="sponsored"),
    ],
    ids=["not-enrolled", "proprietary", "no-account-type", "lower-case"],
)
def test_customer_reason_on_every_position(customer: Customer) -> None:
    for instrument in ALL_PRODUCTS:
        alone = judge(instrument)
        result = judge(instrument, customer=customer)
        assert_reasons(result, Reason.CUSTOMER_NOT_ENROLLED, *alone.reasons)


@pytest.mark.parametrize("account_type", ["SPONSORED", "AGENT_CLEARING"])
def test_configured_account_types_qualify(account_type: str) -> None:
    customer = Customer("C", xm_enrolled=True, ficc_account_type=account_type)
    assert_reasons(judge(security("NOTE"), customer=customer))


def test_firm_customer_and_product_reasons_together() -> None:
    member = ClearingMember("F", bd_fcm=False, cme_clearing_member=True, ficc_netting_member=True)
    customer = Customer("C", xm_enrolled=False, ficc_account_type="SPONSORED")
    bill = security("BILL", BUSINESS_DATE + dt.timedelta(days=30))
    assert_reasons(
        judge(bill, member=member, customer=customer),
        Reason.CLEARING_MEMBER_NOT_ELIGIBLE,
        Reason.CUSTOMER_NOT_ENROLLED,
        Reason.PRODUCT_EXCLUDED,
        Reason.MATURITY_WITHIN_ONE_YEAR,
    )


# --- on whole books --------------------------------------------------------------------------


def test_case_08_reasons() -> None:
    book = parse_case(case_json("08-repo-and-short-maturities"))
    reasons = {
        position.instrument: set(result.reasons)
        for position, result in zip(book.positions, evaluate_eligibility(book), strict=True)
    }
    assert reasons == {
        "RP-91282CLH2": set(),
        "91282CAB1": {Reason.MATURITY_WITHIN_ONE_YEAR},
        "912803STR": {Reason.PRODUCT_EXCLUDED},
        "TYZ6": set(),
        "TUZ6": set(),
    }


def test_case_03_reasons() -> None:
    book = parse_case(case_json("03-mixed-ineligible-hedges"))
    reasons = {
        position.instrument: set(result.reasons)
        for position, result in zip(book.positions, evaluate_eligibility(book), strict=True)
    }
    assert reasons["912828TIP"] == {Reason.PRODUCT_EXCLUDED}
    assert reasons["912797BIL"] == {Reason.PRODUCT_EXCLUDED, Reason.MATURITY_WITHIN_ONE_YEAR}
    assert reasons["OTYZ6C"] == {Reason.OPTION_NOT_ELIGIBLE}
    assert reasons["91282CMA6"] == reasons["TYZ6"] == reasons["SR3Z6"] == set()


def test_case_04_firm_reason_on_every_position() -> None:
    book = parse_case(case_json("04-firm-not-eligible"))
    results = evaluate_eligibility(book)
    assert len(results) == len(book.positions)
    for result in results:
        assert result.reasons == (Reason.CLEARING_MEMBER_NOT_ELIGIBLE,)
        assert not result.eligible


# --- the rulebook is data --------------------------------------------------------------------


def test_bundled_rulebook_matches_the_documented_defaults() -> None:
    rulebook = default_rulebook(BUSINESS_DATE)
    assert rulebook.cme_eligible_contracts == frozenset(LISTED)
    assert rulebook.ficc_excluded_kinds == frozenset(EXCLUDED)
    assert rulebook.ficc_eligible_kinds == frozenset({"NOTE", "BOND"})
    assert rulebook.ficc_min_remaining_maturity_years == 1
    assert rulebook.effective_date <= BUSINESS_DATE


def test_removing_a_contract_changes_the_answer() -> None:
    data = rulebook_data()
    data["cme_eligible_contracts"] = [c for c in data["cme_eligible_contracts"] if c != "TY"]
    rulebook = Rulebook.from_dict(data)
    assert judge(future("TY")).eligible
    assert_reasons(judge(future("TY"), rulebook=rulebook), Reason.CONTRACT_NOT_ELIGIBLE)
    assert judge(future("US"), rulebook=rulebook).eligible

    book = parse_case(case_json("01-basis-trade-10y"))
    assert [e.eligible for e in evaluate_eligibility(book)] == [True, True]
    assert [e.eligible for e in evaluate_eligibility(book, rulebook)] == [True, False]
    assert build_problem(book, rulebook).eligible.tolist() == [True, False]


def test_adding_a_contract_and_a_kind_changes_the_answer() -> None:
    data = rulebook_data()
    data["cme_eligible_contracts"] = [*data["cme_eligible_contracts"], "ED"]
    data["ficc_eligible_kinds"] = [*data["ficc_eligible_kinds"], "TIPS"]
    data["ficc_excluded_kinds"] = [k for k in data["ficc_excluded_kinds"] if k != "TIPS"]
    rulebook = Rulebook.from_dict(data)
    assert_reasons(judge(future("ED"), rulebook=rulebook))
    assert_reasons(judge(security("TIPS"), rulebook=rulebook))
    assert_reasons(judge(security("STRIPS"), rulebook=rulebook), Reason.PRODUCT_EXCLUDED)


def test_kind_neither_eligible_nor_excluded_is_not_a_product() -> None:
    data = rulebook_data()
    data["ficc_excluded_kinds"] = [k for k in data["ficc_excluded_kinds"] if k != "FRN"]
    rulebook = Rulebook.from_dict(data)
    assert_reasons(judge(security("FRN"), rulebook=rulebook), Reason.PRODUCT_NOT_ELIGIBLE)


def test_longer_minimum_maturity() -> None:
    data = rulebook_data()
    data["ficc_min_remaining_maturity_years"] = 2
    rulebook = Rulebook.from_dict(data)
    eighteen_months = dt.date(2028, 5, 24)
    assert judge(security("NOTE", eighteen_months)).eligible
    assert_reasons(
        judge(security("NOTE", eighteen_months), rulebook=rulebook),
        Reason.MATURITY_WITHIN_ONE_YEAR,
    )
    assert judge(security("NOTE", dt.date(2028, 11, 25)), rulebook=rulebook).eligible


def test_firm_and_customer_requirements_are_configuration() -> None:
    data = rulebook_data()
    data["clearing_member"] = {**data["clearing_member"], "ficc_netting_member": False}
    data["customer_ficc_account_types"] = [*data["customer_ficc_account_types"], "OMNIBUS"]
    rulebook = Rulebook.from_dict(data)
    book = parse_case(case_json("04-firm-not-eligible"))
    assert not any(e.eligible for e in evaluate_eligibility(book))
    assert all(e.eligible for e in evaluate_eligibility(book, rulebook))
    omnibus = Customer("C", xm_enrolled=True, ficc_account_type="OMNIBUS")
    assert not judge(security("NOTE"), customer=omnibus).eligible
    assert judge(security("NOTE"), customer=omnibus, rulebook=rulebook).eligible
    # enrolment itself is not configuration
    unenrolled = Customer("C", xm_enrolled=False, ficc_account_type="OMNIBUS")
    assert_reasons(
        judge(security("NOTE"), customer=unenrolled, rulebook=rulebook),
        Reason.CUSTOMER_NOT_ENROLLED,
    )


def test_parse_case_validates_xm_quantities_against_the_given_rulebook() -> None:
    data = rulebook_data()
    data["cme_eligible_contracts"] = [c for c in data["cme_eligible_contracts"] if c != "TY"]
    rulebook = Rulebook.from_dict(data)
    case = case_json("01-basis-trade-10y")
    case["positions"][1]["xm_quantity"] = -4600
    parse_case(copy.deepcopy(case))
    with pytest.raises(CaseValidationError) as raised:
        parse_case(case, rulebook)
    assert raised.value.field == "positions[1].xm_quantity"
    assert Reason.CONTRACT_NOT_ELIGIBLE.value in str(raised.value)


def test_rulebook_file_on_disk(tmp_path: Path) -> None:
    data = rulebook_data()
    data["cme_eligible_kinds"] = ["FUTURE", "OPTION"]
    data["cme_option_kinds"] = []
    path = tmp_path / "rulebook.json"
    path.write_text(json.dumps(data))
    rulebook = load_rulebook(path)
    assert not judge(option("TY")).eligible
    assert_reasons(judge(option("TY"), rulebook=rulebook))


def test_rulebook_lists_must_be_lists() -> None:
    data = rulebook_data()
    data["cme_eligible_contracts"] = "TY"
    with pytest.raises(CaseValidationError) as raised:
        Rulebook.from_dict(data)
    assert raised.value.field == "rulebook.cme_eligible_contracts"


def test_default_rulebook_by_effective_date(monkeypatch: pytest.MonkeyPatch) -> None:
    """A later rulebook takes over on its effective date; earlier dates keep the old rules."""
    base = rulebook_data()
    later = copy.deepcopy(base)
    later["name"] = "later: TY delisted"
    later["effective_date"] = "2027-01-04"
    later["cme_eligible_contracts"] = [c for c in base["cme_eligible_contracts"] if c != "TY"]
    books = [Rulebook.from_dict(base), Rulebook.from_dict(later)]
    monkeypatch.setattr(eligibility_module, "_bundled_rulebooks", lambda: books)

    assert default_rulebook(dt.date(2027, 1, 1)).name == base["name"]
    assert default_rulebook(dt.date(2027, 1, 4)).name == later["name"]
    assert default_rulebook(None).name == later["name"]

    case = case_json("01-basis-trade-10y")
    before = parse_case(case)
    case["business_date"] = "2027-01-05"
    after = parse_case(case)
    assert [e.eligible for e in evaluate_eligibility(before)] == [True, True]
    assert [e.eligible for e in evaluate_eligibility(after)] == [True, False]
    with pytest.raises(CaseValidationError) as raised:
        default_rulebook(dt.date(2026, 4, 29))
    assert raised.value.field == "business_date"


def test_default_rulebook_effective_date_is_respected() -> None:
    bundled = default_rulebook(None)
    assert default_rulebook(bundled.effective_date) == bundled
    with pytest.raises(CaseValidationError):
        default_rulebook(bundled.effective_date - dt.timedelta(days=1 + 365 * 50))


def _every_product() -> list[Instrument]:
    """Securities and repos of every kind around the one-year horizon, futures and options of
    listed and unlisted contracts: each product twice (a second instrument of it is judged
    from the judge's memory)."""
    horizon = BUSINESS_DATE.replace(year=BUSINESS_DATE.year + 1)
    dates = (horizon - dt.timedelta(days=1), horizon, horizon + dt.timedelta(days=1), FAR)
    ficc = [
        k.value for k in InstrumentKind if k not in (InstrumentKind.FUTURE, InstrumentKind.OPTION)
    ]
    products = [security(kind, day) for kind in ficc if kind != "REPO" for day in dates]
    products += [repo(kind, day) for kind in ficc if kind != "REPO" for day in dates]
    products += [future(c) for c in (*LISTED, "XX")] + [option(c) for c in ("TY", "XX")]
    return products + products


@pytest.mark.parametrize(
    ("member", "customer"),
    [
        (MEMBER, CUSTOMER),
        (ClearingMember("FCM-B", False, True, True), CUSTOMER),
        (MEMBER, Customer("C", xm_enrolled=False, ficc_account_type="SPONSORED")),
        (MEMBER, Customer("C", xm_enrolled=True, ficc_account_type="NONE")),
    ],
)
def test_the_books_judge_answers_as_instrument_eligibility(
    member: ClearingMember, customer: Customer
) -> None:
    """One EligibilityJudge kept over every product (as parse_case and evaluate_eligibility
    keep one per book, reusing each product's reasons) gives the answer a fresh judgement of
    each instrument gives (instrument_eligibility), in the same order of reasons: its product
    key misses nothing the reasons depend on."""
    rulebook = default_rulebook(BUSINESS_DATE)
    judged = eligibility_module.EligibilityJudge(rulebook, member, customer, BUSINESS_DATE)
    for instrument in _every_product():
        assert judged(instrument) == instrument_eligibility(
            rulebook, member, customer, instrument, BUSINESS_DATE
        )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["clearing_member"].__setitem__("bd_fcm", "false"), "clearing_member.bd_fcm"),
        (lambda d: d["clearing_member"].__setitem__("bd_fcm", 0), "clearing_member.bd_fcm"),
        (lambda d: d.__setitem__("ficc_min_remaining_maturity_years", 1.5), "ficc_min_remaining"),
        (lambda d: d.__setitem__("ficc_min_remaining_maturity_years", True), "ficc_min_remaining"),
        (lambda d: d.__setitem__("cme_eligible_contracts", ["TY", 5]), "cme_eligible_contracts"),
        (lambda d: d.__setitem__("cme_eligble_kinds", ["FUTURE"]), "cme_eligble_kinds"),
        (lambda d: d.pop("cme_option_kinds"), "cme_option_kinds"),
        (lambda d: d["clearing_member"].__setitem__("bd_fmc", True), "clearing_member.bd_fmc"),
        (lambda d: d.__setitem__("effective_date", "2026-02-30"), "effective_date"),
    ],
    ids=[
        "bool as text",
        "bool as 0",
        "fractional years",
        "years as bool",
        "a number as a name",
        "misspelt key",
        "missing key",
        "misspelt member key",
        "no such date",
    ],
)
def test_a_rulebook_is_read_strictly(
    change: Callable[[dict[str, Any]], object], field: str
) -> None:
    """ "false" for bd_fcm was read as true, a misspelt key ignored or a KeyError, a number
    taken as a contract name: each now refused naming the key."""
    data = rulebook_data()
    change(data)
    with pytest.raises(CaseValidationError) as refused:
        Rulebook.from_dict(data)
    assert refused.value.field.startswith(f"rulebook.{field}"), refused.value


def test_a_rulebook_file_naming_a_key_twice_is_refused(tmp_path: Path) -> None:
    text = json.dumps(rulebook_data())
    path = tmp_path / "rulebook.json"
    path.write_text(text.replace('"bd_fcm": true', '"bd_fcm": true, "bd_fcm": false', 1))
    with pytest.raises(CaseValidationError, match="duplicate key 'bd_fcm'"):
        load_rulebook(path)
    path.write_text(text)
    assert load_rulebook(path) == Rulebook.from_dict(rulebook_data())
