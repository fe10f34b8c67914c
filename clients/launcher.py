"""The ``xmargin`` console script's entry point.

The base install is the client only, so the command line (part of the ``solver`` extra) may be
missing: say how to install it rather than print an import traceback.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> int:
    try:
        from xmargin.optimiser.cli import main as command_line
    except ImportError as error:
        missing = error.name or "the solver stack"
        print(
            f"xmargin: the command line needs the solver stack ({missing} is not installed); "
            "install it with: pip install 'xmargin[solver]'",
            file=sys.stderr,
        )
        return 1
    return command_line()


if __name__ == "__main__":
    sys.exit(main())
