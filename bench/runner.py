"""The benchmark plan and its run: every measured configuration in a fresh subprocess, one after
the other, all in one run so that ratios hold on a noisy machine."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .books import REFERENCE_FACTORS, REFERENCE_POSITIONS, REFERENCE_SCENARIOS, REFERENCE_SEED
from .environment import environment

__all__ = ["PARTS", "Plan", "run_plan", "solve_spec"]

PARTS = ("reference", "sweep", "pnl", "batch", "grpc")
SPAWN_SLACK = 120.0
"""Seconds a configuration's subprocess gets beyond its solves (imports, generation, memory)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What one run measures; :meth:`full` is the recorded benchmark, :meth:`quick` the smoke."""

    mode: str
    reference: tuple[int, int]
    repeats: int
    cvxpy_repeats: int
    sweep_repeats: int
    sweep_positions: tuple[int, ...]
    sweep_scenarios: tuple[int, ...]
    cvxpy_max: tuple[int, int]
    """cvxpy (continuous) only where positions and scenarios are both at most these."""
    cvxpy_integral_max: tuple[int, int]
    reference_integral_limit: float
    """SolveOptions.time_limit of the reference account's integral solves (seconds)."""
    integral_limit: float
    """SolveOptions.time_limit of each integral sweep solve (seconds)."""
    cvxpy_cap: float
    """Wall-clock cap of one cvxpy continuous configuration (its subprocess is killed)."""
    batch: tuple[int, int, int, int]
    """accounts, workers, positions, scenarios."""
    grpc_calls: int
    grpc_warmup: int
    profile: bool
    seed: int = REFERENCE_SEED
    pnl_shares: tuple[float, ...] = (0.0, 0.1, 0.5, 1.0)
    """The shares of instruments given as P&L vectors in the "pnl" part (reference account)."""
    pnl_noise: float = 1.0
    """Their idiosyncratic noise (bench.books.with_pnl_vectors): at 1.0 the vectors have no
    low-rank structure, the case where cutting planes crawl."""

    @classmethod
    def full(cls, repeats: int = 15) -> Plan:
        return cls(
            mode="full",
            reference=(REFERENCE_POSITIONS, REFERENCE_SCENARIOS),
            repeats=repeats,
            cvxpy_repeats=max(1, min(3, repeats)),
            sweep_repeats=max(1, min(3, repeats)),
            sweep_positions=(30, 100, 300, 1000, 1500, 3000),
            sweep_scenarios=(500, 1260, 2520, 5000),
            cvxpy_max=(300, 2520),
            cvxpy_integral_max=(100, 1260),
            reference_integral_limit=30.0,
            integral_limit=10.0,
            cvxpy_cap=400.0,
            batch=(1000, 2, REFERENCE_POSITIONS, REFERENCE_SCENARIOS),
            grpc_calls=100,
            grpc_warmup=5,
            profile=True,
        )

    @classmethod
    def quick(cls, repeats: int = 1) -> Plan:
        return cls(
            mode="quick",
            reference=(30, 250),
            repeats=repeats,
            cvxpy_repeats=1,
            sweep_repeats=1,
            sweep_positions=(20, 30),
            sweep_scenarios=(250,),
            cvxpy_max=(0, 0),  # the smoke: cvxpy on the reference account only
            cvxpy_integral_max=(0, 0),
            reference_integral_limit=1.0,
            integral_limit=1.0,
            cvxpy_cap=60.0,
            batch=(4, 2, 20, 250),
            grpc_calls=3,
            grpc_warmup=1,
            profile=False,
            pnl_shares=(0.0, 1.0),  # the smoke: each share is two subprocesses
        )


def solve_spec(
    plan: Plan,
    positions: int,
    scenarios: int,
    backend: str,
    integral: bool,
    repeats: int,
    **extra: Any,
) -> dict[str, Any]:
    """The spec of one solve configuration (see :func:`xmargin.bench.solve.run_solve`)."""
    spec: dict[str, Any] = {
        "kind": "solve",
        "positions": positions,
        "scenarios": scenarios,
        "factors": REFERENCE_FACTORS,
        "seed": plan.seed,
        "backend": backend,
        "integral": integral,
        "repeats": repeats,
        "warmup": 1 if backend == "highs" and not integral and repeats > 1 else 0,
        "time_limit": None,
        "tracemalloc": backend == "highs" and not integral,
        "policies": backend == "highs",
        "profile": None,
    }
    spec.update(extra)
    return spec


