"""Storage clients for the app's own writes, from the same connection the host binds with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.settings import StorageConnection

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient


def storage_credential(conn: StorageConnection) -> Any:
    """The async Entra credential for an identity-based storage connection."""
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    # In Azure the connection names the user-assigned identity; elsewhere (a developer pointing at a
    # real account) DefaultAzureCredential picks up their sign-in.
    if conn.client_id:
        return ManagedIdentityCredential(client_id=conn.client_id)
    return DefaultAzureCredential()


def queue_client(conn: StorageConnection, queue_name: str) -> QueueClient:
    """An async QueueClient that base64-encodes, as the host's default messageEncoding expects."""
    from azure.storage.queue import BinaryBase64DecodePolicy, TextBase64EncodePolicy
    from azure.storage.queue.aio import QueueClient

    policies: dict[str, Any] = {
        "message_encode_policy": TextBase64EncodePolicy(),
        "message_decode_policy": BinaryBase64DecodePolicy(),
    }
    if conn.connection_string:
        return QueueClient.from_connection_string(conn.connection_string, queue_name, **policies)
    if not conn.queue_service_uri:
        raise ValueError("AzureWebJobsStorage has neither a connection string nor a queue service URI")
    return QueueClient(conn.queue_service_uri, queue_name, credential=storage_credential(conn), **policies)


class QueueRequeuer:
    """Requeues onto a storage queue; the client is made on first use, in the worker's event loop."""

    def __init__(self, conn: StorageConnection, queue_name: str) -> None:
        self._conn = conn
        self._queue_name = queue_name
        self._client: QueueClient | None = None

    async def requeue(self, text: str, delay_seconds: int) -> None:
        """Enqueue text, invisible for delay_seconds."""
        if self._client is None:
            self._client = queue_client(self._conn, self._queue_name)
        await self._client.send_message(text, visibility_timeout=delay_seconds)

    async def aclose(self) -> None:
        """Close the queue client."""
        if self._client is not None:
            await self._client.close()
            self._client = None


class InMemoryRequeuer:
    """The requeuer for unit tests: remembers what would have been enqueued."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    async def requeue(self, text: str, delay_seconds: int) -> None:
        """Remember text and its delay."""
        self.sent.append((text, delay_seconds))

    async def aclose(self) -> None:
        """Nothing to release."""
