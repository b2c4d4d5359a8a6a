"""The Graph endpoints the emulator serves, and ROUTES, the table requests are routed by.

An endpoint gets a Call (routed, caller authenticated, past fault injection) and returns (status, JSON
body), raising GraphError for Graph's errors. A new endpoint is a function here plus its Route in ROUTES.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from devstack.graph.attendance import get_attendance_report, list_attendance_records, list_attendance_reports
from devstack.graph.calendar import (
    calendar_view_delta,
    cancel_event,
    create_event,
    delete_event,
    get_event,
    list_events,
    update_event,
)
from devstack.graph.emulator import Caller, GraphError
from devstack.graph.meeting_writes import (
    create_or_get,
    delete_online_meeting,
    send_virtual_appointment_reminder_sms,
    send_virtual_appointment_sms,
    update_online_meeting,
)
from devstack.graph.routing import Call, Route
from devstack.graph.subscription_endpoints import (
    create_subscription,
    delete_subscription,
    get_subscription,
    list_subscriptions,
    reauthorize_subscription,
    update_subscription,
)

GRAPH_ROOT = "https://graph.microsoft.com/v1.0"
JOIN_URL_SCOPES = frozenset({"VirtualAppointment.Read", "VirtualAppointment.ReadWrite",
                             "OnlineMeetings.Read", "OnlineMeetings.ReadWrite"})
MEETING_SCOPES = frozenset({"OnlineMeetings.Read", "OnlineMeetings.ReadWrite"})
FILTER_RE = re.compile(r"^\s*joinWebUrl\s+eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)


def _check_path_user(caller: Caller, user_ref: str | None) -> str:
    if user_ref is not None and user_ref != caller.oid and user_ref.lower() != (caller.upn or "").lower():
        raise GraphError(403, "Forbidden",
                         "Insufficient privileges to complete the operation: a delegated caller can only "
                         "access their own online meetings.")
    return caller.oid


def _require_scopes(caller: Caller, accepted: frozenset[str]) -> None:
    if caller.app_only:
        raise GraphError(403, "Forbidden",
                         "Application permissions are not supported for this API. "
                         "Use delegated permissions (sign in a user) instead.")
    if not caller.scopes & accepted:
        raise GraphError(403, "Forbidden",
                         "Insufficient privileges to complete the operation. "
                         f"Required scopes: {', '.join(sorted(accepted))}.")


def _involved(meeting: Mapping[str, Any], oid: str) -> bool:
    return meeting["organizer"] == oid or oid in meeting["participants"]


def _visible_meeting(call: Call, accepted: frozenset[str]) -> tuple[str, dict[str, Any]]:
    """The caller's oid and the meeting in the path, once the caller may read it."""
    _require_scopes(call.caller, accepted)
    oid = _check_path_user(call.caller, call.user_ref)
    meeting = call.emu.meetings.get(call.params["meeting_id"])
    if meeting is None:
        raise GraphError(404, "NotFound", "The requested resource does not exist. (online meeting not found)")
    if not _involved(meeting, oid):
        raise GraphError(403, "Forbidden",
                         "Insufficient privileges to complete the operation: the caller is neither the "
                         "organizer nor a participant of this meeting.")
    return oid, meeting


async def get_virtual_appointment_join_web_url(call: Call) -> tuple[int, Any]:
    """GET onlineMeetings/{id}/getVirtualAppointmentJoinWebUrl(): the meeting's virtual appointment link."""
    _, meeting = _visible_meeting(call, JOIN_URL_SCOPES)
    return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#Edm.String",
                 "value": meeting["virtualAppointmentJoinWebUrl"]}


async def get_online_meeting(call: Call) -> tuple[int, Any]:
    """GET onlineMeetings/{id}: the meeting resource."""
    oid, meeting = _visible_meeting(call, MEETING_SCOPES)
    return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#users('{oid}')/onlineMeetings/$entity",
                 **call.emu.meeting_resource(meeting)}


async def find_online_meetings_by_join_url(call: Call) -> tuple[int, Any]:
    """GET onlineMeetings?$filter=JoinWebUrl eq '...': the caller's meetings with that join URL."""
    _require_scopes(call.caller, MEETING_SCOPES)
    oid = _check_path_user(call.caller, call.user_ref)
    raw_filter = call.request.query.get("$filter")
    match = FILTER_RE.match(raw_filter or "")
    if match is None:
        expected = "Filter expression expected - /onlineMeetings?$filter=JoinWebUrl eq 'joinWebUrl'."
        raise GraphError(400, "BadRequest",
                         expected if raw_filter is None else f"Unsupported filter: {raw_filter}")
    url = match.group(1).replace("''", "'")
    if call.emu.lookup_pending(url):
        return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#users('{oid}')/onlineMeetings", "value": []}
    found = [call.emu.meeting_resource(m) for m in call.emu.meetings.values()
             if m["joinWebUrl"] == url and m["tenant_id"] == call.caller.tenant_id and _involved(m, oid)]
    return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#users('{oid}')/onlineMeetings",
                 "value": found}


# The first route that fits a request's method and path serves it: put literal segments before `{...}`
# ones of the same shape (onlineMeetings/createOrGet before onlineMeetings/{meeting_id}).
ROUTES: tuple[Route, ...] = (
    Route("GET", "onlineMeetings", find_online_meetings_by_join_url),
    Route("POST", "onlineMeetings/createOrGet", create_or_get),
    Route("PATCH", "onlineMeetings/{meeting_id}", update_online_meeting),
    Route("DELETE", "onlineMeetings/{meeting_id}", delete_online_meeting),
    Route("POST", "onlineMeetings/{meeting_id}/sendVirtualAppointmentSms", send_virtual_appointment_sms),
    Route("POST", "onlineMeetings/{meeting_id}/sendVirtualAppointmentReminderSms",
          send_virtual_appointment_reminder_sms),
    Route("GET", "onlineMeetings/{meeting_id}", get_online_meeting),
    Route("GET", "onlineMeetings/{meeting_id}/getVirtualAppointmentJoinWebUrl()",
          get_virtual_appointment_join_web_url),
    Route("GET", "events", list_events),
    Route("POST", "events", create_event),
    Route("GET", "calendarView/delta", calendar_view_delta),
    Route("GET", "events/{event_id}", get_event),
    Route("PATCH", "events/{event_id}", update_event),
    Route("DELETE", "events/{event_id}", delete_event),
    Route("POST", "events/{event_id}/cancel", cancel_event),
    Route("GET", "onlineMeetings/{meeting_id}/attendanceReports", list_attendance_reports),
    Route("GET", "onlineMeetings/{meeting_id}/attendanceReports/{report_id}", get_attendance_report),
    Route("GET", "onlineMeetings/{meeting_id}/attendanceReports/{report_id}/attendanceRecords",
          list_attendance_records),
    # /v1.0/subscriptions (rooted at /v1.0, not under a user)
    Route("POST", "subscriptions", create_subscription, rooted=True),
    Route("GET", "subscriptions", list_subscriptions, rooted=True),
    Route("GET", "subscriptions/{subscription_id}", get_subscription, rooted=True),
    Route("PATCH", "subscriptions/{subscription_id}", update_subscription, rooted=True),
    Route("DELETE", "subscriptions/{subscription_id}", delete_subscription, rooted=True),
    Route("POST", "subscriptions/{subscription_id}/reauthorize", reauthorize_subscription, rooted=True),
)
