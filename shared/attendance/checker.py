"""check_attendance's logic: one `attendance-checks` message in; dropped, re-hidden, or one attendance result out.

The appointment record is the truth. A check whose appointment is gone, cancelled, or now ends at another
time or in another meeting drops itself (a reschedule queued its own), unless the staff member moved it in Outlook
(calendar sync plans no check): then it follows the new end. A due check of a calendar-backed appointment looks at
its event first: when the event no longer shows the record's times, the staff member's change has not reached the
record yet (its notification late or lost), so the check waits for it, as for a late report; a move in Outlook
after the attendance was told plans no second check (the session it told of has happened). A check not yet due
hides again (a queue message hides for at most 7 days, so far-off appointments take several hops). A due check
reads the reports; none yet, or a transient failure, is retried with back-off until ATTENDANCE_WAIT_HOURS have passed,
then told as `attendance_unavailable`. What is told is kept on the record first, so a duplicate or replayed
check tells the same thing again under the same webhook-id, which deliver_webhook sends once.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from shared.attendance.check import AttendanceCheck, aware_time
from shared.attendance.classify import UNAVAILABLE, classify
from shared.common.clock import format_timestamp
from shared.common.vocabulary import AppointmentStatus, MeetingKind, WebhookType
from shared.exceptions import JoinLinkError, PermanentError, RecordConflictError, TransientError
from shared.redaction import hash_user
from shared.storage.appointments import AppointmentRecord, AppointmentStore
from shared.storage.requeue import Requeuer
from shared.webhooks.outbound import WebhookEvent, webhook_event

if TYPE_CHECKING:
    from shared.graph.calendar import CalendarEvent

log = logging.getLogger(__name__)
# Azure Storage queues hide a message for at most 7 days.
MAX_HIDE_SECONDS = 7 * 24 * 3600 - 60
_BACKOFF_BASE_SECONDS = 300.0
_BACKOFF_MAX_SECONDS = 4 * 3600.0
_MAX_ROUNDS = 4


class SessionSource(Protocol):
    """Where the sessions come from (reports.AttendanceReader, or a fake)."""

    async def sessions(self, check: AttendanceCheck) -> list[list[dict[str, Any]]]:
        """Every session's attendance records in the check's window."""


class EventSource(Protocol):
    """The appointment's calendar event (graph.calendar.CalendarWriter, or a fake)."""

    async def get(self, organizer: str, event_id: str, *, tenant: str | None = None) -> CalendarEvent | None:
        """The event by its immutable id, or None when Graph no longer has it."""


@dataclass(frozen=True)
class CheckOutcome:
    """`told` (result and webhook), `waiting` (re-hidden) or `dropped` (the record no longer matches)."""

    kind: str
    result: str | None = None
    webhook: WebhookEvent | None = None


