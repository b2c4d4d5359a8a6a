"""Messages too big for a queue record, kept whole in a blob that the record points at.

Azure Storage queue messages hold at most 64 KiB of base64 text (48 KiB of bytes). A rejection copies its
original message, a dead letter its outbox message, and JSON escaping can multiply their size (an emoji is
twelve characters escaped), so a record the host could not write would send its message to poison instead.
The kept copy is content-addressed (its SHA-256 names it): keeping the same bytes twice writes one blob.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from shared.exceptions import SettingsError, TransientError
from shared.settings import StorageConnection
from shared.storage.credentials import storage_credential

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient

# The queue service's limit is on the message as sent: base64 of the bytes (the host's messageEncoding).
MAX_QUEUE_MESSAGE_CHARS = 64 * 1024


def fits_queue(text: str) -> bool:
    """True when text, as the base64 queue message the app writes, is within the queue's 64 KiB limit."""
    size = len(text.encode("utf-8"))
    return 4 * ((size + 2) // 3) <= MAX_QUEUE_MESSAGE_CHARS


@dataclass(frozen=True)
class KeptMessage:
    """Where a message too big for its record was kept: `{"container", "name", "bytes", "sha256"}` on the wire."""

    container: str
    name: str
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, object]:
        """The wire form a record carries."""
        return {"container": self.container, "name": self.name, "bytes": self.bytes, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, doc: Any) -> KeptMessage:
        """Read a record's reference; ValueError when it is not one."""
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in ("container", "name", "sha256")):
            raise ValueError("not a kept-message reference")
        return cls(doc["container"], doc["name"], int(doc.get("bytes") or 0), doc["sha256"])


class OverflowStore(Protocol):
    """Keeps message bytes too big for a queue record, and gives them back."""

    async def keep(self, body: bytes) -> KeptMessage:
        """Store body (idempotent: the same bytes, the same blob) and say where."""

    async def read(self, kept: KeptMessage) -> bytes:
        """The bytes of a kept message, checked against their SHA-256."""

    async def aclose(self) -> None:
        """Release connections."""


class BlobOverflowStore:
    """Kept messages in a private container of the AzureWebJobsStorage account (MESSAGE_OVERFLOW_CONTAINER)."""

    def __init__(self, conn: StorageConnection, container: str) -> None:
        self._conn = conn
        self._container_name = container
        self._client: ContainerClient | None = None

    def _container(self) -> ContainerClient:
        # Made on first use, inside the event loop that uses it.
        if self._client is None:
            from azure.storage.blob.aio import ContainerClient

            if self._conn.connection_string:
                self._client = ContainerClient.from_connection_string(self._conn.connection_string,
                                                                      self._container_name)
            elif self._conn.blob_service_uri:
                self._client = ContainerClient(self._conn.blob_service_uri, self._container_name,
                                               credential=storage_credential(self._conn))
            else:
                raise SettingsError(["AzureWebJobsStorage has neither a connection string nor a blob service URI "
                                     "(AzureWebJobsStorage__blobServiceUri or __accountName)"])
        return self._client

    async def keep(self, body: bytes) -> KeptMessage:
        """Upload once per content (a retry or a second copy overwrites the same bytes)."""
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

        digest = hashlib.sha256(body).hexdigest()
        kept = KeptMessage(self._container_name, f"messages/{digest}", len(body), digest)
        container = self._container()
        try:
            try:
                await container.upload_blob(kept.name, body, overwrite=True)
            except ResourceNotFoundError:
                # A fresh account (local stack) has no container yet; Bicep makes it in Azure.
                try:
                    await container.create_container()
                except ResourceExistsError:
                    pass
                await container.upload_blob(kept.name, body, overwrite=True)
        except AzureError as exc:
            raise TransientError(f"keeping an oversized message failed ({type(exc).__name__})",
                                 reason="overflow_store_unavailable") from exc
        return kept

    async def read(self, kept: KeptMessage) -> bytes:
        """Download and check the SHA-256."""
        downloader = await self._container().download_blob(kept.name)
        body: bytes = await downloader.readall()
        if hashlib.sha256(body).hexdigest() != kept.sha256:
            raise ValueError(f"kept message {kept.name} does not match its SHA-256")
        return body

    async def aclose(self) -> None:
        """Close the container client."""
        if self._client is not None:
            await self._client.close()
            self._client = None

