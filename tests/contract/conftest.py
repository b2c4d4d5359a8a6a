"""Contract suites: each twin and the real implementation it stands in for pass the same tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.settings import StorageConnection
from tests.functional.azurite import running_azurite


@pytest.fixture(scope="session")
def azurite_conn() -> Iterator[StorageConnection]:
    """One private Azurite (blobs, queues, tables) for every contract suite of the session."""
    with running_azurite() as connection_string:
        yield StorageConnection(connection_string=connection_string)
