"""Cal.com: BOOKING_CREATED / _RESCHEDULED / _CANCELLED webhooks → contract-v1 events.

Cal.com keeps a booking's `iCalUID` across reschedules (a reschedule is a new booking with a new `uid`,
`rescheduleUid` naming the one it replaces), so the appointment id is built from it: every change of one
appointment names the same appointment, however often it was rescheduled.
"""

from __future__ import annotations

from typing import Any

from shared.common.vocabulary import EventType
from shared.exceptions import InvalidEventError
from shared.intake.events import (
    Ignored,
    IntakeEvent,
    as_list,
    as_object,
    build_event,
    client,
    stable_event_id,
    teams_join_url,
    text_field,
)
from shared.intake.organizers import OrganizerMap

SOURCE = "calcom"
TRIGGERS = {"BOOKING_CREATED": EventType.CREATED, "BOOKING_RESCHEDULED": EventType.RESCHEDULED,
            "BOOKING_CANCELLED": EventType.CANCELLED}


def translate(doc: Any, organizers: OrganizerMap) -> IntakeEvent | Ignored:
    """One Cal.com webhook body (parsed JSON) → the event for `appointments`, or Ignored for other triggers."""
    if not isinstance(doc, dict) or not isinstance(doc.get("payload"), dict):
        raise InvalidEventError("a Cal.com webhook body has 'triggerEvent' and a 'payload' object",
                                reason="invalid_payload")
    trigger = doc.get("triggerEvent")
    event_type = TRIGGERS.get(trigger) if isinstance(trigger, str) else None
    if event_type is None:
        return Ignored(f"Cal.com trigger {str(trigger)[:64]!r} needs no appointment event")
    booking: dict[str, Any] = doc["payload"]
    uid = text_field(booking, "uid", 256)
    if uid is None:
        raise InvalidEventError("the Cal.com booking has no 'uid'", reason="invalid_payload")
    root = text_field(booking, "iCalUID", 200) or text_field(booking, "rescheduleUid", 200) or uid
    host = as_object(booking.get("organizer"))
    keys = [f"calcom:event-type:{booking[name]}" for name in ("eventTypeId", "type")
            if isinstance(booking.get(name), (str, int)) and not isinstance(booking.get(name), bool)]
    organizer = organizers.organizer_for(host.get("email") if isinstance(host.get("email"), str) else None, keys)
    metadata, video = as_object(booking.get("metadata")), as_object(booking.get("videoCallData"))
    join_url = (teams_join_url(metadata.get("videoCallUrl")) or teams_join_url(video.get("url"))
                or teams_join_url(booking.get("location")))
    attendees = [as_object(a) for a in as_list(booking.get("attendees"))]
    clients = [entry for entry in (client(a.get("name"), a.get("email"), a.get("timeZone"), a.get("phoneNumber"))
                                   for a in attendees) if entry]
    return build_event(
        event_id=stable_event_id(SOURCE, str(trigger), uid),
        event_type=event_type,
        appointment_id=f"{SOURCE}:{root}",
        organizer=organizer,
        start=booking.get("startTime"),
        end=booking.get("endTime"),
        subject=booking.get("title"),
        join_web_url=join_url,
        clients=clients,
        occurred_at=doc.get("createdAt"),
    )
