"""Holding refresh-token grants on request, so a chaos run can kill an app instance inside a token refresh.

`PUT /_admin/hold {"stage": "before_redeem" | "after_redeem", "times": 1}` arms the hold: the next `times`
refresh_token grants are parked, either before the emulator looks at the refresh token (nothing redeemed
yet) or after it has redeemed it and built the answer (the new refresh token exists, the client has not
got it). `GET /_admin/hold` lists the parked requests with the caller's TCP port, so the runner can tell
which process is waiting. `DELETE /_admin/hold {"action": "answer" | "drop"}` lets them go: `answer`
carries on as if nothing happened, `drop` answers 503 without redeeming a token parked before the redeem
(its caller is usually dead by then).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from devstack.entra.emulator import ENTRA_KEY

STAGES = ("before_redeem", "after_redeem")


@dataclass
class ParkedGrant:
    """One refresh grant waiting for the runner."""

    stage: str
    peer_port: int | None
    user: str | None
    released: asyncio.Event = field(default_factory=asyncio.Event)
    action: str = "answer"


@dataclass
class RefreshHold:
    """What is armed and what is parked."""

    stage: str | None = None
    remaining: int = 0
    parked: list[ParkedGrant] = field(default_factory=list)
    held_total: int = 0


HOLD_KEY = web.AppKey("entra_refresh_hold", RefreshHold)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_token_request(request: web.Request) -> bool:
    return request.method == "POST" and request.path.endswith("/oauth2/v2.0/token")


async def _park(hold: RefreshHold, request: web.Request, stage: str, user: str | None) -> ParkedGrant:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    parked = ParkedGrant(stage, int(peer[1]) if peer else None, user)
    hold.remaining -= 1
    hold.held_total += 1
    hold.parked.append(parked)
    try:
        await parked.released.wait()
    finally:
        # Also when the caller hung up (killed) and aiohttp cancelled the handler: a parked grant whose caller
        # is gone must not be offered to the next refresh kill.
        hold.parked.remove(parked)
    return parked


@web.middleware
async def refresh_hold(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Park an armed refresh_token grant before or after its redeem."""
    hold = request.app[HOLD_KEY]
    if not (hold.stage and hold.remaining > 0 and _is_token_request(request)):
        return await handler(request)
    form = await request.post()  # cached: the token endpoint reads the same form again
    if form.get("grant_type") != "refresh_token":
        return await handler(request)
    grant = request.app[ENTRA_KEY].refresh_tokens.get(str(form.get("refresh_token", "")))
    user = getattr(grant, "user_oid", None)
    if hold.stage == "before_redeem":
        parked = await _park(hold, request, "before_redeem", user)
        if parked.action == "drop":
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        return await handler(request)
    response = await handler(request)
    if response.status == 200:
        await _park(hold, request, "after_redeem", user)
    return response


async def admin_hold(request: web.Request) -> web.Response:
    """GET: what is armed and parked. PUT: arm. DELETE: release every parked grant."""
    hold = request.app[HOLD_KEY]
    if request.method == "PUT":
        body: dict[str, Any] = await request.json()
        if body.get("stage") not in STAGES:
            return web.json_response({"error": f"stage must be one of {STAGES}"}, status=400)
        hold.stage, hold.remaining = body["stage"], int(body.get("times", 1))
    elif request.method == "DELETE":
        body = await request.json() if request.can_read_body else {}
        action = body.get("action", "answer")
        hold.stage, hold.remaining = None, 0
        for parked in list(hold.parked):
            parked.action = action
            parked.released.set()
    return web.json_response({"stage": hold.stage, "remaining": hold.remaining, "held_total": hold.held_total,
                              "parked": [{"stage": p.stage, "peer_port": p.peer_port, "user": p.user}
                                         for p in hold.parked]})
