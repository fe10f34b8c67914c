"""N ``optimise()`` calls of the reference account in one process, timed as a whole.

``python -m xmargin.bench.reference_loop [N] [--stop-hook]`` (default 200): the book is built
once (as ``optimise(book)`` is called by a user: eligibility and the problem built in every
call), one solve warms up, then N solves, with ``--stop-hook`` under a stop hook that never
fires (as the gRPC server and the batch engines run every solve: ``cancellation.stop_when``);
prints the mean wall and CPU milliseconds per solve and the optimised total (the same figure
before and after a speed change). Meant to be run back to back against another checkout
(``/usr/bin/time -v`` or any process timer around it); nothing is asserted.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import nullcontext

from xmargin.bench.books import (
    REFERENCE_POSITIONS,
    REFERENCE_SCENARIOS,
    REFERENCE_SEED,
    make_book,
)
from xmargin.optimiser.cancellation import stop_when
from xmargin.optimiser.optimise import optimise

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    hooked = "--stop-hook" in args
    numbers = [arg for arg in args if arg != "--stop-hook"]
    solves = int(numbers[0]) if numbers else 200
    book = make_book(REFERENCE_POSITIONS, REFERENCE_SCENARIOS, REFERENCE_SEED)
    with stop_when(threading.Event().is_set) if hooked else nullcontext():
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
