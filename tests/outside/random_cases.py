"""Random case files (xmargin-case/1 JSON dicts) that vary every option the format allows:
shorts, repo, TIPS/bills/options, a firm or customer not eligible, pins, FICC_FIXED, transfer
costs and limits, lots larger than holdings, P&L-vector instruments, lookback below the
scenario count, confidences such as 0.975 and 0.999, stress weights, VaR on either model,
add-ons with thresholds, savings caps 0-1. Written from the schema and the design docs alone.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

CONFIDENCES = (0.9, 0.95, 0.975, 0.99, 0.995, 0.999, 0.97)
CONTRACTS = ("TU", "FV", "TY", "US", "UB", "SR3", "ZQ", "ED", "XX")  # the last two not eligible


def _tail_ok(confidence: float, n: int) -> bool:
    tail = (1 - confidence) * n
    return tail > 1e-6 and tail < n - 1


# (1 - confidence) x N a whole number only up to round-off: the 1e-9 rule of margin-model.md
WHOLE_TAILS = (
    (0.99, 100),
    (0.99, 200),
    (0.975, 200),
    (0.975, 40),
    (0.95, 60),
    (0.9, 30),
    (0.97, 100),
    (0.999, 1000),
)


def _model(rng: np.random.Generator, s: int, k: int, ids: list[str]) -> dict[str, Any]:
    confidence, lookback = WHOLE_TAILS[int(rng.integers(len(WHOLE_TAILS)))]
    for _ in range(100 if rng.random() < 0.7 or lookback > s else 0):
        confidence = float(rng.choice(CONFIDENCES))
        lookback = None if rng.random() < 0.4 else int(rng.integers(max(2, s // 3), s + 1))
        if _tail_ok(confidence, lookback or s):
            break
    m: dict[str, Any] = {
        "confidence": confidence,
        "horizon_days": float(rng.choice([1, 2, 3, 5, 2.5, 10])),
        "measure": "VaR" if rng.random() < 0.3 else "ES",
    }
    if lookback is not None:
        m["lookback"] = lookback
    if rng.random() < 0.5:
        m["stress_ids"] = sorted({str(x) for x in rng.choice(ids, size=int(rng.integers(1, 4)))})
        m["stress_weight"] = float(rng.choice([0.0, 0.5, 1.0, 0.3]))
    if rng.random() < 0.35:
        m["addon_rate"] = [float(rng.choice([0.0, 0.5, 2.0, 10.0])) for _ in range(k)]
        m["addon_threshold"] = [float(rng.choice([0.0, 10.0, 1000.0, 1e5])) for _ in range(k)]
    return m


def random_case(seed: int, positions: tuple[int, int] = (2, 7)) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 5))
    s = int(rng.integers(20, 160)) if rng.random() < 0.9 else int(rng.integers(1000, 1300))
    start = dt.date(2024, 1, 2)
    ids = [(start + dt.timedelta(days=d)).isoformat() for d in range(s)]
    vol = rng.uniform(1, 8)
    shocks = np.round(rng.standard_t(4, size=(s, k)) * vol, 3)
    if rng.random() < 0.2:  # ties in the losses
        shocks = np.round(shocks)
    business = dt.date(2026, 11, 24)
    n = int(rng.integers(positions[0], positions[1] + 1))
    instruments: list[dict[str, Any]] = []
    pos: list[dict[str, Any]] = []
    for j in range(n):
        ficc = rng.random() < 0.5
        use_pnl = rng.random() < 0.25
        if ficc:
            kind = str(
                rng.choice(["NOTE", "BOND", "NOTE", "BOND", "BILL", "TIPS", "REPO", "STRIPS"])
            )
            years = float(rng.choice([0.5, 0.99, 1.0, 1.01, 2, 5, 10, 30]))
            mat = (business + dt.timedelta(days=round(365.25 * years))).isoformat()
            if years == 1.0:
                mat = business.replace(
                    year=business.year + 1
                ).isoformat()  # exactly a year: not eligible
            ins: dict[str, Any] = {"id": f"F{j}", "ccp": "FICC", "kind": kind}
            if kind == "REPO":
                ins["collateral_kind"] = str(rng.choice(["NOTE", "BOND", "BILL", "TIPS"]))
                ins["collateral_maturity"] = mat
            else:
                ins["maturity"] = mat
                ins["coupon"] = float(rng.choice([0.0, 2.5, 4.125]))
            unit_scale = 1e-4
            lot = float(rng.choice([1e6, 1e6, 5e6, 1e8]))
            q = float(rng.choice([-1, 1]) * rng.integers(1, 12) * 1e6)
            if rng.random() < 0.2:
                q += 5e5  # not a lot multiple
        else:
            kind = "OPTION" if rng.random() < 0.15 else "FUTURE"
            ins = {
                "id": f"C{j}",
                "ccp": "CME",
                "kind": kind,
                "contract": str(rng.choice(CONTRACTS)),
            }
            unit_scale = 50.0
            lot = float(rng.choice([1.0, 1.0, 2.0, 5.0, 50.0]))
            q = float(rng.choice([-1, 1]) * rng.integers(1, 12))
        sens = np.round(rng.normal(0, 1, size=k) * unit_scale, 8)
        if use_pnl:
            ins["pnl"] = [
                float(x)
                for x in np.round(shocks @ sens + rng.normal(0, abs(unit_scale), s) * 0.3, 6)
            ]
        else:
            ins["sensitivities"] = [float(x) for x in sens]
        instruments.append(ins)
        pos.append({"instrument": ins["id"], "quantity": q, "lot": lot})
    firm = rng.random() > 0.08
    enrolled = rng.random() > 0.05
    case: dict[str, Any] = {
        "format": "xmargin-case/1",
        "name": f"outside-{seed}",
        "business_date": business.isoformat(),
        "clearing_member": {
            "id": "FCM",
            "bd_fcm": firm,
            "cme_clearing_member": True,
            "ficc_netting_member": True,
        },
        "customer": {
            "id": f"CUST-{seed}",
            "xm_enrolled": enrolled,
            "ficc_account_type": str(
                rng.choice(["SPONSORED", "AGENT_CLEARING", "SPONSORED", "OMNIBUS"])
            ),
        },
        "factors": [f"f{i}" for i in range(k)],
        "scenarios": {"ids": ids, "shocks": shocks.tolist()},
        "instruments": instruments,
        "positions": pos,
        "models": {"FICC": _model(rng, s, k, ids), "CME": _model(rng, s, k, ids)},
        "program": {"savings_cap": float(rng.choice([0.8, 0.8, 0.5, 0.0, 1.0, 0.95]))},
        "options": {},
    }
    return case


def set_current(
    case: dict[str, Any], eligible: dict[str, bool], seed: int, off_lots: bool = True
) -> None:
    """Random current XM quantities (0 for positions not eligible; with ``off_lots`` some off
    the lots, as booked before), some pins and options."""
    rng = np.random.default_rng(seed + 7_000_000)
    for p in case["positions"]:
        if eligible[p["instrument"]] and rng.random() < 0.5:
            q, lot = p["quantity"], p["lot"]
            choice = rng.random()
            if choice < 0.4:
                p["xm_quantity"] = q
            elif choice < 0.5 and off_lots:
                # off the lots: a current allocation as booked (CME: whole contracts)
                off = (
                    q * 0.37
                    if p["instrument"].startswith("F")
                    else float(np.sign(q) * max(1, abs(q) // 2))
                )
                p["xm_quantity"] = round(off, 2)
            else:
                kmax = int(abs(q) // lot)
                p["xm_quantity"] = float(np.sign(q) * lot * rng.integers(0, kmax + 1))
        if rng.random() < 0.12:
            p["pinned"] = True
    o = case["options"]
    if rng.random() < 0.3:
        o["transfer_cost"] = float(rng.choice([1.0, 100.0, 5000.0]))
    if rng.random() < 0.25:
        o["max_transfers"] = int(rng.integers(0, 3))
    if rng.random() < 0.2:
        o["mode"] = "FICC_FIXED"
