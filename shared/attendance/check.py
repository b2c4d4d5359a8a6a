"""The attendance check: one `attendance-checks` message per appointment end, and when it is due.

A queue message can stay hidden for at most 7 days, so a check re-hides itself until its due time. The
appointment record is the truth: a check whose appointment was cancelled, moved to another end or given
another meeting drops itself when it fires (the reschedule made its own check).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta

from shared.common.clock import format_timestamp, parse_timestamp_or_none

# Clients may wait in the lobby before the start: sessions from this long before it belong to the appointment.
EARLY_JOIN = timedelta(hours=1)


@dataclass(frozen=True)
class AttendanceCheck:
    """What a check needs: the appointment, its meeting and window, and whom the scheduler named."""

    appointment_id: str
    organizer: str
    online_meeting_id: str
    start: str | None
    end: str
    due: str
    tenant_id: str | None = None
    client_emails: tuple[str, ...] = ()
    staff: tuple[str, ...] = ()
    callback_url: str | None = None
    attempt: int = 0

    def to_json(self) -> str:
        """The queue message text."""
        return json.dumps({**asdict(self), "client_emails": list(self.client_emails), "staff": list(self.staff)})

    @classmethod
    def from_json(cls, text: str) -> AttendanceCheck:
        """Read a check back; ValueError (or KeyError/TypeError) when it is not one (only the app writes them)."""
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("an attendance check is a JSON object")
        check = cls(**{**doc, "client_emails": tuple(doc.get("client_emails") or ()),
                       "staff": tuple(doc.get("staff") or ())})
        if parse_timestamp_or_none(check.due) is None or parse_timestamp_or_none(check.end) is None:
            raise ValueError("an attendance check needs its end and due times")
        return check

    def again(self) -> AttendanceCheck:
        """The same check, one attempt further."""
        return replace(self, attempt=self.attempt + 1)

    @property
    def identity(self) -> str:
        """The webhook identity of this appointment's attendance at this end: one webhook, however often checked."""
        return "att_" + hashlib.sha256(f"{self.appointment_id}\n{self.end}".encode()).hexdigest()[:40]

    def window(self) -> tuple[datetime, datetime]:
        """Sessions overlapping this span are the appointment's: from before the start to the end plus grace."""
        end = _time(self.end)
        start = _time(self.start) if self.start else end
        return start - EARLY_JOIN, _time(self.due)


def plan_check(*, appointment_id: str, organizer: str, online_meeting_id: str | None, start: str | None,
               end: str | None, grace_minutes: float, tenant_id: str | None = None,
               client_emails: tuple[str, ...] = (), staff: tuple[str, ...] = (),
               callback_url: str | None = None) -> AttendanceCheck | None:
    """The check a scheduled appointment gets; None without a meeting or an end (nothing to read, or no when)."""
    if not online_meeting_id or not end or parse_timestamp_or_none(end) is None:
        return None
    due = format_timestamp(_time(end) + timedelta(minutes=grace_minutes))
    return AttendanceCheck(appointment_id, organizer, online_meeting_id, start, end, due, tenant_id,
                           tuple(e.lower() for e in client_emails), tuple(s.lower() for s in staff), callback_url)


def aware_time(value: str) -> datetime:
    """A timestamp as an aware datetime (Graph's and the record's are UTC); ValueError when unreadable."""
    parsed = parse_timestamp_or_none(value)
    if parsed is None:
        raise ValueError(f"not a timestamp: {value!r}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_time = aware_time
