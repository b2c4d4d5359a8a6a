"""The events a conservation run sends: valid ones in every envelope, malformed ones, and duplicates.

Everything is derived from the seed, so a run can be repeated. Each planned event knows where it may end
(its allowed terminal places) and which webhook it must produce, so the ledger can judge every outcome.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.attendance.check import AttendanceCheck
from shared.attendance.classify import ATTENDED, CLIENT_NO_SHOW, NOBODY_JOINED, STAFF_NO_SHOW, UNAVAILABLE
from shared.common.clock import format_timestamp
from shared.common.vocabulary import WebhookType
from shared.webhooks.outbound import webhook_id_for

READY, REJECTED, POISON = "ready", "rejected", "poison"

SCHEDULER = "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a"
SCHEDULER_UPN = "scheduler@contoso.test"
ADAMS = "8e2f3a4b-5c6d-4e7f-9a0b-1c2d3e4f5a6b"
ADAMS_UPN = "dr.adams@contoso.test"
CARDIOLOGY = "MSo0YzdlMWQyYS05YjNmLTRlNWQtOGE2Yy0xZjJlM2Q0YzViNmEqMCoqMTk6bWVldGluZ19jYXJkaW9sb2d5QHRocmVhZC52Mg=="
DERMATOLOGY = "MSo0YzdlMWQyYS05YjNmLTRlNWQtOGE2Yy0xZjJlM2Q0YzViNmEqMCoqMTk6bWVldGluZ19kZXJtYXRvbG9neUB0aHJlYWQudjI="
PHYSIO = "MSo4ZTJmM2E0Yi01YzZkLTRlN2YtOWEwYi0xYzJkM2U0ZjVhNmIqMCoqMTk6bWVldGluZ19waHlzaW9AdGhyZWFkLnYy"
CARDIOLOGY_JOIN_WEB_URL = ("https://teams.microsoft.com/l/meetup-join/19%3ameeting_cardiology%40thread.v2/0?context="
                           "%7b%22Tid%22%3a%227d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10%22%7d")
# A second tenant (Fabrikam Clinics, a customer tenant of the seed directory) and its organizers and meetings.
FABRIKAM = "3f9a7c21-6b4d-4e8a-a1c5-9d2e8f7b6a40"
FABRIKAM_SCHEDULER = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"
FABRIKAM_SCHEDULER_UPN = "scheduler@fabrikam.test"
BAKER_UPN = "dr.baker@fabrikam.test"
DENTAL = "MSpjMWQyZTNmNC1hNWI2LTRjN2QtOGU5Zi0wYTFiMmMzZDRlNWYqMCoqMTk6bWVldGluZ19mYWJyaWthbV9kZW50YWxAdGhyZWFkLnYy"
ORTHO = "MSpkMmUzZjRhNS1iNmM3LTRkOGUtOWYwYS0xYjJjM2Q0ZTVmNjAqMCoqMTk6bWVldGluZ19mYWJyaWthbV9vcnRob0B0aHJlYWQudjI="

# (organizer, onlineMeetingId or None, joinWebUrl or None, tenantId or None): every pair the seed directory
# allows, in both tenants; some name their tenant, as a multi-tenant scheduler would.
_MEETINGS = (
    (SCHEDULER, CARDIOLOGY, None, None),
    (SCHEDULER_UPN, DERMATOLOGY, None, None),
    (ADAMS, PHYSIO, None, None),
    (ADAMS_UPN, CARDIOLOGY, None, None),  # a participant, not the organizer: allowed
    (SCHEDULER, None, CARDIOLOGY_JOIN_WEB_URL, None),  # resolved through the $filter lookup first
    (FABRIKAM_SCHEDULER, DENTAL, None, FABRIKAM),
    (FABRIKAM_SCHEDULER_UPN, DENTAL, None, None),
    (BAKER_UPN, ORTHO, None, FABRIKAM),
    (BAKER_UPN, DENTAL, None, None),  # a participant in the other tenant
)
# Malformed kinds, and the reason code each must be rejected with (bad_base64 never reaches the app).
MALFORMED_REASONS = {
    "missing_appointment_id": "invalid_event",
    "bad_organizer": "invalid_event",
    "wrong_type": "unsupported_event_type",
    "not_json": "invalid_json",
    "batched": "invalid_event",
    "bad_base64": None,
}


def text_key(text: str) -> str:
    """Identity of a message that carries no usable event id: its exact text."""
    return "text:" + hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class PlannedEvent:
    """One event of the run and what it may become."""

    key: str
    kind: str  # "valid" or a MALFORMED_REASONS key
    text: str  # what the producer enqueues (for bad_base64: the raw, non-base64 queue content)
    allowed: frozenset[str]
    webhook_id: str | None  # the one webhook it must produce, if any
    reason: str | None = None  # the rejection reason expected for a malformed event
    copies: int = 1
    raw: bool = False  # enqueue as is (not base64): a transport-level malformed message
    event_id: str | None = None
    appointment_id: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
    # Lifecycle events may also be rejected (out of order: stale_event, appointment_cancelled), then with this
    # webhook instead, and only for one of these reasons.
    failed_webhook_id: str | None = None
    allowed_reasons: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Workload:
    """The planned events, and the messages to send in order (duplicates included, shuffled).

    `appointments`: each lifecycle appointment (no meeting given: the app creates it) and whether the
    scheduler cancelled it, so the ledger can say which meetings must be gone.
    """

    events: list[PlannedEvent]
    messages: list[tuple[str, bool]]  # (text, raw)
    appointments: dict[str, bool] = field(default_factory=dict)
    # Appointments that end during the run (their events are in `events`, their messages in `early`, sent
    # before the rest so that their meetings exist, and their sessions are played, before they end).
    ended: list[EndedAppointment] = field(default_factory=list)
    early: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return sum(e.copies - 1 for e in self.events)

    @property
    def malformed(self) -> int:
        return sum(e.kind not in ("valid", "lifecycle") for e in self.events)

    @property
    def lifecycle(self) -> int:
        return sum(e.kind == "lifecycle" for e in self.events)


def _valid(rng: random.Random, prefix: str, n: int) -> PlannedEvent:
    event_id = f"{prefix}-{n:06d}"
    appointment_id = f"apt-{prefix}-{n:06d}"
    organizer, meeting_id, join_web_url, tenant = rng.choice(_MEETINGS)
    fields: dict[str, object] = {"appointmentId": appointment_id, "organizer": organizer}
    if tenant:
        fields["tenantId"] = tenant
    if meeting_id:
        fields["onlineMeetingId"] = meeting_id
    if join_web_url:
        fields["joinWebUrl"] = join_web_url
    envelope = rng.choices(("plain", "cloudevents", "eventgrid"), weights=(6, 2, 2))[0]
    if envelope == "plain":
        doc: dict[str, object] = {"id": event_id, "type": "appointment.created", **fields,
                                  "occurredAt": "2026-11-21T09:00:00Z"}
    elif envelope == "cloudevents":
        doc = {"specversion": "1.0", "id": event_id, "source": "/scheduler/chaos", "type": "appointment.created",
               "time": "2026-11-21T09:00:00Z", "datacontenttype": "application/json", "data": fields}
    else:
        doc = {"id": event_id, "eventType": "appointment.created", "subject": f"appointments/{appointment_id}",
               "dataVersion": "1.0", "eventTime": "2026-11-21T09:00:00Z", "data": fields}
    return PlannedEvent(key=event_id, kind="valid", text=json.dumps(doc), allowed=frozenset({READY, POISON}),
                        webhook_id=f"{event_id}_ready", event_id=event_id, appointment_id=appointment_id,
                        extra={"envelope": envelope})


LIFECYCLE_REASONS = frozenset({"stale_event", "appointment_cancelled"})
# The lifecycle appointments' first day: two months ahead, so their attendance checks hide (more than a queue
# message's 7 days) and their events lie inside the window a calendar resync reads (shared.calendar_sync.sync:
# a week back, 400 days ahead), as a real booking's do: a resync must be able to repair a lost notification.
LIFECYCLE_DAY = (datetime.now(UTC) + timedelta(days=60)).replace(hour=0, minute=0, second=0, microsecond=0)
_SUFFIXES = {"created": "ready", "rescheduled": "updated", "cancelled": "cancelled"}


def _lifecycle(rng: random.Random, prefix: str, n: int, room: int) -> tuple[list[PlannedEvent], bool]:
    """One appointment without a meeting: created, maybe rescheduled (once or twice), maybe cancelled."""
    appointment_id = f"apt-{prefix}-life-{n:06d}"
    organizer = rng.choice((SCHEDULER, ADAMS_UPN))
    kinds = ["created"] + ["rescheduled"] * rng.choice((0, 1, 1, 2))
    cancelled = rng.random() < 0.5
    kinds = ([*kinds, "cancelled"] if cancelled else kinds)[:room]
    cancelled = kinds[-1] == "cancelled"
    planned = []
    for sequence, kind in enumerate(kinds, start=1):
        event_id = f"{prefix}-{n:06d}-{sequence}"
        doc: dict[str, object] = {"id": event_id, "type": f"appointment.{kind}", "appointmentId": appointment_id,
                                  "organizer": organizer, "sequence": sequence, "subject": f"Chaos {n}"}
        if kind != "cancelled":
            # Ahead: their attendance checks hide (ATTENDANCE_REPORTS is on); the ended ones are apart.
            start = LIFECYCLE_DAY + timedelta(days=sequence - 1, hours=9)
            doc["startDateTime"] = format_timestamp(start)
            doc["endDateTime"] = format_timestamp(start + timedelta(minutes=30))
        planned.append(_lifecycle_event(doc, kind, sequence))
    return planned, cancelled


def _lifecycle_event(doc: dict[str, object], kind: str, sequence: int) -> PlannedEvent:
    """A lifecycle event of an appointment without a meeting, and where it may end (out of order: rejected)."""
    event_id = str(doc["id"])
    return PlannedEvent(key=event_id, kind="lifecycle", text=json.dumps(doc),
                        allowed=frozenset({READY, REJECTED, POISON}), webhook_id=f"{event_id}_{_SUFFIXES[kind]}",
                        event_id=event_id, appointment_id=str(doc["appointmentId"]),
                        extra={"type": kind, "sequence": sequence}, failed_webhook_id=f"{event_id}_failed",
                        allowed_reasons=LIFECYCLE_REASONS)


# Ended appointments (ATTENDANCE_REPORTS): what the Graph emulator plays for each, and the outcome the app must
# tell. Without a session Graph makes no report, which the app cannot tell from a late one: both end, after
# ATTENDANCE_WAIT_HOURS, as attendance_unavailable (shared/attendance/checker.py).
SCENARIOS = {
    "attended": ATTENDED,  # the organizer and the client
    "client_no_show": CLIENT_NO_SHOW,  # the organizer alone
    "staff_no_show": STAFF_NO_SHOW,  # the client alone
    "nobody_joined": NOBODY_JOINED,  # a session only someone the scheduler never named joined
    "no_session": UNAVAILABLE,  # nobody opened the meeting: no report
    "report_late": UNAVAILABLE,  # a session whose report does not come within the wait
}
_SCENARIO_WEIGHTS = (5, 3, 3, 2, 2, 2)
ORGANIZER_SECONDS, CLIENT_SECONDS = 1200, 900
OUTSIDER = "front.desk@example.org"


@dataclass(frozen=True)
class EndedAppointment:
    """An appointment whose window ends during the run: its scenario, its change, and its final window."""

    appointment_id: str
    organizer: str
    client_email: str | None  # None: the client joins as an anonymous guest (counted, never named)
    scenario: str
    change: str  # "none", "rescheduled" (its end moved once, before the first end), "cancelled"
    start: str
    end: str  # the end its attendance is told for
    first_end: str  # the end before a reschedule (the check planned for it must drop itself)
    change_event_id: str | None = None  # the reschedule's or cancel's event id

    @property
    def played(self) -> str:
        """The scenario its session plays (a cancelled one's meeting gets a full session while it exists)."""
        return "attended" if self.change == "cancelled" else self.scenario

    @property
    def expected(self) -> str | None:
        """The outcome the app must tell; None when cancelled (it must tell nothing)."""
        return None if self.change == "cancelled" else SCENARIOS[self.scenario]

    @property
    def webhook_id(self) -> str:
        """The one attendance webhook-id the appointment may get: the app's identity of its final end."""
        return attendance_webhook_id(self.appointment_id, self.end)

    @property
    def ends_at(self) -> datetime:
        """Its final end (its check is due a grace period later)."""
        return datetime.fromisoformat(self.end.replace("Z", "+00:00"))

    def session(self) -> dict[str, Any] | None:
        """The body of the emulator's `POST /_admin/meetings/{id}/sessions`, or None (no session).

        A cancelled appointment's meeting gets a full session if it still exists: a check that wrongly ran
        would find it and tell it.
        """
        scenario = self.played
        if scenario == "no_session":
            return None
        start = datetime.fromisoformat(self.start.replace("Z", "+00:00")) + timedelta(minutes=5)
        organizer = {"user": self.organizer, "role": "Organizer", "joinOffsetSeconds": 0,
                     "seconds": ORGANIZER_SECONDS}
        client: dict[str, Any] = {"role": "Attendee", "joinOffsetSeconds": 120, "seconds": CLIENT_SECONDS}
        if self.client_email:
            client |= {"email": self.client_email, "displayName": "Chaos client"}
        people = {"attended": [organizer, client], "client_no_show": [organizer], "staff_no_show": [client],
                  "nobody_joined": [{"email": OUTSIDER, "displayName": "Front desk", "role": "Attendee",
                                     "joinOffsetSeconds": 60, "seconds": 300}],
                  "report_late": [organizer, client]}[scenario]
        body: dict[str, Any] = {"start": format_timestamp(start), "attendees": people}
        if scenario == "report_late":
            body["end"] = format_timestamp(start + timedelta(days=2))  # still running: no report yet
        return body


def attendance_webhook_id(appointment_id: str, end: str) -> str:
    """The webhook-id of an appointment's attendance at this end, as the app makes it."""
    check = AttendanceCheck(appointment_id, "", "", None, end, end)
    return webhook_id_for(check.identity, WebhookType.ATTENDANCE)


def build_ended(count: int, seed: int, now: datetime, prefix: str, *, first_end: float = 45.0,
                spread: float = 30.0, moved_by: float = 15.0) -> tuple[list[PlannedEvent], list[EndedAppointment],
                                                                       list[tuple[str, bool]]]:
    """`count` appointments that began 30 min before `now` and end `first_end` to `first_end + spread` seconds
    after it; a tenth moved `moved_by` seconds later, a tenth cancelled, a fifth of the creates sent twice.

    Returns their events, the appointments, and the messages in the order to send them (creates first).
    """
    rng = random.Random(seed * 7919 + 1)  # noqa: S311 - a repeatable workload, not a secret
    now = now.replace(microsecond=0)
    events: list[PlannedEvent] = []
    ended: list[EndedAppointment] = []
    creates: list[tuple[str, bool]] = []
    changes: list[tuple[str, bool]] = []
    for n in range(count):
        appointment_id = f"apt-{prefix}-ended-{n:04d}"
        organizer = (SCHEDULER, ADAMS_UPN)[n % 2]
        scenario = rng.choices(list(SCENARIOS), weights=_SCENARIO_WEIGHTS)[0]
        change = rng.choices(("none", "rescheduled", "cancelled"), weights=(8, 1, 1))[0]
        client_email = None if n % 3 == 2 else f"client.{n:04d}@example.org"
        start = now - timedelta(minutes=30)
        end = now + timedelta(seconds=first_end + spread * rng.random())
        docs: list[tuple[dict[str, object], str]] = []
        base: dict[str, object] = {"appointmentId": appointment_id, "organizer": organizer,
                                   "subject": f"Chaos ended {n}"}
        # Clients are named by the event that plans the check, so the reschedule sends them again, as
        # schedulers do (Cal.com's BOOKING_RESCHEDULED carries its attendees).
        clients = [{"displayName": "Chaos client", **({"email": client_email} if client_email else {})}]
        docs.append(({**base, "id": f"{prefix}-ended-{n:04d}-1", "type": "appointment.created", "sequence": 1,
                      "startDateTime": format_timestamp(start), "endDateTime": format_timestamp(end),
                      "clients": clients}, "created"))
        final_start, final_end = start, end
        if change == "rescheduled":
            final_start, final_end = start + timedelta(minutes=1), end + timedelta(seconds=moved_by)
            docs.append(({**base, "id": f"{prefix}-ended-{n:04d}-2", "type": "appointment.rescheduled",
                          "sequence": 2, "startDateTime": format_timestamp(final_start),
                          "endDateTime": format_timestamp(final_end), "clients": clients}, "rescheduled"))
        elif change == "cancelled":
            docs.append(({**base, "id": f"{prefix}-ended-{n:04d}-2", "type": "appointment.cancelled",
                          "sequence": 2}, "cancelled"))
        for sequence, (doc, kind) in enumerate(docs, start=1):
            event = _lifecycle_event(doc, kind, sequence)
            event.copies = 2 if kind == "created" and n % 5 == 0 else 1
            events.append(event)
            (creates if kind == "created" else changes).extend([(event.text, False)] * event.copies)
        ended.append(EndedAppointment(appointment_id, organizer, client_email, scenario, change,
                                      format_timestamp(final_start), format_timestamp(final_end),
                                      format_timestamp(end), str(docs[-1][0]["id"]) if len(docs) > 1 else None))
    return events, ended, creates + changes


def _malformed(kind: str, prefix: str, n: int) -> PlannedEvent:
    event_id = f"{prefix}-{n:06d}"
    appointment_id = f"apt-{prefix}-{n:06d}"
    base = {"id": event_id, "type": "appointment.created", "appointmentId": appointment_id, "organizer": SCHEDULER,
            "onlineMeetingId": CARDIOLOGY}
    reason = MALFORMED_REASONS[kind]
    if kind == "missing_appointment_id":
        doc = dict(base)
        del doc["appointmentId"]
        # Rejected with its event id, but no appointment to name: no webhook, the rejection is the record.
        return PlannedEvent(key=event_id, kind=kind, text=json.dumps(doc), allowed=frozenset({REJECTED}),
                            webhook_id=None, reason=reason, event_id=event_id)
    if kind in ("bad_organizer", "wrong_type"):
        doc = {**base, "organizer": "not an organizer"} if kind == "bad_organizer" else \
            {**base, "type": "appointment.deleted"}
        # The appointment can be named, so the scheduler hears of it through a .failed webhook.
        return PlannedEvent(key=event_id, kind=kind, text=json.dumps(doc), allowed=frozenset({REJECTED}),
                            webhook_id=f"{event_id}_failed", reason=reason, event_id=event_id,
                            appointment_id=appointment_id)
    if kind == "not_json":
        text = f'{{"id": "{event_id}", "appointmentId": "{appointment_id}" <- cut off'
    elif kind == "batched":
        text = json.dumps([{**base, "id": f"{event_id}-a"}, {**base, "id": f"{event_id}-b"}])
    elif kind == "bad_base64":
        # Not base64 at all: the host cannot decode it, fails the invocation and finally poisons it.
        return PlannedEvent(key=text_key(f"!{event_id}!"), kind=kind, text=f"!{event_id}!",
                            allowed=frozenset({POISON}), webhook_id=None, raw=True)
    else:
        raise ValueError(kind)
    return PlannedEvent(key=text_key(text), kind=kind, text=text, allowed=frozenset({REJECTED}), webhook_id=None,
                        reason=reason)


def build_workload(events: int, seed: int, *, malformed: float = 0.05, duplicates: float = 0.05,
                   lifecycle: float = 0.0, prefix: str | None = None, ended: int = 0,
                   now: datetime | None = None) -> Workload:
    """`events` distinct events, `malformed` of them malformed, `duplicates` of them sent twice, and about
    `lifecycle` of them the created, rescheduled and cancelled events of appointments without a meeting.

    `ended`: that many of the lifecycle appointments end soon after `now` (build_ended); their events count
    among the `events`.
    """
    rng = random.Random(seed)  # noqa: S311 - a repeatable workload, not a secret
    prefix = prefix or f"chaos{seed}"
    ended_events, ended_appointments, early = build_ended(ended, seed, now, prefix) if ended and now else \
        ([], [], [])
    events -= len(ended_events)
    n_malformed = round(events * malformed)
    kinds = list(MALFORMED_REASONS)
    planned: list[PlannedEvent] = []
    appointments: dict[str, bool] = {}
    malformed_slots = set(rng.sample(range(events), n_malformed))
    k = 0
    lifecycle_left = round(events * lifecycle)
    n = 0
    while n < events:
        if n in malformed_slots:
            planned.append(_malformed(kinds[k % len(kinds)], prefix, n))
            k += 1
        elif lifecycle_left > 0 and rng.random() < lifecycle * 2:
            group, cancelled = _lifecycle(rng, prefix, n, min(lifecycle_left, events - n))
            appointments[str(group[0].appointment_id)] = cancelled
            planned += group
            lifecycle_left -= len(group)
            n += len(group)
            continue
        else:
            planned.append(_valid(rng, prefix, n))
        n += 1
    for event in rng.sample(planned, round(events * duplicates)):
        event.copies = 2
    messages = [(e.text, e.raw) for e in planned for _ in range(e.copies)]
    rng.shuffle(messages)  # so the events of one appointment arrive out of order, too
    appointments |= {a.appointment_id: a.change == "cancelled" for a in ended_appointments}
    return Workload(ended_events + planned, messages, appointments, ended_appointments, early)
