"""Synthetic sample books: key-rate scenario history, Treasury and futures risk, book templates.

Everything is deterministic given a seed (one :class:`numpy.random.Generator`), and everything is
synthetic: the figures look like a Treasury market, they are not market data.

Modules, in data-flow order: :mod:`.scenarios` (the key-rate scenario history),
:mod:`.instruments` (bond maths, CUSIPs, option pricing, the instrument catalogue),
:mod:`.books` (book templates and :func:`generate_book`).
"""

from __future__ import annotations

from .books import (
    SAMPLE_BOOK_RESOURCE,
    SAMPLE_SEED,
    TEMPLATES,
    Leg,
    default_models,
    generate_book,
    generate_case,
    load_sample_book,
    sample_book_path,
)
from .instruments import (
    BOND_FUTURES,
    ZERO_CURVE,
    BondFutureSpec,
    CashFlows,
    Catalogue,
    bachelier_price,
    cash_flows,
    conversion_factor,
    key_rate_weights,
    zero_rate,
)
from .scenarios import (
    DEFAULT_BUSINESS_DATE,
    FACTORS,
    KEY_TENORS,
    STRESS_DAYS,
    TARGET_DAILY_VOL_BP,
    business_days,
    factor_correlation,
    generate_scenarios,
    target_covariance,
)

__all__ = [
    "BOND_FUTURES",
    "DEFAULT_BUSINESS_DATE",
    "FACTORS",
    "KEY_TENORS",
    "SAMPLE_BOOK_RESOURCE",
    "SAMPLE_SEED",
    "STRESS_DAYS",
    "TARGET_DAILY_VOL_BP",
    "TEMPLATES",
    "ZERO_CURVE",
    "BondFutureSpec",
    "CashFlows",
    "Catalogue",
    "Leg",
    "bachelier_price",
    "business_days",
    "cash_flows",
    "conversion_factor",
    "default_models",
    "factor_correlation",
    "generate_book",
    "generate_case",
    "generate_scenarios",
    "key_rate_weights",
    "load_sample_book",
    "sample_book_path",
    "target_covariance",
    "zero_rate",
]
