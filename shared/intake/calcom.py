"""Cal.com: BOOKING_CREATED / _RESCHEDULED / _CANCELLED webhooks → contract-v1 events.

Cal.com keeps a booking's `iCalUID` across reschedules (a reschedule is a new booking with a new `uid`,
`rescheduleUid` naming the one it replaces), so the appointment id is built from it: every change of one
appointment names the same appointment, however often it was rescheduled.

A new Cal.com webhook subscribes to every trigger, and not all share one shape: the scheduled ones
(MEETING_STARTED, MEETING_ENDED) are the flat booking row with `triggerEvent` beside its columns and no
`payload` object (Cal.com's scheduleTrigger). The trigger is read first, so any trigger the app does not use is
answered 200 `ignored` whatever its shape.

"Request reschedule" (the host asks the attendee to pick another time) cancels the booking, and the
attendee's new booking is a BOOKING_RESCHEDULED naming it in `rescheduleUid`, with the same `iCalUID`
(Cal.com's requestReschedule handler and booking service). Its BOOKING_CANCELLED carries the marks that tell it
from a real cancel: `requestReschedule: true` (BookingWebhookFactory), `rescheduleRequested: true` (later
versions), and in every version a `cancellationReason` that begins "Please reschedule." That cancel is
ignored, so the appointment and its meeting live on until the new time arrives.
"""

from __future__ import annotations

from typing import Any

from shared.exceptions import InvalidEventError
from shared.intake.events import (
    CANCELLED,
    CREATED,
    RESCHEDULED,
    Ignored,
    IntakeEvent,
    as_list,
    as_object,
    build_event,
    client,
    stable_event_id,
    teams_join_url,
    teams_link_in,
    text_field,
)
from shared.intake.organizers import OrganizerMap

SOURCE = "calcom"
# The prefix Cal.com's requestReschedule handler puts before the host's reason (not translated, in every version).
REQUEST_RESCHEDULE_REASON = "Please reschedule."
TRIGGERS = {"BOOKING_CREATED": CREATED, "BOOKING_RESCHEDULED": RESCHEDULED, "BOOKING_CANCELLED": CANCELLED}


def translate(doc: Any, organizers: OrganizerMap) -> IntakeEvent | Ignored:
    """One Cal.com webhook body (parsed JSON) → the event for `appointments`, or Ignored for other triggers."""
    trigger = doc.get("triggerEvent") if isinstance(doc, dict) else None
    if not isinstance(trigger, str):
        raise InvalidEventError("a Cal.com webhook body is an object with a 'triggerEvent'", reason="invalid_payload")
    event_type = TRIGGERS.get(trigger)
    if event_type is None:
        return Ignored(f"Cal.com trigger {trigger[:64]!r} needs no appointment event")
    if not isinstance(doc.get("payload"), dict):
        raise InvalidEventError(f"a Cal.com {trigger} body has a 'payload' object", reason="invalid_payload")
    booking: dict[str, Any] = doc["payload"]
    uid = text_field(booking, "uid", 256)
    if uid is None:
        raise InvalidEventError("the Cal.com booking has no 'uid'", reason="invalid_payload")
    root = text_field(booking, "iCalUID", 200) or text_field(booking, "rescheduleUid", 200) or uid
    if event_type == CANCELLED and reschedule_requested(booking):
        return Ignored("Cal.com request-reschedule: the booking waits for the attendee's new time, which arrives "
                       "as BOOKING_RESCHEDULED of the same appointment",
                       event_id=stable_event_id(SOURCE, trigger, uid), appointment_id=f"{SOURCE}:{root}")
    host = as_object(booking.get("organizer"))
    keys = [f"calcom:event-type:{booking[name]}" for name in ("eventTypeId", "type")
            if isinstance(booking.get(name), (str, int)) and not isinstance(booking.get(name), bool)]
    organizer = organizers.organizer_for(host.get("email") if isinstance(host.get("email"), str) else None, keys)
    metadata, video = as_object(booking.get("metadata")), as_object(booking.get("videoCallData"))
    join_url = (teams_join_url(metadata.get("videoCallUrl")) or teams_join_url(video.get("url"))
                or teams_link_in(booking.get("location")))
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


def reschedule_requested(booking: dict[str, Any]) -> bool:
    """Whether a cancelled booking is Cal.com's "request reschedule" rather than a cancel (marks: module doc)."""
    reason = booking.get("cancellationReason")
    return (booking.get("requestReschedule") is True or booking.get("rescheduleRequested") is True
            or (isinstance(reason, str) and reason.startswith(REQUEST_RESCHEDULE_REASON)))
