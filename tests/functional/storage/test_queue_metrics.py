"""queue_metrics against Azurite: every queue's depth, attention queues flagged."""

import logging

import pytest
from azure.storage.queue.aio import QueueServiceClient

from shared import queues
from shared.settings import StorageConnection
from shared.storage.queue_metrics import report_queue_depths
from tests.functional.azurite import running_azurite

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def conn_str():
    with running_azurite() as connection_string:
        yield connection_string


async def test_depths_are_reported_per_queue(conn_str, caplog):
    async with QueueServiceClient.from_connection_string(conn_str) as service:
        for name in queues.ALL_QUEUES:
            try:
                await service.create_queue(name)
            except Exception:
                await service.get_queue_client(name).clear_messages()
        await service.get_queue_client(queues.APPOINTMENTS_POISON).send_message("x")
        await service.get_queue_client(queues.APPOINTMENTS_POISON).send_message("y")
    caplog.set_level(logging.INFO, logger="shared")
    depths = await report_queue_depths(StorageConnection(connection_string=conn_str))
    assert depths[queues.APPOINTMENTS_POISON] == 2 and depths[queues.JOIN_URLS] == 0
    assert set(depths) == set(queues.ALL_QUEUES)
    flagged = [r for r in caplog.records if r.levelno == logging.WARNING and getattr(r, "queue", "") ==
               queues.APPOINTMENTS_POISON]
    assert flagged and flagged[0].queue_depth == 2
