"""Parked messages kept past their queue lifetime: a blob archive that replay reads.

A storage queue message lives 7 days unless written with another time-to-live. The app writes its own
rejection records without expiry, but the messages the host moves to `<queue>-poison` and the records written
through output bindings (dead letters, SMS failures) get the default. The archive_parked timer moves every
parked message that would expire within PARKED_ARCHIVE_MARGIN_HOURS into a private blob container, whole and
byte for byte, with where it came from; `python -m shared.replay --from archive` puts them back. Blobs have no
lifetime here (no lifecycle rule on the account), so an archived message stays until someone replays or
deletes it. A copy is written before the message is deleted: a crash between the two leaves both, never none.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.common.clock import utc_now
from shared.exceptions import SettingsError
from shared.queues import PARKED_QUEUES
from shared.settings import StorageConnection
from shared.storage.credentials import storage_credential
from shared.storage.queue_client import message_bytes, queue_client

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient
    from azure.storage.queue import QueueMessage

log = logging.getLogger(__name__)
# A message looked at and left in place is hidden this long (made visible again at the end of the run).
HOLD_SECONDS = 300


@dataclass(frozen=True)
class ArchivedMessage:
    """One parked message as the archive keeps it: its queue, its identity and times, its exact bytes."""

    queue: str
    message_id: str
    content: bytes
    inserted_on: str | None = None
    expires_on: str | None = None
    archived_at: str = field(default_factory=utc_now)

    @property
    def blob_name(self) -> str:
        """`<queue>/<message id>.json`: archiving the same message twice writes one blob."""
        return f"{self.queue}/{self.message_id}.json"

    def to_json(self) -> str:
        """The blob's body."""
        return json.dumps({"queue": self.queue, "messageId": self.message_id, "insertedOn": self.inserted_on,
                           "expiresOn": self.expires_on, "archivedAt": self.archived_at,
                           "contentBase64": base64.b64encode(self.content).decode("ascii")})

    @classmethod
    def from_json(cls, text: bytes | str) -> ArchivedMessage:
        """Read a blob back; ValueError when it is not an archived message."""
        doc: Any = json.loads(text)
        if not isinstance(doc, dict) or doc.get("queue") not in PARKED_QUEUES:
            raise ValueError("not an archived parked message")
        return cls(doc["queue"], str(doc["messageId"]), base64.b64decode(doc["contentBase64"], validate=True),
                   doc.get("insertedOn"), doc.get("expiresOn"), str(doc.get("archivedAt") or ""))


@dataclass
class ArchiveRun:
    """What one run of the timer did, per queue."""

    archived: dict[str, int] = field(default_factory=dict)
    left: dict[str, int] = field(default_factory=dict)


def archive_container(conn: StorageConnection, container: str) -> ContainerClient:
    """An async client of the archive container (made on first use, in the caller's event loop)."""
    from azure.storage.blob.aio import ContainerClient

    if conn.connection_string:
        return ContainerClient.from_connection_string(conn.connection_string, container)
    if not conn.blob_service_uri:
        raise SettingsError(["AzureWebJobsStorage has neither a connection string nor a blob service URI "
                             "(AzureWebJobsStorage__blobServiceUri or __accountName)"])
    return ContainerClient(conn.blob_service_uri, container, credential=storage_credential(conn))


async def upload_creating(container: ContainerClient, name: str, body: str | bytes) -> None:
    """Upload (overwrite), creating the container when it does not exist yet and uploading once more."""
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

    try:
        await container.upload_blob(name, body, overwrite=True)
    except ResourceNotFoundError:
        try:
            await container.create_container()
        except ResourceExistsError:
            pass
        await container.upload_blob(name, body, overwrite=True)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def expires_soon(message: QueueMessage, deadline: datetime) -> bool:
    """True when the message would expire before `deadline` (one written without expiry never does)."""
    return message.expires_on is not None and message.expires_on <= deadline


async def archive_queue(conn: StorageConnection, container: ContainerClient, queue: str, margin: timedelta,
                        run: ArchiveRun) -> None:
    """Move one parked queue's messages that expire within `margin` into the archive; leave the rest visible."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    deadline = datetime.now(UTC) + margin
    held: list[QueueMessage] = []
    seen: set[str] = set()
    async with queue_client(conn, queue) as client:
        try:
            async for message in client.receive_messages(messages_per_page=32, visibility_timeout=HOLD_SECONDS):
                if message.id in seen:
                    break  # our hold lapsed and the queue came round again
                seen.add(message.id)
                if not expires_soon(message, deadline):
                    held.append(message)
                    continue
                kept = ArchivedMessage(queue, message.id, message_bytes(message), _iso(message.inserted_on),
                                       _iso(message.expires_on))
                await upload_creating(container, kept.blob_name, kept.to_json())
                await client.delete_message(message.id, message.pop_receipt)
                run.archived[queue] = run.archived.get(queue, 0) + 1
        except ResourceNotFoundError:
            return  # nothing was ever parked here
        finally:
            for message in held:
                try:
                    await client.update_message(message.id, message.pop_receipt, visibility_timeout=0)
                except HttpResponseError:
                    pass  # the hold lapsed on its own
    run.left[queue] = len(held)


async def archive_expiring(conn: StorageConnection, container_name: str, margin_hours: float,
                           queues: tuple[str, ...] = PARKED_QUEUES) -> ArchiveRun:
    """archive_parked's logic: every parked queue, one structured line per queue that had anything to archive."""
    run = ArchiveRun()
    async with archive_container(conn, container_name) as container:
        for queue in queues:
            await archive_queue(conn, container, queue, timedelta(hours=margin_hours), run)
    for queue, count in run.archived.items():
        log.warning("parked queue %s: %d message(s) archived before they expired", queue, count,
                    extra={"queue": queue, "archived": count, "outcome": "archived"})
    return run


async def archived_messages(container: ContainerClient,
                            queue: str | None = None) -> AsyncIterator[tuple[str, ArchivedMessage | None]]:
    """Every archived message (of one queue), by blob name; None for a blob that is not one."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        names = [blob.name async for blob in container.list_blobs(name_starts_with=f"{queue}/" if queue else None)]
    except ResourceNotFoundError:
        return
    for name in names:
        body = await (await container.download_blob(name)).readall()
        try:
            yield name, ArchivedMessage.from_json(body)
        except (ValueError, KeyError, TypeError):
            yield name, None
