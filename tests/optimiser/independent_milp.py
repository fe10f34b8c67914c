"""An independent MILP of the allocation problem of margin-model.md (scipy.optimize.milp): a
test oracle for the solvers' optima.

Written from the design doc only; reads the Book's data (positions, instruments, scenarios,
models) and the eligibility verdicts, never the project's solver modules or its evaluator.

Variables are in scaled units: u_i = y_i / q_i in [0, 1] (y the XM quantity), money in units
of ``unit`` USD. Each model figure (standalone F, standalone C, S_F, S_C, C_F, C_C) is an
epigraph variable M >= 0, M >= sqrt(h) ((1-w) risk + w stress) + addons, with
  ES  : Rockafellar-Uryasev t + 1/n_tail sum_s e_s, e_s >= L_s - t, e_s >= 0
  VaR : v with binaries b_s: L_s - v <= big_s b_s, sum b_s <= floor(n_tail)
  stress: sigma >= L_s on the stress rows (0 without any)
  addons: a_k >= rate_k (+-E_k - thr_k), a_k >= 0.
XM rule: min of two branches, each solved separately:
  reduction:    z >= C_F, z >= C_C, z >= (1-cap)(S_F+S_C)
  no reduction: z = S_F + S_C
Whole lots: |y| = lot k + rem w, k in 0..kmax integer, w binary, k >= kmax w.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, milp

from xmargin.optimiser.model import Book, Ccp, Measure, Mode


@dataclass
class Data:
    q: np.ndarray
    x0: np.ndarray
    lot: np.ndarray
    ficc: np.ndarray
    movable: np.ndarray
    pnl: np.ndarray  # (S, n) per unit
    expo: np.ndarray  # (n, K), 0 for P&L-vector instruments
    ids: tuple[str, ...]


def book_data(book: Book, eligible: np.ndarray, mode: Mode) -> Data:
    pos = book.positions
    ins = [book.instruments[p.instrument] for p in pos]
    shocks = book.scenarios.shocks
    S, K = shocks.shape
    n = len(pos)
    pnl = np.zeros((S, n))
    expo = np.zeros((n, K))
    for i, inst in enumerate(ins):
        if inst.sensitivities is not None:
            expo[i] = inst.sensitivities
            pnl[:, i] = shocks @ inst.sensitivities
        else:
            pnl[:, i] = inst.pnl
    ficc = np.array([inst.ccp is Ccp.FICC for inst in ins])
    pinned = np.array([p.pinned for p in pos])
    movable = eligible & ~pinned
    if mode is Mode.FICC_FIXED:
        movable &= ~ficc
    return Data(
        q=np.array([p.quantity for p in pos], float),
        x0=np.array([p.xm_quantity for p in pos], float),
        lot=np.array([p.lot for p in pos], float),
        ficc=ficc,
        movable=movable,
        pnl=pnl,
        expo=expo,
        ids=tuple(p.instrument for p in pos),
    )


def n_tail_of(alpha: float, N: int) -> float:
    nt = (1 - alpha) * N
    r = round(nt)
    return float(r) if abs(nt - r) <= 1e-9 else nt


class Builder:
    def __init__(self) -> None:
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.integ: list[int] = []
        self.cost: list[float] = []
        self.rows: list[tuple[dict[int, float], float, float]] = []

    def var(self, lb: float, ub: float, integ: int = 0, cost: float = 0.0) -> int:
        self.lb.append(lb)
        self.ub.append(ub)
        self.integ.append(integ)
        self.cost.append(cost)
        return len(self.lb) - 1

    def row(self, coefs: dict[int, float], lo: float, hi: float) -> None:
        self.rows.append((coefs, lo, hi))

    def solve(self, time_limit: float, gap: float, solver: str = "highs") -> OptimizeResult:
        """scipy's HiGHS, or SCIP (``solver="scip"``, pyscipopt: not a dependency of the
        project, for a second solver's view only)."""
        if solver == "scip":
            return self._solve_scip(time_limit, gap)
        nv = len(self.lb)
        data, ri, ci, lo, hi = [], [], [], [], []
        for r, (coefs, a, b) in enumerate(self.rows):
            for j, v in coefs.items():
                if v != 0.0:
                    ri.append(r)
                    ci.append(j)
                    data.append(v)
            lo.append(a)
            hi.append(b)
        A = sp.csr_array((data, (ri, ci)), shape=(len(self.rows), nv))
        res = milp(
            c=np.array(self.cost),
            constraints=LinearConstraint(A, np.array(lo), np.array(hi)),
            integrality=np.array(self.integ),
            bounds=Bounds(np.array(self.lb), np.array(self.ub)),
            options={"time_limit": time_limit, "mip_rel_gap": gap, "disp": False},
        )
        return res

    def _solve_scip(self, time_limit: float, gap: float) -> OptimizeResult:
        from pyscipopt import Model, quicksum

        model = Model()
        model.hideOutput()

        def finite(value: float) -> float | None:
            return None if math.isinf(value) else value

        x = [
            model.addVar(lb=finite(lb), ub=finite(ub), vtype="I" if integ else "C", obj=cost)
            for lb, ub, integ, cost in zip(self.lb, self.ub, self.integ, self.cost, strict=True)
        ]
        for coefs, lo, hi in self.rows:
            expr = quicksum(v * x[j] for j, v in coefs.items() if v != 0.0)
            if lo == hi:
                model.addCons(expr == lo)
            else:
                if not math.isinf(lo):
                    model.addCons(expr >= lo)
                if not math.isinf(hi):
                    model.addCons(expr <= hi)
        model.setParam("limits/time", time_limit)
        model.setParam("limits/gap", gap)
        model.optimize()
        found = model.getNSols() > 0
        return OptimizeResult(
            x=np.array([model.getVal(v) for v in x]) if found else None,
            fun=model.getObjVal() if found else math.nan,
            status=0 if model.getStatus() == "optimal" else 1,
            message=f"SCIP: {model.getStatus()}",
            mip_dual_bound=model.getDualbound(),
        )


