"""Summaries of repeated timings, and the process's memory high-water mark."""

from __future__ import annotations

import resource
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["current_rss_mib", "peak_rss_mib", "percentile", "reset_peak_rss", "summarise"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """Median, interquartile range, min, max and count of ``values`` (seconds); empty: nulls."""
    if not values:
        return {"median": None, "p25": None, "p75": None, "min": None, "max": None, "n": 0}
    data = np.asarray(values, dtype=float)
    return {
        "median": float(np.median(data)),
        "p25": float(np.percentile(data, 25)),
        "p75": float(np.percentile(data, 75)),
        "min": float(data.min()),
        "max": float(data.max()),
        "n": int(data.size),
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation) of ``values``, None when empty."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else None


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux ``clear_refs`` 5); False when the
    kernel does not allow it (then :func:`peak_rss_mib` is the peak since the process began)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    """Peak resident memory of this process (MiB): VmHWM, or ``ru_maxrss`` without /proc."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0


def current_rss_mib() -> float:
    """Resident memory of this process now (MiB); the peak where /proc is missing."""
    kib = _status_kib("VmRSS")
    return kib / 1024.0 if kib is not None else peak_rss_mib()