def _cap(plan: Plan, spec: dict[str, Any]) -> float:
    if spec["kind"] == "batch":
        return 1800.0
    if spec["kind"] != "solve":
        return 600.0
    runs = int(spec["repeats"]) + int(spec["warmup"]) + (1 if spec.get("profile") else 0)
    if spec["time_limit"] is not None:
        return float(spec["time_limit"]) * runs + SPAWN_SLACK
    if spec["backend"].startswith("cvxpy"):
        return plan.cvxpy_cap
    return 600.0


def run_config(plan: Plan, spec: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """Run ``spec`` in a fresh ``python -m xmargin.bench.worker``; kill it at its cap."""
    cap = _cap(plan, spec)
    label = spec.get("label", spec["kind"])
    with tempfile.TemporaryDirectory(prefix="xmargin-bench-") as folder:
        spec_path, out_path = Path(folder) / "spec.json", Path(folder) / "out.json"
        spec_path.write_text(json.dumps(spec))
        started = time.perf_counter()
        command = [sys.executable, "-m", "xmargin.bench.worker", str(spec_path), str(out_path)]
        try:
            done = subprocess.run(command, capture_output=True, timeout=cap, check=False)
            killed, stderr = False, done.stderr.decode(errors="replace")
        except subprocess.TimeoutExpired as expired:
            killed = True
            stderr = (expired.stderr or b"").decode(errors="replace")
        elapsed = time.perf_counter() - started
        result: dict[str, Any] = (
            json.loads(out_path.read_text()) if out_path.exists() else {"status": "error"}
        )
    if killed:
        result["status"] = "killed"
        result["reason"] = f"exceeded its {cap:.0f} s cap; the subprocess was killed"
    elif result.get("status") == "error" and "error" not in result:
        result["error"] = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
    result["process_seconds"] = elapsed
    result["cap_seconds"] = cap
    result["spec"] = {k: v for k, v in spec.items() if k != "kind"}
    if result["spec"].get("profile"):  # its file name: the results folder is the machine's own
        result["spec"]["profile"] = Path(result["spec"]["profile"]).name
    log(f"{label}: {result['status']} in {elapsed:.1f} s")
    return result


def _reference(plan: Plan, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    n, s = plan.reference

    def profile_path(name: str) -> str | None:
        return str(out / f"profile-{name}.txt") if plan.profile else None

    configs = {
        ("continuous", "highs"): solve_spec(
            plan, n, s, "highs", False, plan.repeats, profile=profile_path("reference-highs")
        ),
        ("continuous", "cvxpy"): solve_spec(
            plan,
            n,
            s,
            "cvxpy",
            False,
            plan.cvxpy_repeats,
            tracemalloc=True,
            profile=profile_path("reference-cvxpy"),
        ),
        ("integral", "highs"): solve_spec(
            plan,
            n,
            s,
            "highs",
            True,
            plan.repeats,
            time_limit=plan.reference_integral_limit,
            profile=profile_path("reference-integral-highs"),
        ),
        ("integral", "cvxpy"): solve_spec(
            plan, n, s, "cvxpy", True, 1, time_limit=plan.reference_integral_limit
        ),
    }
    reference: dict[str, Any] = {
        "positions": n,
        "scenarios": s,
        "factors": REFERENCE_FACTORS,
        "models": 2,
        "continuous": {},
        "integral": {},
    }
    for (kind, backend), spec in configs.items():
        spec["label"] = f"reference {kind} {backend}"
        reference[kind][backend] = run_config(plan, spec, log)
    return reference


def _sweep(plan: Plan, log: Callable[[str], None]) -> tuple[list[dict[str, Any]], list[Any]]:
    grid = [(n, s) for n in plan.sweep_positions for s in plan.sweep_scenarios]
    runs: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    stages = [
        ("highs", False, lambda n, s: None),
        ("cvxpy", False, lambda n, s: _too_big(plan.cvxpy_max, n, s)),
        ("highs", True, lambda n, s: None),
        ("cvxpy", True, lambda n, s: _too_big(plan.cvxpy_integral_max, n, s)),
    ]
    for backend, integral, skip in stages:
        for n, s in grid:
            kind = "integral" if integral else "continuous"
            reason = skip(n, s)
            if reason:
                skipped.append(
                    {
                        "positions": n,
                        "scenarios": s,
                        "backend": backend,
                        "kind": kind,
                        "reason": reason,
                    }
                )
                continue
            repeats = 1 if backend == "cvxpy" and integral else plan.sweep_repeats
            if backend == "cvxpy" and not integral:
                repeats = plan.cvxpy_repeats
            spec = solve_spec(
                plan,
                n,
                s,
                backend,
                integral,
                repeats,
                time_limit=plan.integral_limit if integral else None,
                label=f"sweep {n}x{s} {kind} {backend}",
            )
            result = run_config(plan, spec, log)
            result.update(positions=n, scenarios=s, backend=backend, kind=kind)
            runs.append(result)
    return runs, skipped


def _pnl_sweep(plan: Plan, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The reference account with a growing share of P&L-vector instruments, continuous, on
    the fast path (which picks its formulation) and the cvxpy path."""
    n, s = plan.reference
    runs: list[dict[str, Any]] = []
    for share in plan.pnl_shares:
        for backend in ("highs", "cvxpy"):
            repeats = plan.cvxpy_repeats if backend == "cvxpy" else plan.sweep_repeats
            spec = solve_spec(
                plan,
                n,
                s,
                backend,
                False,
                repeats,
                pnl_share=share,
                pnl_noise=plan.pnl_noise,
                tracemalloc=False,
                policies=False,
                label=f"P&L vectors {share:.0%} continuous {backend}",
            )
            result = run_config(plan, spec, log)
            result.update(pnl_share=share, pnl_noise=plan.pnl_noise, backend=backend)
            runs.append(result)
    return runs


def _too_big(limit: tuple[int, int], positions: int, scenarios: int) -> str | None:
    if positions <= limit[0] and scenarios <= limit[1]:
        return None
    return (
        f"the cvxpy path runs only up to {limit[0]} positions x {limit[1]} scenarios: its "
        "compile time grows with positions x scenarios (one row per scenario and model term), "
        "so the larger sizes would take minutes each and the run would overrun its budget"
    )


def run_plan(
    plan: Plan, out: Path, parts: tuple[str, ...] = PARTS, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run ``parts`` of ``plan``; return the results document (not yet written)."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[str, Any] = {
        "schema": 1,
        "mode": plan.mode,
        "plan": dataclasses.asdict(plan),
        "parts": list(parts),
        "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "load_average_start": list(os.getloadavg()),
    }
    if "reference" in parts:
        results["reference"] = _reference(plan, out, log)
    if "sweep" in parts:
        results["sweep"], results["skipped"] = _sweep(plan, log)
    if "pnl" in parts:
        results["pnl_vectors"] = _pnl_sweep(plan, log)
    if "batch" in parts:
        accounts, workers, positions, scenarios = plan.batch
        spec = {
            "kind": "batch",
            "label": f"batch {accounts} accounts on {workers} workers",
            "accounts": accounts,
            "workers": workers,
            "positions": positions,
            "scenarios": scenarios,
            "seed": plan.seed,
            "profile": str(out / "profile-batch-account.txt") if plan.profile else None,
        }
        results["batch"] = run_config(plan, spec, log)
    if "grpc" in parts:
        n, s = plan.reference
        spec = {
            "kind": "grpc",
            "label": "gRPC round trip",
            "positions": n,
            "scenarios": s,
            "seed": plan.seed,
            "calls": plan.grpc_calls,
            "warmup": plan.grpc_warmup,
        }
        results["grpc"] = run_config(plan, spec, log)
    finished = time.time()
    results["finished_at"] = dt.datetime.fromtimestamp(finished, dt.UTC).isoformat(
        timespec="seconds"
    )
    results["duration_seconds"] = finished - started
    results["load_average_end"] = list(os.getloadavg())
    return results
