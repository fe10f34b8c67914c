"""Server memory under a large batch: OptimiseStream against the unary OptimiseBatch.

Starts ``xmargin serve`` (2 workers, a throwaway store), then sends ``--stream`` reference-size
accounts (300 positions x 2,520 scenarios, 0.45 MB each as an AccountBook; one book under
distinct customer ids) through ``XmarginClient.optimise_stream`` from a generator, and
``--batch`` of them through ``optimise_batch`` (one request message: at most ~140 fit in the
default 64 MiB). It samples the server's resident memory (VmRSS) every 0.5 s and prints, per
run, the answers, the seconds, the peak and a sample every 10 s, as JSON::

    python -m xmargin.bench.stream_memory [--stream 300] [--batch 140]

Not a test: it takes minutes, and its figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from xmargin.clients import BatchItem, XmarginClient
from xmargin.optimiser.case_format import book_to_dict
from xmargin.optimiser.sample import generate_scenarios

from .books import REFERENCE_POSITIONS, REFERENCE_SCENARIOS, REFERENCE_SEED, make_book

__all__ = ["main", "measure"]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _accounts(case: dict[str, Any], count: int) -> Iterator[dict[str, Any]]:
    for k in range(count):
        account = dict(case, name=f"account-{k:04d}")
        account["customer"] = dict(case["customer"], id=f"CUST-{k:04d}")
        yield account


def measure(stream: int, batch: int, port: int = 0) -> dict[str, Any]:
    """Run both batches against a fresh server; the figures of each."""
    folder = Path(tempfile.mkdtemp(prefix="xmargin-stream-memory-"))
    store = f"sqlite:///{folder / 'store.db'}"
    command = [sys.executable, "-m", "xmargin.server", "--port", str(port), "--workers", "2"]
    server = subprocess.Popen([*command, "--store", store], stderr=subprocess.PIPE, text=True)
    assert server.stderr is not None
    for line in server.stderr:
        if '"serving"' in line:
            port = int(json.loads(line)["port"])
            break
    threading.Thread(target=lambda: [None for _ in server.stderr or ()], daemon=True).start()
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            samples.append(_rss_mb(server.pid))

    threading.Thread(target=sample, daemon=True).start()
    book = make_book(
        REFERENCE_POSITIONS,
        REFERENCE_SCENARIOS,
        REFERENCE_SEED,
        scenario_set=generate_scenarios(REFERENCE_SCENARIOS, REFERENCE_SEED),
    )
    case = book_to_dict(book)
    figures: dict[str, Any] = {"idle_mb": round(_rss_mb(server.pid), 1)}
    try:
        with XmarginClient(f"127.0.0.1:{port}", timeout=3600) as client:
            runs: list[tuple[str, int, Callable[[], Iterator[BatchItem]]]] = [
                (
                    "optimise_stream",
                    stream,
                    lambda: client.optimise_stream(_accounts(case, stream)),
                ),
                ("optimise_batch", batch, lambda: client.optimise_batch([*_accounts(case, batch)])),
            ]
            for label, count, run in runs:
                if count <= 0:
                    continue
                samples.clear()
                started = time.monotonic()
                answered = sum(1 for item in run() if item.ok)
                figures[label] = {
                    "accounts": count,
                    "answered": answered,
                    "seconds": round(time.monotonic() - started, 1),
                    "peak_rss_mb": round(max(samples, default=float("nan")), 1),
                    "rss_mb_every_10_s": [round(s) for s in samples[::20]],
                    "after_mb": round(_rss_mb(server.pid), 1),
                }
    finally:
        done.set()
        server.terminate()
        server.wait(60)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmargin.bench.stream_memory")
    parser.add_argument("--stream", type=int, default=300, help="accounts through the stream")
    parser.add_argument("--batch", type=int, default=140, help="accounts through OptimiseBatch")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.stream, args.batch), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
