"""Change-notification subscriptions: one per connected organizer (MEETING_KIND=calendar), beside its clientState.

A row per organizer (keyed by tenant and object id) holds the Graph subscription's id, the random clientState
Graph echoes in every notification, its expiry, the calendarView delta link the resyncs continue from, and a
state a person can read (active, or why not: subscription_limit, organizer_not_connected, ...). A second row,
keyed by the subscription id, points back at the organizer, so a notification (which names only the
subscription) finds its clientState with one read. Both rows live in the appointments table, apart by prefix,
as the booking aliases do. Writes of the organizer row are conditioned on its ETag, so a timer and a connect
that run at once never lose each other's subscription.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

from shared.exceptions import RecordConflictError
from shared.settings import StorageConnection
from shared.storage.idempotency import partition_key, row_key
from shared.storage.table_rest import Entity, LazyTable, TableRestClient

PARTITION_PREFIX = "sub-"
INDEX_PREFIX = "sid-"
EVENT_PREFIX = "evt-"


@dataclass(frozen=True)
class SubscriptionRecord:
    """One organizer's subscription as stored; `etag` is the version it was read at (None: not stored yet)."""

    organizer_key: str  # "<tenant>/<object id>"
    organizer: str  # what the app calls Graph as (UPN or object id)
    tenant_id: str | None = None
    subscription_id: str | None = None
    client_state: str | None = None
    expires_at: str | None = None
    delta_link: str | None = None
    state: str = "pending"
    detail: str | None = None
    updated_at: str | None = None
    last_resync_at: str | None = None
    etag: str | None = None


class SubscriptionStore(Protocol):
    """Read and write subscription rows (the in-memory twin in shared/testing, TableSubscriptionStore here)."""

    async def get(self, organizer_key: str) -> SubscriptionRecord | None:
        """The organizer's row with its ETag, or None."""

    async def by_subscription(self, subscription_id: str) -> SubscriptionRecord | None:
        """The row whose current subscription is `subscription_id`, or None (unknown, or replaced since)."""

    async def put(self, record: SubscriptionRecord) -> SubscriptionRecord:
        """Insert (no ETag) or replace if still at its ETag; RecordConflictError otherwise. Returns the new ETag."""

    async def delete(self, organizer_key: str) -> None:
        """Remove the organizer's row and its index row (absent: nothing to do)."""

    async def all(self) -> list[SubscriptionRecord]:
        """Every organizer's row (the timer's round)."""

    async def remember_event(self, event_id: str, appointment_id: str) -> None:
        """Keep which appointment a calendar event is (a deleted event can no longer be read for its property)."""

    async def appointment_of(self, event_id: str) -> str | None:
        """The appointment a calendar event was seen to be, or None."""

    async def aclose(self) -> None:
        """Release connections."""


_PROPERTIES = {"organizer_key": "OrganizerKey", "organizer": "Organizer", "tenant_id": "TenantId",
               "subscription_id": "SubscriptionId", "client_state": "ClientState", "expires_at": "ExpiresAt",
               "delta_link": "DeltaLink", "state": "State", "detail": "Detail", "updated_at": "UpdatedAt",
               "last_resync_at": "LastResyncAt"}
FIELD_NAMES = tuple(f.name for f in fields(SubscriptionRecord))


def _entity(record: SubscriptionRecord) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": partition_key(record.organizer_key, PARTITION_PREFIX),
                              "RowKey": row_key(record.organizer_key)}
    entity.update({prop: getattr(record, name) for name, prop in _PROPERTIES.items()
                   if getattr(record, name) is not None})
    return entity


def _record(entity: Entity) -> SubscriptionRecord:
    values = {name: entity.get(prop) for name, prop in _PROPERTIES.items() if entity.get(prop) is not None}
    return SubscriptionRecord(**values, etag=entity.etag)


class TableSubscriptionStore(LazyTable):
    """Rows in the appointments table: `sub-` per organizer, `sid-` per subscription id pointing back."""

    def __init__(self, conn: StorageConnection, table_name: str, *, client: TableRestClient | None = None) -> None:
        super().__init__(conn, table_name, client)

    async def get(self, organizer_key: str) -> SubscriptionRecord | None:
        """The organizer's row, or None (also before the table exists)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = await self._table().get(partition_key(organizer_key, PARTITION_PREFIX), row_key(organizer_key))
        except ResourceNotFoundError:
            return None
        return _record(entity)

    async def by_subscription(self, subscription_id: str) -> SubscriptionRecord | None:
        """Two reads: the index row, then the organizer's row, which must still name this subscription."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            index = await self._table().get(partition_key(subscription_id, INDEX_PREFIX), row_key(subscription_id))
        except ResourceNotFoundError:
            return None
        key = index.get("OrganizerKey")
        record = await self.get(key) if isinstance(key, str) else None
        return record if record is not None and record.subscription_id == subscription_id else None

    async def put(self, record: SubscriptionRecord) -> SubscriptionRecord:
        """The index row first (an orphan index row finds no organizer row naming it), then the organizer row."""
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        if record.subscription_id:
            index = {"PartitionKey": partition_key(record.subscription_id, INDEX_PREFIX),
                     "RowKey": row_key(record.subscription_id), "OrganizerKey": record.organizer_key}
            await self._write(lambda table: table.replace(index, None))
        try:
            if record.etag is None:
                etag = await self._write(lambda table: table.insert(_entity(record)))
            else:
                etag = await self._table().replace(_entity(record), record.etag)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            raise RecordConflictError("the organizer's subscription row changed") from None
        return replace(record, etag=etag)

    async def delete(self, organizer_key: str) -> None:
        """Remove both rows; either already gone counts as done."""
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        record = await self.get(organizer_key)
        if record is None or record.etag is None:
            return
        rows = [(partition_key(organizer_key, PARTITION_PREFIX), row_key(organizer_key))]
        if record.subscription_id:
            rows.insert(0, (partition_key(record.subscription_id, INDEX_PREFIX), row_key(record.subscription_id)))
        for partition, row in rows:
            try:
                await self._table().delete(partition, row, "*")
            except (ResourceNotFoundError, ResourceModifiedError):
                pass

    async def all(self) -> list[SubscriptionRecord]:
        """Every organizer row: one query over the `sub-` partitions (empty before the table exists)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entities = await self._table().query(f"PartitionKey ge '{PARTITION_PREFIX}' and PartitionKey lt 'sub.'")
        except ResourceNotFoundError:
            return []
        return [_record(entity) for entity in entities]

    async def remember_event(self, event_id: str, appointment_id: str) -> None:
        """An `evt-` row: the event's immutable id to its appointment (the same again is a no-op)."""
        entity = {"PartitionKey": partition_key(event_id, EVENT_PREFIX), "RowKey": row_key(event_id),
                  "EventId": event_id, "AppointmentId": appointment_id}
        await self._write(lambda table: table.replace(entity, None))

    async def appointment_of(self, event_id: str) -> str | None:
        """The appointment of an event seen before, or None."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = await self._table().get(partition_key(event_id, EVENT_PREFIX), row_key(event_id))
        except ResourceNotFoundError:
            return None
        value = entity.get("AppointmentId")
        return value if isinstance(value, str) else None
