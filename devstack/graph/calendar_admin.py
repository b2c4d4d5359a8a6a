"""Loopback /_admin calls for calendar events: list them (chaos compares records with them), configure the
tenant's calendar behaviour, and play the organizer moving or cancelling an event in Outlook or Teams."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from devstack.graph.calendar import apply_change, remove_event, resource
from devstack.graph.emulator import GRAPH_KEY, GraphEmulator, GraphError


def _admin_view(event: dict[str, Any]) -> dict[str, Any]:
    return {**resource(event, immutable=True), "organizer": event["organizer"], "tenantId": event["tenant_id"],
            "folder": event["folder"], "onlineMeetingId": event["meeting_id"], "comment": event["comment"],
            "singleValueExtendedProperties": event["properties"]}


def _event(emu: GraphEmulator, event_id: str) -> dict[str, Any] | None:
    return emu.events.get(event_id) or emu.events_by_rest_id.get(event_id)


async def admin_list_events(request: web.Request) -> web.Response:
    """Every event (`?organizer=<oid or upn>`: that organizer's), Deleted Items included, with its folder."""
    emu = request.app[GRAPH_KEY]
    organizer = request.query.get("organizer")
    wanted = emu.oid_of(organizer) if organizer else None
    return web.json_response([_admin_view(e) for e in emu.events.values()
                              if wanted is None or e["organizer"] == wanted])


async def admin_organizer_edit(request: web.Request) -> web.Response:
    """POST /_admin/events/{id}/organizer-edit {"start": ..., "end": ..., "subject": ...} or {"cancel": true,
    "comment": ...} or {"delete": true}: what the organizer does to the event in Outlook."""
    emu = request.app[GRAPH_KEY]
    event = _event(emu, request.match_info["id"])
    if event is None or event["folder"] != "calendar":
        return web.json_response({"error": "no such event in the calendar"}, status=404)
    body = await request.json()
    if not isinstance(body, dict):
        return web.json_response({"error": "body must be an object"}, status=400)
    try:
        if body.get("cancel") or body.get("delete"):
            remove_event(emu, event, cancel=bool(body.get("cancel")), comment=body.get("comment"))
        else:
            change = {k: ({"dateTime": v, "timeZone": "UTC"} if k in ("start", "end") else v)
                      for k, v in body.items() if k in ("start", "end", "subject")}
            apply_change(emu, event, change)
    except GraphError as err:
        return web.json_response({"error": err.message}, status=err.status)
    emu.organizer_edits += 1
    return web.json_response(_admin_view(event))


async def admin_put_calendar_config(request: web.Request) -> web.Response:
    """{"teams_online_meetings": false}: POST /events makes no Teams meeting (a field report);
    {"meeting_lookup_lag": 2}: a new meeting's first two JoinWebUrl lookups come back empty."""
    emu = request.app[GRAPH_KEY]
    body = await request.json()
    if not isinstance(body, dict) or not set(body) <= set(emu.calendar_config):
        return web.json_response({"error": f"keys: {sorted(emu.calendar_config)}"}, status=400)
    emu.calendar_config.update(body)
    return web.json_response({**emu.calendar_config, "invitations_sent": emu.invitations_sent,
                              "calendar_updates": emu.calendar_updates, "organizer_edits": emu.organizer_edits})
