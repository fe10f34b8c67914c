"""N ``optimise()`` calls of the reference account in one process, timed as a whole.

``python -m xmargin.bench.reference_loop [N]`` (default 200): the book is built once (as
``optimise(book)`` is called by a user: eligibility and the problem built in every call), one
solve warms up, then N solves; prints the mean wall and CPU milliseconds per solve and the
optimised total (the same figure before and after a speed change). Meant to be run back to
back against another checkout (``/usr/bin/time -v`` or any process timer around it); nothing
is asserted.
"""

from __future__ import annotations

import sys
import time

from xmargin.bench.books import (
    REFERENCE_POSITIONS,
    REFERENCE_SCENARIOS,
    REFERENCE_SEED,
    make_book,
)
from xmargin.optimiser.optimise import optimise

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    solves = int(args[0]) if args else 200
    book = make_book(REFERENCE_POSITIONS, REFERENCE_SCENARIOS, REFERENCE_SEED)
    result = optimise(book)  # warm-up: lazy imports, HiGHS's first instance
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(solves):
        result = optimise(book)
    wall_ms = (time.perf_counter() - wall) / solves * 1e3
    cpu_ms = (time.process_time() - cpu) / solves * 1e3
    print(
        f"{solves} solves: {wall_ms:.2f} ms wall, {cpu_ms:.2f} ms CPU per solve; "
        f"optimised total {result.optimised.total!r}"
    )


if __name__ == "__main__":
    main()
