"""A library leaves its host alone: no file descriptors touched, no banner on stdout, and BLAS
threads set at the first solve (to one, or $XMARGIN_BLAS_THREADS), never at import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CASE_FILES
from xmargin.optimiser import blas

CASE_01 = next(path for path in CASE_FILES if path.name.startswith("01-"))

PROBE = """
import json, os, sys
def refuse(*args):
    raise AssertionError("os.dup2 called at import")
os.dup2 = refuse
import threadpoolctl
def blas():
    return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
import numpy
before = blas()
import xmargin.optimiser.cli, xmargin.optimiser.solvers.highs_backend
from xmargin.optimiser import load_case, optimise
imported = blas()
optimise(load_case(sys.argv[1]), backend=sys.argv[2])
print(json.dumps({"before": before, "imported": imported, "solved": blas()}))
"""


def probe(backend: str, **env: str) -> dict[str, list[int]]:
    environment = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    environment.pop(blas.ENV, None)
    environment.update(env)
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, str(CASE_01), backend],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)  # fails on a banner before the JSON


@pytest.mark.parametrize("backend", ["highs", "cvxpy"])
def test_import_leaves_the_host_alone_and_a_solve_uses_one_blas_thread(backend: str) -> None:
    threads = probe(backend)
    assert threads["before"] == threads["imported"] == [2]  # numpy's OpenBLAS, untouched
    # every BLAS library loaded by then (cvxpy brings scipy's own) on one thread
    assert threads["solved"] and set(threads["solved"]) == {1}


def test_blas_threads_can_be_chosen_or_left_alone() -> None:
    assert probe("highs", XMARGIN_BLAS_THREADS="3")["solved"] == [3]
    assert probe("highs", XMARGIN_BLAS_THREADS="0")["solved"] == [2]


def test_blas_threads_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(blas.ENV, "")
    assert blas.blas_threads() == blas.DEFAULT_THREADS == 1
    monkeypatch.setenv(blas.ENV, "3")
    assert blas.blas_threads() == 3
    for bad in ("two", "-1"):
        monkeypatch.setenv(blas.ENV, bad)
        with pytest.raises(ValueError, match=blas.ENV):
            blas.blas_threads()


@pytest.mark.parametrize("backend", ["highs", "cvxpy"])
def test_cli_stdout_is_only_json(backend: str, tmp_path: Path) -> None:
    """HiGHS's banner must not reach stdout, whichever backend makes the first instance."""
    argv = [sys.executable, "-m", "xmargin.optimiser.cli", "-q", "optimise", str(CASE_01)]
    completed = subprocess.run(
        [*argv, "--backend", backend],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["status"] == "OPTIMAL"
