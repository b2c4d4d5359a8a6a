"""The storage account's queues, created on first use, and the message encoding host.json sets."""

from __future__ import annotations

import base64
import binascii

from devstack.harness.host_json import QueueSettings
from devstack.harness.index import HostFunction, resolve_settings
from devstack.harness.queue_rest import QueueRestClient


class QueueClients:
    """The storage account's queues as LocalHost uses them.

    Part of LocalHost, whose __init__ sets the attributes declared here.
    """

    queue_settings: QueueSettings
    _rest: QueueRestClient | None
    _created: set[str]

    def _trigger_queue(self, fn: HostFunction) -> str:
        return resolve_settings(str(fn.trigger["queueName"]))

    @property
    def _queues(self) -> QueueRestClient:
        assert self._rest is not None, "LocalHost not started"
        return self._rest

    async def _ensure_queue(self, name: str) -> str:
        if name not in self._created:
            await self._queues.create_queue(name)
            self._created.add(name)
        return name

    def _encode(self, body: bytes) -> str:
        if self.queue_settings.message_encoding == "base64":
            return base64.b64encode(body).decode("ascii")
        return body.decode("utf-8")

    def _decode(self, content: str) -> bytes | None:
        """The message's bytes, or None when its text is not what messageEncoding says."""
        if self.queue_settings.message_encoding == "base64":
            try:
                return base64.b64decode(content.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                return None
        return content.encode("utf-8")
