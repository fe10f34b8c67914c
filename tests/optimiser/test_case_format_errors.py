"""Bad input to the case format v1: one test per class of error.

Each test starts from a real worked case (01 or 07 of ../shared/cases), corrupts one thing
and checks that :func:`parse_case` raises :class:`CaseValidationError` naming the offending
field path, and that the message carries that path. ``parse_case`` returns nothing on error,
so nothing can be half-loaded.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CASES_DIR
from xmargin.optimiser import CaseValidationError, Reason, load_case, parse_case

CASE_01 = "01-basis-trade-10y"
CASE_07 = "07-cme-stress-addons"
DELETE = object()
"""Sentinel value: remove the key (or list item) at the path."""

Mutation = Callable[[dict[str, Any]], None]

_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@pytest.fixture(scope="module")
def originals() -> dict[str, dict[str, Any]]:
    return {
        name: json.loads((CASES_DIR / f"{name}.json").read_text()) for name in (CASE_01, CASE_07)
    }


def _case(originals: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    return copy.deepcopy(originals[name])


def _tokens(path: str) -> list[str | int]:
    tokens: list[str | int] = []
    for key, index in _TOKEN.findall(path):
        tokens.append(int(index) if index else key)
    return tokens


def _parent(data: Any, path: str) -> tuple[Any, str | int]:
    tokens = _tokens(path)
    node = data
    for token in tokens[:-1]:
        node = node[token]
    return node, tokens[-1]


def get(data: dict[str, Any], path: str) -> Any:
    node, last = _parent(data, path)
    return node[last]


def put(data: dict[str, Any], path: str, value: Any) -> None:
    """Set (or, with ``DELETE``, remove) the item at a field path like ``a.b[1][2]``."""
    node, last = _parent(data, path)
    if value is DELETE:
        del node[last]
    else:
        node[last] = value


def rejected(data: dict[str, Any], field: str) -> CaseValidationError:
    """parse_case must raise, name ``field`` and carry it in the message."""
    with pytest.raises(CaseValidationError) as raised:
        parse_case(data)
    error = raised.value
    assert error.field == field, f"expected field {field!r}, got {error.field!r}: {error}"
    assert field in str(error)
    assert error.reason and error.reason in str(error)
    assert isinstance(error, ValueError)
    return error


# --- the unmodified cases are valid, so each corruption below is the only fault ---------------


@pytest.mark.parametrize("name", [CASE_01, CASE_07])
def test_base_case_is_valid(originals: dict[str, dict[str, Any]], name: str) -> None:
    book = parse_case(_case(originals, name))
    assert len(book.positions) == len(originals[name]["positions"])


def test_parse_case_does_not_modify_its_input(originals: dict[str, dict[str, Any]]) -> None:
    data = _case(originals, CASE_01)
    put(data, "positions[1].xm_quantity", 100)
    before = copy.deepcopy(data)
    rejected(data, "positions[1].xm_quantity")
    assert data == before


# --- references between sections ------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1])
def test_unknown_instrument_in_position(originals: dict[str, dict[str, Any]], index: int) -> None:
    data = _case(originals, CASE_01)
    put(data, f"positions[{index}].instrument", "912828XX0")
    error = rejected(data, f"positions[{index}].instrument")
    assert error.value == "912828XX0"


@pytest.mark.parametrize(("name", "copy_from", "copy_to"), [(CASE_01, 0, 1), (CASE_07, 1, 2)])
def test_duplicate_instrument_ids(
    originals: dict[str, dict[str, Any]], name: str, copy_from: int, copy_to: int
) -> None:
    data = _case(originals, name)
    duplicate = get(data, f"instruments[{copy_from}].id")
    put(data, f"instruments[{copy_to}].id", duplicate)
    error = rejected(data, f"instruments[{copy_to}].id")
    assert error.value == duplicate


@pytest.mark.parametrize("quantity", [None, 1_000_000])
def test_duplicate_position(originals: dict[str, dict[str, Any]], quantity: int | None) -> None:
    data = _case(originals, CASE_01)
    extra = copy.deepcopy(data["positions"][0])
    if quantity is not None:
        extra.update(quantity=quantity, xm_quantity=0)
    data["positions"].append(extra)
    rejected(data, "positions[2].instrument")


# --- shapes ----------------------------------------------------------------------------------


def _shorter(path: str) -> Mutation:
    return lambda data: put(data, path, get(data, path)[:-1])


def _longer(path: str) -> Mutation:
    return lambda data: put(data, path, [*get(data, path), 0.0])


@pytest.mark.parametrize(
    ("name", "mutation", "field"),
    [
        (CASE_01, _shorter("instruments[0].sensitivities"), "instruments[0].sensitivities"),
        (CASE_01, _longer("instruments[1].sensitivities"), "instruments[1].sensitivities"),
        (
            CASE_01,
            lambda d: put(d, "instruments[0].sensitivities", []),
            "instruments[0].sensitivities",
        ),
        (CASE_07, _shorter("instruments[3].pnl"), "instruments[3].pnl"),
        (CASE_07, _longer("instruments[3].pnl"), "instruments[3].pnl"),
        (CASE_01, _shorter("scenarios.shocks[3]"), "scenarios.shocks[3]"),
        (CASE_01, _longer("scenarios.shocks[999]"), "scenarios.shocks[999]"),
        (CASE_01, _shorter("scenarios.shocks"), "scenarios.shocks"),
        (CASE_01, lambda d: d["scenarios"]["ids"].append("2026-11-25"), "scenarios.shocks"),
        (CASE_07, _shorter("models.CME.addon_rate"), "models.CME.addon_rate"),
        (CASE_07, _longer("models.FICC.addon_rate"), "models.FICC.addon_rate"),
        (CASE_07, _shorter("models.FICC.addon_threshold"), "models.FICC.addon_threshold"),
        (
            CASE_07,
            lambda d: put(d, "models.CME.addon_threshold", DELETE),
            "models.CME.addon_threshold",
        ),
    ],
    ids=[
        "sensitivities-short",
        "sensitivities-long",
        "sensitivities-empty",
        "pnl-short",
        "pnl-long",
        "shocks-row-short",
        "shocks-row-long",
        "shocks-missing-row",
        "ids-without-shocks",
        "addon-rate-short",
        "addon-rate-long",
        "addon-threshold-short",
        "addon-rate-without-threshold",
    ],
)
def test_wrong_vector_length(
    originals: dict[str, dict[str, Any]], name: str, mutation: Mutation, field: str
) -> None:
    data = _case(originals, name)
    mutation(data)
    rejected(data, field)


# --- numbers ---------------------------------------------------------------------------------

NUMBER_FIELDS = [
    (CASE_01, "instruments[0].sensitivities[2]"),
    (CASE_01, "scenarios.shocks[3][2]"),
    (CASE_01, "positions[0].quantity"),
    (CASE_01, "positions[1].xm_quantity"),
    (CASE_01, "positions[0].lot"),
    (CASE_01, "models.FICC.confidence"),
    (CASE_01, "models.CME.horizon_days"),
    (CASE_01, "program.savings_cap"),
    (CASE_01, "options.transfer_cost"),
    (CASE_07, "instruments[3].pnl[5]"),
    (CASE_07, "models.CME.addon_rate[4]"),
    (CASE_07, "models.FICC.addon_threshold[9]"),
    (CASE_07, "models.CME.stress_weight"),
]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("name", "field"), NUMBER_FIELDS, ids=[f for _, f in NUMBER_FIELDS])
def test_nan_and_infinite_numbers(
    originals: dict[str, dict[str, Any]], name: str, field: str, value: float
) -> None:
    data = _case(originals, name)
    put(data, field, value)
    rejected(data, field)


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_nan_from_a_json_file(
    originals: dict[str, dict[str, Any]], tmp_path: Path, value: float
) -> None:
    """Python's json reads the non-standard NaN / Infinity literals; the loader must refuse them."""
    data = _case(originals, CASE_01)
    put(data, "scenarios.shocks[10][4]", value)
    path = tmp_path / "case.json"
    path.write_text(json.dumps(data))
    assert "NaN" in path.read_text() or "Infinity" in path.read_text()
    with pytest.raises(CaseValidationError) as raised:
        load_case(path)
    assert raised.value.field == "scenarios.shocks[10][4]"


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        (CASE_01, "scenarios.shocks[3][2]", "0.5"),
        (CASE_01, "scenarios.shocks[3][2]", True),
        (CASE_01, "scenarios.shocks[3][2]", None),
        (CASE_01, "instruments[0].sensitivities[2]", "0.5"),
        (CASE_01, "instruments[1].sensitivities[0]", False),
        (CASE_01, "positions[0].quantity", "500000000"),
        (CASE_07, "instruments[3].pnl[0]", None),
    ],
)
def test_numbers_of_the_wrong_type(
    originals: dict[str, dict[str, Any]], name: str, field: str, value: object
) -> None:
    data = _case(originals, name)
    put(data, field, value)
    rejected(data, field)


