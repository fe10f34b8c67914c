"""``python -m xmargin.bench.worker SPEC.json OUT.json``: one measured configuration, in a
fresh process. ``spec["kind"]`` is ``solve``, ``batch`` or ``grpc``; the result (partial ones
too) goes to OUT.json, so the harness reads what was measured even if it kills the process at
the configuration's time cap."""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

__all__ = ["main", "write_json"]


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically (a reader never sees half a file)."""
    partial = path.with_suffix(path.suffix + ".part")
    partial.write_text(json.dumps(_finite(data), indent=1, allow_nan=False, default=_plain))
    os.replace(partial, path)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _finite(data: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(data, float):
        return data if data == data and abs(data) != float("inf") else None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data


def main(argv: list[str] | None = None) -> int:
    """Run the spec in ``argv[0]``, write the result to ``argv[1]``; 0 on success."""
    spec_path, out_path = (Path(a) for a in (argv if argv is not None else sys.argv[1:]))
    spec = json.loads(spec_path.read_text())

    def emit(result: dict[str, Any]) -> None:
        write_json(out_path, result)

    # cvxpy's "solution may be inaccurate" goes to stderr; the solver status is in the result.
    warnings.simplefilter("ignore")
    try:
        if spec["kind"] == "solve":
            from .solve import run_solve

            result = run_solve(spec, emit)
        elif spec["kind"] == "batch":
            from .batch import run_batch

            result = run_batch(spec)
        elif spec["kind"] == "grpc":
            from .grpc_trip import run_grpc

            result = run_grpc(spec)
        else:
            raise ValueError(f"unknown kind {spec['kind']!r}")
    except Exception as error:  # recorded, not raised: one failure must not end the run
        failure = f"{type(error).__name__}: {error}"
        emit({"status": "error", "error": failure, "traceback": traceback.format_exc()})
        return 1
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
