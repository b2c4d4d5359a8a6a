"""Queue clients for the app's own writes, encoded as the host's queue bindings expect."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.exceptions import SettingsError
from shared.settings import StorageConnection
from shared.storage.credentials import storage_credential

if TYPE_CHECKING:
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


class QueueWriter:
    """Sends to one storage queue; the client is made on first use, in the worker's event loop."""

    def __init__(self, conn: StorageConnection, queue_name: str) -> None:
        self._conn = conn
        self._queue_name = queue_name
        self._client: QueueClient | None = None

    async def send(self, text: str, *, delay_seconds: int = 0) -> None:
        """Enqueue text, invisible for delay_seconds (visible at once by default)."""
        if self._client is None:
            self._client = queue_client(self._conn, self._queue_name)
        await self._client.send_message(text, visibility_timeout=delay_seconds or None)

    async def aclose(self) -> None:
        """Close the queue client."""
        if self._client is not None:
            await self._client.close()
            self._client = None
