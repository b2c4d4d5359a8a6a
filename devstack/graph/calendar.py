"""Calendar events with a Teams meeting, as Graph v1.0 documents them (../shared/FACTS.md, "Calendar-backed
meetings and change notifications").

- `POST /me/events` with `isOnlineMeeting: true, onlineMeetingProvider: teamsForBusiness` makes the event and its
  online meeting; the answer carries `onlineMeeting.joinUrl` (no meeting id). The meeting is found with the
  existing `onlineMeetings?$filter=JoinWebUrl eq '...'`; a configurable lag leaves that filter empty for a
  meeting's first lookups, as field reports describe just after creation. `transactionId` repeats within a
  user's calendar hand back the event made first. A calendar that offers no Teams meeting (a field report:
  `isOnlineMeeting: false`, no link) is played by `teams_online_meetings: false` (PUT /_admin/config).
- Single-value extended properties are stored as given, filtered with `singleValueExtendedProperties/Any(ep:
  ep/id eq '...' and ep/value eq '...')` and read back with `$expand=singleValueExtendedProperties($filter=id eq
  '...')`; an event without attendees sends no invitation (attendees are counted in `invitations_sent`).
- Ids: with `Prefer: IdType="ImmutableId"` every answer gives the event's immutable id; without it, a REST id that
  changes when the event moves folder (cancel and DELETE move it to Deleted Items), so an old REST id is 404.
- `PATCH` changes `start`, `end`, `subject`; a `body` mints a new join URL (field reports) on a new meeting.
- `POST .../cancel` (organizer only, optional comment): 202, the event `isCancelled` and moved to Deleted Items;
  `DELETE`: 204, moved to Deleted Items. What becomes of the Teams meeting is undocumented: the emulator keeps
  it (and its join links) alive; `python -m shared.diagnose` checks this on a real tenant.
Every change bumps `changeKey` and `@odata.etag` and is offered to the change-notification subscriptions.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any

from devstack.graph.emulator import Caller, GraphEmulator, GraphError
from devstack.graph.meeting_writes import json_body, require_scopes
from devstack.graph.routing import Call

READ_SCOPES = frozenset({"Calendars.Read", "Calendars.ReadWrite"})
WRITE_SCOPES = frozenset({"Calendars.ReadWrite"})
GRAPH_ROOT = "https://graph.microsoft.com/v1.0"
DELETED_ITEMS = "deleteditems"
CALENDAR = "calendar"
_PROPERTY_FILTER = re.compile(
    r"^\s*singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*\1/id\s+eq\s+'((?:[^']|'')*)'\s+and\s+"
    r"\1/value\s+eq\s+'((?:[^']|'')*)'\s*\)\s*$", re.IGNORECASE)
_EXPAND = re.compile(r"^\s*singleValueExtendedProperties\(\s*\$filter\s*=\s*id\s+eq\s+'((?:[^']|'')*)'\s*\)\s*$",
                     re.IGNORECASE)


_DENIED = "Access is denied. Check credentials and try again."


def _require(caller: Caller, accepted: frozenset[str]) -> None:
    require_scopes(caller, accepted, code="ErrorAccessDenied", app_only=_DENIED, refused=_DENIED)


def _owner(call: Call) -> str:
    """The calendar's owner: the caller (another user's calendar needs delegated sharing, not emulated)."""
    ref = call.user_ref
    if ref is not None and ref != call.caller.oid and ref.lower() != (call.caller.upn or "").lower():
        raise GraphError(403, "ErrorAccessDenied", _DENIED)
    return call.caller.oid


def immutable_ids(call: Call) -> bool:
    """Whether the request asks for immutable ids (`Prefer: IdType="ImmutableId"`)."""
    return 'idtype="immutableid"' in call.request.headers.get("Prefer", "").replace(" ", "").lower()


def _when(value: Any, name: str) -> datetime:
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        raise GraphError(400, "ErrorInvalidRequest", f"'{name}' needs a dateTime and a timeZone.")
    zone = str(value.get("timeZone") or "UTC")
    if zone.upper() not in ("UTC", "ETC/UTC", "Z"):
        raise GraphError(400, "ErrorTimeZoneNotSupported", "The emulator takes times in UTC only.")
    try:
        parsed = datetime.fromisoformat(value["dateTime"])
    except ValueError:
        raise GraphError(400, "ErrorInvalidRequest", f"Cannot convert '{value['dateTime']}' to a date.") from None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _wire_when(value: datetime) -> dict[str, str]:
    return {"dateTime": value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0"), "timeZone": "UTC"}


def _meeting_wire(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _touch(emu: GraphEmulator, event: dict[str, Any]) -> None:
    event["changeKey"] = secrets.token_urlsafe(12)
    event["lastModifiedDateTime"] = _meeting_wire(datetime.now(UTC))
    emu.change_sequence += 1
    event["change_sequence"] = emu.change_sequence


def resource(event: dict[str, Any], immutable: bool, expand: str | None = None) -> dict[str, Any]:
    """The event as Graph returns it (the id per the Prefer header; extended properties only when expanded)."""
    doc: dict[str, Any] = {
        "@odata.etag": f'W/"{event["changeKey"]}"',
        "id": event["immutable_id"] if immutable else event["rest_id"],
        "changeKey": event["changeKey"], "createdDateTime": event["createdDateTime"],
        "lastModifiedDateTime": event["lastModifiedDateTime"], "transactionId": event.get("transactionId"),
        "subject": event["subject"], "isCancelled": event["isCancelled"], "isOrganizer": True,
        "start": _wire_when(event["start"]), "end": _wire_when(event["end"]),
        "isOnlineMeeting": event["isOnlineMeeting"],
        "onlineMeetingProvider": "teamsForBusiness" if event["isOnlineMeeting"] else "unknown",
        "onlineMeeting": {"joinUrl": event["join_url"]} if event["join_url"] else None,
        "attendees": event["attendees"], "type": "singleInstance",
    }
    if expand is not None:
        doc["singleValueExtendedProperties"] = [p for p in event["properties"] if p["id"].lower() == expand.lower()]
    return doc


def find_event(emu: GraphEmulator, oid: str, event_id: str) -> dict[str, Any]:
    """The caller's event by immutable or current REST id; 404 ErrorItemNotFound otherwise."""
    event = emu.events.get(event_id) or emu.events_by_rest_id.get(event_id)
    # An old REST id (from before a move to Deleted Items) is no longer in the index: 404, as in Exchange.
    if event is None or event["organizer"] != oid:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return event