# --- model parameters ------------------------------------------------------------------------


@pytest.mark.parametrize("excess", [1, 1000])
def test_lookback_longer_than_the_scenarios(
    originals: dict[str, dict[str, Any]], excess: int
) -> None:
    data = _case(originals, CASE_01)
    n_scenarios = len(data["scenarios"]["ids"])
    put(data, "models.CME.lookback", n_scenarios)
    assert parse_case(data).models["CME"].lookback == n_scenarios  # the whole history is fine
    put(data, "models.CME.lookback", n_scenarios + excess)
    error = rejected(data, "models.CME.lookback")
    assert error.value == n_scenarios + excess


@pytest.mark.parametrize("value", [0, -5, 250.5, True, "750"])
def test_lookback_not_a_positive_whole_number(
    originals: dict[str, dict[str, Any]], value: object
) -> None:
    data = _case(originals, CASE_01)
    put(data, "models.FICC.lookback", value)
    rejected(data, "models.FICC.lookback")


@pytest.mark.parametrize("ccp", ["FICC", "CME"])
@pytest.mark.parametrize("value", [0, 0.0, 1, 1.0, 1.5, -0.01])
def test_confidence_outside_the_open_unit_interval(
    originals: dict[str, dict[str, Any]], ccp: str, value: float
) -> None:
    data = _case(originals, CASE_07)
    put(data, f"models.{ccp}.confidence", value)
    error = rejected(data, f"models.{ccp}.confidence")
    assert error.value == value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("models.CME.horizon_days", 0),
        ("models.FICC.horizon_days", -2),
        ("models.CME.stress_weight", 1.5),
        ("models.CME.stress_weight", -0.25),
        ("models.CME.addon_rate[2]", -1.0),
        ("models.FICC.addon_threshold[0]", -1.0),
        ("program.savings_cap", 1.2),
        ("program.savings_cap", -0.1),
        ("positions[0].lot", 0),
        ("positions[1].lot", -1),
        ("options.transfer_cost", -1.0),
    ],
)
def test_numbers_out_of_range(
    originals: dict[str, dict[str, Any]], field: str, value: float
) -> None:
    data = _case(originals, CASE_07)
    put(data, field, value)
    rejected(data, field)


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        (CASE_07, "models.CME.stress_ids[1]", "1999-01-04"),
        (CASE_07, "models.CME.stress_ids[2]", "2023-03-11"),  # a Saturday: not a scenario
        (CASE_01, "models.FICC.stress_ids", ["2026-11-25"]),  # the day after the business date
    ],
)
def test_unknown_stress_ids(
    originals: dict[str, dict[str, Any]], name: str, field: str, value: object
) -> None:
    data = _case(originals, name)
    if isinstance(value, list):
        put(data, "models.FICC.stress_weight", 0.5)
        expected_field = f"{field}[0]"
    else:
        expected_field = field
    put(data, field, value)
    error = rejected(data, expected_field)
    assert error.value in (value if isinstance(value, list) else [value])


