"""Carries out the lifecycle decision against the appointment record and Graph, safely on many instances.

Each round reads the record, asks `lifecycle.decide`, and for a Graph write (create, update, delete)
first takes the record's lease with an ETag-conditioned write, so two workers never write one meeting at
once (no lost update, no meeting left behind after a cancel). A Graph read (a supplied meeting) needs no
lease: its record write is conditioned on the ETag read, and losing that race means deciding again. A
worker that dies holding a lease is overtaken once the lease is stale (IDEMPOTENCY_STALE_CLAIM_SECONDS).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from shared.common.clock import format_timestamp, utc_now
from shared.common.vocabulary import AppointmentStatus, EventType, MeetingKind
from shared.exceptions import KeyInProgressError, PermanentError, RecordConflictError, TransientError
from shared.graph.meetings import Meeting, MeetingSpec, external_id
from shared.identity.tokens import OrganizerIdentity
from shared.pipeline.inbound import AppointmentEvent
from shared.pipeline.join_url_resolver import JoinUrlResolver
from shared.pipeline.lifecycle import (
    GRAPH_WRITES,
    Action,
    MeetingFacts,
    decide,
    event_times,
    lease_wait,
    pending_record,
    record_after,
)
from shared.pipeline.records import JoinUrlResult
from shared.settings import LEASE_PATIENCE_SECONDS
from shared.storage.appointments import AppointmentRecord, AppointmentStore

log = logging.getLogger(__name__)
_MAX_ROUNDS = 4
_LEASE_POLL_SECONDS = 0.25


class MeetingWrites(Protocol):
    """The meeting writes the flow needs (graph.meetings.MeetingWriter, or a fake)."""

    async def create_or_get(self, organizer: str, ext_id: str, spec: MeetingSpec, *,
                            tenant: str | None = None) -> Meeting:
        """createOrGet as the organizer (in `tenant`, whose token alone may be used)."""

    async def update(self, organizer: str, meeting_id: str, spec: MeetingSpec, *, tenant: str | None = None) -> Meeting:
        """PATCH both times (and the subject)."""

    async def delete(self, organizer: str, meeting_id: str, *, tenant: str | None = None) -> bool:
        """DELETE; False if already gone."""


class CalendarWrites(Protocol):
    """The calendar-backed meeting writes the flow needs (graph.calendar.CalendarWriter, or a fake)."""

    async def ensure(self, organizer: str, appointment_id: str, spec: MeetingSpec, *,
                     tenant: str | None = None) -> Meeting:
        """The appointment's event with its Teams meeting (found by its property, else made); `event_id` set."""

    async def find(self, organizer: str, appointment_id: str, *, tenant: str | None = None) -> object | None:
        """The appointment's live event (with `.id`), or None."""

    async def move(self, organizer: str, event_id: str, spec: MeetingSpec, known_join_url: str | None, *,
                   tenant: str | None = None) -> Meeting:
        """PATCH the times (and subject), re-read; `id` is the new meeting's when the join URL changed, else ''."""

    async def cancel(self, organizer: str, event_id: str, comment: str | None = None, *,
                     tenant: str | None = None) -> bool:
        """POST .../cancel; False if already gone."""


# Before a cancelled meeting is deleted, its clients' cancellation SMS must go out: Graph sends SMS only
# for a meeting that exists. The hook gets the record and the meeting id; it must never raise.
BeforeDelete = Callable[[AppointmentRecord, str], "object"]


@dataclass
class Handled:
    """What became of an event: its result and the action taken."""

    result: JoinUrlResult
    action: Action
    notes: list[str] = field(default_factory=list)


