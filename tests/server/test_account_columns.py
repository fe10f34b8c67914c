"""OptimiseRequest.account_columns: the account's instruments and positions as columns. The
server must read exactly the case it reads from the same values sent as rows (so the answer and
every refusal of the case's rules are the rows'), refuse columns of the wrong length, and name
the columns in its refusals. Also the packed read of the rows' sensitivities
(``_packed_rows``), which falls back to reading value by value."""

from __future__ import annotations

import copy
import math
from typing import Any

import grpc
import numpy as np
import pytest

from tests.server.harness import optimise_request
from xmargin.bench.grpc_trip import CallAborted, InProcessCall
from xmargin.clients.v1 import book_pb2, service_pb2
from xmargin.server.convert import (
    FieldPaths,
    Limits,
    _instruments_with_vectors,
    _packed_rows,
    book_case,
    columns_case,
)
from xmargin.server.service import SolverPool, XmarginServicer

TIMINGS = ("build_time", "solve_time", "lp_time", "evaluation_time")


@pytest.fixture(scope="module")
def servicer() -> XmarginServicer:
    return XmarginServicer(SolverPool(1, 2))


def _cases_of(request: service_pb2.OptimiseRequest, numpy_vectors: bool) -> Any:
    servicer = XmarginServicer(SolverPool(1, 1))
    scenarios = servicer._scenarios(request)
    columns = request.account_columns if request.HasField("account_columns") else None
    return book_case(
        request.run,
        request.account,
        scenarios,
        request.models,
        request.program,
        request.options,
        FieldPaths(),
        Limits(),
        numpy_vectors=numpy_vectors,
        columns=columns,
    )


@pytest.mark.parametrize("numpy_vectors", [False, True], ids=["lists", "numpy"])
def test_columns_read_as_the_same_case_as_rows(
    case_data: dict[str, Any], numpy_vectors: bool
) -> None:
    rows = _cases_of(optimise_request(case_data), numpy_vectors)
    columns_request = optimise_request(case_data, columns=True)
    assert not columns_request.account.instruments and not columns_request.account.positions
    columns = _cases_of(columns_request, numpy_vectors)
    assert dict(columns) == dict(rows)
    if numpy_vectors:
        assert rows.vectors is not None and columns.vectors is not None
        assert columns.vectors.keys() == rows.vectors.keys()
        for index, (name, values) in rows.vectors.items():
            assert columns.vectors[index][0] == name
            np.testing.assert_array_equal(columns.vectors[index][1], values)


def _result_without_timings(response: service_pb2.OptimiseResponse) -> Any:
    result = response.result
    for name in TIMINGS:
        result.solver_stats.ClearField(name)
    return result


def test_optimise_answers_columns_as_rows(
    servicer: XmarginServicer, cases: dict[str, dict[str, Any]]
) -> None:
    case = cases["03-mixed-ineligible-hedges"]  # sensitivities and pnl, ineligible positions
    rows = servicer.Optimise(optimise_request(case), InProcessCall())  # type: ignore[arg-type]
    columns = servicer.Optimise(
        optimise_request(case, columns=True),
        InProcessCall(),  # type: ignore[arg-type]
    )
    assert len(rows.result.allocation) > 0
    assert _result_without_timings(columns) == _result_without_timings(rows)


def _refusal(servicer: XmarginServicer, request: service_pb2.OptimiseRequest) -> Any:
    with pytest.raises(CallAborted) as caught:
        servicer.Optimise(request, InProcessCall())  # type: ignore[arg-type]
    return caught.value.status


def _lot(request: service_pb2.OptimiseRequest, position: int, lot: float) -> None:
    columns = request.account_columns
    count = len(columns.position_instrument)
    if not columns.has_lot:
        columns.has_lot.extend([False] * count)
        columns.lot.extend([1.0] * count)
    columns.has_lot[position], columns.lot[position] = True, lot


