"""The conservation ledger: where every planned event ended, computed from the queues and the receiver only.

Nothing here reads the app's own counters. Each message found on a terminal queue is mapped back to the
event it came from (by its exact original text, else its event id, else its webhook id), so an event that
ends nowhere, or in two different places, or in the wrong place, shows up, and so does a message that maps
to no planned event at all.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chaos.workload import (
    CLIENT_SECONDS,
    ORGANIZER_SECONDS,
    POISON,
    READY,
    REJECTED,
    SCENARIOS,
    EndedAppointment,
    PlannedEvent,
    attendance_webhook_id,
    text_key,
)
from shared.attendance.check import aware_time
from shared.attendance.classify import ATTENDED, CLIENT_NO_SHOW, OUTCOMES, STAFF_NO_SHOW, UNAVAILABLE
from shared.common.vocabulary import WebhookKind, WebhookType
from shared.graph.meetings import external_id
from shared.storage.requeue import unwrap_requeued

WEBHOOK_DELIVERED, WEBHOOK_DEAD_LETTER, WEBHOOK_POISON = "delivered", "dead_letter", "outbox_poison"
# Webhooks about an appointment rather than one of the run's events: its end (judged by attendance_ledger) and
# the organizer's edits in Outlook (judged by chaos.organizer_ledger).
_NOT_EVENT_SUFFIXES = tuple("_" + kind for kind in (WebhookKind.ATTENDANCE, WebhookKind.RESCHEDULED_BY_ORGANIZER,
                                                     WebhookKind.CANCELLED_BY_ORGANIZER))


def decode_queue_text(content: str) -> str:
    """Base64 queue content as the host writes it; content that is not base64 is returned as it is."""
    try:
        return base64.b64decode(content.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return content


@dataclass
class QueueSnapshot:
    """Every message on the terminal queues (raw queue content), and the receiver's deliveries."""

    join_urls: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    poison: list[str] = field(default_factory=list)
    dead_letter: list[str] = field(default_factory=list)
    outbox_poison: list[str] = field(default_factory=list)
    deliveries: list[Mapping[str, Any]] = field(default_factory=list)
    in_flight: int = 0  # messages still on appointments / webhook-outbox when the snapshot was taken
    # The Graph emulator's meetings (its admin API), live and deleted: what the app created and removed.
    meetings: list[Mapping[str, Any]] = field(default_factory=list)
    deleted_meetings: list[Mapping[str, Any]] = field(default_factory=list)
    # The `attendance` queue (told attendance records) and `attendance-checks-poison`.
    attendance: list[str] = field(default_factory=list)
    attendance_poison: list[str] = field(default_factory=list)


