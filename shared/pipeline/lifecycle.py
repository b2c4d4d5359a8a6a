"""The appointment state machine, written once as pure functions: what an event does to an appointment.

`decide` reads the stored record (or None) and the event and says what to do: reply from the record,
resolve a supplied meeting, create, update or delete the app's meeting, record a change without a Graph
write, or reject the event (stale_event, appointment_cancelled, meeting_required, invalid_event).
`record_after` says what the record becomes once that is done. Both stores and the executor
(appointment_flow) follow them, so the rules live here only:

- order: `sequence` when both sides have one, else `occurredAt` when both have one, else arrival order;
  a change older than the one applied is stale; the same event again is answered from the record;
- cancelled is final: a later create or reschedule makes no meeting;
- a create for an appointment that exists is answered from its record, however late it arrives;
- the app writes only to meetings it created: a supplied meeting is never updated or deleted;
- a reschedule that supplies another meeting moves the appointment to it (its link resolved again); the
  app's own earlier meeting, which no booking uses any more, is then deleted;
- a reschedule that arrives before its create does the create, with the new times.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from urllib.parse import unquote, urlsplit

from shared.common.clock import format_timestamp, parse_timestamp_or_none, utc_now
from shared.common.vocabulary import AppointmentStatus, EventType, MeetingKind
from shared.exceptions import (
    AppointmentCancelledError,
    InvalidEventError,
    MeetingRequiredError,
    PermanentError,
    StaleEventError,
)
from shared.pipeline.inbound import AppointmentEvent
from shared.storage import appointments as store


class Action(StrEnum):
    """What an event does."""

    REPLAY = "replay"  # nothing changes: the answer comes from the record
    RESOLVE = "resolve"  # a supplied meeting: its join URL (a Graph read)
    CREATE = "create"  # createOrGet as the organizer, then the join URL
    UPDATE = "update"  # PATCH the app's meeting with the new times
    ACKNOWLEDGE = "acknowledge"  # a supplied meeting rescheduled: recorded, no Graph write
    SWITCH = "switch"  # the scheduler supplies another meeting: resolve it; the app's own old one is deleted
    DELETE = "delete"  # DELETE the app's meeting
    TOMBSTONE = "tombstone"  # cancelled with no meeting of the app: recorded, no Graph write
    REJECT = "reject"


# Actions that write to Graph run under the record's lease, so two workers never write one meeting at once.
GRAPH_WRITES = frozenset({Action.CREATE, Action.UPDATE, Action.DELETE, Action.SWITCH})


@dataclass(frozen=True)
class Decision:
    """An action, or the rejection that ends the event."""

    action: Action
    error: PermanentError | None = None


@dataclass(frozen=True)
class MeetingFacts:
    """What the Graph step learnt (or what stays as it was): the meeting and its links and times."""

    meeting_id: str | None
    join_url: str | None
    organizer_join_url: str | None
    start: str | None
    end: str | None
    # The calendar event of a calendar-backed meeting (None: none, or as it was).
    event_id: str | None = None


def decide(record: store.AppointmentRecord | None, event: AppointmentEvent, *,
           meeting_management: bool) -> Decision:
    """What `event` does to the appointment whose stored record is `record` (None: never seen)."""
    if record is not None and record.status != AppointmentStatus.PENDING:
        return _decide_known(record, event)
    # Never applied (or a create that died half-way, its pending record left behind).
    if record is not None and not _same_organizer(record, event):
        return _reject(_organizer_changed(event))
    if event.event_type == EventType.CANCELLED:
        pending_app_meeting = record is not None and record.meeting_created_by_app
        return Decision(Action.DELETE if pending_app_meeting else Action.TOMBSTONE)
    if event.has_meeting:
        return Decision(Action.RESOLVE)
    if meeting_management:
        return Decision(Action.CREATE)
    return _reject(MeetingRequiredError(
        "the event names no meeting (onlineMeetingId or joinWebUrl) and meeting management is off; send the "
        "meeting, or set MEETING_MANAGEMENT=true so the app creates it"))


def _decide_known(record: store.AppointmentRecord, event: AppointmentEvent) -> Decision:
    """What `event` does to an appointment already scheduled or cancelled."""
    if record.status == AppointmentStatus.CANCELLED:
        if event.event_type == EventType.CANCELLED:
            # A lease left on a cancelled record: its worker died around the DELETE; delete again.
            unfinished = record.lease_owner is not None and record.meeting_created_by_app
            return Decision(Action.DELETE if unfinished else Action.REPLAY)
        return _reject(AppointmentCancelledError(
            f"appointment {event.appointment_id!r} is cancelled; no meeting is made or changed for it"))
    if not _same_organizer(record, event):
        return _reject(_organizer_changed(event))
    if event.event_type == EventType.CREATED:
        # The appointment exists: same appointment, same meeting. A create that arrives late (a scheduler's
        # retry after the reschedule that followed it) is answered from the record too, never applied.
        return Decision(Action.REPLAY)
    order = compare(event, record)
    if order is not None and order < 0:
        return _reject(StaleEventError(
            f"a later change of appointment {event.appointment_id!r} ({_applied(record)}) is already applied"))
    if order == 0 and event.event_id == record.last_event_id:
        return Decision(Action.REPLAY)
    if event.event_type == EventType.CANCELLED:
        return Decision(Action.DELETE if record.meeting_created_by_app else Action.TOMBSTONE)
    if supplies_new_meeting(record, event):
        return Decision(Action.SWITCH)
    return Decision(Action.UPDATE if record.meeting_created_by_app else Action.ACKNOWLEDGE)


def supplies_new_meeting(record: store.AppointmentRecord, event: AppointmentEvent) -> bool:
    """Whether the event names a meeting other than the appointment's (a scheduler that makes a new meeting on
    reschedule, as Cal.com's Teams app does): by id when both have one, else by join link."""
    if event.online_meeting_id is not None and record.online_meeting_id is not None:
        return event.online_meeting_id != record.online_meeting_id
    if event.join_web_url is not None:
        # Either of the appointment's links sent back (a scheduler echoing what it was told) is its own meeting.
        known = [link for link in (record.organizer_join_url, record.join_url) if link]
        return not any(same_join_link(event.join_web_url, link) for link in known)
    return False