def test_stress_weight_needs_stress_ids(originals: dict[str, dict[str, Any]]) -> None:
    data = _case(originals, CASE_07)
    put(data, "models.CME.stress_ids", [])
    rejected(data, "models.CME.stress_weight")


def test_duplicate_scenario_ids_and_factors(originals: dict[str, dict[str, Any]]) -> None:
    data = _case(originals, CASE_01)
    put(data, "scenarios.ids[5]", get(data, "scenarios.ids[4]"))
    rejected(data, "scenarios.ids[5]")
    data = _case(originals, CASE_01)
    put(data, "factors[3]", get(data, "factors[2]"))
    rejected(data, "factors[3]")


# --- XM quantities ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mutation", "field", "reason"),
    [
        (
            CASE_07,
            lambda d: put(d, "positions[3].xm_quantity", -200),
            "positions[3].xm_quantity",
            Reason.OPTION_NOT_ELIGIBLE,
        ),
        (
            CASE_01,
            lambda d: put(d, "clearing_member.ficc_netting_member", False),
            "positions[0].xm_quantity",
            Reason.CLEARING_MEMBER_NOT_ELIGIBLE,
        ),
        (
            CASE_01,
            lambda d: put(d, "customer.xm_enrolled", False),
            "positions[0].xm_quantity",
            Reason.CUSTOMER_NOT_ENROLLED,
        ),
        (
            CASE_01,
            lambda d: put(d, "instruments[0].kind", "TIPS"),
            "positions[0].xm_quantity",
            Reason.PRODUCT_EXCLUDED,
        ),
        (
            CASE_01,
            lambda d: put(d, "instruments[0].maturity", "2027-05-15"),
            "positions[0].xm_quantity",
            Reason.MATURITY_WITHIN_ONE_YEAR,
        ),
        (
            CASE_07,
            lambda d: (
                put(d, "instruments[1].contract", "ED"),
                put(d, "positions[1].xm_quantity", -100),
            ),
            "positions[1].xm_quantity",
            Reason.CONTRACT_NOT_ELIGIBLE,
        ),
    ],
    ids=["option", "firm", "customer", "excluded-kind", "short-maturity", "unlisted-contract"],
)
def test_xm_quantity_on_an_ineligible_position(
    originals: dict[str, dict[str, Any]],
    name: str,
    mutation: Mutation,
    field: str,
    reason: Reason,
) -> None:
    data = _case(originals, name)
    mutation(data)
    error = rejected(data, field)
    assert reason.value in str(error)
    # the same corruption with no XM quantity on that position is a valid case
    put(data, field, 0)
    parse_case(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("positions[0].xm_quantity", 500_000_001),
        ("positions[0].xm_quantity", 1e12),
        ("positions[1].xm_quantity", -4601),
    ],
)
def test_xm_quantity_beyond_the_held_quantity(
    originals: dict[str, dict[str, Any]], field: str, value: float
) -> None:
    data = _case(originals, CASE_01)
    put(data, field, value)
    error = rejected(data, field)
    assert error.value == value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("positions[0].xm_quantity", -1_000_000),
        ("positions[0].xm_quantity", -500_000_000),
        ("positions[1].xm_quantity", 100),
        ("positions[1].xm_quantity", 4600),
    ],
)
def test_xm_quantity_of_the_wrong_sign(
    originals: dict[str, dict[str, Any]], field: str, value: float
) -> None:
    data = _case(originals, CASE_01)
    put(data, field, value)
    error = rejected(data, field)
    assert error.value == value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("positions[1].quantity", -4600.5),
        ("positions[1].xm_quantity", -0.25),
        ("positions[1].lot", 0.5),
    ],
)
def test_futures_are_whole_contracts(
    originals: dict[str, dict[str, Any]], field: str, value: float
) -> None:
    """domain.md: futures trade in whole contracts. A holding of -4,600.5 contracts was taken,
    and its whole-holding transfer booked 4,600.5 contracts in the CSV and FIXML."""
    data = _case(originals, CASE_01)
    put(data, field, value)
    error = rejected(data, field)
    assert error.value == value
    assert "whole number of contracts" in error.reason


