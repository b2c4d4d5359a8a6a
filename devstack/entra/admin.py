"""Loopback-only /_admin endpoints: counters, reset, lifetimes, revocation, forced MFA, device approval, consent."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from devstack.entra.emulator import ENTRA_KEY, EntraEmulator
from devstack.entra.errors import EntraError
from devstack.entra.model import (
    AUTH_CODE_LIFETIME,
    DEVICE_CODE_LIFETIME,
    LIFETIME_SETTINGS,
    ROTATION_ENTRA,
    ROTATIONS,
    EntraStats,
)

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
                              "by_user": dict(s.by_user), "by_tenant": dict(s.by_tenant),
                              "by_authority": dict(s.by_authority), "by_credential": dict(s.by_credential),
                              "managed_identity_requests": s.managed_identity_requests,
                              "open": {"sign_ins": len(emu.sign_ins), "auth_codes": len(emu.auth_codes),
                                       "device_flows": len(emu.device_auths),
                                       "refresh_tokens": len(emu.refresh_tokens)}})


async def admin_reset(request: web.Request) -> web.Response:
    """Reset counters, lifetimes, rotation and forced interaction (refresh tokens and consents survive; see
    /_admin/revoke and /_admin/consent)."""
    emu = request.app[ENTRA_KEY]
    emu.stats = EntraStats()
    emu.access_token_lifetime = request.app[DEFAULT_LIFETIME_KEY]
    emu.auth_code_lifetime = AUTH_CODE_LIFETIME
    emu.device_code_lifetime = DEVICE_CODE_LIFETIME
    emu.refresh_token_rotation = ROTATION_ENTRA
    emu.interaction_required.clear()
    for client_id, scopes in emu.seed_admin_consent.items():
        if scopes is None:
            emu.clients[client_id].pop("delegated_scopes", None)
        else:
            emu.clients[client_id]["delegated_scopes"] = list(scopes)
    return web.json_response({"ok": True})


async def admin_config(request: web.Request) -> web.Response:
    """Change lifetimes (seconds: access_token_lifetime, auth_code_lifetime, device_code_lifetime) and the
    refresh-token rotation (refresh_token_rotation: entra | strict)."""
    emu = request.app[ENTRA_KEY]
    body = await _json_body(request)
    for name in LIFETIME_SETTINGS:
        if name in body:
            seconds = int(body[name])
            if seconds <= 0:
                return web.json_response({"error": f"{name} must be positive"}, status=400)
            setattr(emu, name, seconds)
    if "refresh_token_rotation" in body:
        if body["refresh_token_rotation"] not in ROTATIONS:
            return web.json_response({"error": f"refresh_token_rotation must be one of {', '.join(ROTATIONS)}"},
                                     status=400)
        emu.refresh_token_rotation = body["refresh_token_rotation"]
    return web.json_response({**{name: getattr(emu, name) for name in LIFETIME_SETTINGS},
                              "refresh_token_rotation": emu.refresh_token_rotation})


async def admin_consent(request: web.Request) -> web.Response:
    """Consent, as an admin or a user gives it.

    POST {"tenant", "client_id"}: an admin of the tenant consents to the app for everyone in it (/adminconsent).
    PUT {"client_id", "scopes"}: the Graph scopes admin consent grants the app ("Grant admin consent").
    DELETE {"tenant", "client_id"}: the tenant's consent is withdrawn; DELETE {"user"}: what the user consented
    to for themselves is forgotten. GET: the scopes, the tenants' consents and the users'.
    """
    emu = request.app[ENTRA_KEY]
    body = await _json_body(request) if request.method != "GET" else {}
    if request.method == "PUT":
        return await _consent_scopes(emu, body)
    if request.method == "POST" or (request.method == "DELETE" and "tenant" in body):
        return await _tenant_consent(emu, request.method, body)
    if request.method == "DELETE":
        user = await _admin_user(request, emu)
        for key in [k for k in emu.user_consents if k[0] == user["oid"]]:
            del emu.user_consents[key]
        emu.directory.user_consents = {c for c in emu.directory.user_consents if c[1] != user["oid"]}
    return web.json_response({
        "admin": {cid: c.get("delegated_scopes") for cid, c in emu.clients.items()},
        "tenants": {tenant.tenant_id: sorted(tenant.admin_consents) for tenant in emu.directory.tenants.values()},
        "users": [{"user": oid, "client_id": cid, "scopes": sorted(scopes)}
                  for (oid, cid), scopes in emu.user_consents.items()]})


async def _consent_scopes(emu: Any, body: dict[str, Any]) -> web.Response:
    client = emu.clients.get(str(body.get("client_id")))
    scopes = body.get("scopes")
    if client is None or not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        return web.json_response({"error": "body must be {\"client_id\": ..., \"scopes\": [...]}"}, status=400)
    client["delegated_scopes"] = list(scopes)
    return web.json_response({"client_id": client["client_id"], "scopes": client["delegated_scopes"]})


async def _tenant_consent(emu: Any, method: str, body: dict[str, Any]) -> web.Response:
    tenant_id, client_id = body.get("tenant"), body.get("client_id")
    if not isinstance(tenant_id, str) or not isinstance(client_id, str):
        return web.json_response({"error": "body must be {\"tenant\": id, \"client_id\": id}"}, status=400)
    try:
        tenant = emu.directory.tenant(tenant_id)
        emu.find_client(client_id)
    except EntraError as err:
        return web.json_response({"error": err.error, "error_description": err.message}, status=404)
    if method == "DELETE":
        tenant.admin_consents.discard(client_id)
        emu.directory.user_consents = {c for c in emu.directory.user_consents
                                       if not (c[0] == tenant.tenant_id and c[2] == client_id)}
    else:
        tenant.admin_consents.add(client_id)
    return web.json_response({"tenant": tenant.tenant_id, "client_id": client_id,
                              "admin_consented": client_id in tenant.admin_consents})


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
    try:
        emu.approve_device_flow(auth, user)
    except EntraError as err:
        return web.json_response({"error": err.error, "error_description": err.message}, status=403)
    return web.json_response({"approved": True, "client_id": auth.client_id, "user": user["oid"]})
