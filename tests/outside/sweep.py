"""The outside sweep: random cases through the command line (`xmargin margin`, `xmargin
optimise` whole lots, --continuous) checked by the outside evaluator (tests/outside/contract.py).

    PYTHONPATH=. .venv/bin/python -m tests.outside.sweep FIRST COUNT [--perturb N]

Prints one line per defect (figure off by more than 1e-9 relative, an allowed allocation below
a claimed optimum by more than 1e-6 relative, a transfer that is not whole lots or the whole
holding, an answer the user may not book) and a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tests.outside import contract
from tests.outside.random_cases import random_case, set_current
from xmargin.optimiser.cli.app import main as cli

FIGURES = (
    "total",
    "ficc_standalone",
    "cme_standalone",
    "xm",
    "S_F",
    "S_C",
    "C_F",
    "C_C",
    "r_F",
    "r_C",
    "r",
    "ficc_collects",
    "cme_collects",
)
REL = 1e-9
OPT_REL = 1e-6
KEEP_CURRENT = False  # --keep-current: a position left where it is counts as allowed too


def run_cli(args: list[str]) -> tuple[int, Any, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli(["-q", *args])
    text = out.getvalue()
    return code, (json.loads(text) if code == 0 and text.strip() else None), err.getvalue()


def close(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= REL * max(abs(a), abs(b), scale, 1e-300) + 1e-12


def compare_state(
    label: str, got: dict[str, Any], want: dict[str, Any], scale: float, cap: float
) -> list[str]:
    """Money within 1e-9 of the book's scale (its baseline total); the ratios where the XM
    account carries more than round-off (S_F + S_C above 1e-9 of the scale); a cap exactly
    reached may be called binding or not."""
    bad = []
    risky = want["S_F"] + want["S_C"] > REL * scale
    for f in FIGURES:
        if f.startswith("r") and not risky:
            continue
        if not close(float(got[f]), float(want[f]), 1.0 if f.startswith("r") else scale):
            bad.append(f"{label}.{f}: xmargin {got[f]!r} outside {want[f]!r}")
    near_cap = risky and abs(min(want["r_F"], want["r_C"]) - cap) < 1e-9
    if risky and got["cap_binding"] != want["cap_binding"] and not near_cap:
        bad.append(
            f"{label}.cap_binding: xmargin {got['cap_binding']} outside {want['cap_binding']}"
        )
    return bad


def lattice(q: float, lot: float) -> list[float]:
    kmax = math.floor(abs(q) / lot + 1e-12)
    pts = {math.copysign(lot * k, q) for k in range(kmax + 1)} | {q}
    return sorted(pts)


def check_answer(
    case: dict[str, Any],
    ans: dict[str, Any],
    integral: bool,
    rng: np.random.Generator,
    perturb: int,
    label: str,
    transfers: bool = True,
) -> list[str]:
    b = contract.book(case)
    bad: list[str] = []
    scale = max(contract.evaluate(case, np.zeros(len(b.ids)), b)["total"], 1.0)
    cap = case["program"]["savings_cap"]
    alloc = ans["optimised"]["allocation"]
    y = np.array([float(alloc[i]) for i in b.ids])
    want = contract.evaluate(case, y, b)
    bad += compare_state(f"{label}.optimised", ans["optimised"], want, scale, cap)
    for state, yy in (
        ("baseline", np.zeros_like(y)),
        ("current", b.current),
        ("all_eligible_in_xm", contract.all_eligible_in_xm(case, b)),
    ):
        bad += compare_state(
            f"{label}.{state}", ans[state], contract.evaluate(case, yy, b), scale, cap
        )
    why = contract.allowed(case, y, b, integral)
    if why:
        bad.append(f"{label}: answer not allowed: {why}")
    for t in ans["optimised"]["transfers"]:
        j = b.ids.index(t["instrument"])
        qty = float(t["quantity"])
        lot = b.lot[j]
        whole = abs(qty / lot - round(qty / lot)) <= 1e-9 * max(1, abs(qty / lot))
        holding = math.isclose(abs(qty), abs(b.q[j]), rel_tol=1e-12)
        if (
            integral
            and transfers
            and not whole
            and not holding
            and not math.isclose(abs(y[j]), abs(b.q[j]), rel_tol=1e-12)
        ):
            bad.append(f"{label}: transfer {t} neither whole lots nor to the whole holding")
    claimed = ans["solver"]["source"] == "OPTIMUM" and not any(
        m == "VaR"
        for m in (case["models"]["FICC"].get("measure"), case["models"]["CME"].get("measure"))
    )
    best = contract.objective(case, y, b)
    if not claimed:
        return bad
    move = contract.movable(case, b)
    idx = [j for j in range(len(y)) if move[j]]
    # brute force on small whole-lot books
    if integral:
        grids = [lattice(b.q[j], b.lot[j]) + ([b.current[j]] if KEEP_CURRENT else []) for j in idx]
        size = math.prod(len(g) for g in grids) if grids else 1
        if size <= 3000:
            for combo in itertools.product(*grids):
                z = y.copy()
                z[idx] = combo
                if contract.allowed(case, z, b, integral) is None:
                    o = contract.objective(case, z, b)
                    if o < best - OPT_REL * max(abs(best), 1.0):
                        bad.append(
                            f"{label}: brute force {o!r} below the OPTIMUM {best!r} at {z.tolist()}"
                        )
                        break
            return bad
    for _ in range(perturb):
        z = y.copy()
        for j in (
            rng.choice(idx, size=min(len(idx), int(rng.integers(1, 4))), replace=False)
            if idx
            else []
        ):
            if integral:
                z[j] = float(rng.choice(lattice(b.q[j], b.lot[j])))
            else:
                z[j] = float(
                    np.clip(z[j] + rng.normal(0, 0.2) * b.q[j], min(0, b.q[j]), max(0, b.q[j]))
                )
                if rng.random() < 0.2:
                    z[j] = float(rng.choice([0.0, b.q[j], b.current[j]]))
        if contract.allowed(case, z, b, integral) is None:
            o = contract.objective(case, z, b)
            if o < best - OPT_REL * max(abs(best), 1.0):
                bad.append(f"{label}: perturbation {o!r} below the OPTIMUM {best!r}")
                break
    return bad


def check_case(
    seed: int,
    perturb: int,
    folder: Path,
    off_lots: bool = True,
    transfers: bool = True,
    positions: tuple[int, int] = (2, 7),
) -> tuple[list[str], dict[str, int]]:
    """Every defect the outside evaluator finds on random case ``seed`` (see the module);
    ``transfers=False`` leaves out transfers of fractional lots (from a current quantity off
    the lots, or a whole holding that is not a lot multiple, to a lot multiple)."""
    case = random_case(seed, positions)
    set_current(case, contract.eligible(case), seed, off_lots)
    path = folder / f"case-{seed}.json"
    path.write_text(json.dumps(case))
    bad: list[str] = []
    stats = {"margin": 0, "optimise": 0, "claims": 0}
    code, got, err = run_cli(["margin", str(path)])
    if code != 0:
        return [f"seed {seed}: margin exit {code}: {err.strip()[:300]}"], stats
    stats["margin"] = 1
    if got["eligible"] != contract.eligible(case):
        bad.append(f"seed {seed}: eligible {got['eligible']} outside {contract.eligible(case)}")
    b = contract.book(case)
    for state, yy in (
        ("baseline", np.zeros(len(b.ids))),
        ("current", b.current),
        ("all_eligible_in_xm", contract.all_eligible_in_xm(case, b)),
    ):
        scale = max(contract.evaluate(case, np.zeros(len(b.ids)), b)["total"], 1.0)
        want = contract.evaluate(case, yy, b)
        bad += compare_state(
            f"seed {seed} margin.{state}", got[state], want, scale, case["program"]["savings_cap"]
        )
    rng = np.random.default_rng(seed)
    for flags, integral in (([], True), (["--continuous"], False)):
        code, ans, err = run_cli(["optimise", *flags, "--time-limit", "20", str(path)])
        if code != 0:
            bad.append(f"seed {seed} optimise {flags}: exit {code}: {err.strip()[:300]}")
            continue
        stats["optimise"] += 1
        stats["claims"] += ans["solver"]["source"] == "OPTIMUM"
        label = f"seed {seed} optimise{flags}"
        bad += check_answer(case, ans, integral, rng, perturb, label, transfers)
    return bad, stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("first", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--perturb", type=int, default=60)
    parser.add_argument("--keep-current", action="store_true")
    parser.add_argument("--positions", type=int, nargs=2, default=(2, 7), metavar=("MIN", "MAX"))
    args = parser.parse_args()
    global KEEP_CURRENT
    KEEP_CURRENT = args.keep_current
    totals = {"margin": 0, "optimise": 0, "claims": 0, "defects": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first, args.first + args.count):
            bad, stats = check_case(seed, args.perturb, Path(tmp), positions=tuple(args.positions))
            for k, v in stats.items():
                totals[k] += v
            totals["defects"] += len(bad)
            for line in bad:
                print(line, flush=True)
    print("summary", json.dumps(totals))


if __name__ == "__main__":
    main()
