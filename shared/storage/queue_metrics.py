"""Queue depths as metrics: the storage account's own metric covers the whole account and updates daily."""

from __future__ import annotations

import asyncio
import logging

from shared.queues import ALL_QUEUES, PARKED_QUEUES
from shared.settings import StorageConnection
from shared.storage.queue_client import queue_client
from shared.telemetry import flush_metrics, record_gauge

log = logging.getLogger(__name__)
# Depth above zero here means a person must look (alerts fire on these).
ATTENTION_QUEUES = frozenset(PARKED_QUEUES)


async def queue_depth(conn: StorageConnection, name: str) -> int | None:
    """Approximate message count of one queue (None if it cannot be read, e.g. not created yet)."""
    from azure.core.exceptions import AzureError

    async with queue_client(conn, name) as client:
        try:
            properties = await client.get_queue_properties()
        except AzureError as exc:
            log.warning("queue %s depth unavailable: %s", name, type(exc).__name__, extra={"queue": name})
            return None
    return int(properties.approximate_message_count or 0)


async def report_queue_depths(conn: StorageConnection) -> dict[str, int | None]:
    """Read every queue's depth, log one structured line per queue, and record the `queue_depth` gauge.

    A queue whose depth could not be read records nothing: the "metrics stopped" alert sees it missing.
    """
    depths = dict(zip(ALL_QUEUES, await asyncio.gather(*(queue_depth(conn, q) for q in ALL_QUEUES)), strict=True))
    for name, depth in depths.items():
        if depth is None:
            continue
        level = logging.WARNING if depth and name in ATTENTION_QUEUES else logging.INFO
        log.log(level, "queue %s depth %d", name, depth, extra={"queue": name, "queue_depth": depth})
        record_gauge("queue_depth", depth, {"queue": name})
    flush_metrics()
    return depths