class AppointmentFlow:
    """One appointment event against the record store and Graph; raises the app's classified errors."""

    def __init__(self, resolver: JoinUrlResolver, meetings: MeetingWrites, store: AppointmentStore, *,
                 meeting_management: bool, stale_after_seconds: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 lease_patience: float = LEASE_PATIENCE_SECONDS,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                 calendar: CalendarWrites | None = None, meeting_kind: MeetingKind = MeetingKind.STANDALONE) -> None:
        self._resolver = resolver
        self._meetings = meetings
        self._store = store
        self._management = meeting_management
        self._stale = stale_after_seconds
        self._clock = clock
        self._lease_patience = lease_patience
        self._sleep = sleep
        self._calendar = calendar
        # The kind a new appointment's meeting gets; an existing record keeps its own.
        self._kind = meeting_kind if calendar is not None else MeetingKind.STANDALONE

    async def identify(self, organizer: str, tenant: str | None) -> OrganizerIdentity:
        """Who the organizer is (tenant and object id), before any Graph call for them."""
        return await self._resolver.identify(organizer, tenant)

    async def handle(self, event: AppointmentEvent, before_delete: Sequence[BeforeDelete] = ()) -> Handled:
        """Apply the event; the result says what the scheduler is told."""
        owner = uuid.uuid4().hex
        # A created event is nearly always the appointment's first: it is decided as such without reading the
        # record, and the conditional insert (of the record, or of the lease a create runs under) tells when that
        # was wrong; the next round then reads and decides again. One table request less on the common paths.
        assume_new = event.event_type == EventType.CREATED
        for _ in range(_MAX_ROUNDS):
            assumed, assume_new = assume_new, False
            record = None if assumed else await self._held_elsewhere(event, owner)
            decision = decide(record, event, meeting_management=self._management)
            if decision.error is not None:
                if assumed:
                    continue  # a rejection is decided on the record as it is, never on an assumption
                raise decision.error
            if decision.action is Action.REPLAY and record is not None:
                return Handled(result_from(record, event), decision.action)
            base = record
            if decision.action in GRAPH_WRITES:
                ext = (record.external_id if record and record.external_id else external_id(event.appointment_id))
                intent = pending_record(record, event, ext, self._kind)
                if decision.action is Action.DELETE:
                    # The cancel is on record before the meeting goes: should this worker die after the DELETE,
                    # a late create finds the appointment cancelled (and makes nothing), and the cancel's retry
                    # deletes again (404 counts as done).
                    intent = replace(intent, status=AppointmentStatus.CANCELLED)
                if decision.action is Action.UPDATE:
                    # Kept if this attempt fails after its PATCH: the change notification it causes is then ours.
                    writing_start, writing_end = event_times(event)
                    intent = replace(intent, writing_start=writing_start, writing_end=writing_end)
                try:
                    base = await (self._store.replace(intent.leased(owner, self._clock())) if record is not None
                                  else self._store.insert(intent.leased(owner, self._clock())))
                except RecordConflictError:
                    continue
            made: list[Meeting] = []
            try:
                if decision.action is Action.DELETE and base is not None:
                    base = await self._known_meeting(base)
                facts = await self._apply(decision.action, base, event, made, before_delete)
            except BaseException as exc:
                if decision.action in GRAPH_WRITES and base is not None:
                    # Only a pending record this attempt made, refused for good, may go: after a timeout or a 5xx
                    # the meeting may exist although no answer came, and an earlier attempt may have made one.
                    refused = record is None and isinstance(exc, PermanentError)
                    await self._release(base, made, record if decision.action is Action.DELETE else None,
                                        forget=refused)
                raise
            after = record_after(base, event, decision.action, facts,
                                 external_id=base.external_id if base else None)
            try:
                stored = await (self._store.replace(replace(after, etag=base.etag)) if base is not None
                                else self._store.insert(after))
            except RecordConflictError:
                if decision.action in GRAPH_WRITES:
                    # Our lease was overtaken as stale: the overtaking worker redoes the (idempotent) write.
                    if made:
                        await self._undo_if_cancelled(event, made[-1])
                    raise TransientError("the appointment record changed under this worker's lease",
                                         reason="appointment_contention", retry_after=1.0) from None
                continue
            return Handled(result_from(stored, event), decision.action)
        raise TransientError("the appointment record kept changing under contention",
                             reason="appointment_contention", retry_after=1.0)

    async def _held_elsewhere(self, event: AppointmentEvent, owner: str) -> AppointmentRecord | None:
        """The record, once no other worker holds its lease; KeyInProgressError if one still does after a while.

        A holder is nearly always done within a Graph round trip or two, so waiting here briefly spares a
        requeue; a holder that died is outwaited by the requeue's back-off instead.
        """
        waited = 0.0
        while True:
            record = await self._store.get(event.appointment_id)
            wait = lease_wait(record, owner, self._clock(), self._stale)
            if wait is None:
                return record
            if waited >= self._lease_patience:
                raise KeyInProgressError("another worker is changing this appointment's meeting", retry_after=wait)
            await self._sleep(_LEASE_POLL_SECONDS)
            waited += _LEASE_POLL_SECONDS

    async def _apply(self, action: Action, record: AppointmentRecord | None, event: AppointmentEvent,
                     made: list[Meeting], before_delete: Sequence[BeforeDelete]) -> MeetingFacts:
        start, end = event_times(event)
        if action is Action.RESOLVE:
            resolved, join_url = await self._resolver.resolve(event.organizer, event.online_meeting_id,
                                                              event.join_web_url, tenant=event.tenant_id)
            return MeetingFacts(resolved, join_url, event.join_web_url, start, end)
        if action is Action.CREATE:
            return await self._create(record, event, made)
        if action is Action.SWITCH and record is not None:
            return await self._switch(record, event)
        if record is None:  # a cancellation before anything else: remembered, so a late create makes nothing
            return MeetingFacts(event.online_meeting_id, None, None, start, end)
        if action is Action.UPDATE and self._on_calendar(record):
            return await self._move(record, event)
        if action is Action.UPDATE and record.online_meeting_id is not None:
            await self._meetings.update(record.organizer, record.online_meeting_id, self._spec(event, record),
                                        tenant=record.tenant_id or event.tenant_id)
        if action in (Action.UPDATE, Action.ACKNOWLEDGE):
            return MeetingFacts(record.online_meeting_id, record.join_url, record.organizer_join_url, start, end)
        meeting_id: str | None = record.online_meeting_id or event.online_meeting_id
        if action is Action.DELETE:
            if meeting_id is not None:
                for hook in before_delete:
                    await _maybe_await(hook(record, meeting_id))
            if meeting_id is not None or record.calendar_event_id:
                gone = await self._remove(record, meeting_id, event)
                log.info("meeting of appointment %s removed (%s)", event.appointment_id,
                         "204" if gone else "already gone", extra={"appointment_id": event.appointment_id,
                                                                   "outcome": "meeting_deleted"})
        return MeetingFacts(meeting_id, None, None, record.start or start, record.end or end)

    async def _create(self, record: AppointmentRecord | None, event: AppointmentEvent,
                      made: list[Meeting]) -> MeetingFacts:
        if record is None or record.external_id is None:
            raise ValueError("a create runs under its lease record, which names the externalId")
        spec = self._spec(event, None)
        if self._on_calendar(record):
            return await self._create_on_calendar(event, spec, made)
        meeting = await self._meetings.create_or_get(event.organizer, record.external_id, spec,
                                                     tenant=event.tenant_id)
        made.append(meeting)
        if spec.start is not None and spec.end is not None and (meeting.start, meeting.end) != (spec.start, spec.end):
            # createOrGet hands back an existing meeting unchanged (an earlier attempt made it with other
            # times): only PATCH moves it.
            meeting = replace(meeting, start=spec.start, end=spec.end)
            await self._meetings.update(event.organizer, meeting.id, spec, tenant=event.tenant_id)
        meeting_id, join_url = await self._resolver.resolve(event.organizer, meeting.id, None,
                                                            tenant=event.tenant_id)
        start = format_timestamp(meeting.start) if meeting.start else event_times(event)[0]
        end = format_timestamp(meeting.end) if meeting.end else event_times(event)[1]
        return MeetingFacts(meeting_id, join_url, meeting.join_web_url, start, end)

    def _on_calendar(self, record: AppointmentRecord | None) -> bool:
        return record is not None and record.meeting_kind == MeetingKind.CALENDAR

    def _calendar_writes(self) -> CalendarWrites:
        if self._calendar is None:
            raise TransientError("a calendar-backed appointment reached a worker without calendar writes",
                                 reason="app_misconfigured")
        return self._calendar

    async def _create_on_calendar(self, event: AppointmentEvent, spec: MeetingSpec,
                                  made: list[Meeting]) -> MeetingFacts:
        """The appointment's calendar event (one, however often this runs), at the event's times, and its links."""
        calendar = self._calendar_writes()
        meeting = await calendar.ensure(event.organizer, event.appointment_id, spec, tenant=event.tenant_id)
        made.append(meeting)
        if (meeting.event_id and spec.start is not None and spec.end is not None
                and (meeting.start, meeting.end) != (spec.start, spec.end)):
            # Found an event an earlier attempt made with other times (a reschedule overtook its create).
            moved = await calendar.move(event.organizer, meeting.event_id, spec, meeting.join_web_url,
                                        tenant=event.tenant_id)
            meeting = replace(meeting, id=moved.id or meeting.id, join_web_url=moved.join_web_url,
                              start=moved.start, end=moved.end)
        meeting_id, join_url = await self._resolver.resolve(event.organizer, meeting.id, None, tenant=event.tenant_id)
        start, end = event_times(event)
        return MeetingFacts(meeting_id, join_url, meeting.join_web_url,
                            format_timestamp(meeting.start) if meeting.start else start,
                            format_timestamp(meeting.end) if meeting.end else end, event_id=meeting.event_id)

    async def _move(self, record: AppointmentRecord, event: AppointmentEvent) -> MeetingFacts:
        """PATCH the event's times; a new join URL means new links, resolved again and sent in `.updated`."""
        if not record.calendar_event_id:
            raise TransientError("the appointment's calendar event is not recorded yet",
                                 reason="appointment_contention", retry_after=1.0)
        tenant = record.tenant_id or event.tenant_id
        moved = await self._calendar_writes().move(record.organizer, record.calendar_event_id,
                                                   self._spec(event, record), record.organizer_join_url, tenant=tenant)
        meeting_id, join_url = record.online_meeting_id, record.join_url
        if moved.id:
            meeting_id, join_url = await self._resolver.resolve(record.organizer, moved.id, None, tenant=tenant)
        start, end = event_times(event)
        return MeetingFacts(meeting_id, join_url, moved.join_web_url or record.organizer_join_url,
                            format_timestamp(moved.start) if moved.start else start,
                            format_timestamp(moved.end) if moved.end else end, event_id=record.calendar_event_id)

    async def _remove(self, record: AppointmentRecord, meeting_id: str | None, event: AppointmentEvent | None) -> bool:
        """Cancel the appointment's calendar event (its Teams meeting is left alone), or DELETE a standalone one."""
        tenant = record.tenant_id or (event.tenant_id if event else None)
        if self._on_calendar(record) and record.calendar_event_id:
            comment = event.cancellation_reason if event is not None else None
            return await self._calendar_writes().cancel(record.organizer, record.calendar_event_id, comment,
                                                        tenant=tenant)
        if self._on_calendar(record) or meeting_id is None:
            return False  # no event was ever made
        return await self._meetings.delete(record.organizer, meeting_id, tenant=tenant)

    async def _switch(self, record: AppointmentRecord, event: AppointmentEvent) -> MeetingFacts:
        """The appointment moves to the meeting the scheduler now supplies: its link is resolved first; only then
        does the app's own earlier meeting go (no booking uses it any more). A supplied one is never touched."""
        start, end = event_times(event)
        resolved, join_url = await self._resolver.resolve(event.organizer, event.online_meeting_id,
                                                          event.join_web_url, tenant=event.tenant_id)
        old = record.online_meeting_id
        if record.meeting_created_by_app and old is not None and old != resolved:
            gone = await self._remove(record, old, event)
            log.info("appointment %s moved to a supplied meeting; the app's earlier meeting deleted (%s)",
                     event.appointment_id, "204" if gone else "already gone",
                     extra={"appointment_id": event.appointment_id, "outcome": "meeting_deleted"})
        return MeetingFacts(resolved, join_url, event.join_web_url, start, end)

    @staticmethod
    def _spec(event: AppointmentEvent, record: AppointmentRecord | None) -> MeetingSpec:
        schedule = event.schedule
        subject = schedule.subject
        if record is not None and subject == record.subject:
            subject = None  # PATCH sends the subject only when it changed
        return MeetingSpec(start=schedule.start, end=schedule.end, subject=subject,
                           participants=tuple((p.user, p.role) for p in schedule.participants))

    async def _known_meeting(self, held: AppointmentRecord) -> AppointmentRecord:
        """The record naming its meeting: a create that died before recording it left only the externalId, so
        createOrGet finds the meeting, and its id is written down before the DELETE (a retry must not find the
        externalId free again and make a second meeting)."""
        if held.online_meeting_id is not None or not held.external_id or held.calendar_event_id:
            return held
        if self._on_calendar(held):
            event = await self._calendar_writes().find(held.organizer, held.appointment_id, tenant=held.tenant_id)
            if event is None:
                return held
            return await self._store.replace(replace(held, calendar_event_id=str(getattr(event, "id", ""))))
        found = await self._meetings.create_or_get(held.organizer, held.external_id, MeetingSpec(),
                                                   tenant=held.tenant_id)
        return await self._store.replace(replace(held, online_meeting_id=found.id,
                                                 organizer_join_url=found.join_web_url))

    async def _undo_if_cancelled(self, event: AppointmentEvent, meeting: Meeting) -> None:
        """Delete the meeting this worker's create made if a cancel overtook its lease meanwhile.

        The cancel deleted the meeting it knew of; a createOrGet answered after that DELETE makes a new meeting
        that only this worker has seen (Graph keys createOrGet on the externalId of live meetings).
        """
        current = await self._store.get(event.appointment_id)
        if current is None or current.status != AppointmentStatus.CANCELLED:
            return
        gone = await self._remove(replace(current, calendar_event_id=meeting.event_id), meeting.id, event)
        log.info("meeting of cancelled appointment %s made after its cancel, deleted (%s)", event.appointment_id,
                 "204" if gone else "already gone", extra={"appointment_id": event.appointment_id,
                                                           "outcome": "meeting_deleted"})

    async def _release(self, held: AppointmentRecord, made: list[Meeting],
                       before_delete: AppointmentRecord | None = None, *, forget: bool = False) -> None:
        """Give the lease back after a failure; a meeting made meanwhile stays on the record, never forgotten.

        A failed delete puts back the record as it was before the cancel (a lapsed lease included, which
        tells the next cancel to delete again), keeping the meeting id it may have learnt. A pending record
        stays (its externalId lets a cancel find whatever meeting exists) unless `forget`: Graph refused
        this attempt's create and no earlier attempt was made.
        """
        try:
            if before_delete is not None:
                await self._store.replace(replace(before_delete, etag=held.etag,
                                                  online_meeting_id=held.online_meeting_id))
            elif made and held.online_meeting_id is None:
                await self._store.replace(replace(held.unleased(), online_meeting_id=made[-1].id,
                                                  organizer_join_url=made[-1].join_web_url,
                                                  calendar_event_id=made[-1].event_id or held.calendar_event_id))
            elif held.status == AppointmentStatus.PENDING and not made and forget:
                await self._store.delete(held)
            else:
                await self._store.replace(held.unleased())
        except (RecordConflictError, TransientError) as exc:
            # The lease then lapses by itself after IDEMPOTENCY_STALE_CLAIM_SECONDS.
            log.warning("appointment lease not released: %s", type(exc).__name__,
                        extra={"appointment_id": held.appointment_id})


def result_from(record: AppointmentRecord, event: AppointmentEvent) -> JoinUrlResult:
    """What the scheduler is told after `event`: the appointment's links, times and status from its record."""
    cancelled = record.status == AppointmentStatus.CANCELLED
    return JoinUrlResult(
        appointment_id=record.appointment_id, organizer=record.organizer, online_meeting_id=record.online_meeting_id,
        join_url=None if cancelled else record.join_url, event_id=event.event_id, resolved_at=utc_now(),
        organizer_join_url=None if cancelled else record.organizer_join_url, start=record.start, end=record.end,
        meeting_created_by_app=record.meeting_created_by_app, event_type=event.event_type,
        status=AppointmentStatus.CANCELLED if cancelled else AppointmentStatus.SCHEDULED,
        tenant_id=record.tenant_id or event.tenant_id, version=record.version)


async def _maybe_await(value: object) -> None:
    import inspect

    if inspect.isawaitable(value):
        await value
