"""Basis reduction of the whole-lot columns: a unimodular change of variables k = U w.

Near-optimal whole-lot allocations are integer lot vectors k whose rounding errors cancel in
the few scenario P&L directions the margins depend on (a market-split structure): the set
{k : (k - k*)' Q (k - k*) <= 1} is long along integer combinations with nearly no P&L and thin
across them, and branching on single k_i does not raise the LP bound. LLL-reducing the basis
R of the lattice with Gram matrix Q = R'R (Lenstra; Aardal, Hurkens and Lenstra) gives U with
the columns of RU short and nearly orthogonal: in w = U^-1 k the near-optimal set is close to
a box, and branching on w_j cuts across its thin directions.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["inverse_unimodular", "lll_reduce"]

MAX_ENTRY = 10_000
"""A reduction whose U (or U^-1) has a larger entry is not used (the MIP's rows would be badly
scaled)."""


def lll_reduce(
    basis: npt.ArrayLike, delta: float = 0.99, max_swaps: int = 100_000
) -> npt.NDArray[np.int64]:
    """The unimodular U with ``basis @ U`` LLL-reduced (Lovasz parameter ``delta``).

    Works on the triangular factor R of basis = Q_orth R (the same lattice up to rotation):
    size reduction is a column operation on R, a swap of columns k-1, k is followed by a Givens
    rotation of rows k-1, k that makes R triangular again. U is a product of integer column
    operations and swaps, so it is unimodular whatever the floating-point accuracy of R.
    """
    r = np.array(np.linalg.qr(np.asarray(basis, dtype=float), mode="r"), dtype=float)
    m = r.shape[1]
    u = np.eye(m, dtype=np.int64)
    k, swaps = 1, 0
    while k < m and swaps < max_swaps:
        for j in range(k - 1, -1, -1):
            q = round(r[j, k] / r[j, j])
            if q:
                r[: j + 1, k] -= q * r[: j + 1, j]
                u[:, k] -= q * u[:, j]
        if delta * r[k - 1, k - 1] ** 2 > r[k - 1, k] ** 2 + r[k, k] ** 2:
            r[:, [k - 1, k]] = r[:, [k, k - 1]]
            u[:, [k - 1, k]] = u[:, [k, k - 1]]
            a, b = r[k - 1, k - 1], r[k, k - 1]
            norm = float(np.hypot(a, b))
            c, s = a / norm, b / norm
            top, bottom = r[k - 1, k - 1 :].copy(), r[k, k - 1 :].copy()
            r[k - 1, k - 1 :] = c * top + s * bottom
            r[k, k - 1 :] = -s * top + c * bottom
            r[k, k - 1] = 0.0
            swaps += 1
            k = max(k - 1, 1)
        else:
            k += 1
    return u


def inverse_unimodular(u: npt.NDArray[np.int64]) -> npt.NDArray[np.int64] | None:
    """U^-1 as integers, checked exactly (V U = I in integer arithmetic); None when the
    floating-point inverse does not round to it."""
    v = np.round(np.linalg.inv(u.astype(float))).astype(np.int64)
    if not np.array_equal(v @ u, np.eye(u.shape[0], dtype=np.int64)):
        return None
    return v
