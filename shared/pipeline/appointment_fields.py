"""The lifecycle fields of an appointment event: times, subject, staff, clients and order (contract v1)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.common.fields import check_organizer, optional_integer, optional_offset_timestamp, optional_text
from shared.common.ids import is_upn
from shared.exceptions import InvalidEventError

MAX_SUBJECT = 255
MAX_PARTICIPANTS = 50
MAX_CLIENTS = 20
# JSON numbers beyond 2^53 - 1 lose precision in JavaScript producers; the contract stops there.
MAX_SEQUENCE = 2**53 - 1
ROLES = ("attendee", "presenter", "coorganizer")
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_IANA = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,2}$")


@dataclass(frozen=True)
class Participant:
    """A staff member who joins as themselves: an Entra object id or UPN, and a meeting role."""

    user: str
    role: str = "attendee"


@dataclass(frozen=True)
class Client:
    """A person the appointment is for; `phone` (E.164) receives the SMS (Teams Premium)."""

    display_name: str
    email: str | None = None
    phone: str | None = None
    time_zone: str | None = None


@dataclass(frozen=True)
class Schedule:
    """The lifecycle fields of one event, validated."""

    start: datetime | None = None
    end: datetime | None = None
    subject: str | None = None
    participants: tuple[Participant, ...] = ()
    clients: tuple[Client, ...] = ()
    sequence: int | None = None


def parse_schedule(data: dict[str, Any], *, times_required: bool) -> Schedule:
    """The lifecycle fields of an event's data; InvalidEventError names the first bad field."""
    start = optional_offset_timestamp(data, "startDateTime")
    end = optional_offset_timestamp(data, "endDateTime")
    if times_required and (start is None or end is None):
        raise InvalidEventError("'startDateTime' and 'endDateTime' are both required for a reschedule")
    if end is not None and start is None:
        # Graph refuses an end without a start (400), so the event is refused before any Graph call.
        raise InvalidEventError("'endDateTime' needs 'startDateTime'")
    if start is not None and end is not None and end <= start:
        raise InvalidEventError("'endDateTime' must be after 'startDateTime'")
    return Schedule(start=start, end=end, subject=optional_text(data, "subject", limit=MAX_SUBJECT),
                    participants=_participants(data.get("participants")), clients=_clients(data.get("clients")),
                    sequence=optional_integer(data, "sequence", low=0, high=MAX_SEQUENCE))


def _items(value: Any, field: str, limit: int) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidEventError(f"{field!r} must be an array")
    if len(value) > limit:
        raise InvalidEventError(f"{field!r} has {len(value)} entries; at most {limit}")
    for n, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidEventError(f"'{field}[{n}]' must be an object")
    return value


def _participants(value: Any) -> tuple[Participant, ...]:
    found: list[Participant] = []
    for n, item in enumerate(_items(value, "participants", MAX_PARTICIPANTS)):
        user = optional_text(item, "user")
        if user is None:
            raise InvalidEventError(f"'participants[{n}].user' is required")
        check_organizer(user, f"participants[{n}].user")
        role = optional_text(item, "role") or "attendee"
        if role not in ROLES:
            raise InvalidEventError(f"'participants[{n}].role' must be one of {', '.join(ROLES)}")
        found.append(Participant(user, role))
    return tuple(found)


def _clients(value: Any) -> tuple[Client, ...]:
    found: list[Client] = []
    for n, item in enumerate(_items(value, "clients", MAX_CLIENTS)):
        name = optional_text(item, "displayName", limit=MAX_SUBJECT)
        if name is None:
            raise InvalidEventError(f"'clients[{n}].displayName' is required")
        email = optional_text(item, "email", limit=MAX_SUBJECT)
        if email is not None and not is_upn(email):
            raise InvalidEventError(f"'clients[{n}].email' is not an e-mail address")
        phone = optional_text(item, "phone", limit=16)
        if phone is not None and not _E164.match(phone):
            raise InvalidEventError(f"'clients[{n}].phone' must be an E.164 number such as +14255550100")
        zone = optional_text(item, "timeZone", limit=64)
        if zone is not None and not _is_iana_zone(zone):
            raise InvalidEventError(f"'clients[{n}].timeZone' must be an IANA time zone such as America/New_York")
        found.append(Client(name, email, phone, zone))
    return tuple(found)


def _is_iana_zone(name: str) -> bool:
    if not _IANA.match(name):
        return False
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
