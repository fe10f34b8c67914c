"""The console script on a client-only install (no numpy): a clear message, not a traceback."""

from __future__ import annotations

import subprocess
import sys

BLOCK_SOLVER_STACK = """
import sys
for name in ("numpy", "cvxpy", "highspy"):
    sys.modules[name] = None  # import fails as if not installed
from xmargin.clients.launcher import main
raise SystemExit(main())
"""


def test_command_line_without_the_solver_stack_says_how_to_install_it() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_SOLVER_STACK, "demo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "pip install 'xmargin[solver]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_command_line_with_the_solver_stack_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "xmargin.clients.launcher", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "optimise" in done.stdout
