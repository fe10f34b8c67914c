"""The ``xmargin`` command line: a thin adapter over :mod:`xmargin.optimiser`.

Subcommands::

    xmargin optimise CASE.json [--backend highs|cvxpy] [--continuous] [--mode JOINT|FICC_FIXED]
                               [--time-limit S] [--csv F] [--fixml F] [--html F]
    xmargin margin CASE.json          the three states (and all eligible in XM) of the case
    xmargin eligibility CASE.json     each position's eligibility and reason codes
    xmargin what-if CASE.json --add TRADES.json --exclude ID ...
    xmargin explain CASE.json [--state current|optimised] [--account A ...] [--json]
    xmargin demo                      optimise the bundled sample book, as a table
    xmargin sample --positions N --scenarios S --seed K -o CASE.json
    xmargin batch DIR-or-BATCH.json [--run-number N] [--audit URL] [--engine local|dask]
                                    [--scheduler tcp://HOST:PORT] [--workers N]
    xmargin audit show --business-date D --cycle C --run-number N --account A [--reproduce]
    xmargin audit list --business-date D --cycle C --run-number N
    xmargin serve ...                 the gRPC server (xmargin.server.cli)
    xmargin bench ...                 the benchmark (xmargin.bench)

Output is JSON on stdout (``--table`` for people), except ``demo``, which prints a table
(``--json`` for machines). Progress goes to stderr for anything slower than a second.

Exit codes: 0 ok; 1 a component (server, benchmark) is not installed; 2 bad input (invalid
case, missing or unreadable file, bad arguments); 3 solver failure; 4 infeasible; 5 (batch and
audit) some accounts failed, or a reproduced answer differs from the stored one; 130 interrupted
(Ctrl-C).
"""

from .app import DELEGATES, build_parser, main
from .common import (
    EXIT_BAD_INPUT,
    EXIT_INCOMPLETE,
    EXIT_INFEASIBLE,
    EXIT_INTERRUPTED,
    EXIT_MISSING_COMPONENT,
    EXIT_OK,
    EXIT_SOLVER_FAILURE,
    UsageError,
    progress,
)

__all__ = [
    "DELEGATES",
    "EXIT_BAD_INPUT",
    "EXIT_INCOMPLETE",
    "EXIT_INFEASIBLE",
    "EXIT_INTERRUPTED",
    "EXIT_MISSING_COMPONENT",
    "EXIT_OK",
    "EXIT_SOLVER_FAILURE",
    "UsageError",
    "build_parser",
    "main",
    "progress",
]
