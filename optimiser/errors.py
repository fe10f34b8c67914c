"""Exceptions raised by xmargin.

The hierarchy is small on purpose::

    XmarginError                  base of everything raised on purpose
    ├── CaseValidationError       bad input; names the offending field and value
    └── SolverError               no solver produced an allocation; says what to change
        └── InfeasibleError       the constraints admit no allocation
"""

from __future__ import annotations

__all__ = ["CaseValidationError", "InfeasibleError", "SolverError", "XmarginError"]


class XmarginError(Exception):
    """Base class of every error xmargin raises on purpose."""


class CaseValidationError(XmarginError, ValueError):
    """A case (file, dict or request) is invalid.

    ``field`` is the path of the offending field in the case format (for example
    ``positions[3].xm_quantity``), ``value`` the value found there.
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: {reason} (got {value!r})")


class SolverError(XmarginError, RuntimeError):
    """No backend produced an allocation; ``advice`` says what to change."""

    def __init__(self, message: str, advice: str = "") -> None:
        self.advice = advice
        super().__init__(f"{message}. {advice}".strip() if advice else message)


class InfeasibleError(SolverError):
    """The allocation constraints (pins, transfer limit, integrality) admit no allocation."""
