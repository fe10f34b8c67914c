"""An outside evaluator of the contract (shared/design/margin-model.md, eligibility.md), read
from a case file's JSON alone: no xmargin module is imported, so it checks the project's
figures rather than repeating them.

`evaluate(case, allocation)` gives every figure of one state (standalone margins, S_F, S_C,
C_F, C_C, r_F, r_C, r, cap binding, what each clearing house collects, total);
`allowed(case, allocation, current)` says whether an allocation is one the user may book
(eligibility, 0 <= y/q <= 1, whole lots or the whole holding, pins, FICC_FIXED, the transfer
limit); `objective` adds the transfer cost.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

RULEBOOK: dict[str, Any] = {
    "account_types": {"SPONSORED", "AGENT_CLEARING"},
    "ficc_kinds": {"NOTE", "BOND"},
    "repo_collateral": {"NOTE", "BOND"},
    "contracts": {"TU", "Z3N", "FV", "TY", "TN", "US", "TWE", "UB", "ZQ", "SR1", "SR3"},
}
WHOLE = 1e-9  # margin-model.md: n_tail within 1e-9 of a whole number is that number


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def _more_than_a_year(maturity: str | None, business: dt.date) -> bool:
    if maturity is None:
        return False
    try:
        year_on = business.replace(year=business.year + 1)
    except ValueError:  # 29 February
        year_on = business.replace(year=business.year + 1, day=28)
    return _date(maturity) > year_on


def eligible(case: dict[str, Any]) -> dict[str, bool]:
    """Each position's eligibility (eligibility.md, the 2026-04-30 defaults)."""
    cm = case["clearing_member"]
    cu = case["customer"]
    firm = all(cm.get(k, False) for k in ("bd_fcm", "cme_clearing_member", "ficc_netting_member"))
    customer = cu.get("xm_enrolled", False) and cu["ficc_account_type"] in RULEBOOK["account_types"]
    business = _date(case["business_date"])
    instruments = {i["id"]: i for i in case["instruments"]}
    out: dict[str, bool] = {}
    for p in case["positions"]:
        ins = instruments[p["instrument"]]
        kind = ins["kind"]
        if ins["ccp"] == "FICC":
            if kind == "REPO":
                product = ins.get("collateral_kind") in RULEBOOK["repo_collateral"]
                mature = _more_than_a_year(ins.get("collateral_maturity"), business)
            else:
                product = kind in RULEBOOK["ficc_kinds"]
                mature = _more_than_a_year(ins.get("maturity"), business)
            ok = product and mature
        else:
            ok = kind == "FUTURE" and ins.get("contract") in RULEBOOK["contracts"]
        out[p["instrument"]] = bool(firm and customer and ok)
    return out


@dataclass
class Book:
    ids: list[str]
    q: np.ndarray
    current: np.ndarray
    lot: np.ndarray
    pinned: np.ndarray
    ficc: np.ndarray
    eligible: np.ndarray
    pnl: np.ndarray  # (S, n) USD per unit
    expo: np.ndarray  # (n, K) USD per unit per bp; 0 for P&L-vector instruments
    scenario_ids: list[str]


def book(case: dict[str, Any]) -> Book:
    shocks = np.array(case["scenarios"]["shocks"], dtype=float).reshape(
        len(case["scenarios"]["ids"]), len(case["factors"])
    )
    instruments = {i["id"]: i for i in case["instruments"]}
    el = eligible(case)
    pos = case["positions"]
    n = len(pos)
    pnl = np.zeros((shocks.shape[0], n))
    expo = np.zeros((n, shocks.shape[1]))
    for j, p in enumerate(pos):
        ins = instruments[p["instrument"]]
        if ins.get("sensitivities") is not None:
            expo[j] = ins["sensitivities"]
            d = ins["sensitivities"]
            pnl[:, j] = [sum(a * x for a, x in zip(d, row, strict=True)) for row in shocks]
        else:
            pnl[:, j] = ins["pnl"]
    return Book(
        ids=[p["instrument"] for p in pos],
        q=np.array([float(p["quantity"]) for p in pos]),
        current=np.array([float(p.get("xm_quantity", 0.0)) for p in pos]),
        lot=np.array([float(p.get("lot", 1.0)) for p in pos]),
        pinned=np.array([bool(p.get("pinned", False)) for p in pos]),
        ficc=np.array([instruments[p["instrument"]]["ccp"] == "FICC" for p in pos]),
        eligible=np.array([el[p["instrument"]] for p in pos]),
        pnl=pnl,
        expo=expo,
        scenario_ids=list(case["scenarios"]["ids"]),
    )


def tail_count(confidence: float, n: int) -> float:
    tail = (1.0 - confidence) * n
    if abs(tail - round(tail)) <= WHOLE:
        return float(round(tail))
    return tail


def expected_shortfall(losses: np.ndarray, confidence: float) -> float:
    worst = sorted(losses.tolist(), reverse=True)
    tail = tail_count(confidence, len(worst))
    whole = math.floor(tail)
    total = math.fsum(worst[:whole])
    if tail > whole:
        total += (tail - whole) * worst[whole]
    return total / tail


def value_at_risk(losses: np.ndarray, confidence: float) -> float:
    worst = sorted(losses.tolist(), reverse=True)
    return worst[math.floor(tail_count(confidence, len(worst)))]


