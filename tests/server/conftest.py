"""Server test fixtures (see harness.py)."""

from tests.server.harness import (  # noqa: F401 (fixtures)
    cases,
    certificates,
    channel,
    server,
    small_server,
    small_stub,
    stub,
    token_server,
)
