"""Shared fixtures: the worked cases of ../shared/cases (or $XMARGIN_CASES_DIR)."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# CI runs the same examples every time (a failure there is reproducible, never a dice roll);
# developers' runs explore new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO_ROOT = Path(__file__).resolve().parents[1]
CASES_DIR = Path(os.environ.get("XMARGIN_CASES_DIR", REPO_ROOT.parent / "shared" / "cases"))
CASE_FILES = sorted(CASES_DIR.glob("*.json"))

if not CASE_FILES:
    raise RuntimeError(f"no worked cases found in {CASES_DIR}; set XMARGIN_CASES_DIR")

REL_TOL = 1e-6
ABS_TOL_NEAR_ZERO = 1e-2


def close(got: float, expected: float) -> bool:
    """The cases' tolerance: 1e-6 relative, 1e-2 USD absolute for figures near zero."""
    return abs(got - expected) <= max(REL_TOL * abs(expected), ABS_TOL_NEAR_ZERO)


UNHURRIED_VAR_SECONDS = 120.0
"""The exact-VaR phase's own budget in the tests (the product's is
``optimise.VAR_SEARCH_SECONDS``, 2 s of wall time): where the phase's end is asserted (an
optimum reached, no lower neighbour), it must not depend on how fast or loaded the machine is.
Each test's time limit still bounds it, and the phase stops where no move lowers its end."""


@pytest.fixture(autouse=True)
def unhurried_var_phase(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every in-process solve gives the exact-VaR phase :data:`UNHURRIED_VAR_SECONDS` (a
    test of the product's budget sets its own)."""
    phase = importlib.import_module("xmargin.optimiser.optimise")
    monkeypatch.setattr(phase, "VAR_SEARCH_SECONDS", UNHURRIED_VAR_SECONDS)


@pytest.fixture(params=CASE_FILES, ids=[path.stem for path in CASE_FILES])
def case_path(request: pytest.FixtureRequest) -> Path:
    return Path(request.param)


@pytest.fixture
def case_data(case_path: Path) -> dict[str, Any]:
    return json.loads(case_path.read_text())


def assert_tree_close(got: Any, expected: Any, rel: float = 1e-12, path: str = "$") -> None:
    """Assert two JSON-like trees are equal, floats to ``rel`` relative tolerance.

    Strings, booleans, ints and the shape of the tree must match exactly; a float ``g`` matches
    ``e`` when ``|g - e| <= rel * max(|g|, |e|)`` (so the last bits a BLAS kernel chooses do not
    count, and exact zeros still must be zeros).
    """
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), path
        for key, value in expected.items():
            assert_tree_close(got[key], value, rel, f"{path}.{key}")
    elif isinstance(expected, list | tuple):
        assert isinstance(got, list | tuple) and len(got) == len(expected), path
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_tree_close(g, e, rel, f"{path}[{i}]")
    elif isinstance(expected, float) or isinstance(got, float):
        assert isinstance(got, int | float) and not isinstance(got, bool), path
        assert abs(got - expected) <= rel * max(abs(got), abs(expected)), (path, got, expected)
    else:
        assert got == expected, (path, got, expected)
