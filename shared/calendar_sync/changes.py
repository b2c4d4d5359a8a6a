"""What a change on an organizer's calendar means for its appointment, decided once for notifications and resyncs.

The event is read by its immutable id and matched to its appointment by the app's extended property (an event
without it is not the app's: ignored). The record says what the app itself last wrote (times, cancellation),
so a change equal to it is the app's own write coming back (or a duplicate notification) and tells nothing.
A record another worker holds (its lease: the app is writing to this event right now) is looked at again
later: what the app is writing is not on the record yet. Otherwise the staff member moved the event (the
record takes the new times, a new version, and `appointment.rescheduled_by_organizer`; a new join URL is
resolved again) or cancelled or deleted it (the record is cancelled, `appointment.cancelled_by_organizer`).

What is told is the record: the organizer change's webhook is built from the record written, and its
webhook-id from the appointment and version, so a copy of the same notification after a crash tells the same
thing again under the same webhook-id (deliver_webhook sends it once).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from shared.common.clock import format_timestamp, parse_timestamp_or_none, utc_now
from shared.common.vocabulary import AppointmentStatus, EventType, MeetingKind, WebhookType
from shared.exceptions import RecordConflictError, TransientError
from shared.graph.calendar import CalendarEvent
from shared.pipeline.lifecycle import lease_wait
from shared.pipeline.records import JoinUrlResult
from shared.redaction import hash_user
from shared.storage.appointments import AppointmentRecord, AppointmentStore
from shared.webhooks.outbound import WebhookEvent, webhook_event

log = logging.getLogger(__name__)
_MAX_ROUNDS = 4
# (organizer, event id, tenant) -> the event as Graph has it now (None: gone for good).
EventReader = Callable[[str, str, str | None], Awaitable[CalendarEvent | None]]
ORGANIZER_TYPES = (WebhookType.RESCHEDULED_BY_ORGANIZER, WebhookType.CANCELLED_BY_ORGANIZER)


class Verdict(StrEnum):
    """What a calendar change does to its appointment."""

    IGNORE = "ignored"  # not the app's event, no record, the app's own write, or nothing that matters changed
    RETELL = "retold"  # the organizer's change already on the record: told again under the same webhook-id
    LATER = "later"  # the app is writing this appointment right now: look again once it is done
    MOVE = "moved"
    CANCEL = "cancelled"


@dataclass(frozen=True)
class Judgement:
    """A verdict and why (logged and counted)."""

    verdict: Verdict
    why: str


class LinkResolver(Protocol):
    """The new links when the organizer's edit minted a new join URL (pipeline's JoinUrlResolver and the calendar)."""

    async def links(self, organizer: str, join_url: str, tenant: str | None) -> tuple[str, str]:
        """(meeting id, virtual-appointment link) for the event's join URL."""


def judge(record: AppointmentRecord | None, event: CalendarEvent | None, *, removed: bool, now: datetime,
          stale_after_seconds: float) -> Judgement:
    """What the event (None: Graph no longer has it) does to the appointment recorded as `record`."""
    if record is None:
        return Judgement(Verdict.IGNORE, "no appointment record")
    if record.meeting_kind != MeetingKind.CALENDAR:
        return Judgement(Verdict.IGNORE, "not a calendar-backed appointment")
    if lease_wait(record, "", now, stale_after_seconds) is not None or record.status == AppointmentStatus.PENDING:
        return Judgement(Verdict.LATER, "the app is writing this appointment")
    if event is not None and record.calendar_event_id and event.id != record.calendar_event_id:
        return Judgement(Verdict.IGNORE, "not the appointment's recorded event")
    gone = removed or event is None or event.cancelled
    if record.status == AppointmentStatus.CANCELLED:
        retold = record.last_event_type == WebhookType.CANCELLED_BY_ORGANIZER and gone
        return Judgement(Verdict.RETELL, "told before") if retold else Judgement(Verdict.IGNORE, "cancelled already")
    if gone:
        return Judgement(Verdict.CANCEL, "cancelled or deleted in Outlook")
    assert event is not None
    if _same_time(record.start, event.start) and _same_time(record.end, event.end):
        if record.last_event_type == WebhookType.RESCHEDULED_BY_ORGANIZER:
            return Judgement(Verdict.RETELL, "told before")
        return Judgement(Verdict.IGNORE, "the times the app wrote")
    if record.writing_start is not None and _same_time(record.writing_start, event.start) \
            and _same_time(record.writing_end, event.end):
        return Judgement(Verdict.IGNORE, "the times the app is writing (its event's retry records them)")
    return Judgement(Verdict.MOVE, "moved in Outlook")


