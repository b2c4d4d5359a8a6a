"""Appointment records: one per appointment in Azure Table storage, every write conditioned on its ETag.

A record keeps what the lifecycle decision needs (shared/pipeline/lifecycle.py): the meeting, whether the
app created it, the last change applied (sequence, occurredAt, event id), the status, the links and times
the scheduler was last told, and a lease while a worker changes the meeting in Graph. The store only
reads and writes records; what a record should become is decided in the pipeline, once for every store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from shared.common.vocabulary import AppointmentStatus
from shared.exceptions import RecordConflictError
from shared.settings import StorageConnection
from shared.storage.idempotency import partition_key, row_key
from shared.storage.table_rest import Entity, LazyTable, TableRestClient

log = logging.getLogger(__name__)

# Spread over 256 partitions like the idempotency records (docs/performance.md), apart from them by prefix.
PARTITION_PREFIX = "apt-"


@dataclass(frozen=True)
class AppointmentRecord:
    """One appointment as stored; `etag` is the version it was read at (None for a record not yet stored)."""

    appointment_id: str
    organizer: str
    status: str = AppointmentStatus.PENDING
    tenant_id: str | None = None
    online_meeting_id: str | None = None
    meeting_created_by_app: bool = False
    external_id: str | None = None
    join_url: str | None = None
    organizer_join_url: str | None = None
    start: str | None = None
    end: str | None = None
    subject: str | None = None
    last_sequence: int | None = None
    last_occurred_at: str | None = None
    last_event_id: str | None = None
    last_event_type: str | None = None
    updated_at: str | None = None
    # Which kind of meeting the app made (None: standalone, as every record from before calendar meetings).
    meeting_kind: str | None = None
    # The calendar event (immutable id) of a calendar-backed meeting.
    calendar_event_id: str | None = None
    # Grows by one with each change applied, whoever made it (the scheduler or the organizer in Outlook).
    version: int = 0
    lease_owner: str | None = None
    lease_at: datetime | None = None
    # The times a reschedule sent to Graph that its attempt did not confirm (it failed after the PATCH, which may
    # have landed): a calendar change to exactly these is the app's own write, which the event's retry records.
    writing_start: str | None = None
    writing_end: str | None = None
    # The appointment.attendance data last told (JSON), for the end it was read after (shared/attendance).
    attendance: str | None = None
    # Where the scheduler asked this appointment's webhooks to go (its events' callbackUrl): changes the organizer
    # makes in Outlook are told there too.
    callback_url: str | None = None
    etag: str | None = None

    def leased(self, owner: str, now: datetime) -> AppointmentRecord:
        """This record held by `owner` from `now` on."""
        return replace(self, lease_owner=owner, lease_at=now)

    def unleased(self) -> AppointmentRecord:
        """This record with no lease."""
        return replace(self, lease_owner=None, lease_at=None)


class AppointmentStore(Protocol):
    """Record operations only: read, create, replace and delete, each write conditioned on the ETag."""

    async def get(self, appointment_id: str) -> AppointmentRecord | None:
        """The record with its ETag, or None."""

    async def insert(self, record: AppointmentRecord) -> AppointmentRecord:
        """Create it; RecordConflictError if a record exists. Returns it with its ETag."""

    async def replace(self, record: AppointmentRecord) -> AppointmentRecord:
        """Replace it if still at `record.etag`; RecordConflictError if it changed or went."""

    async def delete(self, record: AppointmentRecord) -> None:
        """Delete it if still at `record.etag`; RecordConflictError if it changed or went."""


# Record field -> table property. Absent properties read back as the field's default.
_PROPERTIES = {
    "appointment_id": "AppointmentId", "organizer": "Organizer", "status": "Status", "tenant_id": "TenantId",
    "online_meeting_id": "OnlineMeetingId", "meeting_created_by_app": "MeetingCreatedByApp",
    "external_id": "ExternalId", "join_url": "JoinUrl", "organizer_join_url": "OrganizerJoinUrl",
    "start": "StartDateTime", "end": "EndDateTime", "subject": "Subject", "last_sequence": "LastSequence",
    "last_occurred_at": "LastOccurredAt", "last_event_id": "LastEventId", "last_event_type": "LastEventType",
    "updated_at": "UpdatedAt", "lease_owner": "LeaseOwner", "lease_at": "LeaseAt", "meeting_kind": "MeetingKind",
    "calendar_event_id": "CalendarEventId", "version": "Version",
    "attendance": "Attendance", "callback_url": "CallbackUrl",
    "writing_start": "WritingStartDateTime", "writing_end": "WritingEndDateTime",
}


def to_entity(record: AppointmentRecord) -> dict[str, Any]:
    """A record as table properties (None values left out; the sequence as text, so it keeps all 53 bits)."""
    entity: dict[str, Any] = {"PartitionKey": partition_key(record.appointment_id, PARTITION_PREFIX),
                              "RowKey": row_key(record.appointment_id)}
    for name, prop in _PROPERTIES.items():
        value = getattr(record, name)
        if value is None:
            continue
        entity[prop] = str(value) if name == "last_sequence" else value
    return entity


def from_entity(entity: Entity) -> AppointmentRecord:
    """A stored entity as a record, with its ETag."""
    values: dict[str, Any] = {}
    for name, prop in _PROPERTIES.items():
        value = entity.get(prop)
        if value is None:
            continue
        if name == "last_sequence":
            value = int(value)
        elif name == "lease_at" and isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        values[name] = value
    return AppointmentRecord(**values, etag=entity.etag)


FIELD_NAMES = tuple(f.name for f in fields(AppointmentRecord))


class TableAppointmentStore(LazyTable):
    """Azure Table store over the thin REST client: insert-if-absent, ETag-conditioned replace and delete."""

    def __init__(self, conn: StorageConnection, table_name: str, *, client: TableRestClient | None = None) -> None:
        super().__init__(conn, table_name, client)

    async def get(self, appointment_id: str) -> AppointmentRecord | None:
        """The record with its ETag, or None (also when the table does not exist yet)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = await self._table().get(partition_key(appointment_id, PARTITION_PREFIX), row_key(appointment_id))
        except ResourceNotFoundError:
            return None
        return from_entity(entity)

    async def insert(self, record: AppointmentRecord) -> AppointmentRecord:
        """Create it; RecordConflictError if a record exists."""
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        try:
            etag = await self._write(lambda table: table.insert(to_entity(record)))
        except ResourceExistsError:
            raise RecordConflictError(f"appointment record {row_key(record.appointment_id)} exists") from None
        except ResourceNotFoundError:
            raise RecordConflictError("the appointment table could not be created") from None
        return replace(record, etag=etag)

    async def replace(self, record: AppointmentRecord) -> AppointmentRecord:
        """Replace it if still at `record.etag`; RecordConflictError if it changed or went."""
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        if record.etag is None:
            raise ValueError("replace needs the ETag the record was read at")
        try:
            etag = await self._table().replace(to_entity(record), record.etag)
        except (ResourceModifiedError, ResourceNotFoundError):
            raise RecordConflictError(f"appointment record {row_key(record.appointment_id)} changed") from None
        return replace(record, etag=etag)

    async def delete(self, record: AppointmentRecord) -> None:
        """Delete it if still at `record.etag`; RecordConflictError if it changed or went."""
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        if record.etag is None:
            raise ValueError("delete needs the ETag the record was read at")
        try:
            await self._table().delete(partition_key(record.appointment_id, PARTITION_PREFIX),
                                       row_key(record.appointment_id), record.etag)
        except (ResourceModifiedError, ResourceNotFoundError):
            raise RecordConflictError(f"appointment record {row_key(record.appointment_id)} changed") from None