def model_margin(b: Book, model: dict[str, Any], y: np.ndarray) -> float:
    """M_m of the portfolio holding y (margin-model.md "A clearing house's margin model")."""
    losses = -(b.pnl @ y)
    lookback = model.get("lookback") or len(losses)
    window = losses[-lookback:]
    alpha = float(model["confidence"])
    measure = model.get("measure", "ES")
    risk = expected_shortfall(window, alpha) if measure == "ES" else value_at_risk(window, alpha)
    stress_ids = model.get("stress_ids") or []
    index = {s: k for k, s in enumerate(b.scenario_ids)}
    stress = max((losses[index[s]] for s in stress_ids), default=0.0)
    w = float(model.get("stress_weight", 0.0))
    addons = 0.0
    if model.get("addon_rate") is not None:
        e = y @ b.expo
        for rate, thr, ek in zip(model["addon_rate"], model["addon_threshold"], e, strict=True):
            addons += rate * max(0.0, abs(ek) - thr)
    h = float(model["horizon_days"])
    return max(0.0, math.sqrt(h) * ((1 - w) * risk + w * stress) + addons)


def evaluate(case: dict[str, Any], y: np.ndarray, b: Book | None = None) -> dict[str, Any]:
    """Every figure of the state whose XM quantities are y."""
    b = b if b is not None else book(case)
    fm, cm = case["models"]["FICC"], case["models"]["CME"]
    cap = float(case.get("program", {}).get("savings_cap", 0.8))
    standalone = b.q - y
    f_alone = model_margin(b, fm, np.where(b.ficc, standalone, 0.0))
    c_alone = model_margin(b, cm, np.where(b.ficc, 0.0, standalone))
    s_f = model_margin(b, fm, np.where(b.ficc, y, 0.0))
    s_c = model_margin(b, cm, np.where(b.ficc, 0.0, y))
    c_f = model_margin(b, fm, y)
    c_c = model_margin(b, cm, y)
    s = s_f + s_c
    if s == 0.0:
        r_f = r_c = r = 0.0
        binding = False
    else:
        r_f, r_c = 1 - c_f / s, 1 - c_c / s
        raw = min(r_f, r_c)
        r = min(max(raw, 0.0), cap)
        binding = raw > cap
    xm = (1 - r) * s
    return {
        "total": f_alone + c_alone + xm,
        "ficc_standalone": f_alone,
        "cme_standalone": c_alone,
        "xm": xm,
        "S_F": s_f,
        "S_C": s_c,
        "C_F": c_f,
        "C_C": c_c,
        "r_F": r_f,
        "r_C": r_c,
        "r": r,
        "cap_binding": binding,
        "ficc_collects": f_alone + (1 - r) * s_f,
        "cme_collects": c_alone + (1 - r) * s_c,
    }


def lots_moved(b: Book, y: np.ndarray) -> float:
    return float(np.sum(np.abs(y - b.current) / b.lot))


def objective(case: dict[str, Any], y: np.ndarray, b: Book | None = None) -> float:
    """Total margin plus the transfer cost (USD per lot moved)."""
    b = b if b is not None else book(case)
    cost = float(case.get("options", {}).get("transfer_cost", 0.0))
    return float(evaluate(case, y, b)["total"] + cost * lots_moved(b, y))


def on_lots(q: float, lot: float, y: float, rel: float = 1e-9) -> bool:
    """y is a multiple of the lot within the holding, or the whole holding."""
    if abs(y - q) <= rel * max(1.0, abs(q)):
        return True
    k = abs(y) / lot
    return abs(k - round(k)) <= rel * max(1.0, k) and abs(y) <= abs(q) * (1 + rel)


def movable(case: dict[str, Any], b: Book) -> np.ndarray:
    fixed = b.pinned | ~b.eligible
    if case.get("options", {}).get("mode", "JOINT") == "FICC_FIXED":
        fixed = fixed | b.ficc
    return ~fixed


def allowed(
    case: dict[str, Any], y: np.ndarray, b: Book | None = None, integral: bool = True
) -> str | None:
    """None when y is an allocation the user may book, else why not."""
    b = b if b is not None else book(case)
    move = movable(case, b)
    for j, name in enumerate(b.ids):
        if not move[j]:
            if y[j] != b.current[j]:
                return f"{name} may not move"
            continue
        u = y[j] / b.q[j] if b.q[j] else 0.0
        if b.q[j] == 0 and y[j] != 0:
            return f"{name}: XM quantity of an empty holding"
        if u < -1e-12 or u > 1 + 1e-12:  # y/q in [0, 1]
            return f"{name}: y/q = {u} outside [0, 1]"
        if integral and y[j] != b.current[j] and not on_lots(b.q[j], b.lot[j], y[j]):
            return f"{name}: {y[j]} not whole lots of {b.lot[j]} nor the holding {b.q[j]}"
    limit = case.get("options", {}).get("max_transfers")
    moved = int(np.sum(np.abs(y - b.current) > 1e-9 * np.maximum(1.0, np.abs(b.q))))
    if limit is not None and moved > limit:
        return f"{moved} positions move, limit {limit}"
    return None


def all_eligible_in_xm(case: dict[str, Any], b: Book | None = None) -> np.ndarray:
    """margin-model.md: every movable eligible position wholly in XM, the rest as given."""
    b = b if b is not None else book(case)
    return np.where(movable(case, b), b.q, b.current)