class OrganizerChanges:
    """Applies organizer changes to appointment records and builds the webhooks that tell them."""

    def __init__(self, store: AppointmentStore, links: LinkResolver, *, stale_after_seconds: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), reader: EventReader | None = None) -> None:
        self._store = store
        self._links = links
        self._reader = reader
        self._stale = stale_after_seconds
        self._clock = clock

    async def apply(self, appointment_id: str, event: CalendarEvent | None, *, removed: bool,
                    retell: bool = True) -> tuple[Judgement, WebhookEvent | None]:
        """The verdict on the record as it is now, and the webhook to send (None: nothing to tell).

        `retell`: a change already on the record is told again (same webhook-id). The queue function asks for it
        only on a redelivery of one message (its earlier attempt may have written the record and died before its
        webhook); Graph's own duplicates are new messages, and telling them again would only race the first."""
        for _ in range(_MAX_ROUNDS):
            record = await self._store.get(appointment_id)
            judgement = judge(record, event, removed=removed, now=self._clock(), stale_after_seconds=self._stale)
            if judgement.verdict is Verdict.MOVE and record is not None and event is not None and self._reader:
                # The event was read before the record: the app's own reschedule may have landed in between, and
                # this older copy would then look like a move in Outlook. Read after the record, the event is at
                # least as new as it, and the record's ETag catches a write the app makes after this read.
                event = await self._reader(record.organizer, event.id, record.tenant_id)
                judgement = judge(record, event, removed=removed, now=self._clock(),
                                  stale_after_seconds=self._stale)
            if judgement.verdict in (Verdict.IGNORE, Verdict.LATER) or record is None:
                return _logged(appointment_id, record, judgement, None)
            if judgement.verdict is Verdict.RETELL:
                return _logged(appointment_id, record, judgement, told(record) if retell else None)
            after = await self._after(record, event, judgement.verdict)
            try:
                stored = await self._store.replace(after)
            except RecordConflictError:
                continue
            return _logged(appointment_id, stored, judgement, told(stored))
        raise TransientError("the appointment record kept changing", reason="appointment_contention",
                             retry_after=1.0)

    async def _after(self, record: AppointmentRecord, event: CalendarEvent | None,
                     verdict: Verdict) -> AppointmentRecord:
        version = record.version + 1
        if verdict is Verdict.CANCEL:
            return replace(record, status=AppointmentStatus.CANCELLED, version=version, updated_at=utc_now(),
                           writing_start=None, writing_end=None, last_event_type=WebhookType.CANCELLED_BY_ORGANIZER,
                           last_event_id=organizer_change_id(record.appointment_id, version))
        assert event is not None
        meeting_id, join_url, organizer_url = record.online_meeting_id, record.join_url, record.organizer_join_url
        if event.join_url and event.join_url != record.organizer_join_url:
            # The organizer's edit minted a new Teams meeting (a body edit can): the client's link is new too.
            meeting_id, join_url = await self._links.links(record.organizer, event.join_url, record.tenant_id)
            organizer_url = event.join_url
        return replace(record, start=format_timestamp(event.start) if event.start else record.start,
                       end=format_timestamp(event.end) if event.end else record.end,
                       subject=event.subject if event.subject is not None else record.subject,
                       online_meeting_id=meeting_id, join_url=join_url, organizer_join_url=organizer_url,
                       version=version, updated_at=utc_now(), writing_start=None, writing_end=None,
                       last_event_type=WebhookType.RESCHEDULED_BY_ORGANIZER,
                       last_event_id=organizer_change_id(record.appointment_id, version))


def organizer_change_id(appointment_id: str, version: int) -> str:
    """The eventId of an organizer's change: one per appointment version, the base of its webhook-id."""
    return f"organizer:{appointment_id}:v{version}"


def told(record: AppointmentRecord) -> WebhookEvent:
    """The `_by_organizer` webhook of the record's last change (the organizer's), from the record alone."""
    cancelled = record.status == AppointmentStatus.CANCELLED
    kind = WebhookType.CANCELLED_BY_ORGANIZER if cancelled else WebhookType.RESCHEDULED_BY_ORGANIZER
    event_id = record.last_event_id or organizer_change_id(record.appointment_id, record.version)
    result = JoinUrlResult(
        appointment_id=record.appointment_id, organizer=record.organizer, online_meeting_id=record.online_meeting_id,
        join_url=None if cancelled else record.join_url, event_id=event_id,
        resolved_at=record.updated_at or utc_now(),
        organizer_join_url=None if cancelled else record.organizer_join_url, start=record.start, end=record.end,
        meeting_created_by_app=record.meeting_created_by_app,
        event_type=EventType.CANCELLED if cancelled else EventType.RESCHEDULED,
        status=AppointmentStatus.CANCELLED if cancelled else AppointmentStatus.SCHEDULED,
        tenant_id=record.tenant_id, version=record.version)
    return webhook_event(kind, result.to_dict(), event_id, callback_url=record.callback_url,
                         timestamp=result.resolved_at)


def _same_time(recorded: str | None, actual: datetime | None) -> bool:
    parsed = parse_timestamp_or_none(recorded)
    if parsed is None or actual is None:
        return parsed is None and actual is None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return abs((parsed - actual).total_seconds()) < 1.0


def _logged(appointment_id: str, record: AppointmentRecord | None, judgement: Judgement,
            hook: WebhookEvent | None) -> tuple[Judgement, WebhookEvent | None]:
    organizer = record.organizer if record is not None else ""
    log.info("calendar change of appointment %s: %s (%s)", appointment_id, judgement.verdict, judgement.why,
             extra={"appointment_id": appointment_id, "organizer_hash": hash_user(organizer) if organizer else None,
                    "outcome": f"organizer_change_{judgement.verdict}", "reason": judgement.why})
    return judgement, hook
