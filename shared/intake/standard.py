"""Any Standard Webhooks sender carrying contract-v1 events (signature: shared/common/standard_webhooks).

The body is a contract-v1 event as plain JSON, or the Standard Webhooks payload shape
`{"type", "timestamp", "data": {appointment fields}}`. Without an `id`, the delivery's webhook-id is the
event id, so a redelivery of one message is one event.
"""

from __future__ import annotations

from typing import Any

from shared.common.fields import MAX_URL
from shared.exceptions import InvalidEventError
from shared.intake.events import CANCELLED, IntakeEvent, build_event, text_field
from shared.intake.organizers import OrganizerMap
from shared.pipeline.inbound import appointment_fields

# Fields passed through as the sender gave them; the queue function checks them like any queue event.
_PASSTHROUGH = ("tenantId", "onlineMeetingId", "callbackUrl", "sequence", "participants")


def translate(doc: Any, webhook_id: str, organizers: OrganizerMap) -> IntakeEvent:
    """One verified delivery → the event for `appointments`."""
    if not isinstance(doc, dict):
        raise InvalidEventError("the body must be a JSON object", reason="invalid_payload")
    # Where the appointment fields are is the queue parser's rule (shared/pipeline/inbound), said once.
    fields: dict[str, Any] = appointment_fields(doc) or {}
    if fields is not doc:
        fields = {**fields, "type": doc.get("type"), "id": fields.get("id") or doc.get("id")}
    event_type = fields.get("type") or "appointment.created"
    organizer = text_field(fields, "organizer", 256)
    if organizer is None:
        raise InvalidEventError("'organizer' is required", reason="invalid_payload")
    # A scheduler's own staff address may still need mapping; a UPN or object id passes as it is.
    organizer = organizers.entries.get(organizer.lower(), organizer)
    extra = {name: fields[name] for name in _PASSTHROUGH if fields.get(name) is not None}
    return build_event(
        event_id=text_field(fields, "id", 256) or webhook_id,
        event_type=str(event_type),
        appointment_id=text_field(fields, "appointmentId", 256) or "",
        organizer=organizer,
        start=fields.get("startDateTime"),
        end=fields.get("endDateTime"),
        subject=fields.get("subject"),
        join_web_url=None if event_type == CANCELLED else text_field(fields, "joinWebUrl", MAX_URL),
        clients=[c for c in fields.get("clients") or [] if isinstance(c, dict)] or None,
        occurred_at=fields.get("occurredAt") or doc.get("timestamp"),
        extra=extra,
    )
