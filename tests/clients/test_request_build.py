"""The request's account is built in place (no copies) and, for a registered scenario set, without
the case's scenarios: the messages must be the ones built field by field, and a request that
refers to a registered set must carry no inline set."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

from xmargin.clients import InvalidRequestError, convert
from xmargin.clients.v1 import book_pb2


def _expected_account(case: dict[str, Any]) -> book_pb2.AccountBook:
    """The account as protobuf's own JSON mapping reads it from the case (an independent
    construction: every field named, enums by their proto names)."""
    instruments = []
    for item in case["instruments"]:
        out: dict[str, Any] = {
            "id": item["id"],
            "ccp": f"CCP_{item['ccp']}",
            "kind": f"INSTRUMENT_KIND_{item['kind']}",
        }
        for name in ("contract", "maturity", "collateral_maturity", "coupon"):
            if item.get(name) is not None:
                out[name] = item[name]
        if item.get("collateral_kind"):
            out["collateral_kind"] = f"INSTRUMENT_KIND_{item['collateral_kind']}"
        for name in ("sensitivities", "pnl"):
            if item.get(name) is not None:
                out[name] = {"values": item[name]}
        instruments.append(out)
    return json_format.ParseDict(
        {
            "name": case["name"],
            "clearing_member": case["clearing_member"],
            "customer": case["customer"],
            "instruments": instruments,
            "positions": case["positions"],
        },
        book_pb2.AccountBook(),
    )


def test_account_built_in_place_is_the_case_account(cases: dict[str, Any]) -> None:
    for case in cases.values():
        request = convert.optimise_request(case, convert.run_context(case, request_id="r"))
        assert request.account == _expected_account(case)
        assert convert.account_book(case) == request.account


def test_request_for_a_registered_set_carries_no_scenarios(cases: dict[str, Any]) -> None:
    case = cases["01-basis-trade-10y"]
    run = convert.run_context(case, request_id="r")
    inline = convert.optimise_request(case, run)
    by_reference = convert.optimise_request(case, run, scenarios=False)
    assert inline.WhichOneof("scenarios") == "scenario_set"
    assert len(inline.scenario_set.shocks) == len(case["scenarios"]["ids"]) * len(case["factors"])
    assert by_reference.WhichOneof("scenarios") is None
    inline.ClearField("scenario_set")
    assert by_reference == inline


def test_enum_names_in_any_case_are_read_as_before(cases: dict[str, Any]) -> None:
    """The look-up table serves the case-format spelling; other spellings the enum accepts
    (lower case) still resolve, and a name it lacks is still refused."""
    instrument = dict(cases["01-basis-trade-10y"]["instruments"][0])
    exact = convert.instrument_message(instrument)
    lower = convert.instrument_message(dict(instrument, kind=instrument["kind"].lower()))
    assert lower.kind == exact.kind != 0
    with pytest.raises(InvalidRequestError, match="kind"):
        convert.instrument_message(dict(instrument, kind="CVAR"))
