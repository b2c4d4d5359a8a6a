"""The events a conservation run sends: valid ones in every envelope, malformed ones, and duplicates.

Everything is derived from the seed, so a run can be repeated. Each planned event knows where it may end
(its allowed terminal places) and which webhook it must produce, so the ledger can judge every outcome.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field

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
            doc["startDateTime"] = f"2026-12-{sequence:02d}T09:00:00Z"
            doc["endDateTime"] = f"2026-12-{sequence:02d}T09:30:00Z"
        planned.append(PlannedEvent(key=event_id, kind="lifecycle", text=json.dumps(doc),
                                    allowed=frozenset({READY, REJECTED, POISON}),
                                    webhook_id=f"{event_id}_{_SUFFIXES[kind]}", event_id=event_id,
                                    appointment_id=appointment_id, extra={"type": kind, "sequence": sequence},
                                    failed_webhook_id=f"{event_id}_failed", allowed_reasons=LIFECYCLE_REASONS))
    return planned, cancelled


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
                   lifecycle: float = 0.0, prefix: str | None = None) -> Workload:
    """`events` distinct events, `malformed` of them malformed, `duplicates` of them sent twice, and about
    `lifecycle` of them the created, rescheduled and cancelled events of appointments without a meeting."""
    rng = random.Random(seed)  # noqa: S311 - a repeatable workload, not a secret
    prefix = prefix or f"chaos{seed}"
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
    return Workload(planned, messages, appointments)
