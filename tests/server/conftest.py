"""Server test fixtures (see harness.py)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.optimiser.test_audit import _postgres_url
from tests.server.harness import (  # noqa: F401 (fixtures)
    cases,
    certificates,
    channel,
    isolated_data_home,
    server,
    small_server,
    small_stub,
    stub,
    token_server,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store of each kind (PostgreSQL when $XMARGIN_TEST_PG_DSN is set)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        with _postgres_url() as url:
            yield url
