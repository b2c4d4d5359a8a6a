"""Fixtures for the local stack's own tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devstack.stack import start_stack, stop_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A stack of this module's own, on free ports: the tests reconfigure the emulators freely."""
    state = tmp_path_factory.mktemp("devstack")
    endpoints = start_stack(state, "auto")
    try:
        yield endpoints
    finally:
        stop_stack(state)
