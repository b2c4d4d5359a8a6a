"""Scheduler webhook deliveries shaped like the vendors' documented examples, signed as the vendors sign.

Cal.com: the example payload of its webhooks guide (docs/developing/guides/automation/webhooks.mdx), with the
fields its booking handler adds on a reschedule (`rescheduleUid`, `rescheduleStartTime`, ...) and on every
booking (`iCalUID`, `iCalSequence`, `metadata.videoCallUrl`); the scheduled triggers as its scheduleTrigger
(packages/features/webhooks/lib/scheduleTrigger.ts) stores them; the request-reschedule cancel as its
requestReschedule handler (packages/trpc/server/routers/viewer/bookings/requestReschedule.handler.ts) and
BookingWebhookFactory build it. Calendly: the invitee webhook payload of its
developer documentation. The signatures are computed here with hmac, independently of the app's code.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from typing import Any

TEAMS_LINK = ("https://teams.microsoft.com/l/meetup-join/19%3ameeting_cardiology%40thread.v2/0?context="
              "%7b%22Tid%22%3a%227d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10%22%7d")

_CALCOM_BOOKING: dict[str, Any] = {
    "type": "60min",
    "title": "60min between Pro Example and John Doe",
    "description": "",
    "additionalNotes": "",
    "customInputs": {},
    "startTime": "2023-05-25T09:30:00Z",
    "endTime": "2023-05-25T10:30:00Z",
    "organizer": {"id": 5, "name": "Pro Example", "email": "pro@example.com", "username": "pro",
                  "timeZone": "Asia/Kolkata", "language": {"locale": "en"}, "timeFormat": "h:mma"},
    "responses": {"name": {"label": "your_name", "value": "John Doe"},
                  "email": {"label": "email_address", "value": "john.doe@example.com"},
                  "location": {"label": "location",
                               "value": {"optionValue": "", "value": "integrations:office365_video"}},
                  "notes": {"label": "additional_notes"}, "guests": {"label": "additional_guests"},
                  "rescheduleReason": {"label": "reschedule_reason"}},
    "userFieldsResponses": {},
    "attendees": [{"email": "john.doe@example.com", "name": "John Doe", "timeZone": "Asia/Kolkata",
                   "language": {"locale": "en"}}],
    "location": "integrations:office365_video",
    "destinationCalendar": {"id": 10, "integration": "office365_calendar", "externalId": "AAMkAD",
                            "userId": 5, "eventTypeId": None, "credentialId": 1},
    "hideCalendarNotes": False,
    "requiresConfirmation": None,
    "eventTypeId": 7,
    "seatsShowAttendees": True,
    "seatsPerTimeSlot": None,
    "uid": "bFJeNb2uX8ANpT3JL5EfXw",
    "iCalUID": "bFJeNb2uX8ANpT3JL5EfXw@Cal.com",
    "iCalSequence": 0,
    "appsStatus": [{"appName": "Microsoft 365/Teams", "type": "office365_video", "success": 1, "failures": 0,
                    "errors": [], "warnings": []}],
    "eventTitle": "60min",
    "eventDescription": "",
    "price": 0,
    "currency": "usd",
    "length": 60,
    "bookingId": 91,
    "metadata": {"videoCallUrl": TEAMS_LINK},
    "status": "ACCEPTED",
}


def calcom(trigger: str = "BOOKING_CREATED", **changes: Any) -> dict[str, Any]:
    """A Cal.com webhook body; `changes` replace fields of the booking (`None` removes one)."""
    booking = copy.deepcopy(_CALCOM_BOOKING)
    if trigger == "BOOKING_RESCHEDULED":
        booking.update({"uid": "n3wUidAfterReschedule", "rescheduleUid": booking["uid"], "rescheduleId": 91,
                        "rescheduleStartTime": booking["startTime"], "rescheduleEndTime": booking["endTime"],
                        "startTime": "2023-05-26T11:00:00Z", "endTime": "2023-05-26T12:00:00Z",
                        "iCalSequence": 1, "bookingId": 92, "rescheduledBy": "pro@example.com"})
    if trigger == "BOOKING_CANCELLED":
        booking.update({"status": "CANCELLED", "cancellationReason": "Feeling better", "iCalSequence": 1})
    for key, value in changes.items():
        if value is None:
            booking.pop(key, None)
        else:
            booking[key] = value
    return {"triggerEvent": trigger, "createdAt": "2023-05-24T09:30:00.538Z", "payload": booking}


def calcom_scheduled(trigger: str = "MEETING_ENDED", **changes: Any) -> dict[str, Any]:
    """A scheduled Cal.com trigger (MEETING_STARTED / MEETING_ENDED) as Cal.com's scheduleTrigger sends it:
    `JSON.stringify({ triggerEvent, ...booking })`, the flat booking row with no `payload` object."""
    row: dict[str, Any] = {
        "triggerEvent": trigger, "id": 91, "uid": _CALCOM_BOOKING["uid"], "userId": 5, "userPrimaryEmail":
        "pro@example.com", "eventTypeId": 7, "title": _CALCOM_BOOKING["title"], "description": "",
        "customInputs": {}, "responses": copy.deepcopy(_CALCOM_BOOKING["responses"]),
        "startTime": _CALCOM_BOOKING["startTime"], "endTime": _CALCOM_BOOKING["endTime"],
        "location": "integrations:office365_video", "createdAt": "2023-05-20T08:00:00.000Z",
        "updatedAt": None, "status": "accepted", "paid": False, "destinationCalendarId": 10,
        "cancellationReason": None, "rejectionReason": None, "rescheduled": None, "fromReschedule": None,
        "recurringEventId": None, "smsReminderNumber": None, "metadata": {"videoCallUrl": TEAMS_LINK},
        "isRecorded": False, "iCalUID": _CALCOM_BOOKING["iCalUID"], "iCalSequence": 0,
    }
    row.update(changes)
    return row


def calcom_request_reschedule(reason: str = "The doctor is away that day", **changes: Any) -> dict[str, Any]:
    """The BOOKING_CANCELLED of a host's "request reschedule", as Cal.com's requestReschedule handler builds it:
    BookingWebhookFactory.createCancelledEventPayload (status CANCELLED, `requestReschedule: true`, the original
    booking's uid, times and iCalUID) with `rescheduleRequested: true` and the reason after "Please reschedule. "."""
    base = calcom("BOOKING_CANCELLED")["payload"]
    keep = ("bookingId", "type", "title", "description", "customInputs", "responses", "userFieldsResponses",
            "startTime", "endTime", "organizer", "attendees", "uid", "location", "destinationCalendar", "iCalUID",
            "eventTypeId", "length", "iCalSequence", "eventTitle")
    payload = {key: copy.deepcopy(base[key]) for key in keep if key in base}
    payload.update({"destinationCalendar": [base["destinationCalendar"]], "smsReminderNumber": None,
                    "cancelledBy": "pro@example.com", "cancellationReason": f"Please reschedule. {reason}",
                    "status": "CANCELLED", "requestReschedule": True, "rescheduleRequested": True})
    for key, value in changes.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return {"triggerEvent": "BOOKING_CANCELLED", "createdAt": "2023-05-24T12:00:00.000Z", "payload": payload}


def calcom_headers(secret: str, body: bytes) -> dict[str, str]:
    """Cal.com's headers: X-Cal-Signature-256 is the hex HMAC-SHA256 of the raw body."""
    return {"Content-Type": "application/json",
            "X-Cal-Signature-256": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


_SCHEDULED_EVENT: dict[str, Any] = {
    "uri": "https://api.calendly.com/scheduled_events/GBGBDCAADAEDCRZ2",
    "name": "15 Minute Meeting",
    "meeting_notes_plain": None,
    "meeting_notes_html": None,
    "status": "active",
    "start_time": "2019-08-24T14:15:22.123456Z",
    "end_time": "2019-08-24T14:30:22.123456Z",
    "event_type": "https://api.calendly.com/event_types/GBGBDCAADAEDCRZ2",
    "location": {"type": "microsoft_teams_conference", "status": "pushed", "join_url": TEAMS_LINK,
                 "data": {"id": "MSo0YzdlMWQyYS05", "audioConferencing": None}},
    "invitees_counter": {"total": 1, "active": 1, "limit": 1},
    "created_at": "2019-01-02T03:04:05.092125Z",
    "updated_at": "2019-01-02T03:04:05.092125Z",
    "event_memberships": [{"user": "https://api.calendly.com/users/GBGBDCAADAEDCRZ2",
                           "user_email": "reception@clinic.example", "user_name": "Front desk"}],
    "event_guests": [],
}


def calendly(event: str = "invitee.created", *, invitee: str = "AAAAAAAAAAAAAAAA", rescheduled: bool = False,
             old_invitee: str | None = None, new_invitee: str | None = None, **changes: Any) -> dict[str, Any]:
    """A Calendly webhook body (invitee.created / invitee.canceled); `changes` replace scheduled_event fields."""
    scheduled = copy.deepcopy(_SCHEDULED_EVENT)
    scheduled.update(changes)
    base = scheduled["uri"]
    payload: dict[str, Any] = {
        "cancel_url": f"https://calendly.com/cancellations/{invitee}",
        "created_at": "2020-11-23T17:51:18.327602Z",
        "email": "test@example.com",
        "event": base,
        "first_name": "John",
        "last_name": "Doe",
        "name": "John Doe",
        "new_invitee": f"{base}/invitees/{new_invitee}" if new_invitee else None,
        "no_show": None,
        "old_invitee": f"{base}/invitees/{old_invitee}" if old_invitee else None,
        "payment": None,
        "questions_and_answers": [],
        "reconfirmation": None,
        "reschedule_url": f"https://calendly.com/reschedulings/{invitee}",
        "rescheduled": rescheduled,
        "routing_form_submission": None,
        "scheduled_event": scheduled,
        "status": "canceled" if event == "invitee.canceled" else "active",
        "text_reminder_number": "+14155550100",
        "timezone": "America/New_York",
        "tracking": {"utm_campaign": None, "utm_source": None, "utm_medium": None, "utm_content": None,
                     "utm_term": None, "salesforce_uuid": None},
        "updated_at": "2020-11-23T17:51:18.341657Z",
        "uri": f"{base}/invitees/{invitee}",
    }
    if event == "invitee.canceled":
        payload["cancellation"] = {"canceled_by": "John Doe", "reason": "Schedule conflict",
                                   "canceler_type": "invitee", "created_at": "2020-11-23T18:51:18.327602Z"}
    return {"created_at": "2020-11-23T17:51:19.000000Z",
            "created_by": "https://api.calendly.com/users/AAAAAAAAAAAAAAAA", "event": event, "payload": payload}


def calendly_headers(signing_key: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Calendly's header: `t=<unix>,v1=<hex HMAC-SHA256 of "<t>." + raw body>`."""
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(signing_key.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "Calendly-Webhook-Signature": f"t={stamp},v1={digest}"}


def body(doc: Any) -> bytes:
    """The raw body as a vendor sends it (compact JSON)."""
    return json.dumps(doc, separators=(",", ":")).encode()
