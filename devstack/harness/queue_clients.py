"""Queue clients by name, created on first use, and the message encoding host.json sets."""

from __future__ import annotations

import base64
import contextlib

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from devstack.harness.host_json import QueueSettings
from devstack.harness.index import HostFunction, resolve_settings


class QueueClients:
    """The storage account's queues as LocalHost uses them.

    Part of LocalHost, whose __init__ sets the attributes declared here.
    """

    queue_settings: QueueSettings
    _service: QueueServiceClient | None
    _queues: dict[str, QueueClient]
    _created: set[str]

    def _trigger_queue(self, fn: HostFunction) -> str:
        return resolve_settings(fn.trigger.queue_name)

    def _queue(self, name: str) -> QueueClient:
        client = self._queues.get(name)
        if client is None:
            assert self._service is not None, "LocalHost not started"
            client = self._queues[name] = self._service.get_queue_client(name)
        return client

    async def _ensure_queue(self, name: str) -> QueueClient:
        client = self._queue(name)
        if name not in self._created:
            with contextlib.suppress(ResourceExistsError):
                await client.create_queue()
            self._created.add(name)
        return client

    def _encode(self, body: bytes) -> str:
        if self.queue_settings.message_encoding == "base64":
            return base64.b64encode(body).decode("ascii")
        return body.decode("utf-8")

    def _decode(self, content: str) -> bytes:
        if self.queue_settings.message_encoding == "base64":
            # The host fails the invocation on bad base64, so the message goes round to poison.
            return base64.b64decode(content.encode("ascii"), validate=True)
        return content.encode("utf-8")
