"""Meeting writes as real Graph answers them: createOrGet, PATCH, DELETE and the virtual-appointment SMS actions.

Behaviour from Graph v1.0's documentation (../shared/FACTS.md, "Meeting lifecycle"): createOrGet is keyed on
tenant + user + externalId (201 the first time, 200 with the same meeting after, unchanged); no start means now
and no end means start + 1 h; an end without a start, or before it, is 400; with a delegated token only `/me`
is accepted; PATCH changes times only with both and refuses `@odata.type`; DELETE answers 204, then 404; the
SMS actions answer 202, and 403 in a tenant without Teams Premium. Writes need OnlineMeetings.ReadWrite, SMS
VirtualAppointmentNotification.Send.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from devstack.graph.emulator import Caller, GraphError
from devstack.graph.routing import Call

WRITE_SCOPES = frozenset({"OnlineMeetings.ReadWrite"})
SMS_SCOPES = frozenset({"VirtualAppointmentNotification.Send"})
MESSAGE_TYPES = frozenset({"confirmation", "reschedule", "cancellation"})
REMIND_BEFORE = frozenset({"mins15"})
GRAPH_ROOT = "https://graph.microsoft.com/v1.0"


def require_scopes(caller: Caller, accepted: frozenset[str], *, code: str = "Forbidden",
                   app_only: str = "No application access policy found for this app.",
                   refused: str = "Insufficient privileges to complete the operation.") -> None:
    """A delegated caller with one of `accepted`, else 403 in the words of the workload (Teams or Outlook)."""
    if caller.app_only:
        raise GraphError(403, code, app_only)
    if not caller.scopes & accepted:
        raise GraphError(403, code, f"{refused} Required scopes: {', '.join(sorted(accepted))}.")


_require = require_scopes


def _me_only(call: Call) -> str:
    """The organizer: the caller. A delegated token names another user in the URL only to be refused (400)."""
    ref = call.user_ref
    if ref is not None and ref != call.caller.oid and ref.lower() != (call.caller.upn or "").lower():
        raise GraphError(400, "BadRequest", f"Organizer ID in token({call.caller.oid}) does not match organizer ID "
                                            f"in request url({ref}). With delegated permission only /me endpoint "
                                            "is supported.")
    return call.caller.oid


async def json_body(call: Call) -> dict[str, Any]:
    """The request's JSON object, else Graph's 400."""
    try:
        body = await call.request.json()
    except ValueError:
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from None
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.")
    return body


def _time(body: dict[str, Any], name: str) -> datetime | None:
    value = body.get(name)
    if value in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise GraphError(400, "BadRequest", f"Cannot convert the literal '{value}' to the expected type "
                                            "'Edm.DateTimeOffset'.") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _wire(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _attendees(call: Call, body: dict[str, Any]) -> list[str]:
    participants = body.get("participants") or {}
    found = []
    for item in participants.get("attendees") or [] if isinstance(participants, dict) else []:
        user = (item.get("identity") or {}).get("user") or {}
        ref = user.get("id") or item.get("upn")
        if ref:
            found.append(call.emu.oid_of(str(ref)))
    return found


def _owned(call: Call, oid: str) -> dict[str, Any]:
    meeting = call.emu.meetings.get(call.params["meeting_id"])
    if meeting is None:
        raise GraphError(404, "NotFound", "The requested resource does not exist. (online meeting not found)")
    if meeting["organizer"] != oid:
        raise GraphError(403, "Forbidden", "Insufficient privileges to complete the operation: only the organizer "
                                           "can change or delete an online meeting.")
    return meeting


async def create_or_get(call: Call) -> tuple[int, Any]:
    """POST onlineMeetings/createOrGet."""
    _require(call.caller, WRITE_SCOPES)
    oid = _me_only(call)
    body = await json_body(call)
    external_id = body.get("externalId")
    if not isinstance(external_id, str) or not external_id:
        raise GraphError(400, "BadRequest", "externalId is a required parameter.")
    # Graph keys createOrGet on tenant + user + externalId: the caller's own tenant.
    key = (call.caller.tenant_id, oid, external_id)
    existing = call.emu.meetings.get(call.emu.external_ids.get(key, ""))
    context = {"@odata.context": f"{GRAPH_ROOT}/$metadata#onlineMeetings/$entity"}
    if existing is not None:
        return 200, {**context, **call.emu.meeting_resource(existing)}
    start, end = _time(body, "startDateTime"), _time(body, "endDateTime")
    if end is not None and start is None:
        raise GraphError(400, "BadRequest", "startDateTime is required when endDateTime is provided.")
    start = start or datetime.now(UTC)
    end = end or start + timedelta(hours=1)
    if end < start:
        raise GraphError(400, "BadRequest", "endDateTime should be later than startDateTime.")
    meeting = call.emu.add_meeting({
        "organizer": oid, "participants": _attendees(call, body), "subject": body.get("subject") or "",
        "startDateTime": _wire(start), "endDateTime": _wire(end), "externalId": external_id,
        "creationDateTime": _wire(datetime.now(UTC)), "createdWith": "createOrGet"})
    call.emu.external_ids[key] = meeting["id"]
    return 201, {**context, **call.emu.meeting_resource(meeting)}


async def update_online_meeting(call: Call) -> tuple[int, Any]:
    """PATCH onlineMeetings/{id}: both times or neither; the organizer cannot change."""
    _require(call.caller, WRITE_SCOPES)
    meeting = _owned(call, _me_only(call))
    body = await json_body(call)
    if "@odata.type" in body or ("participants" in body and "organizer" in (body["participants"] or {})):
        raise GraphError(400, "BadRequest", "One or more properties do not support updating.")
    start, end = _time(body, "startDateTime"), _time(body, "endDateTime")
    if (start is None) != (end is None):
        raise GraphError(400, "BadRequest", "Both startDateTime and endDateTime are required to update the "
                                            "meeting time.")
    if start is not None and end is not None:
        if end < start:
            raise GraphError(400, "BadRequest", "endDateTime should be later than startDateTime.")
        meeting["startDateTime"], meeting["endDateTime"] = _wire(start), _wire(end)
    if isinstance(body.get("subject"), str):
        meeting["subject"] = body["subject"]
    if "participants" in body:
        meeting["participants"] = _attendees(call, body)
    call.emu.updates += 1
    return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#onlineMeetings/$entity",
                 **call.emu.meeting_resource(meeting)}


async def delete_online_meeting(call: Call) -> tuple[int, Any]:
    """DELETE onlineMeetings/{id}: 204, and 404 from then on."""
    _require(call.caller, WRITE_SCOPES)
    meeting = _owned(call, _me_only(call))
    del call.emu.meetings[meeting["id"]]
    call.emu.deleted[meeting["id"]] = meeting
    return 204, None


async def _sms(call: Call, kind: str) -> tuple[int, Any]:
    _require(call.caller, SMS_SCOPES)
    oid = call.caller.oid
    if call.user_ref is not None:
        oid = _me_only(call)
    meeting = call.emu.meetings.get(call.params["meeting_id"])
    if meeting is None:
        raise GraphError(404, "NotFound", "The requested resource does not exist. (online meeting not found)")
    if meeting["organizer"] != oid and oid not in meeting["participants"]:
        raise GraphError(403, "Forbidden", "Insufficient privileges to complete the operation.")
    if not call.emu.teams_premium:
        raise GraphError(403, "Forbidden", "The tenant does not have a Teams Premium license required for "
                                           "virtual appointment SMS notifications.")
    body = await json_body(call)
    attendees = body.get("attendees")
    if not isinstance(attendees, list) or not attendees or not all(
            isinstance(a, dict) and a.get("phoneNumber") and a.get("timeZone") for a in attendees):
        raise GraphError(400, "BadRequest", "attendees with phoneNumber and timeZone are required.")
    detail = body.get("messageType") if kind == "sms" else body.get("remindBeforeTimeInMinutesType")
    if detail not in (MESSAGE_TYPES if kind == "sms" else REMIND_BEFORE):
        raise GraphError(400, "BadRequest", f"Invalid value '{detail}'.")
    call.emu.sms_sent.append({"meeting_id": meeting["id"], "kind": kind, "type": detail,
                              "recipients": len(attendees)})
    return 202, None


async def send_virtual_appointment_sms(call: Call) -> tuple[int, Any]:
    """POST onlineMeetings/{id}/sendVirtualAppointmentSms."""
    return await _sms(call, "sms")


async def send_virtual_appointment_reminder_sms(call: Call) -> tuple[int, Any]:
    """POST onlineMeetings/{id}/sendVirtualAppointmentReminderSms."""
    return await _sms(call, "reminder")