def add(c1: dict[int, float], c2: dict[int, float], f: float = 1.0) -> dict[int, float]:
    out = dict(c1)
    for j, v in c2.items():
        out[j] = out.get(j, 0.0) + f * v
    return out


@dataclass
class Optimum:
    """The MILP's best total (inf when it found none), its dual bound (a lower bound of the
    branch's optimum, USD), the allocation and "optimal" or the solver's message."""

    total: float
    bound: float
    allocation: np.ndarray | None
    status: str


def independent_optimum(
    book: Book,
    eligible: np.ndarray,
    integral: bool,
    reduction: bool,
    time_limit: float = 60.0,
    gap: float = 1e-9,
    solver: str = "highs",
) -> Optimum:
    """Minimum total (+ transfer cost) over the allowed set for one XM branch (``reduction``:
    the XM margin max(C_F, C_C, (1 - cap)(S_F + S_C)), else S_F + S_C), with the MILP's dual
    bound, in scipy's HiGHS or (``solver="scip"``) SCIP. The exact optimum is the better of the
    two branches."""
    opts = book.options
    d = book_data(book, eligible, opts.mode)
    n = len(d.q)
    S = d.pnl.shape[0]
    # money unit: mean largest scenario loss of a position
    unit = max(1.0, float(np.mean(np.abs(d.pnl).max(axis=0) * np.abs(d.q))))
    B = Builder()
    # u_i = y_i / q_i
    u = []
    for i in range(n):
        if not d.movable[i] or d.q[i] == 0:
            f = d.x0[i] / d.q[i] if d.q[i] != 0 else 0.0
            u.append(B.var(f, f))
            continue
        ui = B.var(0.0, 1.0)
        u.append(ui)
        if integral:
            a = abs(d.q[i])
            kmax = math.floor(a / d.lot[i] + 1e-9)
            rem = a - kmax * d.lot[i]
            if rem <= 1e-9 * max(1.0, a):
                rem = 0.0
            k = B.var(0, kmax, 1)
            coefs = {ui: 1.0, k: -d.lot[i] / a}
            if rem > 0:
                w = B.var(0, 1, 1)
                coefs[w] = -rem / a
                B.row({k: 1.0, w: -float(kmax)}, 0.0, np.inf)  # k >= kmax w
            B.row(coefs, 0.0, 0.0)
    u0 = np.where(d.q != 0, d.x0 / np.where(d.q != 0, d.q, 1.0), 0.0)
    # transfer cost and limit
    tc = opts.transfer_cost
    if tc > 0 or opts.max_transfers is not None:
        ts = []
        for i in range(n):
            if not d.movable[i] or d.q[i] == 0:
                continue
            if tc > 0:
                dv = B.var(0.0, 1.0, 0, tc * abs(d.q[i]) / d.lot[i] / unit)
                B.row({dv: 1.0, u[i]: -1.0}, -u0[i], np.inf)
                B.row({dv: 1.0, u[i]: 1.0}, u0[i], np.inf)
            if opts.max_transfers is not None:
                t = B.var(0, 1, 1)
                ts.append(t)
                B.row({u[i]: 1.0, t: -1.0}, -np.inf, u0[i])
                B.row({u[i]: 1.0, t: 1.0}, u0[i], np.inf)
        if opts.max_transfers is not None and ts:
            B.row({t: 1.0 for t in ts}, -np.inf, float(opts.max_transfers))

    # quantity of account as affine in u: qty_i = const_i + coef_i * u_i
    def account(kind: str) -> tuple[np.ndarray, np.ndarray]:
        if kind == "FS":
            return np.where(d.ficc, d.q, 0.0), np.where(d.ficc, -d.q, 0.0)
        if kind == "CS":
            return np.where(~d.ficc, d.q, 0.0), np.where(~d.ficc, -d.q, 0.0)
        if kind == "XF":
            return np.zeros(n), np.where(d.ficc, d.q, 0.0)
        if kind == "XC":
            return np.zeros(n), np.where(~d.ficc, d.q, 0.0)
        return np.zeros(n), d.q.copy()

    ids = book.scenarios.ids
    row_of = {s: r for r, s in enumerate(ids)}

    def model_margin(ccp: Ccp, kind: str) -> int:
        m = book.models[ccp]
        const, coef = account(kind)
        # losses L_s = -(pnl[s] @ (const + coef*u)) / unit
        L0 = -(d.pnl @ const) / unit
        Lc = -(d.pnl * coef[None, :]) / unit  # (S, n)
        # bounds of L over the box of u (fixed u at their value)
        ulo = np.array([B.lb[j] for j in u])
        uhi = np.array([B.ub[j] for j in u])
        Lmax = L0 + np.maximum(Lc * ulo, Lc * uhi).sum(axis=1)
        Lmin = L0 + np.minimum(Lc * ulo, Lc * uhi).sum(axis=1)

        def lrow(s: int) -> dict[int, float]:
            return {u[i]: Lc[s, i] for i in range(n) if Lc[s, i] != 0.0}

        N = m.lookback
        win = range(S - N, S)
        nt = n_tail_of(m.confidence, N)
        w = m.stress_weight
        h = math.sqrt(m.horizon_days)
        expr: dict[int, float] = {}
        if w < 1.0:
            if m.measure is Measure.ES:
                t = B.var(-np.inf, np.inf)
                expr[t] = h * (1 - w)
                for s in win:
                    e = B.var(0.0, np.inf)
                    expr[e] = h * (1 - w) / nt
                    # e - L_s + t >= 0 : e + t - Lc u >= L0
                    B.row(add({e: 1.0, t: 1.0}, lrow(s), -1.0), L0[s], np.inf)
            else:
                f = math.floor(nt)
                vlo = float(Lmin[S - N :].min())
                v = B.var(vlo, np.inf)
                expr[v] = h * (1 - w)
                bs = []
                for s in win:
                    big = float(Lmax[s] - vlo)
                    if big <= 0:
                        continue
                    b = B.var(0, 1, 1)
                    bs.append(b)
                    # L_s - v - big b <= 0 : Lc u - v - big b <= -L0
                    B.row(add({v: -1.0, b: -big}, lrow(s)), -np.inf, -L0[s])
                if bs:
                    B.row({b: 1.0 for b in bs}, -np.inf, float(f))
        if w > 0.0:
            rows = [row_of[s] for s in m.stress_ids]
            if rows:
                sig = B.var(-np.inf, np.inf)
                expr[sig] = h * w
                for s in rows:
                    B.row(add({sig: 1.0}, lrow(s), -1.0), L0[s], np.inf)
        if m.addon_rate is not None and m.addon_threshold is not None:
            # E_k = sum_i qty_i expo[i,k] (USD), scaled by unit
            for k in range(d.expo.shape[1]):
                rate = float(m.addon_rate[k])
                if rate <= 0:
                    continue
                thr = float(m.addon_threshold[k])
                E0 = float(const @ d.expo[:, k]) / unit
                Ec = {u[i]: coef[i] * d.expo[i, k] / unit for i in range(n)}
                a = B.var(0.0, np.inf)
                expr[a] = 1.0
                # a >= rate (E - thr/unit)  -> a - rate Ec u >= rate (E0 - thr/unit)
                B.row(add({a: 1.0}, Ec, -rate), rate * (E0 - thr / unit), np.inf)
                B.row(add({a: 1.0}, Ec, rate), rate * (-E0 - thr / unit), np.inf)
        M = B.var(0.0, np.inf)
        B.row(add({M: 1.0}, expr, -1.0), 0.0, np.inf)
        return M

    mFS = model_margin(Ccp.FICC, "FS")
    mCS = model_margin(Ccp.CME, "CS")
    mSF = model_margin(Ccp.FICC, "XF")
    mSC = model_margin(Ccp.CME, "XC")
    B.cost[mFS] += 1.0
    B.cost[mCS] += 1.0
    z = B.var(0.0, np.inf, 0, 1.0)
    cap = book.program.savings_cap
    if reduction:
        mCF = model_margin(Ccp.FICC, "X")
        mCC = model_margin(Ccp.CME, "X")
        B.row({z: 1.0, mCF: -1.0}, 0.0, np.inf)
        B.row({z: 1.0, mCC: -1.0}, 0.0, np.inf)
        B.row({z: 1.0, mSF: -(1 - cap), mSC: -(1 - cap)}, 0.0, np.inf)
    else:
        B.row({z: 1.0, mSF: -1.0, mSC: -1.0}, 0.0, np.inf)
    res = B.solve(time_limit, gap, solver)
    # The solver's dual bound (none from scipy without integers: the optimum is the bound)
    dual = res.get("mip_dual_bound")
    bound = unit * (float(dual) if dual is not None else (res.fun if res.status == 0 else math.nan))
    if res.x is None:
        return Optimum(math.inf, bound, None, str(res.message))
    uv = res.x[u]
    y = uv * d.q
    y = np.where(d.movable, y, d.x0)
    if integral:
        # snap to the allowed set (solver round-off only)
        for i in np.flatnonzero(d.movable & (d.q != 0)):
            a = abs(d.q[i])
            kmax = math.floor(a / d.lot[i] + 1e-9)
            cands = np.append(np.arange(kmax + 1) * d.lot[i], a)
            y[i] = np.sign(d.q[i]) * cands[np.argmin(np.abs(cands - abs(y[i])))]
    status = "optimal" if res.status == 0 else f"status{res.status}:{res.message}"
    return Optimum(float(res.fun) * unit, bound, y, status)