def same_join_link(one: str, other: str) -> bool:
    """Whether two Teams join links name one meeting: the same host and decoded path (a meetup-join path holds
    the meeting thread and message; its query, `context`, and the percent-encoding's letter case may differ
    between copies of one link)."""
    a, b = urlsplit(one.strip()), urlsplit(other.strip())
    same = (a.hostname or "").lower() == (b.hostname or "").lower() and unquote(a.path) == unquote(b.path)
    # Other links (a virtual-appointment link) name the meeting in the query: it counts there.
    return same and ("/meetup-join/" in a.path or unquote(a.query) == unquote(b.query))


def compare(event: AppointmentEvent, record: store.AppointmentRecord) -> int | None:
    """-1, 0 or 1 as the event is older than, as old as, or newer than the change applied; None: no order."""
    sequence = event.schedule.sequence
    if sequence is not None and record.last_sequence is not None:
        return (sequence > record.last_sequence) - (sequence < record.last_sequence)
    applied = parse_timestamp_or_none(record.last_occurred_at)
    if event.occurred_at is not None and applied is not None and _aware(event.occurred_at) and _aware(applied):
        return (event.occurred_at > applied) - (event.occurred_at < applied)
    return None


def record_after(record: store.AppointmentRecord | None, event: AppointmentEvent, action: Action,
                 facts: MeetingFacts, *, external_id: str | None = None) -> store.AppointmentRecord:
    """The record once `action` has been carried out for `event` (no lease; the caller keeps the ETag)."""
    base = record or store.AppointmentRecord(event.appointment_id, event.organizer)
    cancelled = action in (Action.DELETE, Action.TOMBSTONE)
    created_by_app = action == Action.CREATE or (action != Action.SWITCH and base.meeting_created_by_app
                                                 and facts.meeting_id is not None)
    subject = event.schedule.subject if event.schedule.subject is not None else base.subject
    return replace(
        base.unleased(), organizer=base.organizer, tenant_id=event.tenant_id or base.tenant_id,
        status=AppointmentStatus.CANCELLED if cancelled else AppointmentStatus.SCHEDULED,
        online_meeting_id=facts.meeting_id, meeting_created_by_app=created_by_app,
        external_id=external_id or base.external_id,
        join_url=None if cancelled else facts.join_url,
        organizer_join_url=None if cancelled else facts.organizer_join_url,
        start=facts.start, end=facts.end, subject=subject,
        # A switch to a supplied meeting leaves the app's calendar event behind (cancelled by the switch).
        calendar_event_id=None if action == Action.SWITCH else facts.event_id or base.calendar_event_id,
        meeting_kind=None if action == Action.SWITCH else base.meeting_kind, version=base.version + 1,
        last_sequence=event.schedule.sequence if event.schedule.sequence is not None else base.last_sequence,
        last_occurred_at=format_timestamp(event.occurred_at) if event.occurred_at and _aware(event.occurred_at)
        else base.last_occurred_at,
        last_event_id=event.event_id, last_event_type=event.event_type, updated_at=utc_now(),
        callback_url=event.callback_url or base.callback_url, writing_start=None, writing_end=None)


