"""The Graph emulator's aiohttp application: the admin endpoints, and Graph itself on every other path."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from devstack.graph.admin import (
    admin_add_meetings,
    admin_delete_meeting,
    admin_get_config,
    admin_get_faults,
    admin_list_meetings,
    admin_put_config,
    admin_put_faults,
    admin_reset,
    admin_stats,
    loopback_admin,
)
from devstack.graph.attendance import admin_play_session
from devstack.graph.calendar_admin import admin_list_events, admin_organizer_edit, admin_put_calendar_config
from devstack.graph.dispatch import graph_handler
from devstack.graph.emulator import GRAPH_KEY, GraphEmulator
from devstack.graph.subscriptions import SUBSCRIPTIONS_KEY, SubscriptionHub
from devstack.graph.subscriptions_admin import SUBSCRIPTION_ADMIN_ROUTES

# web.get also answers HEAD, as router.add_get does.
ADMIN_ROUTES = (
    web.get("/_admin/stats", admin_stats),
    web.post("/_admin/reset", admin_reset),
    web.get("/_admin/faults", admin_get_faults),
    web.put("/_admin/faults", admin_put_faults),
    web.get("/_admin/meetings", admin_list_meetings),
    web.post("/_admin/meetings", admin_add_meetings),
    web.delete("/_admin/meetings/{id}", admin_delete_meeting),
    web.post("/_admin/meetings/{id}/sessions", admin_play_session),
    web.get("/_admin/config", admin_get_config),
    web.put("/_admin/config", admin_put_config),
    web.get("/_admin/events", admin_list_events),
    web.post("/_admin/events/{id}/organizer-edit", admin_organizer_edit),
    web.put("/_admin/calendar", admin_put_calendar_config),
    *SUBSCRIPTION_ADMIN_ROUTES,
)


def create_graph_app(meetings: list[dict[str, Any]], directory: Mapping[str, Any],
                     jwks_uri: str | Mapping[str, Any], issuer_base: str,
                     ca_pem: Path | str | None = None) -> web.Application:
    """Build the Graph emulator aiohttp app; `jwks_uri` is a URL fetched over HTTPS or a JWKS dict, and
    `issuer_base` the authority whose tenants' issuers (`<base>/<tid>/v2.0`) are trusted."""
    app = web.Application(middlewares=[loopback_admin])
    emu = GraphEmulator(meetings, directory, jwks_uri, issuer_base, ca_pem)
    app[GRAPH_KEY] = emu
    # Change-notification subscriptions: delivery runs in the background while the app runs.
    hub = SubscriptionHub(emu, ca_pem)
    app[SUBSCRIPTIONS_KEY] = hub

    async def _close(_: web.Application) -> None:
        await emu.close()

    app.on_startup.append(hub.start)
    app.on_cleanup.append(hub.stop)
    app.on_cleanup.append(_close)
    app.add_routes(ADMIN_ROUTES)
    # Every other path is Graph itself: dispatch routes it by endpoints.ROUTES.
    app.router.add_route("*", "/{tail:.*}", graph_handler)
    return app
