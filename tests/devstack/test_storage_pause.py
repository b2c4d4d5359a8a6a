"""Azurite on disk: a storage pause (stopped, then started on the same ports) keeps every message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.storage.queue import QueueClient

from devstack.stack import AZURITE_DATA, start_storage, stop_storage

pytestmark = pytest.mark.e2e


def test_storage_paused_and_resumed_keeps_its_messages(stack: dict[str, Any]) -> None:
    # GIVEN a message on a queue of the running stack
    conn = stack["azurite"]["connection_string"]
    with QueueClient.from_connection_string(conn, "pause-probe") as queue:
        queue.create_queue()
        queue.send_message("kept")
    assert (Path(stack["state_dir"]) / AZURITE_DATA).is_dir()
    try:
        # WHEN storage is stopped
        stop_storage(stack["state_dir"])
        # THEN it cannot be reached
        with QueueClient.from_connection_string(conn, "pause-probe", retry_total=0) as queue:
            with pytest.raises(ServiceRequestError):
                queue.get_queue_properties()
    finally:
        # WHEN it is started again
        start_storage(stack["state_dir"])
    # THEN the message is still there, on the same endpoint
    with QueueClient.from_connection_string(conn, "pause-probe") as queue:
        assert [m.content for m in queue.receive_messages()] == ["kept"]
        queue.delete_queue()