@dataclass
class Ledger:
    """The verdict of a run."""

    events: int
    places: dict[str, set[str]]  # event key -> terminal places it reached
    ready: int
    rejected: int
    poison: int
    lost: list[str]
    conflicts: list[str]  # events in two different terminal places
    misplaced: list[str]  # events in a place they may not end in
    late_rejections: list[str]  # malformed events not rejected on their first attempt / with the wrong reason
    unknown: list[str]  # terminal messages that map to no planned event
    webhooks_delivered: int
    webhook_dead_letter: int
    webhook_poison: int
    webhook_lost: list[str]  # events owed a webhook that reached no terminal webhook place
    two_webhook_ids: list[str]  # events delivered under two different webhook ids
    unexpected_webhooks: list[str]  # webhooks for events that should produce none
    duplicate_deliveries: int  # 2xx deliveries of a webhook id beyond its first
    unverified_deliveries: int  # deliveries whose signature the receiver could not verify
    result_copies: int  # join-urls records beyond one per event (duplicates re-emit their result)
    in_flight: int
    # Meetings the app created whose appointment is cancelled (its cancel was processed) or unknown.
    orphan_meetings: list[str] = field(default_factory=list)
    # Appointments with more than one meeting ever created for them.
    duplicate_meetings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing lost, one place each, the right place, one webhook id each, nothing unexplained."""
        return not (self.lost or self.conflicts or self.misplaced or self.late_rejections or self.unknown
                    or self.webhook_lost or self.two_webhook_ids or self.unexpected_webhooks
                    or self.unverified_deliveries or self.in_flight or self.orphan_meetings
                    or self.duplicate_meetings)

    def line(self) -> str:
        """The one-line ledger."""
        return (f"events={self.events} ready={self.ready} rejected={self.rejected} poison={self.poison} "
                f"webhooks_delivered={self.webhooks_delivered} webhook_dead_letter={self.webhook_dead_letter} "
                f"lost={len(self.lost)} orphan_meetings={len(self.orphan_meetings)} "
                f"duplicate_meetings={len(self.duplicate_meetings)}")

    def details(self) -> str:
        """The other checks, one line."""
        return (f"conflicts={len(self.conflicts)} misplaced={len(self.misplaced)} "
                f"late_rejections={len(self.late_rejections)} unknown={len(self.unknown)} "
                f"webhook_poison={self.webhook_poison} webhook_lost={len(self.webhook_lost)} "
                f"two_webhook_ids={len(self.two_webhook_ids)} unexpected_webhooks={len(self.unexpected_webhooks)} "
                f"duplicate_deliveries={self.duplicate_deliveries} unverified={self.unverified_deliveries} "
                f"result_copies={self.result_copies} in_flight={self.in_flight}")

    def problems(self, limit: int = 5) -> list[str]:
        """Examples of whatever went wrong, for the report."""
        out = []
        for name in ("lost", "conflicts", "misplaced", "late_rejections", "unknown", "webhook_lost",
                     "two_webhook_ids", "unexpected_webhooks", "orphan_meetings", "duplicate_meetings"):
            items = getattr(self, name)
            if items:
                out.append(f"{name}: {', '.join(items[:limit])}{' …' if len(items) > limit else ''}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Counts only (for --json)."""
        return {"events": self.events, "ready": self.ready, "rejected": self.rejected, "poison": self.poison,
                "webhooks_delivered": self.webhooks_delivered, "webhook_dead_letter": self.webhook_dead_letter,
                "webhook_poison": self.webhook_poison, "lost": len(self.lost), "conflicts": len(self.conflicts),
                "misplaced": len(self.misplaced), "late_rejections": len(self.late_rejections),
                "unknown": len(self.unknown), "webhook_lost": len(self.webhook_lost),
                "two_webhook_ids": len(self.two_webhook_ids), "unexpected_webhooks": len(self.unexpected_webhooks),
                "duplicate_deliveries": self.duplicate_deliveries, "unverified": self.unverified_deliveries,
                "result_copies": self.result_copies, "in_flight": self.in_flight,
                "orphan_meetings": len(self.orphan_meetings), "duplicate_meetings": len(self.duplicate_meetings),
                "ok": self.ok}


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _event_id_of_webhook(webhook_id: str | None) -> str | None:
    if not webhook_id:
        return None
    for suffix in ("_ready", "_updated", "_cancelled", "_failed"):
        if webhook_id.endswith(suffix):
            return webhook_id[: -len(suffix)]
    return None


