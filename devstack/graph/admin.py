"""Loopback-only /_admin endpoints: faults, meetings, counters and reset."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from devstack.graph.emulator import GRAPH_KEY, FaultConfig, GraphStats
from devstack.graph.faults import parse_faults
from devstack.graph.subscriptions import SUBSCRIPTIONS_KEY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def loopback_admin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admin endpoints have no auth, so only loopback callers may use them."""
    remote = request.remote or ""
    if request.path.startswith("/_admin") and not (remote == "::1" or remote.startswith("127.")):
        return web.json_response({"error": "forbidden"}, status=403)
    return await handler(request)


async def admin_put_faults(request: web.Request) -> web.Response:
    """Replace the fault configuration."""
    emu = request.app[GRAPH_KEY]
    try:
        emu.faults = parse_faults(await request.json())
    except (ValueError, TypeError, AttributeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return await admin_get_faults(request)


async def admin_get_faults(request: web.Request) -> web.Response:
    """Current fault configuration, with remaining uses per rule."""
    f = request.app[GRAPH_KEY].faults
    return web.json_response({"latency_ms": f.latency_ms, "seed": f.seed,
                              "rules": [r.as_dict() for r in f.rules]})


async def admin_add_meetings(request: web.Request) -> web.Response:
    """Add one meeting or a list of meetings."""
    emu = request.app[GRAPH_KEY]
    body = await request.json()
    try:
        added = [emu.add_meeting(m) for m in (body if isinstance(body, list) else [body])]
    except (ValueError, TypeError, AttributeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(added if isinstance(body, list) else added[0], status=201)


async def admin_list_meetings(request: web.Request) -> web.Response:
    """Stored meetings; `?organizer=<oid or upn>` keeps that organizer's, `?deleted=true` lists deleted ones."""
    emu = request.app[GRAPH_KEY]
    source = emu.deleted if request.query.get("deleted") == "true" else emu.meetings
    organizer = request.query.get("organizer")
    wanted = emu.oid_of(organizer) if organizer else None
    return web.json_response([m for m in source.values() if wanted is None or m["organizer"] == wanted])


async def admin_get_config(request: web.Request) -> web.Response:
    """Tenant behaviour: whether it has Teams Premium (SMS), and what was written so far."""
    emu = request.app[GRAPH_KEY]
    return web.json_response({"teams_premium": emu.teams_premium, "updates": emu.updates,
                              "sms_sent": emu.sms_sent})


async def admin_put_config(request: web.Request) -> web.Response:
    """{"teams_premium": false}: the SMS actions answer 403, as in a tenant without Teams Premium."""
    emu = request.app[GRAPH_KEY]
    body = await request.json()
    if not isinstance(body, dict) or not isinstance(body.get("teams_premium", True), bool):
        return web.json_response({"error": "body must be {\"teams_premium\": true|false}"}, status=400)
    emu.teams_premium = body.get("teams_premium", emu.teams_premium)
    return await admin_get_config(request)


async def admin_delete_meeting(request: web.Request) -> web.Response:
    """Remove a meeting (404 if unknown)."""
    removed = request.app[GRAPH_KEY].meetings.pop(request.match_info["id"], None)
    return web.json_response({"deleted": removed is not None}, status=200 if removed else 404)


async def admin_stats(request: web.Request) -> web.Response:
    """Request counters."""
    s = request.app[GRAPH_KEY].stats
    return web.json_response({"requests": s.requests, "by_status": dict(s.by_status),
                              "by_meeting": dict(s.by_meeting), "by_user": dict(s.by_user),
                              "by_tenant": dict(s.by_tenant)})


async def admin_reset(request: web.Request) -> web.Response:
    """Reset counters, faults and the tenant's configuration, and the subscriptions' timings and delivery faults
    (meetings, events and subscriptions stay)."""
    emu = request.app[GRAPH_KEY]
    emu.stats = GraphStats()
    emu.faults = FaultConfig()
    emu.teams_premium = True
    emu.updates = 0
    emu.sms_sent.clear()
    emu.calendar_config.update({"teams_online_meetings": True, "meeting_lookup_lag": 0})
    request.app[SUBSCRIPTIONS_KEY].reset_knobs()
    return web.json_response({"ok": True})
