"""Every non-admin Graph request: latency, routing, caller authentication, faults, then the endpoint;
and Graph's headers, error shape and counters on the way out.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from devstack.graph.emulator import GRAPH_KEY, Caller, GraphEmulator, GraphError
from devstack.graph.endpoints import ROUTES
from devstack.graph.faults import apply_fault
from devstack.graph.routing import Call, parse_path, resolve

JSON_CONTENT_TYPE = ("application/json;odata.metadata=minimal;odata.streaming=true;"
                     "IEEE754Compatible=false;charset=utf-8")


def _json(status: int, body: Any, headers: Mapping[str, str], content_type: str = JSON_CONTENT_TYPE
          ) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(),
                        headers={**headers, "Content-Type": content_type})


def _error_body(err: GraphError, request_id: str, client_request_id: str) -> dict[str, Any]:
    return {"error": {"code": err.code, "message": err.message, "innerError": {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id, "client-request-id": client_request_id}}}


async def _authenticate(request: web.Request, emu: GraphEmulator) -> Caller:
    """The caller the request's bearer token speaks for, else 401 InvalidAuthenticationToken."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
    return emu.caller(await emu.verify(token))


async def _serve(request: web.Request, emu: GraphEmulator, stats_key: dict[str, str]) -> tuple[int, Any]:
    # Routing comes first: a bad path or method gets its 400 or 405 without a token being checked.
    user_ref, rest, rooted = parse_path(request.rel_url.raw_path)
    route, params = resolve(ROUTES, request.method, user_ref, rest, rooted)
    meeting_id = params.get("meeting_id")
    if meeting_id:
        stats_key["meeting"] = meeting_id
    caller = await _authenticate(request, emu)
    stats_key["user"] = caller.upn or caller.oid
    stats_key["tenant"] = caller.tenant_id
    # Before any endpoint: no meeting endpoint, today's or a later one, serves another tenant's meeting.
    emu.check_tenant(caller, meeting_id)
    await apply_fault(emu, meeting_id)
    return await route.endpoint(Call(request, emu, caller, user_ref, params))


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
        # 202 and 204 (SMS actions, DELETE) carry no body.
        response = _json(status, body, headers) if body is not None else web.Response(status=status, headers=headers)
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
        emu.stats.by_tenant[stats_key["tenant"]] += 1
    return response
