"""Calendly: invitee.created / invitee.canceled webhooks → contract-v1 events.

A Calendly reschedule is two deliveries: `invitee.canceled` with `rescheduled: true` (ignored here) and an
`invitee.created` whose `old_invitee` names the invitee it replaces, which becomes one
`appointment.rescheduled` of the appointment keyed by that old invitee. Calendly keeps no id across
reschedules, so a second reschedule (or a cancel after one) names the invitee of the previous booking: the
event carries the link (new invitee → old; the cancel half names it too, as `new_invitee`), which the intake
records and follows back to the first booking (shared/storage/aliases.py), so the whole chain is one
appointment with one meeting, whatever order its deliveries arrive in (shared/intake/chains.py).
"""

from __future__ import annotations

from dataclasses import replace
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

SOURCE = "calendly"


def translate(doc: Any, organizers: OrganizerMap) -> IntakeEvent | Ignored:
    """One Calendly webhook body (parsed JSON) → the event for `appointments`, or Ignored."""
    trigger = doc.get("event") if isinstance(doc, dict) else None
    if not isinstance(trigger, str):
        raise InvalidEventError("a Calendly webhook body is an object with an 'event'", reason="invalid_payload")
    if trigger not in ("invitee.created", "invitee.canceled"):
        return Ignored(f"Calendly event {trigger[:64]!r} needs no appointment event")
    if not isinstance(doc.get("payload"), dict):
        raise InvalidEventError(f"a Calendly {trigger} body has a 'payload' object", reason="invalid_payload")
    invitee: dict[str, Any] = doc["payload"]
    uri = text_field(invitee, "uri", 512)
    scheduled = invitee.get("scheduled_event")
    if uri is None or not isinstance(scheduled, dict):
        raise InvalidEventError("the Calendly invitee has no 'uri' or 'scheduled_event'", reason="invalid_payload")
    event_id = stable_event_id(SOURCE, str(trigger), uri)
    old_invitee = text_field(invitee, "old_invitee", 512)
    if trigger == "invitee.canceled":
        if invitee.get("rescheduled") is True:
            new_invitee = text_field(invitee, "new_invitee", 512)
            return Ignored("the cancel half of a reschedule: the invitee.created that follows carries the change",
                           event_id=event_id, appointment_id=f"{SOURCE}:{uri}",
                           link=(f"{SOURCE}:{new_invitee}", f"{SOURCE}:{uri}") if new_invitee else None)
        event_type = CANCELLED
    else:
        event_type = RESCHEDULED if old_invitee else CREATED
    hosts = [as_object(m) for m in as_list(scheduled.get("event_memberships"))]
    email = hosts[0].get("user_email") if hosts and isinstance(hosts[0].get("user_email"), str) else None
    keys = [f"calendly:event-type:{scheduled['event_type']}"] if isinstance(scheduled.get("event_type"), str) else []
    location = as_object(scheduled.get("location"))
    person = client(invitee.get("name"), invitee.get("email"), invitee.get("timezone"),
                    invitee.get("text_reminder_number"))
    event = build_event(
        event_id=event_id,
        event_type=event_type,
        appointment_id=f"{SOURCE}:{old_invitee or uri}",
        organizer=organizers.organizer_for(email, keys),
        start=scheduled.get("start_time"),
        end=scheduled.get("end_time"),
        subject=scheduled.get("name"),
        join_web_url=location_join_url(location),
        clients=[person] if person else [],
        occurred_at=doc.get("created_at"),
    )
    if event_type == RESCHEDULED and old_invitee:
        return replace(event, link=(f"{SOURCE}:{uri}", f"{SOURCE}:{old_invitee}"))
    return event


def location_join_url(location: dict[str, Any]) -> str | None:
    """The Teams join link in any field of a Calendly location: `join_url` (conferencing integrations),
    `location` (custom, physical, ask_invitee, phone: free text) or `additional_info` (inbound_call)."""
    return (teams_join_url(location.get("join_url")) or teams_link_in(location.get("location"))
            or teams_link_in(location.get("additional_info")))
