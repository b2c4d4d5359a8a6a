"""Every non-admin Graph request: latency, routing, caller authentication, faults, the endpoint;
and Graph's headers, error shape and counters on the way out.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from devstack.graph.emulator import GRAPH_KEY, Caller, GraphEmulator, GraphError
from devstack.graph.faults import apply_fault

GRAPH_ROOT = "https://graph.microsoft.com/v1.0"
JOIN_URL_SCOPES = frozenset({"VirtualAppointment.Read", "VirtualAppointment.ReadWrite",
                             "OnlineMeetings.Read", "OnlineMeetings.ReadWrite"})
MEETING_SCOPES = frozenset({"OnlineMeetings.Read", "OnlineMeetings.ReadWrite"})
JSON_CONTENT_TYPE = ("application/json;odata.metadata=minimal;odata.streaming=true;"
                     "IEEE754Compatible=false;charset=utf-8")
FILTER_RE = re.compile(r"^\s*joinWebUrl\s+eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)


def _json(status: int, body: Any, headers: Mapping[str, str], content_type: str = JSON_CONTENT_TYPE
          ) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(),
                        headers={**headers, "Content-Type": content_type})


def _error_body(err: GraphError, request_id: str, client_request_id: str) -> dict[str, Any]:
    return {"error": {"code": err.code, "message": err.message, "innerError": {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id, "client-request-id": client_request_id}}}


def parse_path(raw_path: str) -> tuple[str | None, list[str]]:
    """Split `/v1.0/users/{id}/...` or `/v1.0/me/...` into (user ref or None for me, rest)."""
    parts = [unquote(p) for p in raw_path.split("/") if p]
    if not parts or parts[0] != "v1.0":
        raise GraphError(400, "BadRequest", "Invalid version: only v1.0 is emulated.")
    if len(parts) >= 2 and parts[1].lower() == "me":
        return None, parts[2:]
    if len(parts) >= 3 and parts[1].lower() == "users":
        return parts[2], parts[3:]
    segment = parts[1] if len(parts) > 1 else ""
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")


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


async def _serve(request: web.Request, emu: GraphEmulator, stats_key: dict[str, str]) -> tuple[int, Any]:
    user_ref, rest = parse_path(request.rel_url.raw_path)
    if request.method != "GET":
        raise GraphError(405, "MethodNotAllowed", f"The method {request.method} is not allowed here.")
    names = [r.lower() for r in rest]
    is_join = (len(names) == 3 and names[0] == "onlinemeetings"
               and names[2] in ("getvirtualappointmentjoinweburl", "getvirtualappointmentjoinweburl()"))
    is_list = names == ["onlinemeetings"]
    is_get = len(names) == 2 and names[0] == "onlinemeetings"
    if not (is_join or is_list or is_get):
        segment = rest[-1] if rest else (user_ref or "me")
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
    meeting_id = rest[1] if (is_join or is_get) else None
    if meeting_id:
        stats_key["meeting"] = meeting_id

    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
    caller = emu.caller(await emu.verify(token))
    stats_key["user"] = caller.upn or caller.oid
    await apply_fault(emu, meeting_id)

    if is_list:
        _require_scopes(caller, MEETING_SCOPES)
        oid = _check_path_user(caller, user_ref)
        raw_filter = request.query.get("$filter")
        match = FILTER_RE.match(raw_filter or "")
        if match is None:
            expected = "Filter expression expected - /onlineMeetings?$filter=JoinWebUrl eq 'joinWebUrl'."
            raise GraphError(400, "BadRequest",
                             expected if raw_filter is None else f"Unsupported filter: {raw_filter}")
        url = match.group(1).replace("''", "'")
        found = [emu.meeting_resource(m) for m in emu.meetings.values()
                 if m["joinWebUrl"] == url and _involved(m, oid)]
        return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#users('{oid}')/onlineMeetings",
                     "value": found}

    _require_scopes(caller, JOIN_URL_SCOPES if is_join else MEETING_SCOPES)
    oid = _check_path_user(caller, user_ref)
    assert meeting_id is not None
    meeting = emu.meetings.get(meeting_id)
    if meeting is None:
        raise GraphError(404, "NotFound", "The requested resource does not exist. (online meeting not found)")
    if not _involved(meeting, oid):
        raise GraphError(403, "Forbidden",
                         "Insufficient privileges to complete the operation: the caller is neither the "
                         "organizer nor a participant of this meeting.")
    if is_get:
        return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#users('{oid}')/onlineMeetings/$entity",
                     **emu.meeting_resource(meeting)}
    return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#Edm.String",
                 "value": meeting["virtualAppointmentJoinWebUrl"]}


async def graph_handler(request: web.Request) -> web.Response:
    """Entry point for every non-admin Graph request: latency, dispatch, error shape and counters."""
    emu = request.app[GRAPH_KEY]
    emu.stats.requests += 1
    request_id = str(uuid.uuid4())
    client_request_id = request.headers.get("client-request-id") or request_id
    headers = {"request-id": request_id, "client-request-id": client_request_id}
    stats_key: dict[str, str] = {}
    if emu.faults.latency_ms > 0:
        await asyncio.sleep(emu.faults.latency_ms / 1000)
    try:
        status, body = await _serve(request, emu, stats_key)
        response = _json(status, body, headers)
    except GraphError as err:
        if err.status == 401:
            headers["WWW-Authenticate"] = ('Bearer realm="", authorization_uri='
                                           '"https://login.microsoftonline.com/common/oauth2/authorize", '
                                           'client_id="00000003-0000-0000-c000-000000000000"')
        response = _json(err.status, _error_body(err, request_id, client_request_id),
                         {**headers, **err.headers}, "application/json")
    emu.stats.by_status[str(response.status)] += 1
    if "meeting" in stats_key:
        emu.stats.by_meeting[stats_key["meeting"]] += 1
    if "user" in stats_key:
        emu.stats.by_user[stats_key["user"]] += 1
    return response
