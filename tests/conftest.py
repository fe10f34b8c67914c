"""Shared fixtures: the worked cases of ../shared/cases (or $XMARGIN_CASES_DIR)."""

from __future__ import annotations

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


@pytest.fixture(params=CASE_FILES, ids=[path.stem for path in CASE_FILES])
def case_path(request: pytest.FixtureRequest) -> Path:
    return Path(request.param)


@pytest.fixture
def case_data(case_path: Path) -> dict[str, Any]:
    return json.loads(case_path.read_text())
