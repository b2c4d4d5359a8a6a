"""Loopback-only /_admin endpoints: counters, reset, lifetimes, revocation, forced MFA, device approval, consent."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from devstack.entra.emulator import ENTRA_KEY, EntraEmulator
from devstack.entra.model import AUTH_CODE_LIFETIME, DEVICE_CODE_LIFETIME, LIFETIME_SETTINGS, EntraStats

DEFAULT_LIFETIME_KEY = web.AppKey("entra_default_lifetime", int)


@web.middleware
async def loopback_admin(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
    """Admin endpoints have no auth, so only loopback callers may use them."""
    if request.path.startswith("/_admin") and not _is_loopback(request.remote):
        return web.json_response({"error": "forbidden"}, status=403)
    return await handler(request)


def _is_loopback(remote: str | None) -> bool:
    return remote is not None and (remote == "::1" or remote.startswith("127."))


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}', content_type="application/json")
    return body


async def _admin_user(request: web.Request, emu: EntraEmulator) -> dict[str, Any]:
    """The user named by {"user": upn-or-oid} in the JSON body."""
    name = (await _json_body(request)).get("user")
    if not isinstance(name, str):
        raise web.HTTPBadRequest(text='{"error": "body must be {\\"user\\": upn-or-oid}"}',
                                 content_type="application/json")
    user = emu.find_user(name)
    if user is None:
        raise web.HTTPNotFound(text='{"error": "unknown user"}', content_type="application/json")
    return user


async def admin_stats(request: web.Request) -> web.Response:
    """Token request counters, and how much interactive state is open."""
    emu = request.app[ENTRA_KEY]
    s = emu.stats
    return web.json_response({"token_requests": s.token_requests, "by_grant": dict(s.by_grant),
                              "by_user": dict(s.by_user),
                              "open": {"sign_ins": len(emu.sign_ins), "auth_codes": len(emu.auth_codes),
                                       "device_flows": len(emu.device_auths),
                                       "refresh_tokens": len(emu.refresh_tokens)}})


async def admin_reset(request: web.Request) -> web.Response:
    """Reset counters, lifetimes and forced interaction (refresh tokens survive; see /_admin/revoke)."""
    emu = request.app[ENTRA_KEY]
    emu.stats = EntraStats()
    emu.access_token_lifetime = request.app[DEFAULT_LIFETIME_KEY]
    emu.auth_code_lifetime = AUTH_CODE_LIFETIME
    emu.device_code_lifetime = DEVICE_CODE_LIFETIME
    emu.interaction_required.clear()
    for client_id, scopes in emu.seed_admin_consent.items():
        if scopes is None:
            emu.clients[client_id].pop("delegated_scopes", None)
        else:
            emu.clients[client_id]["delegated_scopes"] = list(scopes)
    return web.json_response({"ok": True})


async def admin_consent(request: web.Request) -> web.Response:
    """PUT {"client_id", "scopes"}: the Graph scopes an admin consented to tenant-wide for the client (as in the
    portal's "Grant admin consent"). DELETE {"user"}: forget what the user consented to. GET: both."""
    emu = request.app[ENTRA_KEY]
    if request.method == "PUT":
        body = await _json_body(request)
        client = emu.clients.get(str(body.get("client_id")))
        scopes = body.get("scopes")
        if client is None or not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            return web.json_response({"error": "body must be {\"client_id\": ..., \"scopes\": [...]}"},
                                     status=400)
        client["delegated_scopes"] = list(scopes)
    elif request.method == "DELETE":
        user = await _admin_user(request, emu)
        for key in [k for k in emu.user_consents if k[0] == user["oid"]]:
            del emu.user_consents[key]
    return web.json_response({
        "admin": {cid: c.get("delegated_scopes") for cid, c in emu.clients.items()},
        "users": [{"user": oid, "client_id": cid, "scopes": sorted(scopes)}
                  for (oid, cid), scopes in emu.user_consents.items()]})


async def admin_config(request: web.Request) -> web.Response:
    """Change lifetimes (seconds): access_token_lifetime, auth_code_lifetime, device_code_lifetime."""
    emu = request.app[ENTRA_KEY]
    body = await _json_body(request)
    for name in LIFETIME_SETTINGS:
        if name in body:
            seconds = int(body[name])
            if seconds <= 0:
                return web.json_response({"error": f"{name} must be positive"}, status=400)
            setattr(emu, name, seconds)
    return web.json_response({name: getattr(emu, name) for name in LIFETIME_SETTINGS})


async def admin_revoke(request: web.Request) -> web.Response:
    """Invalidate every refresh token of a user (upn or oid)."""
    user = (await _json_body(request)).get("user")
    if not isinstance(user, str):
        return web.json_response({"error": "body must be {\"user\": upn-or-oid}"}, status=400)
    return web.json_response({"revoked": request.app[ENTRA_KEY].revoke_user(user)})


async def admin_interaction_required(request: web.Request) -> web.Response:
    """POST: the user's refresh token grants answer interaction_required (AADSTS50076). DELETE: clear."""
    emu = request.app[ENTRA_KEY]
    user = await _admin_user(request, emu)
    if request.method == "DELETE":
        emu.interaction_required.discard(user["oid"])
    else:
        emu.interaction_required.add(user["oid"])
    return web.json_response({"user": user["oid"], "interaction_required": user["oid"] in emu.interaction_required})


async def admin_device_approve(request: web.Request) -> web.Response:
    """Approve a pending device flow as a user, without a browser: {"user_code": ..., "user": upn-or-oid}."""
    emu = request.app[ENTRA_KEY]
    body = await _json_body(request)
    user_code = body.get("user_code")
    auth = emu.find_device_flow(user_code) if isinstance(user_code, str) else None
    if auth is None:
        return web.json_response({"error": "no pending device flow with that user_code"}, status=404)
    user = await _admin_user(request, emu)
    auth.user_oid = user["oid"]
    return web.json_response({"approved": True, "client_id": auth.client_id, "user": user["oid"]})
