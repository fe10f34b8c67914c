"""xmargin.bench: the benchmark of the allocation solver (``xmargin bench``).

``xmargin bench [--quick] [--out DIR] [--repeats N] [--parts ...]`` measures, in one run, the
reference account by the fast path (highs) and the cvxpy path, continuous and integral; the
margin of simple policies against the optimum; sweeps over positions x scenarios; a batch of
accounts on a process pool; and a gRPC round trip against a local server. Every measured
configuration runs in a fresh subprocess. Results go to DIR (default ``./bench-results``, under
the current folder, never inside the installed package; the recorded runs are ``--out
bench/results`` from the repository):
``results.json``, ``results.md``, ``time-vs-size.png`` (when matplotlib is installed) and the
profiles ``profile-*.txt``. The figures are recorded, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .report import headline, markdown, plot
from .runner import PARTS, Plan, run_plan
from .worker import write_json

__all__ = ["DEFAULT_OUT", "build_parser", "main"]

DEFAULT_OUT = Path("bench-results")  # relative: under the folder the benchmark runs in
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
PLOT_PNG = "time-vs-size.png"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmargin bench", description="Benchmark the allocation solver (figures recorded)."
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke mode: tiny sizes, one repeat (seconds)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"results folder (default ./{DEFAULT_OUT}; the recorded runs: bench/results)",
    )
    parser.add_argument(
        "--repeats", type=int, help="timed repeats of the reference account (default 15; quick 1)"
    )
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write the results; 0 when every part ran (missed targets included)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.repeats is not None and args.repeats < 1:
        print("xmargin bench: --repeats must be at least 1", file=sys.stderr)
        return 2
    if args.quick:
        plan = Plan.quick(args.repeats or 1)
    else:
        plan = Plan.full(args.repeats or 15)
    out: Path = args.out
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    results = run_plan(plan, out, tuple(args.parts), log)
    results["headline"] = headline(results)
    picture = plot(results, out / PLOT_PNG)
    results["plot"] = picture.name if picture else None
    write_json(out / RESULTS_JSON, results)
    (out / RESULTS_MD).write_text(markdown(results) + "\n")
    for row in results["headline"]:
        verdict = {True: "met", False: "MISSED", None: "-"}[row["met"]]
        print(f"{row['figure']}: {row['measured']} (target {row['target']}: {verdict})")
    print(f"results in {out}")
    return 0