@dataclass
class _Reading:
    """What compute_ledger has read so far: where each event and each webhook id ended up."""

    events: dict[str, PlannedEvent]
    first_attempt: bool
    places: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    webhook_places: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    unknown: list[str] = field(default_factory=list)
    late_rejections: list[str] = field(default_factory=list)
    result_counts: Counter[str] = field(default_factory=Counter)
    delivered_2xx: Counter[str] = field(default_factory=Counter)
    unverified: int = 0

    def __post_init__(self) -> None:
        self.by_text = {e.text: e.key for e in self.events.values()}
        self.by_event_id = {e.event_id: e.key for e in self.events.values() if e.event_id}

    def identify(self, text: str | None, event_id: str | None) -> str | None:
        """The planned event a message is: by its exact text, else by its event id."""
        if text is not None and text in self.by_text:
            return self.by_text[text]
        if event_id and event_id in self.by_event_id:
            return self.by_event_id[event_id]
        return None

    def read_results(self, contents: Iterable[str]) -> None:
        """join-urls: one result per event, copies counted."""
        for content in contents:
            record = _json(decode_queue_text(content)) or {}
            key = self.identify(None, record.get("eventId"))
            if key is None:
                self.unknown.append(f"join-urls:{record.get('eventId')}")
                continue
            self.places[key].add(READY)
            self.result_counts[key] += 1

    def read_rejections(self, contents: Iterable[str]) -> None:
        """appointments-rejected: each with the reason its event was planned to get, on its first delivery."""
        for content in contents:
            record = _json(decode_queue_text(content)) or {}
            key = self.identify(record.get("originalMessage"), record.get("eventId"))
            if key is None:
                self.unknown.append(
                    f"rejected:{record.get('eventId') or text_key(str(record.get('originalMessage')))}")
                continue
            self.places[key].add(REJECTED)
            self._judge_rejection(key, record)

    def _judge_rejection(self, key: str, record: dict[str, Any]) -> None:
        event = self.events[key]
        late = self.first_attempt and record.get("dequeueCount") != 1
        if event.reason is not None and (late or record.get("reason") != event.reason):
            self.late_rejections.append(
                f"{key}(reason={record.get('reason')},dequeueCount={record.get('dequeueCount')})")
        elif event.allowed_reasons and record.get("reason") not in event.allowed_reasons:
            self.late_rejections.append(f"{key}(reason={record.get('reason')})")

    def read_poison(self, contents: Iterable[str]) -> None:
        """appointments-poison: raw or base64, a requeued copy unwrapped."""
        for content in contents:
            text = decode_queue_text(content)
            key: str | None
            if text == content and content in self.by_text:
                key = self.by_text[content]  # a raw (non-base64) message, poisoned as received
            else:
                original = unwrap_requeued(text).text
                doc = _json(original)
                key = self.identify(original, doc.get("id") if isinstance(doc, dict) else None)
            if key is None:
                self.unknown.append(f"poison:{text_key(text)}")
                continue
            self.places[key].add(POISON)

    def read_webhooks(self, snapshot: QueueSnapshot) -> None:
        """Which webhook ids reached which terminal place: delivered (verified 2xx), dead letter, poison."""
        for delivery in snapshot.deliveries:
            if not delivery.get("verified"):
                self.unverified += 1
                continue
            status = int(delivery.get("status") or 0)
            if 200 <= status < 300 and delivery.get("webhook_id"):
                self.delivered_2xx[delivery["webhook_id"]] += 1
                self.webhook_places[delivery["webhook_id"]].add(WEBHOOK_DELIVERED)
        for content in snapshot.dead_letter:
            record = _json(decode_queue_text(content)) or {}
            self.webhook_places[str(record.get("webhookId"))].add(WEBHOOK_DEAD_LETTER)
        for content in snapshot.outbox_poison:
            outbox = _json(unwrap_requeued(decode_queue_text(content)).text) or {}
            self.webhook_places[str(outbox.get("webhookId"))].add(WEBHOOK_POISON)

    def webhooks_of_events(self) -> dict[str, set[str]]:
        """The webhook ids that reached a place, by the event they are about."""
        webhooks_of_event: dict[str, set[str]] = defaultdict(set)
        for webhook_id in self.webhook_places:
            if webhook_id.endswith(_NOT_EVENT_SUFFIXES):
                continue  # about an appointment, not an event: judged by attendance_ledger / organizer_ledger
            key = self.identify(None, _event_id_of_webhook(webhook_id))
            if key is None:
                self.unknown.append(f"webhook:{webhook_id}")
                continue
            webhooks_of_event[key].add(webhook_id)
        return webhooks_of_event

    def count(self, place: str) -> int:
        """Events that reached `place`."""
        return sum(1 for reached in self.places.values() if place in reached)

    def webhook_count(self, place: str) -> int:
        """Webhook ids that reached `place`."""
        return sum(1 for places_ in self.webhook_places.values() if place in places_)


@dataclass
class _Verdicts:
    """Per-event judgements: where the event ended, and whether its webhook was owed and sent once."""

    lost: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    misplaced: list[str] = field(default_factory=list)
    webhook_lost: list[str] = field(default_factory=list)
    two_ids: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def judge_place(self, key: str, event: PlannedEvent, reached: set[str]) -> None:
        """Exactly one terminal place, one the event may end in."""
        if not reached:
            self.lost.append(key)
        elif len(reached) > 1:
            self.conflicts.append(f"{key}({'+'.join(sorted(reached))})")
        elif not reached <= event.allowed:
            self.misplaced.append(f"{key}({next(iter(reached))})")

    def judge_webhooks(self, key: str, event: PlannedEvent, reached: set[str], ids: set[str],
                       webhook_places: Mapping[str, set[str]]) -> None:
        """The one webhook an outcome owes, under one id, in one place; nothing else."""
        delivered_ids = {w for w in ids if WEBHOOK_DELIVERED in webhook_places[w]}
        if len(delivered_ids) > 1:
            self.two_ids.append(f"{key}({','.join(sorted(delivered_ids))})")
        owed_id = event.failed_webhook_id if REJECTED in reached and event.failed_webhook_id else event.webhook_id
        owed = owed_id is not None and (READY in reached or REJECTED in reached)
        if owed and owed_id not in ids:
            self.webhook_lost.append(key)
        for webhook_id in ids:
            if webhook_id != owed_id or not owed:
                self.unexpected.append(webhook_id)
            elif len(webhook_places[webhook_id]) > 1:
                self.conflicts.append(f"{webhook_id}({'+'.join(sorted(webhook_places[webhook_id]))})")


