"""The CLI and the server refuse the same backend names with the same message: both go
through ``solvers.parse_backend_name``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import CASE_FILES
from tests.server.harness import optimise_request
from tests.server.test_errors import call_error, violations
from xmargin.clients.v1.service_pb2_grpc import XmarginServiceStub
from xmargin.optimiser import cli
from xmargin.optimiser.solvers import UnknownBackendError, parse_backend_name

BAD_NAMES = ["gurobi-not-here", "HiGHS", "highs:HIGHS", "cvxpy:", "cvxpy:NO_SUCH_SOLVER"]
CASE_01 = next(path for path in CASE_FILES if path.name.startswith("01-"))


def _reason(name: str) -> str:
    with pytest.raises(UnknownBackendError) as refused:
        parse_backend_name(name)
    assert refused.value.field == "options.backend"
    assert "use highs, cvxpy or cvxpy:SOLVER" in refused.value.reason
    return refused.value.reason


@pytest.mark.parametrize("name", BAD_NAMES)
def test_cli_and_server_refuse_a_bad_backend_with_the_same_message(
    name: str,
    stub: XmarginServiceStub,
    cases: dict[str, dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    reason = _reason(name)
    for command in (["optimise", str(CASE_01)], ["batch", str(CASE_01.parent), "--no-audit"]):
        code = cli.main(["-q", *command, "--backend", name])
        err = capsys.readouterr().err
        assert code == cli.EXIT_BAD_INPUT, err
        assert f"options.backend: {reason}" in err

    request = optimise_request(cases["01-basis-trade-10y"])
    request.options.backend = name
    error = call_error(lambda: stub.Optimise(request, timeout=30))
    assert violations(error) == ["options.backend"]
    assert f"options.backend: {reason}" in (error.details() or "")


def test_good_names_parse_to_their_canonical_spelling() -> None:
    assert parse_backend_name("highs").name == "highs"
    assert parse_backend_name("cvxpy").name == "cvxpy"
    assert parse_backend_name("cvxpy:clarabel").name == "cvxpy:CLARABEL"
