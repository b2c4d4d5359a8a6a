"""What every intake produces: one contract-v1 event (plain JSON) for `appointments`, or a reasoned no-op."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from shared.common.clock import parse_timestamp
from shared.common.fields import MAX_URL, check_https_url, check_organizer, optional_text, required_text
from shared.exceptions import InvalidEventError

CREATED = "appointment.created"
RESCHEDULED = "appointment.rescheduled"
CANCELLED = "appointment.cancelled"
EVENT_TYPES = (CREATED, RESCHEDULED, CANCELLED)
MAX_SUBJECT = 255
MAX_CLIENTS = 20
# Hosts of Teams meeting join links: only these become `joinWebUrl` (other video links are not Teams meetings).
_TEAMS_HOSTS = ("teams.microsoft.com", "teams.live.com", "gov.teams.microsoft.us", "dod.teams.microsoft.us")


@dataclass(frozen=True)
class IntakeEvent:
    """A contract-v1 event translated from a scheduler's delivery, ready for the `appointments` queue.

    `link`: (this booking's key, the key of the booking it replaces), for a source that gives a rescheduled
    booking a new id (Calendly): the intake records it, and keys the event by the first booking.
    """

    event: dict[str, Any]
    link: tuple[str, str] | None = None

    def keyed_by(self, appointment_id: str) -> IntakeEvent:
        """The same event about `appointment_id`."""
        return replace(self, event={**self.event, "appointmentId": appointment_id})

    @property
    def event_id(self) -> str:
        """The event id (a replayed delivery gets the same one)."""
        return str(self.event["id"])

    @property
    def type(self) -> str:
        """The contract event type."""
        return str(self.event["type"])

    @property
    def appointment_id(self) -> str:
        """The appointment the event is about."""
        return str(self.event["appointmentId"])

    def to_message(self) -> str:
        """The queue message text (the host base64-encodes it)."""
        return json.dumps(self.event, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Ignored:
    """A genuine delivery that needs no event (another trigger, or the cancel half of a reschedule)."""

    reason: str
    event_id: str | None = None
    appointment_id: str | None = None
    link: tuple[str, str] | None = None  # as IntakeEvent.link: the cancel half of a reschedule names it too


def stable_event_id(source: str, *parts: str) -> str:
    """An event id derived from what identifies one change at the source: a replay gets the same id.

    Hashed, so that it is short, safe inside a webhook-id and carries no personal data.
    """
    digest = hashlib.sha256("\x1f".join((source, *parts)).encode()).hexdigest()
    return f"{source}-{digest[:40]}"


def offset_timestamp(value: Any, field: str) -> str:
    """An ISO 8601 timestamp with an offset, as given; InvalidEventError naming the field otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidEventError(f"{field!r} must be an ISO 8601 timestamp", reason="invalid_payload")
    try:
        parsed = parse_timestamp(value.strip())
    except ValueError:
        raise InvalidEventError(f"{field!r} is not an ISO 8601 timestamp", reason="invalid_payload") from None
    if parsed.tzinfo is None:
        raise InvalidEventError(f"{field!r} has no UTC offset", reason="invalid_payload")
    return value.strip()


def teams_join_url(value: Any) -> str | None:
    """`value` when it is an https Teams meeting join link, else None."""
    if not isinstance(value, str) or len(value) > MAX_URL:
        return None
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    teams = any(host == name or host.endswith("." + name) for name in _TEAMS_HOSTS)
    return value.strip() if parts.scheme == "https" and teams and "/meetup-join/" in parts.path else None


def teams_link_in(text: Any) -> str | None:
    """The first https Teams meeting join link in free text (a custom location: "Join: <link>"), else None."""
    if not isinstance(text, str) or len(text) > 4 * MAX_URL:
        return None
    # A link set off by brackets, quotes or a full stop in prose: those are not part of it (braces may be: a
    # link copied with its context unencoded ends in `}`).
    words = (word.strip("()<>[]\"'.,;") for word in text.split())
    return next((link for link in map(teams_join_url, words) if link), None)


def client(name: Any, email: Any = None, time_zone: Any = None, phone: Any = None) -> dict[str, str] | None:
    """One contract `clients` entry from a scheduler's attendee; None when it has no usable name."""
    display = name.strip()[:MAX_SUBJECT] if isinstance(name, str) else ""
    if not display:
        display = email.strip()[:MAX_SUBJECT] if isinstance(email, str) else ""
    if not display:
        return None
    entry = {"displayName": display}
    if isinstance(email, str) and email.strip():
        entry["email"] = email.strip()[:320]
    if isinstance(time_zone, str) and time_zone.strip():
        entry["timeZone"] = time_zone.strip()[:64]
    if isinstance(phone, str) and phone.startswith("+") and phone[1:].isdigit() and 2 <= len(phone) - 1 <= 15:
        entry["phone"] = phone
    return entry


def build_event(*, event_id: str, event_type: str, appointment_id: str, organizer: str,
                start: str | None = None, end: str | None = None, subject: Any = None,
                join_web_url: str | None = None, clients: list[dict[str, str]] | None = None,
                occurred_at: Any = None, extra: dict[str, Any] | None = None) -> IntakeEvent:
    """A checked contract-v1 event: the rules every intake shares, one place."""
    if event_type not in EVENT_TYPES:
        raise InvalidEventError(f"event type {event_type!r} is not one of {', '.join(EVENT_TYPES)}",
                                reason="invalid_payload")
    event: dict[str, Any] = {
        "id": required_text({"id": event_id}, "id"),
        "type": event_type,
        "appointmentId": required_text({"appointmentId": appointment_id}, "appointmentId"),
        "organizer": check_organizer(organizer),
    }
    if event_type != CANCELLED:
        _times(event, start, end, required=event_type == RESCHEDULED)
        if isinstance(subject, str) and subject.strip():
            event["subject"] = subject.strip()[:MAX_SUBJECT]
        if join_web_url:
            event["joinWebUrl"] = check_https_url("joinWebUrl", join_web_url)
        if clients:
            event["clients"] = clients[:MAX_CLIENTS]
    if isinstance(occurred_at, str):
        try:
            parse_timestamp(occurred_at)
            event["occurredAt"] = occurred_at
        except ValueError:
            pass  # the delivery time is a nicety; an odd one never blocks the event
    event.update(extra or {})
    return IntakeEvent(event)


def _times(event: dict[str, Any], start: str | None, end: str | None, *, required: bool) -> None:
    if start is None and end is None and not required:
        return
    begins = offset_timestamp(start, "startDateTime")
    ends = offset_timestamp(end, "endDateTime")
    if _instant(ends) <= _instant(begins):
        raise InvalidEventError("the booking ends before it starts", reason="invalid_payload")
    event["startDateTime"], event["endDateTime"] = begins, ends


def _instant(value: str) -> datetime:
    return parse_timestamp(value)


def as_object(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one (vendor payloads omit or null what they lack)."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """`value` when it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def text_field(doc: dict[str, Any], field: str, limit: int = 2048) -> str | None:
    """An optional string field of a vendor payload, with the app's one set of text rules."""
    try:
        return optional_text(doc, field, limit)
    except InvalidEventError as exc:
        raise InvalidEventError(exc.detail, reason="invalid_payload") from None
