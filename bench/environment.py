"""What a benchmark run ran on: versions, CPU, cores, memory, commit, date."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "cpu_model", "environment"]

PACKAGES = ("numpy", "highspy", "cvxpy", "grpcio", "protobuf", "matplotlib", "xmargin")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The ``model name`` of /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def _git(*args: str) -> str | None:
    folder = Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _uncommitted() -> list[str] | None:
    """Files of the measured packages that differ from the commit (work in progress in the
    tree the editable install runs from)."""
    status = _git("status", "--porcelain", "--", ":/optimiser", ":/server", ":/clients")
    if status is None:
        return None
    return sorted(line.split(maxsplit=1)[1] for line in status.splitlines() if line.strip())


def environment() -> dict[str, Any]:
    """Versions of python and the packages that matter, the machine, the commit, the date."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "versions": {package: _version(package) for package in PACKAGES},
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _memory_gib(),
        "commit": _git("rev-parse", "HEAD") or None,
        "uncommitted": _uncommitted(),
    }