def test_xm_quantity_limits_are_inclusive(originals: dict[str, dict[str, Any]]) -> None:
    """The whole position, and none of it, are both allowed."""
    data = _case(originals, CASE_01)
    put(data, "positions[1].xm_quantity", -4600)
    put(data, "positions[0].xm_quantity", 0)
    book = parse_case(data)
    assert [p.xm_quantity for p in book.positions] == [0.0, -4600.0]


# --- enumerations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("instruments[0].kind", "CDS"),
        ("instruments[0].kind", "note"),
        ("instruments[0].kind", "FUTURE"),  # a CME kind at FICC
        ("instruments[1].kind", "NOTE"),  # a FICC kind at CME
        ("instruments[1].ccp", "LCH"),
        ("instruments[0].ccp", "ficc"),
        ("models.FICC.measure", "CVaR"),
        ("cycle", "NIGHT"),
        ("options.mode", "CME_FIXED"),
    ],
)
def test_unknown_kind_or_ccp(originals: dict[str, dict[str, Any]], field: str, value: str) -> None:
    data = _case(originals, CASE_01)
    put(data, field, value)
    error = rejected(data, field)
    assert error.value == value


def test_wrong_format_tag(originals: dict[str, dict[str, Any]]) -> None:
    data = _case(originals, CASE_01)
    put(data, "format", "xmargin-case/2")
    rejected(data, "format")