@pytest.mark.parametrize(
    "break_rows, break_columns, renamed",
    [
        (
            lambda r: (
                setattr(r.account.positions[1], "lot", 0.0),
                r.account.instruments[0].sensitivities.values.__setitem__(2, 1e9),
            ),
            lambda r: (_lot(r, 1, 0.0), r.account_columns.risk_values.__setitem__(2, 1e9)),
            [
                ("account.positions[1].lot", "account_columns.lot[1]"),
                (
                    "account.instruments[0].sensitivities.values[2]",
                    "account_columns.risk_values[2]",
                ),
            ],
        ),
        (
            lambda r: setattr(r.account.instruments[1], "id", r.account.instruments[0].id),
            lambda r: r.account_columns.instrument_id.__setitem__(
                1, r.account_columns.instrument_id[0]
            ),
            [
                ("account.instruments[1].id", "account_columns.instrument_id[1]"),
                ("account.positions[1].instrument", "account_columns.position_instrument[1]"),
            ],
        ),
        (
            lambda r: setattr(r.account.positions[0], "instrument", "nowhere"),
            lambda r: r.account_columns.position_instrument.__setitem__(0, "nowhere"),
            [("account.positions[0].instrument", "account_columns.position_instrument[0]")],
        ),
    ],
    ids=["a lot of 0 and a sensitivity out of range", "duplicate id", "unknown instrument"],
)
def test_a_case_rule_is_refused_as_for_rows_naming_the_column(
    servicer: XmarginServicer,
    cases: dict[str, dict[str, Any]],
    break_rows: Any,
    break_columns: Any,
    renamed: list[tuple[str, str]],
) -> None:
    """The rows' refusal word for word, each path the column's: the schema (a lot of 0), the
    bulk check of the vectors (a sensitivity out of range), rules across fields."""
    case = cases["02-butterfly-2s5s10s"]
    rows, columns = optimise_request(case), optimise_request(case, columns=True)
    break_rows(rows)
    break_columns(columns)
    want, got = _refusal(servicer, rows), _refusal(servicer, columns)
    expected = want.details
    for row_path, column_path in renamed:
        assert row_path in expected
        expected = expected.replace(row_path, column_path)
    assert (got.code, got.details) == (want.code, expected)


@pytest.mark.parametrize(
    "break_it, path",
    [
        (lambda c: c.kind.pop(), "account_columns.kind"),
        (lambda c: c.quantity.append(1.0), "account_columns.quantity"),
        (lambda c: c.risk_values.pop(), "account_columns.risk_values"),
        (lambda c: c.risk.__setitem__(0, 7), "account_columns.risk[0]"),
    ],
    ids=["short column", "long column", "values short of the counts", "unknown risk"],
)
def test_columns_of_the_wrong_shape_are_refused(
    servicer: XmarginServicer, cases: dict[str, dict[str, Any]], break_it: Any, path: str
) -> None:
    request = optimise_request(cases["02-butterfly-2s5s10s"], columns=True)
    break_it(request.account_columns)
    status = _refusal(servicer, request)
    assert status.details.startswith(f"invalid request: {path}:"), status.details


def test_rows_and_columns_together_are_refused(
    servicer: XmarginServicer, cases: dict[str, dict[str, Any]]
) -> None:
    case = cases["02-butterfly-2s5s10s"]
    request = optimise_request(case)
    request.account_columns.CopyFrom(optimise_request(case, columns=True).account_columns)
    assert "account_columns: give the account's instruments and positions as rows or as" in (
        _refusal(servicer, request).details
    )


def test_empty_columns_stand_for_the_rows_defaults() -> None:
    """A column left empty is every entry's default: no contract, coupon or lot; unset risk
    (refused later by the case's rules as for a row without its risk oneof)."""
    columns = book_pb2.AccountColumns(instrument_id=["A", "B"], position_instrument=["A"])
    instruments, positions, vectors, starts = columns_case(columns, Limits(), numpy_vectors=False)
    assert instruments == [
        {"id": "A", "ccp": "CCP_UNSPECIFIED", "kind": "INSTRUMENT_KIND_UNSPECIFIED"},
        {"id": "B", "ccp": "CCP_UNSPECIFIED", "kind": "INSTRUMENT_KIND_UNSPECIFIED"},
    ]
    assert positions == [{"instrument": "A", "quantity": 0.0, "xm_quantity": 0.0, "pinned": False}]
    assert vectors is None and starts == [0, 0]


