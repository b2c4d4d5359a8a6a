"""The webhook each outcome of the pipeline sends the scheduling system (pure, no I/O)."""

from __future__ import annotations

import hashlib

from shared.common.vocabulary import EventType, WebhookKind
from shared.pipeline.records import JoinUrlResult, Rejection
from shared.webhooks.outbound import WebhookEvent, webhook_event

# The webhook a result sends follows the event it answers: a reschedule that overtook its create still
# sends `updated` (with both links, which the scheduler may be seeing for the first time).
_RESULT_KINDS = {EventType.RESCHEDULED: WebhookKind.UPDATED, EventType.CANCELLED: WebhookKind.CANCELLED}


def ready_event(result: JoinUrlResult, callback_url: str | None = None) -> WebhookEvent:
    """The webhook for a result: `.ready` (created), `.updated` (rescheduled) or `.cancelled` (cancelled)."""
    kind = _RESULT_KINDS.get(EventType(result.event_type), WebhookKind.READY)
    return webhook_event(kind, result.to_dict(), result.event_id, callback_url=callback_url,
                         timestamp=result.resolved_at)


def failed_event(rejection: Rejection, callback_url: str | None = None) -> WebhookEvent | None:
    """The `appointment.joinurl.failed` event for a rejection; None when no appointment can be named."""
    if not rejection.appointment_id:
        # Nothing the scheduler could act on; the rejection record itself is the durable trace.
        return None
    # Without an event id (unparseable message) the original text gives a stable identity instead.
    identity = rejection.event_id or "msg:" + hashlib.sha256(rejection.original_message.encode()).hexdigest()
    data = {"appointmentId": rejection.appointment_id, "organizer": rejection.organizer,
            "tenantId": rejection.tenant_id, "eventId": rejection.event_id, "reason": rejection.reason,
            "detail": rejection.detail}
    return webhook_event(WebhookKind.FAILED, data, identity, callback_url=callback_url,
                         timestamp=rejection.rejected_at or None)