# --- missing fields --------------------------------------------------------------------------

REQUIRED_FIELDS = [
    "business_date",
    "clearing_member",
    "clearing_member.id",
    "customer",
    "customer.id",
    "factors",
    "scenarios",
    "scenarios.ids",
    "scenarios.shocks",
    "instruments",
    "instruments[0].id",
    "instruments[0].ccp",
    "instruments[0].kind",
    "instruments[0].maturity",
    "instruments[0].sensitivities",
    "instruments[1].contract",
    "positions",
    "positions[0].instrument",
    "positions[1].quantity",
    "models",
    "models.FICC",
    "models.CME",
    "models.FICC.confidence",
    "models.CME.horizon_days",
]


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_missing_required_field(originals: dict[str, dict[str, Any]], field: str) -> None:
    data = _case(originals, CASE_01)
    put(data, field, DELETE)
    rejected(data, field)


def test_missing_repo_collateral(originals: dict[str, dict[str, Any]]) -> None:
    data = _case(originals, CASE_01)
    put(data, "instruments[0].kind", "REPO")
    put(data, "instruments[0].collateral_kind", "NOTE")
    rejected(data, "instruments[0].collateral_maturity")
    put(data, "instruments[0].collateral_maturity", "2034-04-18")
    put(data, "instruments[0].collateral_kind", DELETE)
    rejected(data, "instruments[0].collateral_kind")


def test_sensitivities_and_pnl_together(originals: dict[str, dict[str, Any]]) -> None:
    data = _case(originals, CASE_07)
    put(data, "instruments[3].sensitivities", [0.0] * len(data["factors"]))
    rejected(data, "instruments[3].sensitivities")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("clearing_member", ["FCM-A"]),
        ("positions", {"instrument": "TYZ6"}),
        ("positions[1]", "TYZ6"),
        ("scenarios.ids", "2026-11-24"),
        ("models.CME", 0.99),
        ("positions[1].pinned", "yes"),
        ("clearing_member.bd_fcm", 1),
        ("instruments[1].contract", ""),
    ],
)
def test_wrong_structure(originals: dict[str, dict[str, Any]], field: str, value: object) -> None:
    data = _case(originals, CASE_01)
    put(data, field, value)
    rejected(data, field)