def compute_ledger(planned: Iterable[PlannedEvent], snapshot: QueueSnapshot, *,
                   first_attempt: bool = True) -> Ledger:
    """Map every terminal message back to its event and judge each event.

    `first_attempt`: a malformed event must be rejected on its first delivery (dequeueCount 1). Off for
    crash runs, where a message in flight when the process died is legitimately delivered again.
    """
    reading = _Reading({e.key: e for e in planned}, first_attempt)
    reading.read_results(snapshot.join_urls)
    reading.read_rejections(snapshot.rejected)
    reading.read_poison(snapshot.poison)
    reading.read_webhooks(snapshot)
    webhooks_of_event = reading.webhooks_of_events()

    verdicts = _Verdicts()
    for key, event in reading.events.items():
        reached = reading.places.get(key, set())
        verdicts.judge_place(key, event, reached)
        verdicts.judge_webhooks(key, event, reached, webhooks_of_event.get(key, set()), reading.webhook_places)

    orphans, duplicates = meeting_checks(reading.events.values(), reading.places, snapshot)
    return Ledger(
        events=len(reading.events), places=dict(reading.places), ready=reading.count(READY),
        rejected=reading.count(REJECTED), poison=reading.count(POISON), lost=verdicts.lost,
        conflicts=verdicts.conflicts, misplaced=verdicts.misplaced, late_rejections=reading.late_rejections,
        unknown=reading.unknown,
        webhooks_delivered=reading.webhook_count(WEBHOOK_DELIVERED),
        webhook_dead_letter=reading.webhook_count(WEBHOOK_DEAD_LETTER),
        webhook_poison=reading.webhook_count(WEBHOOK_POISON),
        webhook_lost=verdicts.webhook_lost, two_webhook_ids=verdicts.two_ids, unexpected_webhooks=verdicts.unexpected,
        duplicate_deliveries=sum(n - 1 for n in reading.delivered_2xx.values()),
        unverified_deliveries=reading.unverified,
        result_copies=sum(n - 1 for n in reading.result_counts.values()), in_flight=snapshot.in_flight,
        orphan_meetings=orphans, duplicate_meetings=duplicates)


def meeting_checks(planned: Iterable[PlannedEvent], places: Mapping[str, set[str]],
                   snapshot: QueueSnapshot) -> tuple[list[str], list[str]]:
    """Orphan meetings (the app's, left for a cancelled or unknown appointment) and duplicate meetings.

    An appointment counts as cancelled once its cancel was processed (ended in join-urls or rejected); a
    cancel parked in poison is waiting for a replay, and the ledger shows it under poison already.
    """
    appointments: dict[str, bool] = {}
    for event in planned:
        if event.kind != "lifecycle" or not event.appointment_id:
            continue
        processed_cancel = event.extra.get("type") == "cancelled" and bool(places.get(event.key, set()) - {POISON})
        appointments[event.appointment_id] = appointments.get(event.appointment_id, False) or processed_cancel
    by_external_id = {external_id(appointment): appointment for appointment in appointments}
    made: dict[str, set[str]] = defaultdict(set)
    for meeting in [*snapshot.meetings, *snapshot.deleted_meetings]:
        if meeting.get("externalId"):
            made[by_external_id.get(str(meeting["externalId"]), f"unknown:{meeting['externalId']}")].add(
                str(meeting.get("id")))
    orphans = []
    for meeting in snapshot.meetings:
        ext = meeting.get("externalId")
        if not ext:
            continue  # a meeting the scheduler supplied (seeded): never the app's to delete
        appointment = by_external_id.get(str(ext))
        if appointment is None or appointments[appointment]:
            orphans.append(f"{meeting.get('id')}({appointment or 'unknown appointment'})")
    return orphans, sorted(f"{appointment}({len(ids)})" for appointment, ids in made.items() if len(ids) > 1)