def _online_meeting(emu: GraphEmulator, event: dict[str, Any]) -> None:
    """Give the event a new Teams meeting (its join URL resolves through onlineMeetings?$filter)."""
    meeting = emu.add_meeting({"organizer": event["organizer"], "tenant_id": event["tenant_id"],
                               "subject": event["subject"], "startDateTime": _meeting_wire(event["start"]),
                               "endDateTime": _meeting_wire(event["end"]),
                               "creationDateTime": _meeting_wire(datetime.now(UTC)), "createdWith": "calendar",
                               "calendarEventId": event["immutable_id"]})
    event["meeting_id"], event["join_url"] = meeting["id"], meeting["joinWebUrl"]
    emu.lookup_lag[meeting["joinWebUrl"]] = emu.calendar_config["meeting_lookup_lag"]


def create_event_for(emu: GraphEmulator, oid: str, tenant: str, body: dict[str, Any]) -> dict[str, Any]:
    """Store a new event as POST /events makes it (also the admin API's way of making one in "Outlook")."""
    start, end = _when(body.get("start"), "start"), _when(body.get("end"), "end")
    if end < start:
        raise GraphError(400, "ErrorInvalidRequest", "The end of the event is before its start.")
    properties = body.get("singleValueExtendedProperties") or []
    if not isinstance(properties, list) or not all(isinstance(p, dict) and isinstance(p.get("id"), str)
                                                   and isinstance(p.get("value"), str) for p in properties):
        raise GraphError(400, "ErrorInvalidExtendedProperty", "Each extended property needs an id and a value.")
    now = _meeting_wire(datetime.now(UTC))
    event: dict[str, Any] = {
        "immutable_id": "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A" + secrets.token_urlsafe(24),
        "rest_id": "AAMkAGI2TG93AAA" + secrets.token_urlsafe(24), "organizer": oid, "tenant_id": tenant,
        "subject": str(body.get("subject") or ""), "start": start, "end": end, "isCancelled": False,
        "createdDateTime": now, "transactionId": body.get("transactionId"),
        "properties": [{"id": p["id"], "value": p["value"]} for p in properties],
        "attendees": list(body.get("attendees") or []), "folder": CALENDAR, "meeting_id": None, "join_url": None,
        "isOnlineMeeting": False, "comment": None,
    }
    _touch(emu, event)
    wants_meeting = body.get("isOnlineMeeting") is True and body.get("onlineMeetingProvider") == "teamsForBusiness"
    if wants_meeting and emu.calendar_config["teams_online_meetings"]:
        event["isOnlineMeeting"] = True
        _online_meeting(emu, event)
    emu.events[event["immutable_id"]] = event
    emu.events_by_rest_id[event["rest_id"]] = event
    emu.invitations_sent += len(event["attendees"])
    emu.notify(event, "created")
    return event


