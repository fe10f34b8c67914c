"""Solver backends: the registry, the one parser of backend names, and what each may raise.

A backend name is ``highs`` (the direct highspy formulation, the default), ``cvxpy`` (the
cvxpy reference formulation with HiGHS) or ``cvxpy:SOLVER`` (any installed cvxpy solver).
:func:`parse_backend_name` is the only place a name is checked: the CLI, the server's
conversion, the batch and :func:`~xmargin.optimiser.optimise.optimise` all call it, so each
refuses the same names with the same message. Backends load lazily (cvxpy takes half a
second to import): parsing ``highs`` imports no solver, ``cvxpy:SOLVER`` imports cvxpy to ask
which solvers are installed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CaseValidationError, SolverError
from .base import Backend

__all__ = [
    "BACKENDS",
    "BACKEND_FIELD",
    "BACKEND_HELP",
    "DEFAULT_BACKEND",
    "NOT_SOLVER_ERRORS",
    "BackendSpec",
    "UnknownBackendError",
    "expected_solver_errors",
    "installed_cvxpy_solvers",
    "parse_backend_name",
]

BACKEND_FIELD = "options.backend"
"""The case-format path of the backend name, named by every refusal."""

DEFAULT_BACKEND = "highs"

BACKEND_HELP = "highs (default), cvxpy or cvxpy:SOLVER (any installed cvxpy solver)"
"""The accepted backend names, as the command line's help and the server's docs say them."""


def _highs(solver: str | None = None) -> Backend:
    from .highs_backend import HighsBackend

    return HighsBackend()


def _cvxpy(solver: str | None = None) -> Backend:
    from .cvxpy_backend import CvxpyBackend

    return CvxpyBackend(solver or "HIGHS")


BACKENDS: dict[str, Callable[..., Backend]] = {"highs": _highs, "cvxpy": _cvxpy}
"""Each backend family and its factory (called with the cvxpy solver name, or nothing); the
fallback chain tries the families in this order after the requested one."""


class UnknownBackendError(CaseValidationError):
    """A backend name that is not ``highs``, ``cvxpy`` or ``cvxpy:SOLVER`` with SOLVER an
    installed cvxpy solver; the message lists the allowed names."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(BACKEND_FIELD, name, reason)


@functools.cache
def installed_cvxpy_solvers() -> tuple[str, ...]:
    """The solvers cvxpy can use here, asked once per process (cvxpy probes each solver's
    import on every ``installed_solvers()`` call)."""
    import cvxpy

    return tuple(cvxpy.installed_solvers())


def _allowed(installed: tuple[str, ...] | None = None) -> str:
    solvers = f" with SOLVER one of {', '.join(installed)}" if installed else ""
    return f"use {', '.join(BACKENDS)} or cvxpy:SOLVER{solvers}"


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """A parsed backend name: the ``family`` (a key of :data:`BACKENDS`) and, for cvxpy, the
    ``solver`` it was asked for (None: the family's default)."""

    family: str
    solver: str | None = None

    @property
    def name(self) -> str:
        """The canonical name: ``highs``, ``cvxpy`` or ``cvxpy:SOLVER``."""
        return self.family if self.solver is None else f"{self.family}:{self.solver}"

    def create(self) -> Backend:
        """A new backend instance of this spec."""
        factory = BACKENDS[self.family]
        return factory(self.solver) if self.solver is not None else factory()


def parse_backend_name(name: str) -> BackendSpec:
    """The :class:`BackendSpec` of ``name`` (``highs``, ``cvxpy``, ``cvxpy:SOLVER``, the
    solver's name in any case), else :class:`UnknownBackendError` naming the allowed names."""
    family, colon, solver = name.partition(":")
    if family not in BACKENDS:
        raise UnknownBackendError(name, f"unknown backend {name!r}; {_allowed()}")
    if not colon:
        return BackendSpec(family)
    if family != "cvxpy" or not solver:
        raise UnknownBackendError(name, f"unknown backend {name!r}; {_allowed()}")
    installed = installed_cvxpy_solvers()
    if solver.upper() not in installed:
        raise UnknownBackendError(
            name, f"unknown backend {name!r}: cvxpy solver not installed; {_allowed(installed)}"
        )
    return BackendSpec(family, solver.upper())


def expected_solver_errors(spec: BackendSpec) -> tuple[type[Exception], ...]:
    """The exceptions a backend of ``spec`` raises when its solver fails (a failure the
    fallback chain moves past); anything else is a bug and propagates.

    - every backend: :class:`~xmargin.optimiser.errors.SolverError` (raised on purpose);
    - highs: highspy reports failures as status codes (mapped to
      :class:`~xmargin.optimiser.results.Status`, not raised), but its pybind11 bindings turn
      a C++ exception into RuntimeError (except the bug classes in :data:`NOT_SOLVER_ERRORS`);
    - cvxpy: ``cvxpy.SolverError`` (the solver crashed or gave up).
    """
    errors: tuple[type[Exception], ...] = (SolverError, RuntimeError)
    if spec.family == "cvxpy":
        import cvxpy

        errors += (cvxpy.SolverError,)
    return errors


NOT_SOLVER_ERRORS: tuple[type[Exception], ...] = (NotImplementedError, RecursionError)
"""RuntimeError subclasses that are bugs, never a solver failure: they propagate."""
