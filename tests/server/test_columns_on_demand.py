"""An account sent as columns is read straight into its Book (``parse_columns``: each column
checked against its schema field, rows as named tuples), the rows made only for a case that
fails the schema. Either way the Book and every refusal must be those of the path that makes
the rows first (``rows_on_demand=False``): the same violations, in the same order, word for
word."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from tests.server.harness import optimise_request
from xmargin.clients.v1 import book_pb2, common_pb2, service_pb2
from xmargin.optimiser.case_format import book_to_dict, parse_case, parse_columns
from xmargin.schema import validated_columns
from xmargin.schema.case_v1 import Instrument, Position
from xmargin.server.convert import (
    CaseDict,
    FieldPaths,
    Limits,
    RequestError,
    book_case,
    parse,
)
from xmargin.server.service import SolverPool, XmarginServicer


def _read(request: service_pb2.OptimiseRequest, rows_on_demand: bool) -> tuple[CaseDict, Any]:
    """The request's case (numpy vectors, as the server reads it) and its Book, or the
    violations it is refused with."""
    scenarios = XmarginServicer(SolverPool(1, 1))._scenarios(request)
    paths = FieldPaths()
    case = book_case(
        request.run,
        request.account,
        scenarios,
        request.models,
        request.program,
        request.options,
        paths,
        Limits(),
        numpy_vectors=True,
        columns=request.account_columns,
        rows_on_demand=rows_on_demand,
    )
    try:
        return case, parse(case, paths, parse_case)
    except RequestError as error:
        return case, error.violations


def _book_json(book: Any) -> str:
    return json.dumps(book_to_dict(book), sort_keys=True)


def test_columns_give_the_book_of_the_rows(case_data: dict[str, Any]) -> None:
    request = optimise_request(case_data, columns=True)
    case, book = _read(request, rows_on_demand=True)
    assert case.columns is not None and case["instruments"] == [] and case["positions"] == []
    assert parse_columns(case, *case.columns, case.vectors or {}) is not None  # no rows made
    _, from_rows = _read(request, rows_on_demand=False)
    assert not isinstance(book, list) and not isinstance(from_rows, list)
    assert _book_json(book) == _book_json(from_rows)
    assert book.positions == from_rows.positions


def _set(column: str, index: int, value: Any) -> Callable[[book_pb2.AccountColumns], None]:
    """Set entry ``index`` of ``column``; an empty column (all defaults) filled first."""

    def change(columns: book_pb2.AccountColumns) -> None:
        entries = getattr(columns, column)
        if not entries and column in ("quantity", "xm_quantity"):
            entries.extend([0.0] * len(columns.position_instrument))
        entries[index] = value

    return change


def _flagged(flag: str, column: str, index: int, value: float) -> Any:
    def change(columns: book_pb2.AccountColumns) -> None:
        count = len(columns.position_instrument if column == "lot" else columns.instrument_id)
        if not getattr(columns, flag):
            getattr(columns, flag).extend([False] * count)
            getattr(columns, column).extend([1.0 if column == "lot" else 0.0] * count)
        getattr(columns, flag)[index] = True
        getattr(columns, column)[index] = value

    return change


BREAKS: dict[str, Callable[[book_pb2.AccountColumns], None]] = {
    "quantity NaN": _set("quantity", 0, math.nan),
    "quantity too large": _set("quantity", 1, 2e11),
    "xm_quantity infinite": _set("xm_quantity", 0, -math.inf),
    "lot of 0": _flagged("has_lot", "lot", 1, 0.0),
    "lot too large": _flagged("has_lot", "lot", 0, 1e12),
    "coupon above 100": _flagged("has_coupon", "coupon", 0, 100.5),
    "coupon NaN": _flagged("has_coupon", "coupon", 1, math.nan),
    "id too long": _set("instrument_id", 0, "X" * 65),
    "id with a newline": _set("instrument_id", 1, "A\nB"),
    "maturity not a calendar date": _set("maturity", 0, "2031-02-29"),
    "maturity with a trailing newline": _set("maturity", 0, "2031-02-28\n"),
    "ccp unset": _set("ccp", 0, common_pb2.CCP_UNSPECIFIED),
    "kind unset": _set("kind", 1, book_pb2.INSTRUMENT_KIND_UNSPECIFIED),
    "a vector value NaN": _set("risk_values", 3, math.nan),
    "a vector value out of range": _set("risk_values", 0, 1e9),
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_a_bad_column_is_refused_as_when_the_rows_come_first(
    cases: dict[str, dict[str, Any]], name: str
) -> None:
    request = optimise_request(cases["03-mixed-ineligible-hedges"], columns=True)
    columns = request.account_columns
    if not columns.maturity:  # every instrument's maturity column entry, to break one
        pytest.skip("the case has no maturities")
    BREAKS[name](columns)
    case, refused = _read(request, rows_on_demand=True)
    _, expected = _read(request, rows_on_demand=False)
    assert isinstance(expected, list) and expected, "the break must be refused"
    assert refused == expected
    assert parse_columns(case, *case.columns, case.vectors or {}) is None  # type: ignore[misc]


@pytest.mark.parametrize(
    "change",
    [
        lambda r: setattr(r.account.customer, "id", ""),
        lambda r: setattr(r.run, "business_date", "2026-13-01"),
        lambda r: setattr(r.models.ficc, "confidence", 1.5),
        lambda r: setattr(r.account, "name", "x" * 201),
    ],
    ids=["empty customer id", "bad business date", "confidence above 1", "long name"],
)
def test_a_bad_shared_part_with_a_bad_column_is_refused_as_before(
    cases: dict[str, dict[str, Any]], change: Callable[[Any], None]
) -> None:
    """Violations of the shared parts and of the columns together: all of them, in the
    rows' order."""
    request = optimise_request(cases["02-butterfly-2s5s10s"], columns=True)
    change(request)
    request.account_columns.quantity[0] = math.nan
    _, refused = _read(request, rows_on_demand=True)
    _, expected = _read(request, rows_on_demand=False)
    assert isinstance(expected, list) and len(expected) >= 2
    assert refused == expected


