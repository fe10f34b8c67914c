"""numpy's BLAS threads: one per process unless ``XMARGIN_BLAS_THREADS`` says otherwise.

The loss products of a solve (scenarios x positions times a few columns) are far too small to
gain from BLAS threads, and on a machine whose cores already run one solve each (the server's
pool, the batch engines) OpenBLAS's threads only fight over them: measured 2-7x slower above
~1,000 positions x 5,000 scenarios (issue 15). The parallelism comes from the engines, so every
solve sets the BLAS pool to one thread, once per process, here and nowhere else.

``XMARGIN_BLAS_THREADS=N`` asks for N threads instead; ``XMARGIN_BLAS_THREADS=0`` leaves the
BLAS library's own setting alone.
"""

from __future__ import annotations

import functools
import os

ENV = "XMARGIN_BLAS_THREADS"
DEFAULT_THREADS = 1

__all__ = ["DEFAULT_THREADS", "ENV", "blas_threads", "configure_blas_threads"]


def blas_threads() -> int | None:
    """The BLAS threads asked for: ``$XMARGIN_BLAS_THREADS`` (0: don't touch), default 1."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_THREADS
    try:
        threads = int(raw)
    except ValueError:
        message = f"{ENV} must be a whole number of threads (0: leave as is), not {raw!r}"
        raise ValueError(message) from None
    if threads < 0:
        raise ValueError(f"{ENV} must be >= 0, not {threads}")
    return threads or None


@functools.cache
def configure_blas_threads(stack: str = "numpy") -> int | None:
    """Limit the loaded BLAS libraries to :func:`blas_threads` threads, process-wide; once per
    ``stack``.

    ``optimise`` calls it at the start of every solve (``numpy``; not at import: a library leaves
    its host alone until it is used), and the cvxpy backend once more (``cvxpy``) after cvxpy has
    loaded scipy's own OpenBLAS. Once, because finding the loaded libraries costs ~14 ms;
    process-wide on purpose, because a per-call limit that restores the previous value on exit
    races between the threads of a pool. Returns the limit applied (None: left as is).
    """
    threads = blas_threads()
    if threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")
    return threads
