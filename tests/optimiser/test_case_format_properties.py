"""Property: any mutation of a public case (a key renamed or deleted, a value of another type,
out of range, or a date in another form) gives exit 0 or 2 on the command line, with the
mutated field named on exit 2; never exit 1 or a traceback. Derandomized under CI
(tests/conftest.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.optimiser.mutations import Mutation, mutated_cases, names_the_field
from xmargin.optimiser.cli import EXIT_BAD_INPUT, EXIT_OK, main

VIOLATION_LINE = re.compile(r"^  (\S+): ", re.MULTILINE)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutation=mutated_cases())
def test_cli_exits_0_or_2_naming_the_field(
    mutation: Mutation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mutated.json"
    path.write_text(json.dumps(mutation.case))
    code = main(["eligibility", str(path)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code in (EXIT_OK, EXIT_BAD_INPUT), err
    if code == EXIT_BAD_INPUT:
        named = set(VIOLATION_LINE.findall(err))
        assert names_the_field(mutation, named), (mutation.kind, mutation.named, err)
