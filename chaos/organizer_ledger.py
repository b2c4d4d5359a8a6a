"""The organizer ledger of a calendar-backed run: every edit the staff member made told once, nothing told that
they did not do, and every appointment record agreeing with its event in the Graph emulator at the end.

Computed from the runner's own log of the edits it played, the receiver's deliveries, the emulator's events
(`GET /_admin/events`) and the app's appointment records (read from the table after the run, never the app's
counters).

- **told once**: a `_by_organizer` webhook is about one edit (a move's new times, or the cancel/delete). Copies of
  one webhook-id are one (their count is the run's duplicate_deliveries); two webhook-ids for the same edit are a
  second telling (`second_ids`, counted as duplicate deliveries).
- **nothing told the organizer did not do** (`own_writes_told`): a `rescheduled_by_organizer` whose times no
  played move set (the app's own PATCH coming back, taken for the organizer's), or a `cancelled_by_organizer` for an
  appointment the staff member never cancelled or deleted.
- **lost** (`untold`): the event ended as the staff member's last edit left it, and that edit was never told.
  Edits may coalesce (two quick edits read once, as their last state) or be overwritten by the scheduler's own
  later reschedule; then only the final state is owed.
- **diverged**: a calendar-backed record whose times, join link or cancelled state differ from its event's (an
  event in Deleted Items or marked cancelled is a cancelled appointment), or that has no event (unless it was
  cancelled before it was ever created). More than one event for an appointment is `duplicate_events`. A subject
  apart is reported (`subject_apart`), not judged: the app tells moves and cancels, not renames.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chaos.organizer import CANCEL, DELETE, MOVE, PlayedEdit, events_by_appointment
from shared.common.clock import parse_timestamp_or_none
from shared.common.vocabulary import AppointmentStatus, MeetingKind, WebhookType

_ORGANIZER_TYPES = (WebhookType.RESCHEDULED_BY_ORGANIZER, WebhookType.CANCELLED_BY_ORGANIZER)


@dataclass
class OrganizerLedger:
    """The verdict on the organizer side."""

    played: Mapping[str, int]  # applied edits by kind, plus "not_played" (the event was gone already)
    told: int  # distinct _by_organizer webhook-ids delivered
    records: int  # calendar-backed records compared with their events
    diverged: list[str] = field(default_factory=list)
    untold: list[str] = field(default_factory=list)
    second_ids: list[str] = field(default_factory=list)
    own_writes_told: list[str] = field(default_factory=list)
    duplicate_events: list[str] = field(default_factory=list)
    pending: int = 0  # records never finished (their create in poison or rejected): not compared
    # Records whose event carries another subject (a rename in Outlook the scheduler's reschedule kept, say): the
    # app tells moves and cancels, not renames, so this is reported, not a target.
    subject_apart: list[str] = field(default_factory=list)
    poison: int = 0  # calendar-notifications-poison messages (a notification the app could not handle)

    @property
    def ok(self) -> bool:
        """Every record agrees with its event; every edit told once; nothing told that the organizer did not do."""
        return not (self.diverged or self.untold or self.second_ids or self.own_writes_told
                    or self.duplicate_events or self.poison)

    @property
    def diverged_count(self) -> int:
        """The target: records that disagree with their events, and webhooks that told the scheduler a change the
        staff member never made (either way the scheduler's view and the calendar part)."""
        return len(self.diverged) + len(self.own_writes_told)

    def line(self) -> str:
        """The organizer ledger line."""
        kinds = " ".join(f"{k}={self.played.get(k, 0)}" for k in (MOVE, CANCEL, DELETE, "not_played"))
        return (f"organizer: edits {kinds} told={self.told} records={self.records} diverged={len(self.diverged)} "
                f"organizer_untold={len(self.untold)} second_ids={len(self.second_ids)} "
                f"own_writes_told={len(self.own_writes_told)} duplicate_events={len(self.duplicate_events)} "
                f"notification_poison={self.poison} pending={self.pending} subject_apart={len(self.subject_apart)}")

    def problems(self, limit: int = 5) -> list[str]:
        """Examples of whatever went wrong."""
        return [f"organizer_{name}: {', '.join(items[:limit])}{' …' if len(items) > limit else ''}"
                for name, items in (("diverged", self.diverged), ("untold", self.untold),
                                    ("second_ids", self.second_ids), ("own_writes_told", self.own_writes_told),
                                    ("duplicate_events", self.duplicate_events)) if items] + (
            [f"organizer_notification_poison: {self.poison}"] if self.poison else [])

    def to_dict(self) -> dict[str, Any]:
        """Counts only (for --json)."""
        return {"played": dict(self.played), "told": self.told, "records": self.records,
                "diverged": len(self.diverged), "untold": len(self.untold), "second_ids": len(self.second_ids),
                "own_writes_told": len(self.own_writes_told), "duplicate_events": len(self.duplicate_events),
                "pending": self.pending, "subject_apart": len(self.subject_apart), "ok": self.ok}


def _time(value: Any) -> datetime | None:
    if isinstance(value, dict):
        value = value.get("dateTime")
    if not isinstance(value, str):
        return None
    parsed = parse_timestamp_or_none(value if value.endswith("Z") or "+" in value[10:] else value + "Z")
    return parsed


def _same(a: Any, b: Any) -> bool:
    x, y = _time(a), _time(b)
    if x is None or y is None:
        return x is None and y is None
    return abs((x - y).total_seconds()) < 1.0


def _gone(event: Mapping[str, Any]) -> bool:
    return event.get("folder") != "calendar" or bool(event.get("isCancelled"))


def _told(deliveries: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """appointment -> webhook-id -> (type, data) of the verified 2xx `_by_organizer` deliveries."""
    told: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for delivery in deliveries:
        body = delivery.get("body")
        status = int(delivery.get("status") or 0)
        if (delivery.get("type") not in _ORGANIZER_TYPES or not delivery.get("verified") or not 200 <= status < 300
                or not isinstance(body, dict) or not isinstance(body.get("data"), dict)):
            continue
        told[str(body["data"].get("appointmentId"))][str(delivery.get("webhook_id"))] = {
            "type": delivery.get("type"), **body["data"]}
    return told


def _diverges(record: Mapping[str, Any], event: Mapping[str, Any]) -> str | None:
    """How a record differs from its event, if it does."""
    cancelled = record.get("status") == AppointmentStatus.CANCELLED
    if cancelled != _gone(event):
        return f"record {record.get('status')}, event {'gone' if _gone(event) else 'on the calendar'}"
    if cancelled:
        return None
    if not (_same(record.get("start"), event.get("start")) and _same(record.get("end"), event.get("end"))):
        return (f"record {record.get('start')}–{record.get('end')}, event {(event.get('start') or {}).get('dateTime')}"
                f"–{(event.get('end') or {}).get('dateTime')}")
    join = (event.get("onlineMeeting") or {}).get("joinUrl")
    if record.get("organizer_join_url") != join:
        return "another join link than the event's"
    return None


def organizer_ledger(played: Iterable[PlayedEdit], deliveries: Iterable[Mapping[str, Any]],
                     records: Mapping[str, Mapping[str, Any] | None], events: Iterable[dict[str, Any]],
                     scheduler_cancelled: AbstractSet[str] = frozenset(), *, poison: int = 0) -> OrganizerLedger:
    """Judge the organizer side. `records`: appointment -> its record's fields (None: no record), for every
    appointment the app may have put on the calendar; `scheduler_cancelled`: appointments whose scheduler cancel
    was applied (then a cancel is owed no `_by_organizer` webhook: either side may have removed the event)."""
    edits = list(played)
    applied: dict[str, list[PlayedEdit]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for edit in edits:
        if edit.applied:
            applied[edit.appointment_id].append(edit)
            counts[edit.edit.kind] += 1
        else:
            counts["not_played"] += 1
    told = _told(deliveries)
    by_appointment = events_by_appointment(events)
    ledger = OrganizerLedger(played=dict(counts), told=sum(len(ids) for ids in told.values()), records=0,
                             poison=poison)
    for appointment, record in sorted(records.items()):
        found = by_appointment.get(appointment, [])
        if len(found) > 1:
            ledger.duplicate_events.append(f"{appointment}({len(found)})")
        if record is None or record.get("meeting_kind") != MeetingKind.CALENDAR:
            continue
        if record.get("status") == AppointmentStatus.PENDING:
            ledger.pending += 1
            continue
        ledger.records += 1
        event = next((e for e in found if e.get("id") == record.get("calendar_event_id")), found[0] if found else None)
        if event is None and record.get("status") == AppointmentStatus.CANCELLED and not record.get(
                "calendar_event_id"):
            continue  # cancelled before it was ever created (a tombstone): no event is right
        why = "no event" if event is None else _diverges(record, event)
        if why:
            ledger.diverged.append(f"{appointment}({why})")
        elif event is not None and not _gone(event) and (record.get("subject") or "") != (event.get("subject") or ""):
            ledger.subject_apart.append(f"{appointment}(record {record.get('subject')!r}, "
                                        f"event {event.get('subject')!r})")
        _judge_told(ledger, appointment, applied.get(appointment, []), told.get(appointment, {}), event,
                    appointment in scheduler_cancelled)
    for appointment in sorted(set(told) - set(records)):
        ledger.own_writes_told.append(f"{appointment}(not an appointment of the run)")
    return ledger


def _judge_told(ledger: OrganizerLedger, appointment: str, applied: list[PlayedEdit],
                told: Mapping[str, Mapping[str, Any]], event: Mapping[str, Any] | None,
                scheduler_cancelled: bool) -> None:
    """One appointment's `_by_organizer` webhooks against the edits played on it."""
    moves = [p.edit for p in applied if p.edit.kind == MOVE]
    removed = any(p.edit.kind in (CANCEL, DELETE) for p in applied)
    tellings: dict[str, list[str]] = defaultdict(list)
    for webhook_id, data in sorted(told.items()):
        if data["type"] == WebhookType.CANCELLED_BY_ORGANIZER:
            if not removed:
                ledger.own_writes_told.append(f"{appointment}(cancelled_by_organizer, never cancelled in Outlook)")
                continue
            tellings["cancel"].append(webhook_id)
            continue
        move = next((m for m in moves if _same(m.start, data.get("startDateTime"))
                     and _same(m.end, data.get("endDateTime"))), None)
        if move is None:
            ledger.own_writes_told.append(f"{appointment}(rescheduled_by_organizer to {data.get('startDateTime')}, "
                                          "no move in Outlook set that)")
            continue
        tellings[f"move {move.start}"].append(webhook_id)
    for what, ids in tellings.items():
        if len(ids) > 1:
            ledger.second_ids.append(f"{appointment}({what} told under {len(ids)} webhook ids)")
    if not applied or event is None:
        return
    last = applied[-1].edit
    if last.kind == MOVE and not _gone(event) and _same(last.start, event.get("start")) \
            and _same(last.end, event.get("end")) and f"move {last.start}" not in tellings:
        ledger.untold.append(f"{appointment}(moved to {last.start}, never told)")
    elif last.kind in (CANCEL, DELETE) and _gone(event) and not scheduler_cancelled and "cancel" not in tellings:
        ledger.untold.append(f"{appointment}({last.kind} in Outlook never told)")