async def create_event(call: Call) -> tuple[int, Any]:
    """POST /me/events: a calendar event, with a Teams meeting when asked for."""
    _require(call.caller, WRITE_SCOPES)
    oid = _owner(call)
    body = await _body(call)
    transaction = body.get("transactionId")
    if isinstance(transaction, str) and transaction:
        key = (call.caller.tenant_id, oid, transaction)
        earlier = call.emu.events.get(call.emu.event_transactions.get(key, ""))
        if earlier is not None:
            return 201, _entity(earlier, immutable_ids(call))
    event = create_event_for(call.emu, oid, call.caller.tenant_id, body)
    if isinstance(transaction, str) and transaction:
        call.emu.event_transactions[(call.caller.tenant_id, oid, transaction)] = event["immutable_id"]
    return 201, _entity(event, immutable_ids(call))


async def list_events(call: Call) -> tuple[int, Any]:
    """GET /me/events (optionally `$filter` on a single-value extended property, `$expand` one back)."""
    _require(call.caller, READ_SCOPES)
    oid = _owner(call)
    wanted = _property_filter(call.request.query.get("$filter"))
    expand = _expand(call.request.query.get("$expand"))
    found = [e for e in call.emu.events.values()
             if e["organizer"] == oid and e["folder"] == CALENDAR
             and (wanted is None or {"id": wanted[0], "value": wanted[1]} in _lowered_ids(e["properties"]))]
    return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#users('{oid}')/events",
                 "value": [resource(e, immutable_ids(call), expand) for e in found]}


async def get_event(call: Call) -> tuple[int, Any]:
    """GET /me/events/{id} (also an event in Deleted Items, by its immutable id)."""
    _require(call.caller, READ_SCOPES)
    event = find_event(call.emu, _owner(call), call.params["event_id"])
    return 200, _entity(event, immutable_ids(call), _expand(call.request.query.get("$expand")))


async def update_event(call: Call) -> tuple[int, Any]:
    """PATCH /me/events/{id}: start, end, subject; a body mints a new join URL."""
    _require(call.caller, WRITE_SCOPES)
    event = find_event(call.emu, _owner(call), call.params["event_id"])
    body = await _body(call)
    apply_change(call.emu, event, body)
    return 200, _entity(event, immutable_ids(call))


def apply_change(emu: GraphEmulator, event: dict[str, Any], body: dict[str, Any]) -> None:
    """Change an event as PATCH does (the app's PATCH, or the organizer's edit in Outlook)."""
    if event["isCancelled"]:
        raise GraphError(400, "ErrorCalendarIsCancelledForUpdate", "You can't update a meeting that is cancelled.")
    start = _when(body["start"], "start") if "start" in body else event["start"]
    end = _when(body["end"], "end") if "end" in body else event["end"]
    if end < start:
        raise GraphError(400, "ErrorInvalidRequest", "The end of the event is before its start.")
    event["start"], event["end"] = start, end
    if isinstance(body.get("subject"), str):
        event["subject"] = body["subject"]
    if "body" in body and event["isOnlineMeeting"]:
        _online_meeting(emu, event)  # field reports: a PATCHed body can mint a new join URL
    meeting = emu.meetings.get(event["meeting_id"] or "")
    if meeting is not None:
        meeting["startDateTime"], meeting["endDateTime"] = _meeting_wire(start), _meeting_wire(end)
        meeting["subject"] = event["subject"]
    _touch(emu, event)
    emu.calendar_updates += 1
    emu.notify(event, "updated")


def remove_event(emu: GraphEmulator, event: dict[str, Any], *, cancel: bool, comment: str | None = None) -> None:
    """Cancel (marked cancelled) or delete an event: either way it moves to Deleted Items with a new REST id."""
    if cancel:
        event["isCancelled"], event["comment"] = True, comment
    event["folder"] = DELETED_ITEMS
    emu.events_by_rest_id.pop(event["rest_id"], None)
    # The id it had in the calendar: a change notification about its removal names that one.
    event["calendar_rest_id"] = event["rest_id"]
    event["rest_id"] = "AAMkAGI2TG93AAA" + secrets.token_urlsafe(24)
    emu.events_by_rest_id[event["rest_id"]] = event
    _touch(emu, event)
    if cancel:
        emu.notify(event, "updated")  # isCancelled set, then the move out of the calendar
    emu.notify(event, "deleted")


