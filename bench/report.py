"""The recorded results: headline figures against the targets, a markdown table, a PNG plot."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "TARGETS",
    "Target",
    "headline",
    "markdown",
    "plot",
]


@dataclass(frozen=True, slots=True)
class Target:
    """A performance target of ../shared/design/architecture.md."""

    id: str
    figure: str
    target: str
    limit: float | None  # the measured value must be <= limit; None: reported only


TARGETS = (
    Target("reference", "optimise one reference account, in process, median", "<= 25 ms", 0.025),
    # value: fast path / cvxpy path (<= 1/100: the fast path >= 100x faster)
    Target("cvxpy_ratio", "same, cvxpy path (reference)", ">= 100x the fast path", 0.01),
    # the whole-lot target (p50 <= 2x, p99 <= 5x the continuous time over >= 200 books) is
    # measured by bench.integral_tail; here the reference account's time is reported only
    Target("integral", "same, whole lots", "reported (see the integral tail)", None),
    Target("large_time", "1,500 positions, 5,000 scenarios: time (median)", "<= 1 s", 1.0),
    Target("large_memory", "1,500 positions, 5,000 scenarios: peak memory", "<= 1 GiB", 1024.0),
    Target("batch", "a book of 1,000 accounts, 2 cores, end to end", "<= 12 s", 12.0),
    Target("batch_audit", "same, with the SQLite audit store", "<= 15 s", 15.0),
    # value: the Dask engine's time / the local engine's
    Target("batch_dask", "same, on the Dask engine", "within 1.3x the local engine", 1.3),
    # value: the fast path's time / the cvxpy path's, at the worst share of P&L vectors
    Target("pnl", "books given as P&L vectors (0-100%)", "no slower than cvxpy", 1.0),
    Target("grpc_p50", "gRPC round trip, reference account, p50", "<= 20 ms", 0.020),
    Target("grpc_p99", "gRPC round trip, reference account, p99", "<= 40 ms", 0.040),
    Target("agreement", "optimum vs an independent solve (cvxpy)", "<= 1e-6 relative", 1e-6),
)


def seconds(value: float | None) -> str:
    """A duration for people: ms below a second."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value < 1.0:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def _get(data: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return None
    return data


def _median(config: dict[str, Any] | None, phase: str = "wall") -> float | None:
    value = _get(config, "timing", phase, "median")
    return float(value) if value is not None else None


def _timed_out(config: dict[str, Any] | None) -> bool:
    return config is not None and config.get("status") in ("timed_out", "killed")


def _solve_figure(config: dict[str, Any] | None) -> str:
    """Median wall time, or why there is none."""
    if not config:
        return "not run"
    status = config.get("status")
    if status == "timed_out":
        limit = _get(config, "spec", "time_limit")
        gap = config.get("gap")
        # Only the highs backend reports a proven bound (cvxpy's "bound" is its objective).
        proven = config.get("backend_used") == "highs" and isinstance(gap, float)
        gap_text = f", incumbent gap {gap:.1e}" if proven else ""
        return f"timed out at {limit:g} s{gap_text}"
    if status == "killed":
        return f"killed at the {config.get('cap_seconds', 0):.0f} s cap"
    if status != "ok":
        return f"error: {config.get('error', status)}"
    timing = config["timing"]["wall"]
    spread = f" (IQR {seconds(timing['p25'])}-{seconds(timing['p75'])}, n={timing['n']})"
    return seconds(timing["median"]) + spread


def _sweep_config(
    results: dict[str, Any], positions: int, scenarios: int, backend: str, kind: str
) -> dict[str, Any] | None:
    for run in results.get("sweep", []):
        if (run.get("positions"), run.get("scenarios"), run.get("backend"), run.get("kind")) == (
            positions,
            scenarios,
            backend,
            kind,
        ):
            return dict(run)
    return None


