"""Exceptions raised by xmargin.

The hierarchy is small on purpose::

    XmarginError                  base of everything raised on purpose
    ├── CaseValidationError       bad input; names the offending field and value
    └── SolverError               no solver produced an allocation; says what to change
        └── InfeasibleError       the constraints admit no allocation
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from xmargin.schema import Violation, clip

__all__ = [
    "CaseValidationError",
    "InfeasibleError",
    "SolverError",
    "Violation",
    "XmarginError",
    "expect_type",
    "unknown_key_reason",
]


class XmarginError(Exception):
    """Base class of every error xmargin raises on purpose."""


class CaseValidationError(XmarginError, ValueError):
    """A case (file, dict or request) is invalid.

    ``violations`` lists every rule the input breaks, each a
    :class:`~xmargin.schema.Violation` (case-format ``path`` such as
    ``positions[3].xm_quantity``, the ``value`` found there, the ``message``). ``field``,
    ``value`` and ``reason`` are the first violation's (what single-error callers read).
    """

    def __init__(
        self,
        field: str,
        value: object = None,
        reason: str = "",
        *,
        violations: Sequence[Violation] | None = None,
    ) -> None:
        found = list(violations) if violations else [Violation(field, _shown(value), reason)]
        self.violations = found
        self.field, self.value, self.reason = found[0].path, found[0].value, found[0].message
        shown = "; ".join(_line(v) for v in found[:10])
        more = f"; and {len(found) - 10} more" if len(found) > 10 else ""
        super().__init__(shown + more)

    @classmethod
    def of(cls, violations: Sequence[Violation]) -> CaseValidationError:
        """One error carrying every violation of ``violations`` (not empty)."""
        first = violations[0]
        return cls(first.path, first.value, first.message, violations=violations)


def _shown(value: object) -> object:
    return clip(value) if isinstance(value, str) else value


def _line(violation: Violation) -> str:
    """``path: message (got value)``, the value cut to a bounded length."""
    if violation.value is None:
        return f"{violation.path}: {violation.message}"
    return f"{violation.path}: {violation.message} (got {clip(repr(violation.value))})"


class SolverError(XmarginError, RuntimeError):
    """No backend produced an allocation; ``advice`` says what to change."""

    def __init__(self, message: str, advice: str = "") -> None:
        self.advice = advice
        super().__init__(f"{message}. {advice}".strip() if advice else message)


class InfeasibleError(SolverError):
    """The allocation constraints (pins, transfer limit, integrality) admit no allocation."""


def unknown_key_reason(key: object, known: Iterable[str], where: str = "") -> str:
    """Why ``key`` is refused where only ``known`` keys may stand: the closest known key
    (named after ``where``, e.g. ``"accounts[0]."``), else the known keys."""
    names = sorted(known)
    close = difflib.get_close_matches(str(key)[:200], names, n=1)
    if close:
        return f"unknown key; did you mean {where}{close[0]}?"
    return f"unknown key; known: {', '.join(names)}"


def expect_type(value: object, kind: type | tuple[type, ...], name: str) -> None:
    """TypeError naming the argument ``name`` unless ``value`` is a ``kind`` (a public
    function's argument: a dict for a Book, a string for a date, was an AttributeError from
    inside, or an empty dict taken as "none given")."""
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        wanted = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
        raise TypeError(f"{name}: must be {wanted}, got {type(value).__name__}")
