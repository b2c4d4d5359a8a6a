"""The records the app writes: join-URL results and rejections (contract version 1)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from shared.common.clock import format_timestamp, utc_now
from shared.common.vocabulary import AppointmentStatus, EventType
from shared.pipeline.inbound import AppointmentEvent
from shared.storage.overflow import KeptMessage


@dataclass(frozen=True)
class JoinUrlResult:
    """An appointment's links after one event: the durable answer written to `join-urls`."""

    appointment_id: str
    organizer: str
    online_meeting_id: str | None
    join_url: str | None
    event_id: str
    resolved_at: str
    organizer_join_url: str | None = None
    start: str | None = None
    end: str | None = None
    meeting_created_by_app: bool = False
    event_type: str = EventType.CREATED
    status: str = AppointmentStatus.SCHEDULED
    tenant_id: str | None = None
    # The appointment's version after this event (0: no record, as for a supplied meeting of contract v1).
    version: int = 0

    @classmethod
    def for_event(cls, event: AppointmentEvent, meeting_id: str, join_url: str) -> JoinUrlResult:
        """The result of a created event whose meeting the scheduler supplied (contract v1's only case)."""
        schedule = event.schedule
        return cls(event.appointment_id, event.organizer, meeting_id, join_url, event.event_id, utc_now(),
                   organizer_join_url=event.join_web_url,
                   start=format_timestamp(schedule.start) if schedule.start else None,
                   end=format_timestamp(schedule.end) if schedule.end else None,
                   event_type=event.event_type, tenant_id=event.tenant_id)

    def to_dict(self) -> dict[str, object]:
        """The wire form (camelCase, as in the contract)."""
        return {
            "appointmentId": self.appointment_id,
            "organizer": self.organizer,
            "onlineMeetingId": self.online_meeting_id,
            "joinUrl": self.join_url,
            "organizerJoinUrl": self.organizer_join_url,
            "startDateTime": self.start,
            "endDateTime": self.end,
            "meetingCreatedByApp": self.meeting_created_by_app,
            "eventType": self.event_type,
            "status": self.status,
            "tenantId": self.tenant_id,
            "version": self.version,
            "eventId": self.event_id,
            "resolvedAt": self.resolved_at,
        }

    def to_json(self) -> str:
        """The queue message text."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> JoinUrlResult:
        """Read back a stored result (the idempotency record of a completed event; v1 records lack the new fields)."""
        doc = json.loads(text)
        return cls(doc["appointmentId"], doc["organizer"], doc.get("onlineMeetingId"), doc.get("joinUrl"),
                   doc["eventId"], doc["resolvedAt"], organizer_join_url=doc.get("organizerJoinUrl"),
                   start=doc.get("startDateTime"), end=doc.get("endDateTime"),
                   meeting_created_by_app=bool(doc.get("meetingCreatedByApp", False)),
                   event_type=doc.get("eventType") or EventType.CREATED,
                   status=doc.get("status") or AppointmentStatus.SCHEDULED,
                   tenant_id=doc.get("tenantId"), version=int(doc.get("version") or 0))


@dataclass(frozen=True)
class Rejection:
    """Why an event can never succeed, with the original message so it can be replayed."""

    reason: str
    detail: str
    original_message: str
    event_id: str | None = None
    appointment_id: str | None = None
    organizer: str | None = None
    tenant_id: str | None = None
    dequeue_count: int = 1
    rejected_at: str = ""
    # Set only when the message is not UTF-8 text: then it is kept as base64, byte for byte.
    original_bytes: bytes | None = None
    # Set when the original would not fit a queue message inside this record: kept whole in a blob.
    original_blob: KeptMessage | None = None

    def to_dict(self) -> dict[str, object]:
        """The wire form written to `appointments-rejected`."""
        original: dict[str, object]
        if self.original_blob is not None:
            original = {"originalMessage": None, "originalMessageBlob": self.original_blob.to_dict()}
        elif self.original_bytes is not None:
            encoded = base64.b64encode(self.original_bytes).decode()
            original = {"originalMessage": None, "originalMessageBase64": encoded}
        else:
            original = {"originalMessage": self.original_message}
        return {
            "reason": self.reason,
            "detail": self.detail,
            "eventId": self.event_id,
            "appointmentId": self.appointment_id,
            "organizer": self.organizer,
            "tenantId": self.tenant_id,
            "dequeueCount": self.dequeue_count,
            "rejectedAt": self.rejected_at or utc_now(),
            **original,
        }

    def to_json(self) -> str:
        """The queue message text."""
        return json.dumps(self.to_dict())
