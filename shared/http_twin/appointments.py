"""The HTTP twin's appointment lookup: an appointment's links, times and status from its record (no Graph call)."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.common.vocabulary import AppointmentStatus, MeetingKind
from shared.problems import problem
from shared.storage.appointments import AppointmentRecord, AppointmentStore

log = logging.getLogger(__name__)
_MAX_ID = 256


async def get_appointment(req: func.HttpRequest, store: AppointmentStore) -> func.HttpResponse:
    """GET /api/appointments/{appointmentId} or /api/appointments?appointmentId= → what the scheduler was last
    told, as JSON; 404 if unknown. The query form carries any id, slashes included (see openapi)."""
    appointment_id = (req.route_params.get("appointmentId") or req.params.get("appointmentId") or "").strip()
    if not appointment_id or len(appointment_id) > _MAX_ID or any(ch in appointment_id for ch in "\r\n\x00"):
        return problem(400, "invalid_request", "the appointment id must be 1-256 characters without control "
                                               "characters")
    try:
        record = await store.get(appointment_id)
    except Exception:
        log.exception("appointment lookup crashed")
        return problem(503, "appointment_store_unavailable", "the appointment records could not be read; retry",
                       retry_after=1.0)
    # A pending record is a create still running (or one that died): nothing the scheduler was told yet.
    if record is None or record.status == AppointmentStatus.PENDING:
        log.info("appointment lookup: not found", extra={"outcome": "not_found"})
        return problem(404, "appointment_not_found", "no appointment with that id has been processed")
    return func.HttpResponse(json.dumps(appointment_body(record)), status_code=200, mimetype="application/json",
                             headers={"Cache-Control": "no-store"})


def appointment_body(record: AppointmentRecord) -> dict[str, object]:
    """The appointment as the twin answers it (the result's fields, from the record)."""
    cancelled = record.status == AppointmentStatus.CANCELLED
    return {
        "appointmentId": record.appointment_id,
        "organizer": record.organizer,
        "tenantId": record.tenant_id,
        "onlineMeetingId": record.online_meeting_id,
        "joinUrl": None if cancelled else record.join_url,
        "organizerJoinUrl": None if cancelled else record.organizer_join_url,
        "startDateTime": record.start,
        "endDateTime": record.end,
        "subject": record.subject,
        "meetingCreatedByApp": record.meeting_created_by_app,
        "status": record.status,
        "lastEventId": record.last_event_id,
        "lastEventType": record.last_event_type,
        "updatedAt": record.updated_at,
        "version": record.version,
        "meetingKind": record.meeting_kind or MeetingKind.STANDALONE,
        # The appointment.attendance data last told (ATTENDANCE_REPORTS), once its check has run.
        "attendance": _attendance(record),
    }


def _attendance(record: AppointmentRecord) -> object:
    if not record.attendance:
        return None
    try:
        return json.loads(record.attendance)
    except ValueError:
        return None
