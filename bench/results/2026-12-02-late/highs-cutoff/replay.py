"""Replay the whole-lot MIP that HiGHS 1.16 calls optimal wrongly under an objective bound.

``python replay.py`` (from this folder): the cut model of seed 1095's full-range MIP round (30
positions, written by ``Highs.writeModel`` right after HiGHS answered above the objective bound
it was given), solved with the solver's options, with and without that bound.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path

import highspy

OBJECTIVE_BOUND = 2.5789826960579063  # the incumbent's exact objective, in margin units
OPTIONS: dict[str, bool | float | str] = {
    "output_flag": False,
    "mip_rel_gap": 1e-6,
    "primal_feasibility_tolerance": 1e-9,
    "mip_feasibility_tolerance": 1e-9,
    "threads": 1,
    "simplex_strategy": 1,
}


def solve(model: Path, **extra: bool | float | str) -> tuple[str, float, float]:
    highs = highspy.Highs()
    for name, value in {**OPTIONS, **extra}.items():
        highs.setOptionValue(name, value)
    highs.readModel(str(model))
    highs.run()
    info = highs.getInfo()
    status = highs.modelStatusToString(highs.getModelStatus())
    return status, info.objective_function_value, info.mip_dual_bound


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "mip.mps"
        with gzip.open(Path(__file__).with_name("mip.mps.gz")) as packed, model.open("wb") as out:
            shutil.copyfileobj(packed, out)
        print("objective bound", OBJECTIVE_BOUND)
        print("with it:   ", solve(model, objective_bound=OBJECTIVE_BOUND))
        print("without it:", solve(model))
        off = solve(model, objective_bound=OBJECTIVE_BOUND, presolve="off")
        print("presolve off, with it:", off)