# The transient reasons the run's injected faults give an attendance read (Graph 503, 429, hangs, a token
# service cut off by a kill): once the wait is over, a played session may be told unavailable for one of these.
FAULT_REASONS = frozenset({"graph_unavailable", "throttled", "graph_timeout", "graph_unreachable",
                           "token_service_unavailable"})
NO_REPORT = "no_attendance_report"


@dataclass
class AttendanceLedger:
    """The verdict on the ended appointments: each told once, as played (or unavailable), a cancelled one never."""

    ended: int
    cancelled: int
    outcomes: Counter[str]
    unavailable_after_faults: list[str]  # played, but Graph failed each look (an honest outcome)
    wrong: list[str]  # told otherwise than played, for another end, with other times, or told although cancelled
    missing: list[str]  # owed an attendance webhook, none delivered
    second_ids: list[str]  # a second distinct attendance webhook-id for one end (a duplicate delivery)
    poison: int  # attendance-checks-poison messages
    records: int  # told records on the `attendance` queue (a duplicate check re-tells: more than one each)
    # Told (rightly) before a reschedule or cancel that faults delayed past the check's due time was applied.
    told_before_change: list[str] = field(default_factory=list)
    # Told unavailable (no report) because the runner played the session only after the check had looked.
    session_after_check: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every ended appointment told once, rightly; nothing parked."""
        return not (self.wrong or self.missing or self.second_ids or self.poison)

    def line(self) -> str:
        """The attendance ledger line."""
        counts = " ".join(f"{outcome}={self.outcomes.get(outcome, 0)}" for outcome in OUTCOMES)
        return (f"attendance: ended={self.ended} cancelled={self.cancelled} {counts} "
                f"attendance_wrong={len(self.wrong)} attendance_missing={len(self.missing)}")

    def details(self) -> str:
        """The other attendance checks, one line."""
        why = Counter(item.rsplit("(", 1)[-1].rstrip(")") for item in self.unavailable_after_faults)
        return (f"attendance checks: unavailable_after_faults={len(self.unavailable_after_faults)}"
                f"{' (' + ', '.join(f'{k}={v}' for k, v in sorted(why.items())) + ')' if why else ''} "
                f"told_before_change={len(self.told_before_change)} "
                f"session_after_check={len(self.session_after_check)} second_webhook_ids={len(self.second_ids)} "
                f"check_poison={self.poison} records={self.records}")

    def problems(self, limit: int = 5) -> list[str]:
        """Examples of whatever went wrong."""
        out = [f"attendance_{name}: {', '.join(items[:limit])}{' …' if len(items) > limit else ''}"
               for name, items in (("wrong", self.wrong), ("missing", self.missing),
                                   ("second_webhook_ids", self.second_ids)) if items]
        return out + ([f"attendance_check_poison: {self.poison}"] if self.poison else [])

    def to_dict(self) -> dict[str, Any]:
        """Counts only (for --json)."""
        return {"ended": self.ended, "cancelled": self.cancelled, **{o: self.outcomes.get(o, 0) for o in OUTCOMES},
                "attendance_wrong": len(self.wrong), "attendance_missing": len(self.missing),
                "unavailable_after_faults": len(self.unavailable_after_faults),
                "second_webhook_ids": len(self.second_ids), "told_before_change": len(self.told_before_change),
                "session_after_check": len(self.session_after_check),
                "check_poison": self.poison, "records": self.records,
                "ok": self.ok}


def _attendance_told(snapshot: QueueSnapshot) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, set[str]]]:
    """(appointment -> webhook-id -> data, delivered verified 2xx; appointment -> outcomes on `attendance`)."""
    told: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for delivery in snapshot.deliveries:
        status = int(delivery.get("status") or 0)
        body = delivery.get("body")
        if (delivery.get("type") != WebhookType.ATTENDANCE or not delivery.get("verified")
                or not 200 <= status < 300 or not isinstance(body, dict) or not isinstance(body.get("data"), dict)):
            continue
        told[str(body["data"].get("appointmentId"))][str(delivery.get("webhook_id"))] = body["data"]
    recorded: dict[str, set[str]] = defaultdict(set)
    for content in snapshot.attendance:
        record = _json(decode_queue_text(content)) or {}
        recorded[str(record.get("appointmentId"))].add(str(record.get("outcome")))
    return told, recorded


def _judge_told(appointment: EndedAppointment, webhook_id: str, data: Mapping[str, Any], *, end: str,
                played: str, late: bool = False) -> str | None:
    """What is wrong with one attendance webhook told for `end` after the session `played`, if anything.

    `late`: the runner played the session only after this check had looked (no report then was right).
    """
    outcome, reason, expected = data.get("outcome"), data.get("reason"), SCENARIOS[played]
    if webhook_id != attendance_webhook_id(appointment.appointment_id, end):
        return f"told for another end: {webhook_id}"
    if outcome == UNAVAILABLE:
        fine = reason in FAULT_REASONS or (reason == NO_REPORT and (expected == UNAVAILABLE or late))
        return None if fine else f"unavailable ({reason}), played {played}"
    if outcome != expected:
        return f"{outcome}, played {played}"
    organizer = data.get("organizerAttendance") or {}
    if outcome in (ATTENDED, CLIENT_NO_SHOW) and organizer.get("secondsPresent") != ORGANIZER_SECONDS:
        return f"organizer present {organizer.get('secondsPresent')} s, played {ORGANIZER_SECONDS} s"
    clients = [(c.get("email"), c.get("secondsPresent")) for c in data.get("clients") or () if isinstance(c, dict)]
    if outcome in (ATTENDED, STAFF_NO_SHOW) and clients != [(appointment.client_email, CLIENT_SECONDS)]:
        return f"clients {clients}, played {[(appointment.client_email, CLIENT_SECONDS)]}"
    return None


def _applied(join_urls: Iterable[str]) -> dict[str, str]:
    """When each event was applied: its result's resolvedAt on `join-urls` (the first copy's)."""
    applied: dict[str, str] = {}
    for content in join_urls:
        record = _json(decode_queue_text(content)) or {}
        event_id, at = record.get("eventId"), record.get("resolvedAt")
        if isinstance(event_id, str) and isinstance(at, str) and (event_id not in applied or at < applied[event_id]):
            applied[event_id] = at
    return applied


def organizer_change_key(appointment_id: str) -> str:
    """The change_event_id of an ended appointment the staff member moves in Outlook (no event of the run's)."""
    return f"organizer:{appointment_id}"


def _organizer_moves(deliveries: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """When the app applied an organizer's move: its rescheduled_by_organizer's resolvedAt (the first one's)."""
    applied: dict[str, str] = {}
    for delivery in deliveries:
        body = delivery.get("body")
        data = body.get("data") if isinstance(body, dict) else None
        if delivery.get("type") != WebhookType.RESCHEDULED_BY_ORGANIZER or not isinstance(data, dict):
            continue
        key, at = organizer_change_key(str(data.get("appointmentId"))), data.get("resolvedAt")
        if isinstance(at, str) and (key not in applied or at < applied[key]):
            applied[key] = at
    return applied


def _before(data: Mapping[str, Any], change_at: str | None) -> bool:
    """Whether an attendance was told before the appointment's change was applied (or the change never was)."""
    checked = data.get("checkedAt")
    return change_at is None or (isinstance(checked, str) and aware_time(checked) < aware_time(change_at))


def _played_late(data: Mapping[str, Any], played_at: str | None) -> bool:
    """Whether the session was played (or never) only after the check told: the runner's lag, not the app's."""
    checked = data.get("checkedAt")
    return played_at is None or (isinstance(checked, str) and aware_time(played_at) >= aware_time(checked))


@dataclass
class _AttendanceVerdicts:
    """Per-appointment judgements of attendance_ledger."""

    outcomes: Counter[str] = field(default_factory=Counter)
    after_faults: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    second_ids: list[str] = field(default_factory=list)
    before_change: list[str] = field(default_factory=list)
    played_late: list[str] = field(default_factory=list)

    def judge(self, appointment: EndedAppointment, hooks: Mapping[str, Mapping[str, Any]],
              change_at: str | None, played_at: str | None, moved_at: str | None = None) -> None:
        """One ended appointment: what was told before its change was applied, then what it was owed after."""
        name = appointment.appointment_id
        # The app tells what its record says when the check is due: a reschedule or cancel that was applied only
        # after that (faults and kills delayed it) leaves the attendance told for the appointment as it was.
        early = {w: d for w, d in hooks.items() if appointment.change != "none" and _before(d, change_at)}
        for webhook_id, data in early.items():
            why = _judge_told(appointment, webhook_id, data, end=appointment.first_end, played=appointment.played,
                              late=SCENARIOS[appointment.played] != UNAVAILABLE and _played_late(data, played_at))
            self.wrong += [f"{name}(told before its {appointment.change}: {why})"] if why else []
        self.before_change += [name] if early else []
        later = {w: d for w, d in hooks.items() if w not in early}
        if appointment.expected is None:
            self.wrong += [f"{name}(cancelled, told {sorted(str(d.get('outcome')) for d in later.values())})"] \
                if later else []
            return
        if not later:
            # A move in Outlook made after the attendance was told plans no second check (the session has happened).
            moved_after = (appointment.change == "organizer_moved" and moved_at is not None
                           and all(_before(d, moved_at) for d in early.values()))
            self.missing += [] if early and (change_at is None or moved_after) else [name]
            return
        if len(later) > 1:
            self.second_ids.append(f"{name}({len(later)} webhook ids)")
        for webhook_id, data in sorted(later.items()):
            late = appointment.expected != UNAVAILABLE and _played_late(data, played_at)
            why = _judge_told(appointment, webhook_id, data, end=appointment.end, played=appointment.scenario,
                              late=late)
            self.wrong += [f"{name}({why})"] if why else []
        data = later.get(appointment.webhook_id) or next(iter(later.values()))
        outcome = str(data.get("outcome"))
        self.outcomes[outcome] += 1
        if outcome == UNAVAILABLE and appointment.expected != UNAVAILABLE:
            if data.get("reason") == NO_REPORT:
                self.played_late.append(name)
            else:
                self.after_faults.append(f"{name}({data.get('reason')})")


def attendance_ledger(ended: Iterable[EndedAppointment], snapshot: QueueSnapshot,
                      played_at: Mapping[str, str] | None = None,
                      moved_at: Mapping[str, str] | None = None) -> AttendanceLedger:
    """Judge each ended appointment by the attendance webhooks the receiver got and the `attendance` queue.

    Copies of one webhook-id are one webhook (how often an id was delivered is the run's duplicate_deliveries);
    a second id for one end is a duplicate delivery of its attendance. A played session may end unavailable
    only for a fault's reason, or for no report when the runner played it only after the check had looked
    (`played_at`: appointment -> when its session was played; None: judge as if all were played at once). A
    cancelled appointment must be told nothing after its cancel was applied. `moved_at`: appointment -> when the
    staff member's move was played in Outlook; one played only after the attendance was told owes nothing more.
    """
    told, recorded = _attendance_told(snapshot)
    applied = _applied(snapshot.join_urls) | _organizer_moves(snapshot.deliveries)
    appointments = list(ended)
    verdicts = _AttendanceVerdicts()
    for appointment in appointments:
        hooks = told.get(appointment.appointment_id, {})
        verdicts.judge(appointment, hooks, applied.get(appointment.change_event_id or ""),
                       "0001-01-01T00:00:00Z" if played_at is None else played_at.get(appointment.appointment_id),
                       (moved_at or {}).get(appointment.appointment_id))
        outcomes = {str(d.get("outcome")) for d in hooks.values()}
        kept = recorded.get(appointment.appointment_id, set())
        if hooks and kept != outcomes:
            verdicts.wrong.append(f"{appointment.appointment_id}(attendance queue {sorted(kept)}, webhooks "
                                  f"{sorted(outcomes)})")
    return AttendanceLedger(
        ended=len(appointments), cancelled=sum(a.expected is None for a in appointments), outcomes=verdicts.outcomes,
        unavailable_after_faults=verdicts.after_faults, wrong=verdicts.wrong, missing=verdicts.missing,
        second_ids=verdicts.second_ids, told_before_change=verdicts.before_change,
        session_after_check=verdicts.played_late,
        poison=len(snapshot.attendance_poison), records=len(snapshot.attendance))