def test_case_must_be_an_object() -> None:
    for value in ([], "case", None):
        with pytest.raises(CaseValidationError) as raised:
            parse_case(value)
        assert raised.value.field == "<case>"


def test_file_that_is_not_json(tmp_path: Path) -> None:
    """The error names the whole path, however long (a value echoed from the input is cut to
    80 characters; the path is the user's own)."""
    folder = tmp_path / ("a-long-folder-name-" * 6)
    folder.mkdir()
    path = folder / "broken.json"
    path.write_text('{"format": "xmargin-case/1", ')
    with pytest.raises(CaseValidationError) as raised:
        load_case(path)
    assert raised.value.field == "<file>"
    assert str(path) in str(raised.value)


# --- dates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("business_date", "2026-13-01"),
        ("business_date", "2026-02-30"),
        ("business_date", "24/11/2026"),
        ("business_date", "tomorrow"),
        ("business_date", ""),
        ("business_date", 20261124),
        ("instruments[0].maturity", "2034-04-31"),
        ("instruments[0].maturity", "2034/04/18"),
        ("instruments[0].maturity", None),
    ],
)
def test_bad_date(originals: dict[str, dict[str, Any]], field: str, value: object) -> None:
    data = _case(originals, CASE_01)
    put(data, field, value)
    error = rejected(data, field)
    assert error.value == value


def test_business_date_before_every_rulebook(originals: dict[str, dict[str, Any]]) -> None:
    """No bundled rulebook is in effect in 2020: the date is rejected, not silently judged."""
    data = _case(originals, CASE_01)
    put(data, "business_date", dt.date(2020, 1, 2).isoformat())
    rejected(data, "business_date")


@pytest.mark.parametrize("ccp", ["FICC", "CME"])
@pytest.mark.parametrize("value", [1e-300, 7.7e-115, 1 - 1e-16])
def test_confidence_whose_tail_is_empty_or_everything(
    originals: dict[str, dict[str, Any]], ccp: str, value: float
) -> None:
    """Inside (0, 1) but so close to an end that (1 - confidence) x lookback rounds to the
    whole window or to nothing: no ES or VaR is defined, so the case is refused."""
    data = _case(originals, CASE_01)
    put(data, f"models.{ccp}.confidence", value)
    error = rejected(data, f"models.{ccp}.confidence")
    assert "tail" in error.reason


def _load_with_the_server(path: Path) -> Any:
    from xmargin.server import Limits
    from xmargin.server.app import load_scenario_file

    return load_scenario_file(path, Limits())


def _load_with_the_client(path: Path) -> Any:
    from xmargin.clients.convert import load_case_dict

    return load_case_dict(path)


@pytest.mark.parametrize(
    "reader",
    [load_case, _load_with_the_client, _load_with_the_server],
    ids=["load_case", "client load_case_dict", "server --scenario-set"],
)
def test_a_file_naming_a_key_twice_is_refused_by_every_reader(
    tmp_path: Path, reader: Callable[[Path], Any]
) -> None:
    """``{"factors": [...], ..., "factors": [...]}``: plain ``json.loads`` keeps the second
    without a word; every reader of a case or scenario file refuses it, naming the key."""
    text = (CASES_DIR / f"{CASE_01}.json").read_text()
    at = text.index('"factors":')
    path = tmp_path / "twice.json"
    path.write_text(text[:at] + '"factors": ["ONLY"], ' + text[at:])
    with pytest.raises(ValueError, match="duplicate key 'factors'"):
        reader(path)