def pending_record(record: store.AppointmentRecord | None, event: AppointmentEvent,
                   external_id: str, kind: MeetingKind = MeetingKind.STANDALONE) -> store.AppointmentRecord:
    """The record a create holds while it runs: the appointment's, or a pending one naming the meeting to be
    and its kind (a record keeps the kind it was made with)."""
    if record is not None:
        return record
    return store.AppointmentRecord(event.appointment_id, event.organizer, status=AppointmentStatus.PENDING,
                                   tenant_id=event.tenant_id, meeting_created_by_app=True, external_id=external_id,
                                   meeting_kind=kind)


def event_times(event: AppointmentEvent) -> tuple[str | None, str | None]:
    """The event's times as the app writes them (UTC, milliseconds)."""
    start, end = event.schedule.start, event.schedule.end
    return (format_timestamp(start) if start else None, format_timestamp(end) if end else None)


def lease_wait(record: store.AppointmentRecord | None, owner: str, now: datetime,
               stale_after_seconds: float) -> float | None:
    """Seconds until another worker's lease on the record goes stale; None when no live lease bars `owner`."""
    if record is None or not record.lease_owner or record.lease_owner == owner or record.lease_at is None:
        return None
    age = (now - record.lease_at).total_seconds()
    return max(stale_after_seconds - age, 1.0) if age < stale_after_seconds else None


def _same_organizer(record: store.AppointmentRecord, event: AppointmentEvent) -> bool:
    return record.organizer.strip().lower() == event.organizer.strip().lower()


def _organizer_changed(event: AppointmentEvent) -> InvalidEventError:
    return InvalidEventError(f"'organizer' differs from the organizer of appointment {event.appointment_id!r}; "
                             "Teams cannot change a meeting's organizer: cancel it and create a new appointment")


def _applied(record: store.AppointmentRecord) -> str:
    if record.last_sequence is not None:
        return f"sequence {record.last_sequence}"
    return f"occurredAt {record.last_occurred_at}" if record.last_occurred_at else "an earlier event"


def _aware(value: datetime) -> bool:
    return value.utcoffset() is not None


def _reject(error: PermanentError) -> Decision:
    return Decision(Action.REJECT, error)
