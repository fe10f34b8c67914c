"""A case that passes the schema is read in columns (``schema.body_in_columns``: each
instrument and position field checked a whole column at a time, no model per row); one that
fails is validated whole. Either way the Book, and every violation, must be what validating
the whole document with a model per row gives."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import CASE_FILES
from xmargin.optimiser import CaseValidationError, case_format
from xmargin.optimiser.case_format import book_to_dict, parse_case
from xmargin.schema import CaseBody, CaseV1, body_in_columns, check


@pytest.fixture(scope="module")
def cases_by_name() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in CASE_FILES}


def _whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read every case with a model per row (the columns never tried)."""
    monkeypatch.setattr(case_format, "body_in_columns", lambda model, data: None)


def _outcome(case: dict[str, Any]) -> Any:
    try:
        return json.dumps(book_to_dict(parse_case(copy.deepcopy(case))), sort_keys=True)
    except CaseValidationError as error:
        return [(v.path, v.value, v.message) for v in error.violations]


def _both(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    in_columns = _outcome(case)
    with monkeypatch.context() as patch:
        _whole(patch)
        whole = _outcome(case)
    return in_columns, whole


def test_a_case_gives_the_book_of_the_whole_validation(
    case_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert body_in_columns(CaseV1, case_data) is not None  # read in columns
    in_columns, whole = _both(case_data, monkeypatch)
    assert isinstance(whole, str)
    assert in_columns == whole


def _position(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda case: case["positions"][0].__setitem__(key, value)


def _instrument(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda case: case["instruments"][1].__setitem__(key, value)


CHANGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "a whole-number quantity (read as a float)": _position("quantity", 3),
    "an explicit lot of None": _position("lot", None),
    "a lot as a string": _position("lot", "1"),
    "an unknown position key": _position("lott", 1.0),
    "a position without its quantity": lambda case: case["positions"][0].pop("quantity"),
    "a position that is not an object": lambda case: case["positions"].__setitem__(0, [1]),
    "positions as a tuple": lambda case: case.__setitem__("positions", tuple(case["positions"])),
    "an explicit contract of None": _instrument("contract", None),
    "a coupon above 100": _instrument("coupon", 101.0),
    "a bad maturity": _instrument("maturity", "2031-02-29"),
    "a pnl value out of range": _instrument("pnl", [1e9]),
    "an unknown instrument key": _instrument("cusip", "X"),
    "a bad business date and a bad quantity": lambda case: (
        case.__setitem__("business_date", "2026-02-30"),
        case["positions"][1].__setitem__("quantity", float("nan")),
    ),
    "an unknown instrument id": _position("instrument", "nowhere"),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_a_changed_case_is_read_as_the_whole_validation_reads_it(
    cases_by_name: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = copy.deepcopy(cases_by_name["03-mixed-ineligible-hedges"])
    CHANGES[name](case)
    in_columns, whole = _both(case, monkeypatch)
    assert in_columns == whole


@pytest.mark.parametrize("name", list(CHANGES))
def test_check_finds_what_the_model_finds(
    cases_by_name: dict[str, dict[str, Any]], name: str
) -> None:
    case = copy.deepcopy(cases_by_name["03-mixed-ineligible-hedges"])
    CHANGES[name](case)
    body = {k: v for k, v in case.items() if k not in ("factors", "scenarios")}
    for model, data in ((CaseV1, case), (CaseBody, body)):
        try:
            model.model_validate(data)
            expected: list[Any] = []
        except ValueError:
            expected = ["refused"]
        found = check(model, data)
        assert bool(found) == bool(expected)
        if found:  # the violations are the whole validation's (the columns only say yes)
            assert body_in_columns(model, data) is None
