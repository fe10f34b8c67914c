"""Client test fixtures: the same real servers (see harness.py)."""

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