def test_sensitivities_rows_read_from_their_bytes_or_value_by_value(
    cases: dict[str, dict[str, Any]],
) -> None:
    request = optimise_request(cases["02-butterfly-2s5s10s"])
    instruments = request.account.instruments
    k = len(instruments[0].sensitivities.values)
    expected = {i: np.array(x.sensitivities.values) for i, x in enumerate(instruments)}
    _, vectors = _instruments_with_vectors(instruments, k)
    for index, values in expected.items():
        np.testing.assert_array_equal(vectors[index][1], values)
    packed = [x.sensitivities.SerializeToString() for x in instruments]
    matrix = _packed_rows(packed, k)
    assert matrix is not None and matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix, np.array([expected[i] for i in expected]))
    # an unknown field kept in one message: its bytes are longer, the read falls back
    instruments[1].sensitivities.MergeFromString(b"\x10\x05")  # field 2, varint 5
    assert _packed_rows([x.sensitivities.SerializeToString() for x in instruments], k) is None
    _, vectors = _instruments_with_vectors(instruments, k)
    for index, values in expected.items():
        np.testing.assert_array_equal(vectors[index][1], values)
    assert not math.isnan(float(vectors[1][1][0]))


@pytest.mark.parametrize(
    "break_it, path",
    [
        (lambda c: c.has_lot.__setitem__(0, False), "account_columns.lot[0]"),
        (lambda c: c.ClearField("has_lot"), "account_columns.lot[0]"),
        (lambda c: c.has_coupon.__setitem__(1, False), "account_columns.coupon[1]"),
        (lambda c: (c.has_lot.__setitem__(0, False), c.lot.__setitem__(0, math.nan)), "lot[0]"),
    ],
    ids=["lot not flagged", "has_lot left empty", "coupon not flagged", "NaN lot not flagged"],
)
def test_a_value_the_flag_leaves_unread_is_refused_not_dropped(
    servicer: XmarginServicer, cases: dict[str, dict[str, Any]], break_it: Any, path: str
) -> None:
    """A lot (or coupon) sent where has_lot (has_coupon) is false would be dropped without a
    word, the position read with the default lot of 1 instead of the lot given: refused,
    naming the entry. 0, and 1 for a lot (what a client writes for an absent one), pass."""
    request = optimise_request(_lots_and_coupons(cases["05-integral-small-lots"]), columns=True)
    assert list(request.account_columns.has_lot) == [True, True]
    break_it(request.account_columns)
    status = _refusal(servicer, request)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{path}: is read only where has_" in status.details, status.details


def test_unread_entries_at_their_defaults_pass() -> None:
    columns = book_pb2.AccountColumns(
        instrument_id=["A", "B"],
        has_coupon=[True, False],
        coupon=[4.5, 0.0],
        position_instrument=["A", "B"],
        has_lot=[False, False],
        lot=[1.0, 0.0],
    )
    instruments, positions, _, _ = columns_case(columns, Limits(), numpy_vectors=False)
    assert instruments[0]["coupon"] == 4.5 and "coupon" not in instruments[1]
    assert all("lot" not in p for p in positions)


def _lots_and_coupons(original: dict[str, Any]) -> dict[str, Any]:
    """Two positions of ``original``, each giving a lot, in instruments that each give a
    coupon (so every has_lot and has_coupon entry is true)."""
    case = copy.deepcopy(original)
    case["instruments"] = case["instruments"][:2]
    case["positions"] = case["positions"][:2]
    for instrument in case["instruments"]:
        instrument.setdefault("coupon", 1.0)
    for position in case["positions"]:
        position.setdefault("lot", 1.0)
    return case


@pytest.mark.parametrize("columns", [False, True], ids=["rows", "columns"])
def test_a_control_character_in_an_id_is_refused_in_either_form(
    servicer: XmarginServicer, cases: dict[str, dict[str, Any]], columns: bool
) -> None:
    """A NUL in the customer id or an instrument id: INVALID_ARGUMENT naming the field, before
    anything is solved or recorded (a PostgreSQL audit store answered UNAVAILABLE)."""
    request = optimise_request(cases["02-butterfly-2s5s10s"], columns=columns)
    request.account.customer.id = "CUST\x00X"
    if columns:
        request.account_columns.instrument_id[0] = "I\x00D"
        request.account_columns.position_instrument[0] = "I\x00D"
    else:
        request.account.instruments[0].id = "I\x00D"
        request.account.positions[0].instrument = "I\x00D"
    status = _refusal(servicer, request)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    instrument = "account_columns.instrument_id[0]" if columns else "account.instruments[0].id"
    for path in ("account.customer.id", instrument):
        assert f"{path}: must not hold control characters" in status.details, status.details
    assert "\x00" not in status.details and "(got CUST\\x00X)" in status.details
