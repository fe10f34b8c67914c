"""SIGINT and SIGTERM to a running ``xmargin`` command: it stops (130 / 143), with no traceback,
no answer, no file and no process left behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from xmargin.optimiser.case_format import book_to_dict
from xmargin.optimiser.sample import generate_book

# A generated book whose whole-lot search runs to any time limit (bench integral-tail: at
# the budget), so a stop can only come from the signal.
HARD_BOOK = (100, 500, 1005)
GUARD_SECONDS = 120  # far below the solves' own limit (3600 s): a guard, not a measured figure


def _start(tmp_path: Path, *argv: str) -> subprocess.Popen[str]:
    """The command as a terminal's foreground job: SIGINT at its default disposition. (A suite
    started in the background of a non-interactive shell, or under ``nohup``, ignores SIGINT;
    a child inherits that, and the command rightly keeps an ignored signal ignored.)"""
    return subprocess.Popen(
        [sys.executable, "-m", "xmargin.optimiser.cli", *argv],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _solving(process: subprocess.Popen[str]) -> None:
    """Return once ``optimise`` says it is solving (its progress line, after 1 s)."""
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("optimising"):
            return
    raise AssertionError(f"no progress line; exit {process.wait()}")


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + GUARD_SECONDS
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _children(pid: int) -> list[int]:
    listing = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True).stdout
    rows = (line.split() for line in listing.splitlines()[1:])
    return [int(child) for child, parent in rows if parent == str(pid)]


@pytest.fixture()
def hard_case(tmp_path: Path) -> Path:
    path = tmp_path / "hard.json"
    path.write_text(json.dumps(book_to_dict(generate_book(*HARD_BOOK, integral=True))))
    return path


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_stops_optimise_mid_solve(
    tmp_path: Path, hard_case: Path, sig: signal.Signals
) -> None:
    """SIGINT was lost inside HiGHS's callbacks: the solve ran to its limit, printed its answer,
    wrote the CSV and exited 0; SIGTERM killed it without a word."""
    process = _start(tmp_path, "optimise", str(hard_case), "--time-limit", "3600", "--csv", "t.csv")
    _solving(process)
    process.send_signal(sig)
    out, err = process.communicate(timeout=GUARD_SECONDS)
    assert process.returncode == 128 + sig, err
    assert f"stopped by {sig.name}" in err and "Traceback" not in err, err
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.json"]


def test_sigterm_stops_a_batch_and_its_workers(tmp_path: Path, hard_case: Path) -> None:
    """SIGTERM killed the batch's parent alone: its pool workers (and the forkserver) went on
    solving, orphaned. Now the batch stops as on Ctrl-C (the finished accounts stored)."""
    folder = tmp_path / "cases"
    folder.mkdir()
    case = json.loads(hard_case.read_text())
    case["options"]["time_limit"] = 3600.0
    for i in range(3):
        case["customer"]["id"] = f"C{i}"
        (folder / f"c{i}.json").write_text(json.dumps(case))
    process = _start(
        tmp_path, "batch", str(folder), "--workers", "2", "--audit", "sqlite:///audit.db"
    )

    def workers() -> list[int]:
        return [w for child in _children(process.pid) for w in _children(child)]

    _until(lambda: len(workers()) >= 2, "the pool's workers never started")
    pool = _children(process.pid) + workers()
    try:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=GUARD_SECONDS)
        assert process.returncode == 128 + signal.SIGTERM, err
        assert "interrupted" in err and "Traceback" not in err, err
        for pid in pool:
            _until(lambda pid=pid: not _alive(pid), f"process {pid} outlived the batch")
    finally:  # a failing run leaves no orphan solving for an hour
        for pid in pool:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (not a zombie: an exited child of an exited parent is reaped by init)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
