"""Queue clients for the app's own writes, encoded as the host's queue bindings expect."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.exceptions import SettingsError
from shared.settings import StorageConnection
from shared.storage.credentials import storage_credential

if TYPE_CHECKING:
    from azure.storage.queue import QueueMessage
    from azure.storage.queue.aio import QueueClient


def queue_client(conn: StorageConnection, queue_name: str) -> QueueClient:
    """An async QueueClient that base64-encodes text or bytes, as the host's default messageEncoding expects."""
    from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy
    from azure.storage.queue.aio import QueueClient

    class _Base64EncodePolicy(BinaryBase64EncodePolicy):  # type: ignore[misc]
        # Text as UTF-8, bytes as they are: replay must put back a message that is not UTF-8 byte for byte.
        def encode(self, content: bytes | str) -> str:
            return str(super().encode(content.encode("utf-8") if isinstance(content, str) else content))

    policies: dict[str, Any] = {
        "message_encode_policy": _Base64EncodePolicy(),
        "message_decode_policy": BinaryBase64DecodePolicy(),
    }
    if conn.connection_string:
        return QueueClient.from_connection_string(conn.connection_string, queue_name, **policies)
    if not conn.queue_service_uri:
        raise SettingsError(["AzureWebJobsStorage has neither a connection string nor a queue service URI "
                             "(AzureWebJobsStorage__queueServiceUri or __accountName)"])
    return QueueClient(conn.queue_service_uri, queue_name, credential=storage_credential(conn), **policies)


def message_bytes(message: QueueMessage) -> bytes:
    """A received message's body as bytes (the client decodes base64 to bytes; an empty body is b"")."""
    content = message.content
    return content if isinstance(content, bytes) else str(content or "").encode("utf-8")


# A message's time-to-live that never ends (queue service API 2017-07-29+): for records kept for a person.
NEVER_EXPIRES = -1


async def send_creating(client: QueueClient, text: str | bytes, *, delay_seconds: int = 0,
                        time_to_live: int | None = None) -> None:
    """Send, creating the queue when it does not exist yet and sending once more, as a queue output binding does.

    The one rule for every queue the app (or an operator command) writes itself: nothing depends on a queue
    that someone else made first (a fresh Azurite, `func start`, a queue deleted by hand).
    """
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

    try:
        await client.send_message(text, visibility_timeout=delay_seconds or None, time_to_live=time_to_live)
    except ResourceNotFoundError:
        try:
            await client.create_queue()
        except ResourceExistsError:
            pass  # another instance made it meanwhile
        await client.send_message(text, visibility_timeout=delay_seconds or None, time_to_live=time_to_live)


class QueueWriter:
    """Sends to one storage queue; the client is made on first use, in the worker's event loop.

    `time_to_live` (seconds, or NEVER_EXPIRES) applies to every message; None is the queue's default (7 days).
    """

    def __init__(self, conn: StorageConnection, queue_name: str, *, time_to_live: int | None = None) -> None:
        self._conn = conn
        self._queue_name = queue_name
        self._time_to_live = time_to_live
        self._client: QueueClient | None = None

    async def send(self, text: str, *, delay_seconds: int = 0) -> None:
        """Enqueue text, invisible for delay_seconds (visible at once by default); the queue is made if missing."""
        if self._client is None:
            self._client = queue_client(self._conn, self._queue_name)
        await send_creating(self._client, text, delay_seconds=delay_seconds, time_to_live=self._time_to_live)

    async def send_all(self, texts: list[str]) -> None:
        """Enqueue each text in order, visible at once (nothing for an empty list)."""
        for text in texts:
            await self.send(text)

    async def aclose(self) -> None:
        """Close the queue client."""
        if self._client is not None:
            await self._client.close()
            self._client = None
