"""Who joined, for how long: attendance records classified into one outcome (pure, no I/O).

A record is the organizer's (role Organizer, or the organizer's id or e-mail), a staff member's (a participant
the scheduler named), a named client's (an e-mail the scheduler sent), an unnamed client's (no e-mail: how
guests join a virtual appointment; counted, never named), or someone else's (counted). Nothing beyond what the
scheduler sent is put in the result: no display names, no ids of people it did not name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.attendance.check import AttendanceCheck, aware_time
from shared.common.clock import format_timestamp

ATTENDED = "attended"
CLIENT_NO_SHOW = "client_no_show"
STAFF_NO_SHOW = "staff_no_show"
NOBODY_JOINED = "nobody_joined"
UNAVAILABLE = "attendance_unavailable"
OUTCOMES = (ATTENDED, CLIENT_NO_SHOW, STAFF_NO_SHOW, NOBODY_JOINED, UNAVAILABLE)


@dataclass
class Presence:
    """One person's time in the appointment's sessions: first join, last leave, seconds present."""

    first_join: datetime | None = None
    last_leave: datetime | None = None
    seconds: int = 0

    def add(self, interval: Mapping[str, Any]) -> None:
        """Count one attendance interval."""
        joined, left = _when(interval.get("joinDateTime")), _when(interval.get("leaveDateTime"))
        if joined is not None and (self.first_join is None or joined < self.first_join):
            self.first_join = joined
        if left is not None and (self.last_leave is None or left > self.last_leave):
            self.last_leave = left
        seconds = interval.get("durationInSeconds")
        if isinstance(seconds, int | float) and seconds > 0:
            self.seconds += int(seconds)

    def to_dict(self) -> dict[str, object]:
        """The wire form."""
        return {"firstJoinDateTime": format_timestamp(self.first_join) if self.first_join else None,
                "lastLeaveDateTime": format_timestamp(self.last_leave) if self.last_leave else None,
                "secondsPresent": self.seconds}


@dataclass
class Tally:
    """Everyone's presence across the sessions, by what the scheduler can know them as."""

    organizer: Presence = field(default_factory=Presence)
    staff: dict[str, Presence] = field(default_factory=dict)
    clients: dict[str, Presence] = field(default_factory=dict)
    unnamed: dict[str, Presence] = field(default_factory=dict)
    others: set[str] = field(default_factory=set)


def classify(check: AttendanceCheck, sessions: Iterable[Iterable[Mapping[str, Any]]]) -> dict[str, object]:
    """The attendance data of an appointment from its sessions' attendance records."""
    tally = Tally()
    count = 0
    for records in sessions:
        count += 1
        for record in records:
            _count(tally, check, record)
    staff_present = tally.organizer.seconds > 0 or any(p.seconds > 0 for p in tally.staff.values())
    clients = [(email, p) for email, p in tally.clients.items() if p.seconds > 0] + \
        [(None, p) for p in tally.unnamed.values() if p.seconds > 0]
    outcome = {(True, True): ATTENDED, (True, False): CLIENT_NO_SHOW, (False, True): STAFF_NO_SHOW,
               (False, False): NOBODY_JOINED}[(staff_present, bool(clients))]
    return {
        "outcome": outcome, "sessions": count,
        "organizerAttendance": tally.organizer.to_dict() if tally.organizer.seconds > 0 else None,
        "staff": [{"user": user, **p.to_dict()} for user, p in tally.staff.items() if p.seconds > 0],
        "clients": [{"email": email, **p.to_dict()} for email, p in clients],
        "clientsJoined": len(clients), "otherParticipants": len(tally.others),
    }


def _count(tally: Tally, check: AttendanceCheck, record: Mapping[str, Any]) -> None:
    raw_identity = record.get("identity")
    identity: Mapping[str, Any] = raw_identity if isinstance(raw_identity, dict) else {}
    who_id = str(identity.get("id") or "").lower()
    email = str(record.get("emailAddress") or "").strip().lower()
    organizer = check.organizer.lower()
    presence: Presence
    if str(record.get("role") or "").lower() == "organizer" or organizer in (who_id, email):
        presence = tally.organizer
    elif who_id in check.staff or (email and email in check.staff):
        presence = tally.staff.setdefault(who_id if who_id in check.staff else email, Presence())
    elif email and email in check.client_emails:
        presence = tally.clients.setdefault(email, Presence())
    elif not email:
        presence = tally.unnamed.setdefault(who_id or str(record.get("id") or len(tally.unnamed)), Presence())
    else:
        tally.others.add(email)
        return
    for interval in record.get("attendanceIntervals") or ():
        if isinstance(interval, dict):
            presence.add(interval)


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return aware_time(value)
    except ValueError:
        return None
