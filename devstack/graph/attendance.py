"""Attendance reports as Graph v1.0 returns them (../shared/FACTS.md, "Attendance"), and the admin call that plays
a session.

Graph makes one meetingAttendanceReport per meeting session once the session ends; `attendanceReports` lists at
most the 50 most recent (without their records); a report's `attendanceRecords` (or `$expand=attendanceRecords`
on one report) carry role, e-mail where known, identity, total seconds and the join/leave intervals. Delegated
`OnlineMeetingArtifact.Read.All`, as the meeting's organizer.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from devstack.graph.emulator import GRAPH_KEY, GraphEmulator, GraphError
from devstack.graph.meeting_writes import _me_only, _require, _wire
from devstack.graph.routing import Call

ARTIFACT_SCOPES = frozenset({"OnlineMeetingArtifact.Read.All"})
MOST_RECENT = 50
ROLES = ("Organizer", "Presenter", "Attendee")
GRAPH_ROOT = "https://graph.microsoft.com/v1.0"


def _organizer_meeting(call: Call) -> dict[str, Any]:
    _require(call.caller, ARTIFACT_SCOPES)
    oid = _me_only(call)
    meeting = call.emu.meetings.get(call.params["meeting_id"])
    if meeting is None:
        raise GraphError(404, "NotFound", "The requested resource does not exist. (online meeting not found)")
    if meeting["organizer"] != oid:
        raise GraphError(403, "Forbidden", "Insufficient privileges to complete the operation: only the organizer "
                                           "can read a meeting's attendance reports.")
    return meeting


def _ended(emu: GraphEmulator, meeting_id: str) -> list[dict[str, Any]]:
    """The meeting's reports whose session has ended, most recent first, at most 50."""
    now = _wire(datetime.now(UTC))
    done = [r for r in emu.attendance.get(meeting_id, []) if r["meetingEndDateTime"] <= now]
    return sorted(done, key=lambda r: r["meetingStartDateTime"], reverse=True)[:MOST_RECENT]


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "attendanceRecords"}


def _report(call: Call) -> dict[str, Any]:
    meeting = _organizer_meeting(call)
    for report in _ended(call.emu, meeting["id"]):
        if report["id"] == call.params["report_id"]:
            return report
    raise GraphError(404, "NotFound", "The requested resource does not exist. (attendance report not found)")


async def list_attendance_reports(call: Call) -> tuple[int, Any]:
    """GET onlineMeetings/{id}/attendanceReports."""
    meeting = _organizer_meeting(call)
    return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#users('{meeting['organizer']}')/onlineMeetings"
                                   f"('{meeting['id']}')/attendanceReports",
                 "value": [_summary(r) for r in _ended(call.emu, meeting["id"])]}


async def get_attendance_report(call: Call) -> tuple[int, Any]:
    """GET onlineMeetings/{id}/attendanceReports/{reportId}[?$expand=attendanceRecords]."""
    report = _report(call)
    expand = (call.request.query.get("$expand") or "").strip().lower() == "attendancerecords"
    return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#meetingAttendanceReport/$entity",
                 **(report if expand else _summary(report))}


async def list_attendance_records(call: Call) -> tuple[int, Any]:
    """GET onlineMeetings/{id}/attendanceReports/{reportId}/attendanceRecords."""
    report = _report(call)
    return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#attendanceRecords", "value": report["attendanceRecords"]}


def play_session(emu: GraphEmulator, meeting_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """A session of the meeting: who joined, when and for how long; its report appears once it has ended.

    Body: `start` (ISO, default now), `end` (default the last leave), `attendees`: each `user` (an emulated
    user's oid or UPN: identity and e-mail from the directory) or `email`/`displayName` (a guest; neither for an
    anonymous one), `role` (Organizer, Presenter, Attendee), and `intervals` of `joinOffsetSeconds` (from the
    start) and `seconds`, or one `joinOffsetSeconds`/`seconds` pair.
    """
    if meeting_id not in emu.meetings:
        raise ValueError("no such meeting")
    start = _time(body.get("start")) or datetime.now(UTC)
    records = [_record(emu, start, a) for a in body.get("attendees") or []]
    leaves = [i["leaveDateTime"] for r in records for i in r["attendanceIntervals"]]
    end = _time(body.get("end"))
    end_text = _wire(end) if end else max(leaves, default=_wire(start))
    report = {"id": str(uuid.uuid4()), "totalParticipantCount": len(records),
              "meetingStartDateTime": _wire(start), "meetingEndDateTime": end_text, "attendanceRecords": records}
    emu.attendance.setdefault(meeting_id, []).append(report)
    return _summary(report)


def _record(emu: GraphEmulator, start: datetime, attendee: dict[str, Any]) -> dict[str, Any]:
    role = attendee.get("role") or "Attendee"
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    user = emu.users.get(emu.oid_of(str(attendee["user"]))) if attendee.get("user") else None
    if attendee.get("user") and user is None:
        raise ValueError(f"unknown user {attendee['user']!r}")
    spans = attendee.get("intervals") or [attendee]
    intervals = []
    for span in spans:
        joined = start + timedelta(seconds=float(span.get("joinOffsetSeconds", 0)))
        seconds = int(span.get("seconds", 0))
        intervals.append({"joinDateTime": _wire(joined), "leaveDateTime": _wire(joined + timedelta(seconds=seconds)),
                          "durationInSeconds": seconds})
    return {"id": user["oid"] if user else str(uuid.uuid4()),
            "emailAddress": user["upn"] if user else attendee.get("email"),
            "totalAttendanceInSeconds": sum(i["durationInSeconds"] for i in intervals), "role": role,
            "identity": {"id": user["oid"] if user else None,
                         "displayName": (user or {}).get("display_name") or attendee.get("displayName")},
            "attendanceIntervals": intervals}


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def admin_play_session(request: web.Request) -> web.Response:
    """POST /_admin/meetings/{id}/sessions: play a session (see play_session)."""
    emu = request.app[GRAPH_KEY]
    try:
        body = await request.json()
        report = play_session(emu, request.match_info["id"], body if isinstance(body, dict) else {})
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(report, status=201)
