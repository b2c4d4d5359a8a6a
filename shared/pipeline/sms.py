"""Client SMS (Teams Premium): which texts an event calls for, and sending one without touching the join link.

Confirmation, reschedule and reminder texts are jobs on `sms-outbox`, sent by their own function, so the
join link never waits for them. A cancellation text is sent just before the app deletes its meeting (Graph
texts only for a meeting that exists), and its failure is caught there. Every failure becomes a record on
`sms-failed` and an `appointment.joinurl.sms_failed` webhook; the appointment's outcome is unchanged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from shared.common.clock import utc_now
from shared.exceptions import PermanentError, TransientError
from shared.pipeline.appointment_fields import Client
from shared.pipeline.inbound import CANCELLED, CREATED, RESCHEDULED, AppointmentEvent
from shared.pipeline.lifecycle import Action
from shared.pipeline.records import JoinUrlResult
from shared.redaction import hash_user
from shared.webhooks.outbound import WebhookEvent, webhook_event

log = logging.getLogger(__name__)
MESSAGE_TYPES = {CREATED: "confirmation", RESCHEDULED: "reschedule", CANCELLED: "cancellation"}
REMINDER = "reminder"
# Graph needs a time zone per attendee (a Windows name); without one the text shows UTC.
_DEFAULT_ZONE = "UTC"
# Actions after which the clients have something new to hear (a replay told them already).
_NEWS = frozenset({Action.RESOLVE, Action.CREATE, Action.UPDATE, Action.ACKNOWLEDGE, Action.SWITCH, Action.DELETE,
                   Action.TOMBSTONE})


@dataclass(frozen=True)
class SmsJob:
    """One text to the clients of one appointment: an `sms-outbox` message."""

    appointment_id: str
    organizer: str
    event_id: str
    online_meeting_id: str
    message_type: str
    attendees: tuple[tuple[str, str], ...]
    tenant_id: str | None = None
    remind_before: str | None = None
    callback_url: str | None = None

    def to_json(self) -> str:
        """The queue message text."""
        return json.dumps({**asdict(self), "attendees": [list(a) for a in self.attendees]})

    @classmethod
    def from_json(cls, text: str) -> SmsJob:
        """Read a job back; ValueError (or KeyError/TypeError) when it is not one."""
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("an SMS job is a JSON object")
        return cls(**{**doc, "attendees": tuple((str(p), str(z)) for p, z in doc["attendees"])})


@dataclass(frozen=True)
class SmsFailure:
    """A text that could not be sent: its record for `sms-failed` and its webhook."""

    record: str
    webhook: WebhookEvent


class SmsSending(Protocol):
    """The two SMS actions (graph.meetings.MeetingWriter, or a fake)."""

    async def send_sms(self, organizer: str, meeting_id: str, message_type: str,
                       attendees: Any, *, tenant: str | None = None) -> None:
        """sendVirtualAppointmentSms."""

    async def send_reminder_sms(self, organizer: str, meeting_id: str, remind_before: str,
                                attendees: Any, *, tenant: str | None = None) -> None:
        """sendVirtualAppointmentReminderSms."""


def plan_sms(event: AppointmentEvent, action: Action, result: JoinUrlResult, *,
             reminder: str | None) -> list[SmsJob]:
    """The texts an applied event calls for: its message type, plus the reminder for a (re)scheduled one."""
    attendees = windows_attendees(event.schedule.clients)
    if not attendees or action not in _NEWS or result.online_meeting_id is None:
        return []
    base = SmsJob(event.appointment_id, result.organizer, event.event_id, result.online_meeting_id,
                  MESSAGE_TYPES[event.event_type], attendees, result.tenant_id, None, event.callback_url)
    jobs = [base]
    if reminder and event.event_type != CANCELLED:
        jobs.append(SmsJob(**{**asdict(base), "message_type": REMINDER, "remind_before": reminder}))
    return jobs


def windows_attendees(clients: tuple[Client, ...]) -> tuple[tuple[str, str], ...]:
    """(phone, Windows time zone) of each client with a phone: Graph takes Windows zone names."""
    phones = [c for c in clients if c.phone]
    if not phones:
        return ()
    from tzlocal.windows_tz import tz_win

    return tuple((c.phone or "", tz_win.get(c.time_zone or "", _DEFAULT_ZONE)) for c in phones)


async def send(sender: SmsSending, job: SmsJob) -> SmsFailure | None:
    """Send one text; a permanent failure comes back as an SmsFailure, a transient one raises."""
    try:
        if job.message_type == REMINDER:
            await sender.send_reminder_sms(job.organizer, job.online_meeting_id, job.remind_before or "mins15",
                                           job.attendees, tenant=job.tenant_id)
        else:
            await sender.send_sms(job.organizer, job.online_meeting_id, job.message_type, job.attendees,
                                  tenant=job.tenant_id)
    except PermanentError as exc:
        return failure(job, exc.reason, exc.detail)
    log.info("client SMS sent: %s", job.message_type,
             extra={"appointment_id": job.appointment_id, "organizer_hash": hash_user(job.organizer),
                    "outcome": "sms_sent", "sms_type": job.message_type, "recipients": len(job.attendees)})
    return None


async def send_job(sender: SmsSending, text: str) -> SmsFailure | None:
    """send_sms's logic: one `sms-outbox` job. Only the app writes jobs, so an unreadable one is a bug: it
    raises, and the host parks it in `sms-outbox-poison`."""
    return await send(sender, SmsJob.from_json(text))


async def send_now(sender: SmsSending, job: SmsJob) -> SmsFailure | None:
    """Send inline (the cancellation text before the delete): any failure, transient too, is only recorded."""
    try:
        return await send(sender, job)
    except TransientError as exc:
        return failure(job, exc.reason, exc.detail)


def failure(job: SmsJob, reason: str, detail: str) -> SmsFailure:
    """The record and webhook of a text that could not be sent."""
    log.warning("client SMS failed: %s (%s)", job.message_type, reason,
                extra={"appointment_id": job.appointment_id, "organizer_hash": hash_user(job.organizer),
                       "outcome": "sms_failed", "reason": reason, "sms_type": job.message_type})
    data: dict[str, Any] = {"appointmentId": job.appointment_id, "organizer": job.organizer,
                            "tenantId": job.tenant_id, "eventId": job.event_id, "messageType": job.message_type,
                            "reason": reason, "detail": detail}
    record: Mapping[str, Any] = {**data, "onlineMeetingId": job.online_meeting_id, "failedAt": utc_now(),
                                 "originalMessage": job.to_json()}
    # A reminder fails apart from its confirmation, so it has its own webhook identity.
    identity = job.event_id if job.message_type != REMINDER else f"{job.event_id}-{REMINDER}"
    return SmsFailure(json.dumps(record), webhook_event("sms_failed", data, identity, callback_url=job.callback_url))
