"""Property: the client checks a request against the case schema before sending. The mutations
of the public cases that the command line refuses are refused by the client too: before
sending (no call made) when the schema refuses them, by the server (INVALID_ARGUMENT naming the
field) when only a rule across fields does; nothing is coerced."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.conftest import CASE_FILES
from tests.optimiser.mutations import Mutation, mutated_cases, names_the_field
from xmargin.clients import InvalidRequestError, XmarginClient, convert
from xmargin.optimiser import CaseValidationError, parse_case
from xmargin.schema import CaseV1, check
from xmargin.server import RunningServer


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Any:
    with XmarginClient(f"127.0.0.1:{server.port}", timeout=60) as opened:
        yield opened


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutation=mutated_cases())
def test_client_refuses_what_the_library_refuses(client: XmarginClient, mutation: Mutation) -> None:
    try:
        parse_case(copy.deepcopy(mutation.case))
        refused = False
    except CaseValidationError:
        refused = True
    schema_refuses = bool(check(CaseV1, mutation.case))
    sent = client.attempts
    if not refused:
        client.check_eligibility(mutation.case)
        return
    with pytest.raises(InvalidRequestError) as raised:
        client.compute_margin(mutation.case)
    if schema_refuses:
        assert client.attempts == sent, "sent although the schema refuses it"
        named = {v.field for v in raised.value.violations}
        assert names_the_field(mutation, named), (mutation.named, named)
    else:
        assert client.attempts > sent  # a rule across fields: the server names it


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("models", "FICC", "measure"), "CVaR"),
        (("models", "FICC", "measure"), "var"),
        (("positions", 0, "pinned"), "false"),
        (("instruments", 0, "kind"), "note"),
        (("cycle",), "NOPE"),
        (("options", "mode"), "joint"),
    ],
)
def test_client_never_coerces(
    client: XmarginClient, cases: dict[str, dict[str, Any]], path: tuple[Any, ...], value: Any
) -> None:
    case = copy.deepcopy(cases["01-basis-trade-10y"])
    target: Any = case
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    sent = client.attempts
    with pytest.raises(InvalidRequestError) as raised:
        client.optimise(case)
    assert client.attempts == sent
    dotted = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")
    assert dotted in {v.field for v in raised.value.violations}


@pytest.mark.parametrize("key", ["sensitivities", "pnl"])
def test_a_null_risk_vector_is_refused_by_name(
    client: XmarginClient, cases: dict[str, dict[str, Any]], key: str
) -> None:
    """``"sensitivities": null`` passes the schema's per-field check (the key is optional) and
    is refused by the rule across fields (exactly one of sensitivities and pnl), not by a
    TypeError while the request is built."""
    case = copy.deepcopy(cases["01-basis-trade-10y"])
    instrument = case["instruments"][0]
    instrument.pop("sensitivities", None)
    instrument.pop("pnl", None)
    instrument[key] = None
    with pytest.raises(InvalidRequestError) as raised:
        client.compute_margin(case)
    assert any("instruments[0]" in v.field for v in raised.value.violations), [
        v.field for v in raised.value.violations
    ]


def test_null_add_ons_are_absent_in_the_request_as_in_the_case_format() -> None:
    """The case format reads a null ``addon_rate`` / ``addon_threshold`` as absent; the
    client's request builder did too little of the same and raised TypeError (found by the
    mutation test above, on case cme-stress-addons)."""
    case = json.loads(CASE_FILES[0].read_text())
    case["models"]["CME"]["addon_rate"] = None
    case["models"]["CME"]["addon_threshold"] = None
    message = convert.models_message(case)
    assert list(message.cme.addon_rate) == [] and list(message.cme.addon_threshold) == []