def headline(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured figure and whether it is met (None: not measured, or a
    quick run, whose sizes are not the targets')."""
    ref_highs = _get(results, "reference", "continuous", "highs")
    ref_cvxpy = _get(results, "reference", "continuous", "cvxpy")
    ref_integral = _get(results, "reference", "integral", "highs")
    large = _sweep_config(results, 1500, 5000, "highs", "continuous")
    batch, grpc = results.get("batch"), results.get("grpc")
    rows = []
    for target in TARGETS:
        value: float | None = None
        measured = "not measured"
        if target.id == "reference" and ref_highs:
            value, measured = _median(ref_highs), _solve_figure(ref_highs)
        elif target.id == "cvxpy_ratio" and ref_cvxpy:
            fast, slow = _median(ref_highs), _median(ref_cvxpy)
            measured = _solve_figure(ref_cvxpy)
            if fast and slow:
                value = fast / slow
                build, solve = _median(ref_cvxpy, "build"), _median(ref_cvxpy, "solve")
                measured += (
                    f"; {slow / fast:.0f}x the fast path (compile {seconds(build)}, "
                    f"solve {seconds(solve)})"
                )
        elif target.id == "integral" and ref_integral:
            measured = _solve_figure(ref_integral)
            value = math.inf if _timed_out(ref_integral) else _median(ref_integral)
        elif target.id == "large_time" and large:
            measured = _solve_figure(large)
            value = math.inf if _timed_out(large) else _median(large)
        elif target.id == "large_memory" and large and _get(large, "memory", "peak_rss_mib"):
            value = float(large["memory"]["peak_rss_mib"])
            measured = f"{value:.0f} MiB peak RSS of the process"
            traced = _get(large, "memory", "tracemalloc_peak_mib")
            if traced is not None:
                measured += f" (Python allocations {traced:.0f} MiB)"
        elif target.id == "batch" and batch and batch.get("total_seconds") is not None:
            value = float(batch["total_seconds"])
            variant = BATCH_VARIANTS.get(batch.get("headline_variant", ""), "pool")
            measured = (
                f"{seconds(value)} for {batch['accounts']:,} accounts of {batch['positions']} x "
                f"{batch['scenarios']:,} on {batch['workers']} workers, {variant} "
                f"({batch['accounts_per_second']:.1f} accounts/s)"
            )
        elif target.id in ("batch_audit", "batch_dask") and batch:
            variants = batch.get("variants") or {}
            local = _get(variants, "engine", "total_seconds")
            name = "engine_audit" if target.id == "batch_audit" else "engine_dask"
            other = _get(variants, name, "total_seconds")
            if other is not None:
                value = float(other) if target.id == "batch_audit" else None
                measured = seconds(float(other))
                if target.id == "batch_dask" and local:
                    value = float(other) / float(local)
                    measured += f", {value:.2f}x the local engine ({seconds(float(local))})"
        elif target.id == "pnl" and results.get("pnl_vectors"):
            ratios = _pnl_ratios(results["pnl_vectors"])
            if ratios:
                share, value = max(ratios.items(), key=lambda item: item[1])
                measured = (
                    f"fast path / cvxpy at most {value:.3f} ({share:.0%} P&L vectors; "
                    f"{len(ratios)} shares)"
                )
        elif target.id in ("grpc_p50", "grpc_p99") and grpc and grpc.get("p50") is not None:
            value = float(grpc["p50" if target.id == "grpc_p50" else "p99"])
            measured = f"{seconds(value)} over {grpc['calls']} calls"
        elif target.id == "agreement" and ref_highs and ref_cvxpy:
            a, b = ref_highs.get("optimum"), ref_cvxpy.get("optimum")
            if a is not None and b is not None:
                value = abs(a - b) / max(1.0, abs(b))
                measured = f"{value:.1e} relative (highs {a:,.2f}, cvxpy {b:,.2f} USD)"
        met = None if target.limit is None or value is None else bool(value <= target.limit)
        if results.get("mode") != "full":
            met = None  # the quick run's sizes are not the targets' sizes
        rows.append(
            {
                "id": target.id,
                "figure": target.figure,
                "target": target.target,
                "measured": measured,
                "value": None if value is None or math.isinf(value) else value,
                "met": met,
            }
        )
    return rows


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "-"}[met]


def _policies(results: dict[str, Any], kind: str) -> list[str]:
    config = _get(results, "reference", kind, "highs")
    policies = _get(config, "policies")
    if not policies:
        return []
    optimum = config["optimum"]
    label = "optimum" if config.get("status") == "ok" else "best found (solver timed out)"
    rows = [[f"optimiser ({label})", f"{optimum:,.0f}", "-", "-", "-"]]
    for name, figures in policies.items():
        rows.append(
            [
                name,
                f"{figures['total']:,.0f}",
                f"{figures['above_optimum']:,.0f}",
                f"{100 * figures['above_optimum_relative']:.1f}%",
                str(figures["positions_in_xm"]),
            ]
        )
    header = ["policy", "total margin (USD)", "above optimum (USD)", "above optimum", "in XM"]
    return [f"### Simple policies, reference account, {kind}", "", *_table(header, rows), ""]


def _phases(config: dict[str, Any] | None) -> str:
    if not config or config.get("status") != "ok":
        return "-"
    text = ", ".join(
        f"{phase} {seconds(_median(config, phase))}"
        for phase in ("problem", "build", "solve", "report")
    )
    if _get(config, "timing", "lp") is None:  # recorded before LP time was measured
        return text
    rounds = config.get("rounds")
    counted = f", {rounds} round{'s' if rounds != 1 else ''}" if rounds else ""
    return (
        f"{text} (of build + solve: LP {seconds(_median(config, 'lp'))}, evaluation "
        f"{seconds(_median(config, 'evaluation'))}{counted})"
    )


def _memory(config: dict[str, Any] | None) -> str:
    peak = _get(config, "memory", "peak_rss_mib")
    if peak is None:
        return "-"
    text = f"{peak:.0f} MiB"
    increment = _get(config, "memory", "solve_increment_mib")
    if increment is not None:
        text += f" (+{increment:.0f})"
    traced = _get(config, "memory", "tracemalloc_peak_mib")
    if traced is not None:
        text += f", py {traced:.0f}"
    return text


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown: headline, reference, policies, sweep, batch, gRPC."""
    env = results["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    lines = [
        f"# xmargin benchmark ({results['mode']} run)",
        "",
        f"Run {results['started_at']} to {results.get('finished_at', '?')} "
        f"({seconds(results.get('duration_seconds'))}); {env['cpu_model']}, {env['cores']} "
        f"cores, {env['memory_gib']:.0f} GiB; Python {env['python']}; {versions}; commit "
        f"{(env.get('commit') or '?')[:10]}. Load average at start "
        f"{results['load_average_start'][0]:.2f}, at end {results['load_average_end'][0]:.2f} "
        "(other work shares this machine).",
        "",
        *(
            [
                "Measured with uncommitted work in progress in the tree: "
                + ", ".join(f"`{path}`" for path in env["uncommitted"])
                + ".",
                "",
            ]
            if env.get("uncommitted")
            else []
        ),
        "Each configuration ran in a fresh subprocess, one after the other. Times are wall clock "
        "of `optimise()` from a built book (problem build + backend build/compile + solve + "
        "exact evaluation and report); memory is the process's peak RSS during the timed "
        "solves (+ its rise over the RSS before them), and `py` the tracemalloc peak of one "
        "solve (Python and numpy allocations, not HiGHS's own).",
        "",
        "## Headline against the targets",
        "",
    ]
    lines += _table(
        ["figure", "target", "measured", "verdict"],
        ([r["figure"], r["target"], r["measured"], _verdict(r["met"])] for r in headline(results)),
    )
    lines.append("")
    reference = results.get("reference")
    if reference:
        lines += [
            f"## Reference account ({reference['positions']} positions, {reference['factors']} "
            f"factors, {reference['scenarios']:,} scenarios, {reference['models']} models)",
            "",
        ]
        rows = []
        for kind in ("continuous", "integral"):
            for backend in ("highs", "cvxpy"):
                config = reference[kind].get(backend)
                rows.append(
                    [
                        kind,
                        backend,
                        _solve_figure(config),
                        _phases(config),
                        _memory(config),
                        f"{config['optimum']:,.2f}" if config and config.get("optimum") else "-",
                    ]
                )
        header = ["allocation", "backend", "wall (median)", "median phases", "memory", "total"]
        lines += [*_table(header, rows), ""]
        lines += _policies(results, "continuous") + _policies(results, "integral")
    if results.get("sweep"):
        lines += _sweep_markdown(results)
    if results.get("pnl_vectors"):
        lines += _pnl_markdown(results["pnl_vectors"])
    batch = results.get("batch")
    if batch:
        lines += ["## Batch", "", *_batch_markdown(batch), ""]
    grpc = results.get("grpc")
    if grpc:
        lines += ["## gRPC round trip", ""]
        if grpc.get("status") == "ok":
            lines.append(
                f"`{grpc['command']}` on a free local port; reference account "
                f"({grpc['positions']} x {grpc['scenarios']:,}), scenario set "
                f"{grpc['scenario_set']}; request {grpc['request_bytes']:,} bytes. "
                f"{grpc['calls']} measured calls after {grpc['warmup_calls']} warm-up: "
                f"**p50 {seconds(grpc['p50'])}, p99 {seconds(grpc['p99'])}** (min "
                f"{seconds(grpc['latency']['min'])}, max {seconds(grpc['latency']['max'])}); "
                f"the server's own time per call (its log) median "
                f"{seconds(grpc['server_side']['median'])}. Measured: {grpc['measured']}."
            )
            overhead = grpc.get("overhead_no_solve")
            if overhead:
                wall, cpu = overhead["round_trip_wall"], overhead["round_trip_cpu"]
                lines += [
                    "",
                    f"The call without its solve (`bench/call_overhead.py`: {overhead['measured']}"
                    f"): **wall median {seconds(wall['median'])}, CPU median "
                    f"{seconds(cpu['median'])}** per call over {overhead['calls']} calls; of it "
                    "the client's own CPU medians: "
                    + ", ".join(
                        f"{name} {seconds(part['cpu']['median'])}"
                        for name, part in overhead["client_parts"].items()
                    )
                    + ".",
                ]
        else:
            lines.append(f"{grpc.get('status')}: {grpc.get('error', grpc.get('reason'))}")
        lines.append("")
    profiles = sorted(
        {
            str(config.get("profile"))
            for kind in ("continuous", "integral")
            for config in (_get(results, "reference", kind) or {}).values()
            if isinstance(config, dict) and config.get("profile")
        }
    )
    if profiles:
        lines += ["Profiles: " + ", ".join(f"[{p}]({p})" for p in profiles) + ".", ""]
    return "\n".join(lines)


BATCH_VARIANTS = {
    "engine": "product batch engine (LocalPoolEngine)",
    "engine_audit": "the same, with the SQLite audit store",
    "engine_dask": "the same path on the Dask engine (LocalCluster)",
    "pool": "bare multiprocessing pool, optimise() only",
}


def _batch_markdown(batch: dict[str, Any]) -> list[str]:
    if "variants" not in batch:
        return [f"{batch.get('status')}: {batch.get('error', batch.get('reason'))}"]
    lines = [
        f"{batch['accounts']:,} accounts of {batch['positions']} positions x "
        f"{batch['scenarios']:,} scenarios sharing one scenario set, {batch['workers']} worker "
        f"processes. The accounts were generated and stored beforehand (untimed, "
        f"{seconds(batch['generate_seconds_untimed'])}, {batch['stored_mib']:.0f} MiB).",
        "",
    ]
    rows = []
    for name, label in BATCH_VARIANTS.items():
        variant = batch["variants"].get(name) or {}
        if variant.get("total_seconds") is None:
            rows.append([label, variant.get("error", variant.get("status", "not run")), "-", "-"])
            continue
        rows.append(
            [
                label + (" (headline)" if name == batch["headline_variant"] else ""),
                f"**{seconds(variant['total_seconds'])}**",
                f"{variant['accounts_per_second']:.1f}",
                variant["measured"],
            ]
        )
    lines += _table(["variant", "end to end", "accounts/s", "inside the clock"], rows)
    pool = batch["variants"].get("pool") or {}
    if pool.get("optimise_per_account"):
        lines += [
            "",
            f"In the bare pool, `optimise()` took a median "
            f"{seconds(pool['optimise_per_account']['median'])} per account with two processes "
            f"at once (sum {seconds(pool['optimise_sum'])}).",
        ]
    probe = batch.get("parallel_probe")
    if probe:
        lines[-1] += (
            f" Parallelism actually available: a CPU-bound loop took "
            f"{seconds(probe['alone_seconds'])} alone and "
            f"{seconds(sum(probe['together_seconds']) / len(probe['together_seconds']))} with "
            f"{batch['workers']} processes at once, an effective "
            f"{probe['effective_parallelism']:.2f} of {batch['workers']} cores."
        )
    if batch.get("profile"):
        lines += [
            "",
            f"Profile of one account's work in the engine: [{batch['profile']}]"
            f"({batch['profile']}).",
        ]
    return lines


def _pnl_pairs(
    runs: list[dict[str, Any]],
) -> dict[float, tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """Per share of P&L-vector instruments (ascending), its highs run and its cvxpy run."""
    pairs = {}
    for share in sorted({run["pnl_share"] for run in runs}):
        by_backend = {run["backend"]: run for run in runs if run["pnl_share"] == share}
        pairs[share] = (by_backend.get("highs"), by_backend.get("cvxpy"))
    return pairs


def _pnl_ratios(runs: list[dict[str, Any]]) -> dict[float, float]:
    """Per share of P&L-vector instruments, the fast path's median time / the cvxpy path's."""
    ratios = {}
    for share, (highs, cvxpy) in _pnl_pairs(runs).items():
        fast, reference = _median(highs), _median(cvxpy)
        if fast and reference:
            ratios[share] = fast / reference
    return ratios


def _pnl_markdown(runs: list[dict[str, Any]]) -> list[str]:
    """The reference account by share of P&L-vector instruments: both paths, and their ratio."""
    rows = []
    for share, (highs, cvxpy) in _pnl_pairs(runs).items():
        fast, reference = _median(highs), _median(cvxpy)
        ratio = f"{reference / fast:,.1f}x" if fast and reference else "-"
        rows.append([f"{share:.0%}", _solve_figure(highs), _solve_figure(cvxpy), ratio])
    noise = runs[0].get("pnl_noise", 0.0)
    header = ["P&L-vector share", "highs continuous", "cvxpy continuous", "cvxpy / highs"]
    return [
        "## Books given as P&L vectors",
        "",
        f"The reference account with that share of its instruments given as P&L vectors "
        f"(p = shocks @ d plus {noise:g} x its standard deviation of independent noise).",
        "",
        *_table(header, rows),
        "",
    ]


def _sweep_markdown(results: dict[str, Any]) -> list[str]:
    sizes = sorted({(r["positions"], r["scenarios"]) for r in results["sweep"]})
    rows = []
    for n, s in sizes:
        highs = _sweep_config(results, n, s, "highs", "continuous")
        rows.append(
            [
                f"{n:,}",
                f"{s:,}",
                _solve_figure(highs),
                _phases(highs),
                _memory(highs),
                _solve_figure(_sweep_config(results, n, s, "cvxpy", "continuous")),
                _solve_figure(_sweep_config(results, n, s, "highs", "integral")),
                _solve_figure(_sweep_config(results, n, s, "cvxpy", "integral")),
            ]
        )
    header = [
        "positions",
        "scenarios",
        "highs continuous",
        "highs phases (median)",
        "highs memory",
        "cvxpy continuous",
        "highs integral",
        "cvxpy integral",
    ]
    lines = ["## Sweep", "", *_table(header, rows), ""]
    skipped = results.get("skipped") or []
    if skipped:
        reasons: dict[str, list[str]] = {}
        for item in skipped:
            key = f"{item['backend']} {item['kind']}"
            reasons.setdefault(item["reason"], []).append(
                f"{key} {item['positions']}x{item['scenarios']}"
            )
        lines.append(
            'Not run ("not run" above): '
            + "; ".join(f"{len(v)} configurations ({v[0]}, ...): {k}" for k, v in reasons.items())
            + "."
        )
        lines.append("")
    return lines


def plot(results: dict[str, Any], path: Path) -> Path | None:
    """Time against size, one panel per path; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = [
        ("highs", "continuous", "fast path (highs), continuous"),
        ("highs", "integral", "fast path (highs), integral lots"),
        ("cvxpy", "continuous", "cvxpy path, continuous"),
    ]
    sweep = results.get("sweep", [])
    scenario_counts = sorted({r["scenarios"] for r in sweep})
    figure, axes = plt.subplots(1, len(panels), figsize=(15, 4.8), sharey=True)
    for axis, (backend, kind, title) in zip(axes, panels, strict=True):
        for scenarios in scenario_counts:
            runs = sorted(
                (
                    r
                    for r in sweep
                    if r["backend"] == backend and r["kind"] == kind and r["scenarios"] == scenarios
                ),
                key=lambda r: r["positions"],
            )
            done = [(r["positions"], _median(r)) for r in runs if r.get("status") == "ok"]
            capped = [
                (r["positions"], _get(r, "spec", "time_limit") or r.get("process_seconds"))
                for r in runs
                if r.get("status") in ("timed_out", "killed")
            ]
            line = None
            if done:
                (line,) = axis.plot(*zip(*done, strict=True), marker="o", label=f"{scenarios:,}")
            if capped:
                colour = line.get_color() if line is not None else None
                axis.scatter(*zip(*capped, strict=True), marker="x", s=60, color=colour)
        axis.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        axis.set_xscale("log")
        axis.set_yscale("log")
        ticks = sorted({r["positions"] for r in sweep})
        axis.set_xticks(ticks, [f"{t:,}" for t in ticks])
        axis.minorticks_off()
        axis.set_title(title)
        axis.set_xlabel("positions")
        axis.grid(True, which="both", alpha=0.25)
    axes[0].set_ylabel("optimise() wall time, median (s)")
    axes[0].axhline(0.025, color="red", linestyle="--", linewidth=1, label="25 ms target")
    axes[0].legend(title="scenarios", fontsize=8)
    figure.suptitle(
        f"xmargin benchmark {results['started_at'][:10]} ({results['environment']['cpu_model']},"
        f" {results['environment']['cores']} cores); x: timed out at the time limit"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
