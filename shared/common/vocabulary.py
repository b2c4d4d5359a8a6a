"""The app's words, each spelled once: event types, appointment statuses, webhook types and outcome kinds.

Each is a StrEnum, so a member equals its wire text ("appointment.cancelled" == EventType.CANCELLED) and
serializes as that text; a name such as CANCELLED alone never says which of these it is.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """What a scheduler's event on the `appointments` queue says happened to an appointment."""

    CREATED = "appointment.created"
    RESCHEDULED = "appointment.rescheduled"
    CANCELLED = "appointment.cancelled"


# Plain JSON without `type` is a created event: what a contract v1 producer sends.
DEFAULT_EVENT_TYPE = EventType.CREATED


class AppointmentStatus(StrEnum):
    """Where an appointment's record stands."""

    PENDING = "pending"  # a create is under way (its lease record names the meeting to be)
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"


class MeetingKind(StrEnum):
    """Which kind of Teams meeting the app makes for an appointment (MEETING_KIND)."""

    STANDALONE = "standalone"  # createOrGet: not on the organizer's calendar
    CALENDAR = "calendar"  # an event on the organizer's calendar with a Teams meeting


class WebhookKind(StrEnum):
    """A webhook's kind: the suffix of its webhook-id."""

    READY = "ready"
    UPDATED = "updated"
    CANCELLED = "cancelled"
    FAILED = "failed"
    SMS_FAILED = "sms_failed"
    ATTENDANCE = "attendance"
    RESCHEDULED_BY_ORGANIZER = "rescheduled_by_organizer"
    CANCELLED_BY_ORGANIZER = "cancelled_by_organizer"


class WebhookType(StrEnum):
    """The `type` of a webhook the app sends the scheduling system."""

    READY = "appointment.joinurl.ready"
    UPDATED = "appointment.joinurl.updated"
    CANCELLED = "appointment.joinurl.cancelled"
    FAILED = "appointment.joinurl.failed"
    SMS_FAILED = "appointment.joinurl.sms_failed"
    # Who joined an appointment's meeting, and for how long (ATTENDANCE_REPORTS).
    ATTENDANCE = "appointment.attendance"
    # The organizer moved or cancelled the appointment's calendar event in Outlook or Teams.
    RESCHEDULED_BY_ORGANIZER = "appointment.rescheduled_by_organizer"
    CANCELLED_BY_ORGANIZER = "appointment.cancelled_by_organizer"

    @property
    def kind(self) -> WebhookKind:
        """The webhook-id suffix of this type."""
        return WebhookKind[self.name]


class OutcomeKind(StrEnum):
    """How the processor ended with one message."""

    READY = "ready"  # a result (and its webhook)
    REJECTED = "rejected"  # a rejection record (and a .failed webhook when an appointment is named)
    REQUEUED = "requeued"  # put back, hidden until a Retry-After