async def cancel_event(call: Call) -> tuple[int, Any]:
    """POST /me/events/{id}/cancel: organizer only; 202."""
    _require(call.caller, WRITE_SCOPES)
    event = find_event(call.emu, _owner(call), call.params["event_id"])
    if event["folder"] == DELETED_ITEMS:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    body = await _body(call, optional=True)
    # Action parameters match without regard to case (msgraph-sdk sends `Comment`).
    comment = next((v for k, v in body.items() if k.lower() == "comment"), None)
    remove_event(call.emu, event, cancel=True, comment=comment if isinstance(comment, str) else None)
    return 202, None


async def delete_event(call: Call) -> tuple[int, Any]:
    """DELETE /me/events/{id}: 204 (moved to Deleted Items)."""
    _require(call.caller, WRITE_SCOPES)
    event = find_event(call.emu, _owner(call), call.params["event_id"])
    if event["folder"] == DELETED_ITEMS:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    remove_event(call.emu, event, cancel=False)
    return 204, None


async def calendar_view_delta(call: Call) -> tuple[int, Any]:
    """GET /me/calendarView/delta: a first round lists the caller's events in the window; a round from a delta
    link (`$deltatoken`) only those changed since the round that link ended (Graph's delta query)."""
    _require(call.caller, READ_SCOPES)
    oid = _owner(call)
    token = call.request.query.get("$deltatoken")
    if token is not None:
        state = call.emu.delta_tokens.get(token)
        if state is None or state[0] != oid:
            # Graph: "If the token has expired, the service should respond with a 40X-series error with error
            # codes such as syncStateNotFound" (delta query overview); the client starts a full round again.
            raise GraphError(410, "syncStateNotFound", "The sync state is not found or has expired.")
        _, window_start, window_end, since = state
    else:
        window_start, window_end, since = _query_time(call, "startDateTime"), _query_time(call, "endDateTime"), 0
    found = []
    for event in call.emu.events.values():
        if event["organizer"] != oid or event["end"] < window_start or event["start"] > window_end:
            continue
        if event.get("change_sequence", 0) <= since:
            continue
        if event["folder"] == DELETED_ITEMS:
            found.append({"@removed": {"reason": "deleted"}, "id": _entity_id(event, immutable_ids(call))})
        else:
            found.append(resource(event, immutable_ids(call)))
    # Graph's links point at the service that answered (graph.microsoft.com there, this emulator here): a client
    # that sends its token only to its Graph host must be able to follow them.
    next_token = secrets.token_urlsafe(16)
    call.emu.delta_tokens[next_token] = (oid, window_start, window_end, call.emu.change_sequence)
    delta = f"{call.request.url.origin()}/v1.0/me/calendarView/delta?$deltatoken={next_token}"
    return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#Collection(event)", "value": found,
                 "@odata.deltaLink": delta}


def _query_time(call: Call, name: str) -> datetime:
    value = call.request.query.get(name)
    if value is None:
        raise GraphError(400, "ErrorInvalidParameter", f"The parameter '{name}' is required.")
    return _when({"dateTime": value, "timeZone": "UTC"}, name)


def _entity_id(event: dict[str, Any], immutable: bool) -> str:
    return str(event["immutable_id"] if immutable else event["rest_id"])


def _entity(event: dict[str, Any], immutable: bool, expand: str | None = None) -> dict[str, Any]:
    return {"@odata.context": f"{GRAPH_ROOT}/$metadata#users('{event['organizer']}')/events/$entity",
            **resource(event, immutable, expand)}


def _lowered_ids(properties: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"id": p["id"].lower(), "value": p["value"]} for p in properties]


def _property_filter(raw: str | None) -> tuple[str, str] | None:
    if raw is None:
        return None
    match = _PROPERTY_FILTER.match(raw)
    if match is None:
        raise GraphError(400, "ErrorInvalidUrlQueryFilter", f"The filter is not supported: {raw}")
    return match.group(2).replace("''", "'").lower(), match.group(3).replace("''", "'")


def _expand(raw: str | None) -> str | None:
    if raw is None:
        return None
    match = _EXPAND.match(raw)
    if match is None:
        raise GraphError(400, "BadRequest", f"Parsing OData Select and Expand failed: {raw}")
    return match.group(1).replace("''", "'")


async def _body(call: Call, *, optional: bool = False) -> dict[str, Any]:
    if optional and not await call.request.read():
        return {}
    return await json_body(call)
