"""Unary Optimise without an audit store goes straight from the request to the book (its risk
vectors read into numpy) and from the result to its message (no case parts, no result JSON, no
proto bytes parsed back); it must answer, and refuse, exactly as the batch path
(:class:`~xmargin.server.batching.ProtoSolve`) that an audited Optimise and every batch account
take."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.server.harness import optimise_request
from xmargin.bench.grpc_trip import CallAborted, InProcessCall
from xmargin.clients.convert import optimise_answer
from xmargin.clients.v1 import result_pb2, service_pb2
from xmargin.server.batching import ProtoSolve
from xmargin.server.convert import RequestError, rows_to_columns
from xmargin.server.errors import report
from xmargin.server.service import SolverPool, XmarginServicer

TIMINGS = ("build_time", "solve_time", "lp_time", "evaluation_time")


@pytest.fixture(scope="module")
def servicer() -> XmarginServicer:
    return XmarginServicer(SolverPool(1, 2))


def _batch_path(
    servicer: XmarginServicer, request: service_pb2.OptimiseRequest
) -> tuple[result_pb2.OptimiseResult | None, BaseException | None]:
    """What Optimise answered before the short path: the case parts through ProtoSolve."""
    scenarios = servicer._scenarios(request)
    shared = servicer._shared_data(request, scenarios)
    account = servicer._account(request, request.account, "account", scenarios)
    outcome, error = ProtoSolve(None).attempt(0, account, shared)
    if error is not None:
        return None, error
    assert outcome.payload is not None
    return result_pb2.OptimiseResult.FromString(outcome.payload), None


def _without_timings(result: result_pb2.OptimiseResult) -> result_pb2.OptimiseResult:
    out = result_pb2.OptimiseResult()
    out.CopyFrom(result)
    for name in TIMINGS:
        out.solver_stats.ClearField(name)
    return out


def test_unary_optimise_answers_as_the_batch_path(
    servicer: XmarginServicer, case_data: dict[str, Any]
) -> None:
    request = optimise_request(case_data)
    response = servicer.Optimise(request, InProcessCall())  # type: ignore[arg-type]
    expected, error = _batch_path(servicer, request)
    assert error is None and expected is not None
    assert response.run == request.run
    assert _without_timings(response.result) == _without_timings(expected)


@pytest.mark.parametrize("integral", [False, True], ids=["continuous", "whole lots"])
def test_columnar_result_holds_the_rows_values(
    servicer: XmarginServicer, case_data: dict[str, Any], integral: bool
) -> None:
    """OptimiseRequest.columnar_result: the per-position figures come as position_columns
    (the rows empty), exactly the rows' values moved into columns; the client reads the same
    answer from either."""
    request = optimise_request(case_data, integral=integral)
    rows = servicer.Optimise(request, InProcessCall()).result  # type: ignore[arg-type]
    request.columnar_result = True
    columns = servicer.Optimise(request, InProcessCall()).result  # type: ignore[arg-type]
    assert not rows.HasField("position_columns") and len(rows.allocation) > 0
    assert columns.HasField("position_columns")
    assert not (columns.allocation or columns.marginal_margin or columns.eligibility)
    assert len(columns.position_columns.instrument) == len(rows.allocation)
    moved = _without_timings(rows)
    rows_to_columns(moved)
    assert moved == _without_timings(columns)
    # NaN (the marginal in XM of an ineligible position) is not == itself: compare reprs.
    from_rows, from_columns = optimise_answer(rows).to_dict(), optimise_answer(columns).to_dict()
    for answer in (from_rows, from_columns):
        del answer["solver"]  # its timings are each solve's own
    assert repr(from_columns) == repr(from_rows) and from_columns["allocation"]


def test_columns_carry_each_positions_own_eligibility_reasons(
    servicer: XmarginServicer, cases: dict[str, dict[str, Any]]
) -> None:
    """A book with ineligible positions: each position's reasons, read from the flat reasons
    list by reason_counts, are its own (the rows' reasons for that instrument)."""
    request = optimise_request(cases["03-mixed-ineligible-hedges"])
    rows = servicer.Optimise(request, InProcessCall()).result  # type: ignore[arg-type]
    request.columnar_result = True
    columns = servicer.Optimise(request, InProcessCall()).result  # type: ignore[arg-type]
    expected = {e.instrument: list(e.reasons) for e in rows.eligibility}
    assert any(expected.values()) and not all(expected.values())
    counts = columns.position_columns.reason_counts
    assert sum(counts) == len(columns.position_columns.reasons)
    assert optimise_answer(columns).reasons == optimise_answer(rows).reasons


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(lambda r: setattr(r.account.positions[0], "lot", -1.0), id="bad lot"),
        pytest.param(
            lambda r: r.account.instruments[0].sensitivities.values.__setitem__(0, 1e300),
            id="sensitivity out of range",
        ),
        pytest.param(
            lambda r: r.account.instruments[0].sensitivities.values.__setitem__(1, math.nan),
            id="sensitivity not a number",
        ),
        pytest.param(
            lambda r: (
                r.account.instruments[0].sensitivities.values.__setitem__(0, -1e300),
                setattr(r.account.positions[1], "lot", 0.0),
            ),
            id="sensitivity out of range and a bad lot",
        ),
        pytest.param(
            lambda r: r.account.instruments[0].sensitivities.values.pop(), id="short vector"
        ),
        pytest.param(
            lambda r: setattr(r.account.instruments[1], "id", r.account.instruments[0].id),
            id="duplicate instrument",
        ),
        pytest.param(lambda r: setattr(r.options, "backend", "simplex"), id="unknown backend"),
    ],
)
def test_unary_optimise_refuses_as_the_batch_path(
    servicer: XmarginServicer, cases: dict[str, dict[str, Any]], break_it: Any
) -> None:
    request = optimise_request(cases["02-butterfly-2s5s10s"])
    break_it(request)
    _assert_refused_as_the_batch_path(servicer, request)


def test_unary_optimise_refuses_every_bad_value_of_a_long_vector_as_the_batch_path(
    servicer: XmarginServicer, cases: dict[str, dict[str, Any]]
) -> None:
    """More than 20 bad values in one P&L vector: the batch path (lists, the schema) names
    each one; the unary path's bulk check would name 20 and count the rest."""
    request = optimise_request(cases["03-mixed-ineligible-hedges"])
    [vector] = [i.pnl.values for i in request.account.instruments if i.HasField("pnl")][:1]
    for k in range(25):
        vector[k] = 1e300
    _assert_refused_as_the_batch_path(servicer, request)


def _assert_refused_as_the_batch_path(
    servicer: XmarginServicer, request: service_pb2.OptimiseRequest
) -> None:
    _, expected = _batch_path(servicer, request)
    assert isinstance(expected, RequestError)
    with pytest.raises(CallAborted) as caught:
        servicer.Optimise(request, InProcessCall())  # type: ignore[arg-type]
    got, want = caught.value.status, report(expected).status()
    assert (got.code, got.details, got.trailing_metadata) == (
        want.code,
        want.details,
        want.trailing_metadata,
    )
