"""Optional parts of xmargin and the extra that installs each: a clear message when missing.

=============  ==============================  ===========================================
extra          installs                        needed by
=============  ==============================  ===========================================
``batch``      ``dask[distributed]``           the Dask batch engine (``--engine dask``)
``postgres``   ``psycopg[binary]``             a PostgreSQL audit store (``postgresql://``)
=============  ==============================  ===========================================
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require_extra"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require_extra(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError`: "``what`` needs ``module``: pip
    install 'xmargin[extra]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"{what} needs {module}, which is not installed: pip install 'xmargin[{extra}]'",
            name=module,
        ) from error