class AttendanceChecker:
    """Runs attendance checks against the appointment records and Graph."""

    def __init__(self, store: AppointmentStore, reader: SessionSource, requeuer: Requeuer, *, wait_hours: float,
                 calendar: EventSource | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._reader = reader
        self._calendar = calendar
        self._requeuer = requeuer
        self._wait = timedelta(hours=wait_hours)
        self._clock = clock

    async def aclose(self) -> None:
        """Release the requeuer's connections."""
        await self._requeuer.aclose()

    async def run(self, text: str) -> CheckOutcome:
        """One check; an unreadable one raises (only the app writes them), and the host parks it in poison."""
        check = AttendanceCheck.from_json(text)
        record = await self._store.get(check.appointment_id)
        if not _current(record, check):
            moved = _moved_by_organizer(record, check)
            if moved is None:
                return _logged(check, CheckOutcome("dropped"), "no longer matches the appointment")
            check = moved
        assert record is not None
        now = self._clock()
        due = aware_time(check.due)
        if now < due:
            await self._requeuer.requeue(check.to_json(), _seconds(due - now, MAX_HIDE_SECONDS))
            return _logged(check, CheckOutcome("waiting"), "not due")
        told = _told(record, check)
        if told is not None:
            return _logged(check, self._outcome(check, told), "told before")
        if now < due + self._wait and await self._moving(record):
            await self._again(check, None, due + self._wait - now)
            return _logged(check, CheckOutcome("waiting"), "its calendar event changed, not yet its record")
        data = await self._read(check, now, due)
        if data is None:
            return _logged(check, CheckOutcome("waiting"), "retrying")
        return _logged(check, await self._keep(check, record, data), str(data["outcome"]))

    async def _moving(self, record: AppointmentRecord) -> bool:
        """Whether the appointment's calendar event no longer shows the record's times (or is gone): the staff
        member changed it in Outlook and calendar sync has not applied it yet (a notification late or lost)."""
        if self._calendar is None or record.meeting_kind != MeetingKind.CALENDAR or not record.calendar_event_id:
            return False
        try:
            event = await self._calendar.get(record.organizer, record.calendar_event_id, tenant=record.tenant_id)
        except JoinLinkError:
            return False  # the look is a precaution: it never holds back what the reports can tell
        if event is None or event.cancelled:
            return True
        try:
            return (event.start, event.end) != (aware_time(record.start or ""), aware_time(record.end or ""))
        except ValueError:
            return False

    async def _read(self, check: AttendanceCheck, now: datetime, due: datetime) -> dict[str, object] | None:
        """The attendance, or None when it was re-hidden to look again later."""
        late_at = due + self._wait
        late = now >= late_at
        try:
            sessions = await self._reader.sessions(check)
        except PermanentError as exc:  # missing_scope, organizer_not_connected, meeting_not_found, forbidden
            return unavailable(exc.reason, exc.detail)
        except TransientError as exc:
            if late:
                return unavailable(exc.reason, exc.detail)
            await self._again(check, exc.retry_after, late_at - now)
            return None
        if sessions:
            return classify(check, sessions)
        if late:
            return unavailable("no_attendance_report", "Graph has no attendance report for a session in the "
                               "appointment's window (a report is made only when a session ends: nobody may have "
                               "joined, or the report is late)")
        await self._again(check, None, late_at - now)
        return None

    async def _again(self, check: AttendanceCheck, retry_after: float | None, left: timedelta) -> None:
        # The last look is when the wait ends, not a whole back-off step after it (up to 4 h late otherwise);
        # Graph's Retry-After is honoured even then.
        backoff = min(_BACKOFF_BASE_SECONDS * 3 ** check.attempt, _BACKOFF_MAX_SECONDS, left.total_seconds())
        delay = max(backoff, retry_after or 0.0)
        await self._requeuer.requeue(check.again().to_json(), _seconds(timedelta(seconds=delay), MAX_HIDE_SECONDS))

    async def _keep(self, check: AttendanceCheck, record: AppointmentRecord, data: dict[str, object]) -> CheckOutcome:
        """Write what is told onto the record first (ETag), so every later copy of this check tells the same."""
        told = {**_appointment(check), **data, "checkedAt": format_timestamp(self._clock())}
        current: AppointmentRecord | None = record
        for _ in range(_MAX_ROUNDS):
            if not _current(current, check) or current is None:
                return CheckOutcome("dropped")
            earlier = _told(current, check)
            if earlier is not None:
                return self._outcome(check, earlier)
            # The version it was told at; telling changes no version (it is no change to the appointment).
            versioned = {**told, "version": current.version}
            try:
                await self._store.replace(replace(current, attendance=json.dumps(versioned)))
            except RecordConflictError:
                current = await self._store.get(check.appointment_id)
                continue
            return self._outcome(check, versioned)
        raise TransientError("the appointment record kept changing", reason="appointment_contention")

    @staticmethod
    def _outcome(check: AttendanceCheck, told: dict[str, Any]) -> CheckOutcome:
        hook = webhook_event("attendance", told, check.identity, callback_url=check.callback_url,
                             timestamp=str(told.get("checkedAt") or "") or None)
        return CheckOutcome("told", json.dumps(told), hook)


def unavailable(reason: str, detail: str) -> dict[str, object]:
    """The attendance data when it cannot be had: the reason code and what a person can do."""
    return {"outcome": UNAVAILABLE, "reason": reason, "detail": detail, "sessions": 0, "organizerAttendance": None,
            "staff": [], "clients": [], "clientsJoined": 0, "otherParticipants": 0}


def _appointment(check: AttendanceCheck) -> dict[str, object]:
    return {"appointmentId": check.appointment_id, "organizer": check.organizer, "tenantId": check.tenant_id,
            "onlineMeetingId": check.online_meeting_id, "startDateTime": check.start, "endDateTime": check.end,
            "reason": None, "detail": None}


def _current(record: AppointmentRecord | None, check: AttendanceCheck) -> bool:
    """Whether the check still belongs to the appointment as recorded (same meeting, same end, not cancelled)."""
    if (record is None or record.status != AppointmentStatus.SCHEDULED
            or record.online_meeting_id != check.online_meeting_id):
        return False
    try:
        return record.end is not None and aware_time(record.end) == aware_time(check.end)
    except ValueError:
        return False


def _moved_by_organizer(record: AppointmentRecord | None, check: AttendanceCheck) -> AttendanceCheck | None:
    """The check for the appointment's new end when the staff member moved it in Outlook (nobody else plans one:
    a scheduler's reschedule queues its own check, the organizer's change comes through calendar sync), with the
    same grace and the record's meeting; None when the check is simply stale."""
    if (record is None or record.status != AppointmentStatus.SCHEDULED or not record.end or not record.online_meeting_id
            or record.last_event_type != WebhookType.RESCHEDULED_BY_ORGANIZER):
        return None
    try:
        grace = aware_time(check.due) - aware_time(check.end)
        due = format_timestamp(aware_time(record.end) + grace)
    except ValueError:
        return None
    return replace(check, online_meeting_id=record.online_meeting_id, start=record.start, end=record.end, due=due,
                   attempt=0)


def _told(record: AppointmentRecord, check: AttendanceCheck) -> dict[str, Any] | None:
    """What was told before for this end, if anything."""
    if not record.attendance:
        return None
    try:
        told = json.loads(record.attendance)
    except ValueError:
        return None
    return told if isinstance(told, dict) and told.get("endDateTime") == check.end else None


def _seconds(delay: timedelta, cap: float) -> int:
    return int(min(max(math.ceil(delay.total_seconds()), 1), cap))


def _logged(check: AttendanceCheck, outcome: CheckOutcome, why: str) -> CheckOutcome:
    log.info("attendance check of appointment %s: %s (%s, attempt %d)", check.appointment_id, outcome.kind, why,
             check.attempt, extra={"appointment_id": check.appointment_id, "organizer_hash": hash_user(check.organizer),
                                   "outcome": f"attendance_{outcome.kind}", "reason": why,
                                   "attempt": check.attempt})
    return outcome