def test_a_rule_across_fields_is_refused_from_the_columns_as_from_the_rows(
    cases: dict[str, dict[str, Any]],
) -> None:
    """Past the schema: a duplicate id, a position in an unknown instrument and an XM
    quantity above the quantity, found by the same rules on the named-tuple rows."""
    request = optimise_request(cases["02-butterfly-2s5s10s"], columns=True)
    columns = request.account_columns
    columns.instrument_id[1] = columns.instrument_id[0]
    columns.position_instrument[2] = "nowhere"
    _set("xm_quantity", 0, 2 * columns.quantity[0])(columns)
    _, refused = _read(request, rows_on_demand=True)
    _, expected = _read(request, rows_on_demand=False)
    assert isinstance(expected, list) and len(expected) >= 3
    assert refused == expected


@pytest.mark.parametrize(
    "model, name, values, passes",
    [
        (Position, "quantity", [1.0, -1e11, 1e11], True),
        (Position, "quantity", [1.0, math.nan], False),
        (Position, "quantity", [1.0000001e11], False),
        (Position, "lot", [1e-9], True),
        (Position, "lot", [0.0], False),
        (Position, "pinned", [True, False], True),
        (Position, "pinned", [1], False),
        (Instrument, "id", ["A" * 64], True),
        (Instrument, "id", [""], False),
        (Instrument, "id", ["A\x7f"], False),
        (Instrument, "maturity", ["2032-02-29"], True),
        (Instrument, "maturity", ["2031-02-29"], False),
        (Instrument, "ccp", ["FICC", "CME"], True),
        (Instrument, "ccp", ["CCP_UNSPECIFIED"], False),
        (Instrument, "coupon", [0.0, 100.0], True),
        (Instrument, "coupon", [math.inf], False),
    ],
)
def test_a_column_passes_exactly_when_each_value_passes_its_field(
    model: Any, name: str, values: list[Any], passes: bool
) -> None:
    assert (validated_columns(model, {name: values}) is not None) is passes
    for value in values:  # the model itself, one row at a time
        row = copy.deepcopy(_VALID[model.__name__])
        row[name] = value
        try:
            model.model_validate(row)
        except ValueError:
            assert not passes
            return
    assert passes


_VALID = {
    "Position": {"instrument": "A", "quantity": 1.0},
    "Instrument": {"id": "A", "ccp": "FICC", "kind": "NOTE"},
}
