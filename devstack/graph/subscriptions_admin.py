"""Loopback /_admin calls for change-notification subscriptions: list them with their delivery stats, fire a
lifecycle event, set delivery faults and timings, and see every delivery attempt (validation requests too)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, fields
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from devstack.graph.subscriptions import (
    LIFECYCLE_EVENTS,
    SUBSCRIPTIONS_KEY,
    DeliveryFaults,
    HubConfig,
    Subscription,
    SubscriptionHub,
    wire_time,
)


def _view(hub: SubscriptionHub, sub: Subscription, state: str) -> dict[str, Any]:
    return {**sub.resource_doc(), "state": state, "owner": sub.owner, "tenantId": sub.tenant_id,
            "immutableIds": sub.immutable_ids,
            "accessTokenExpiresAt": wire_time(datetime.fromtimestamp(sub.token_expires, UTC)),
            "reauthorizationRequiredSince": wire_time(sub.reauthorization_sent_at)
            if sub.reauthorization_sent_at else None,
            "pending": sum(1 for p in hub.pending if p.subscription_id == sub.id),
            "stats": dict(sub.stats)}


def _body_error(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _typed(cls: type[Any], values: dict[str, Any]) -> Any:
    """An instance of the dataclass from JSON values, each of its field's type (ints pass for floats)."""
    kinds = {"int": (int,), "float": (int, float), "bool": (bool,), "float | None": (int, float, type(None)),
             "int | None": (int, type(None))}
    for f in fields(cls):
        if f.name in values:
            value, accepted = values[f.name], kinds[str(f.type)]
            if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
                raise TypeError(f"{f.name} must be {f.type}")
    return cls(**values)


async def admin_list_subscriptions(request: web.Request) -> web.Response:
    """Every subscription with its state (active, or expired/deleted/removed) and delivery stats; `?owner=<oid
    or upn>` keeps one mailbox's, `?state=active` only the active ones."""
    hub = request.app[SUBSCRIPTIONS_KEY]
    owner = request.query.get("owner")
    wanted = hub.emu.oid_of(owner) if owner else None
    rows = [_view(hub, s, "active") for s in hub.subscriptions.values()]
    if request.query.get("state") != "active":
        rows += [_view(hub, s, reason) for s, reason in hub.gone.values()]
    return web.json_response({
        "subscriptions": [r for r in rows if wanted is None or r["owner"] == wanted],
        "pending": len(hub.pending), "in_flight": sorted(hub.inflight_urls()), "totals": dict(hub.totals),
        "endpoints": {url: {"state": hub.endpoint_state(url), "notifications": h.notifications, "slow": h.slow}
                      for url, h in list(hub.endpoints.items())}})


async def admin_clear_subscriptions(request: web.Request) -> web.Response:
    """Forget every subscription and pending notification, without lifecycle notifications (test isolation)."""
    hub = request.app[SUBSCRIPTIONS_KEY]
    cleared = len(hub.subscriptions)
    hub.clear()
    return web.json_response({"cleared": cleared})


async def admin_fire_lifecycle(request: web.Request) -> web.Response:
    """{"event": "reauthorizationRequired" | "subscriptionRemoved" | "missed"}: Graph sends that lifecycle
    notification now (subscriptionRemoved also removes the subscription)."""
    hub = request.app[SUBSCRIPTIONS_KEY]
    sub = hub.subscriptions.get(request.match_info["id"])
    if sub is None:
        return web.json_response({"error": "no such active subscription"}, status=404)
    body = await request.json()
    event = body.get("event") if isinstance(body, dict) else None
    if event not in LIFECYCLE_EVENTS:
        return _body_error(f"event must be one of {', '.join(LIFECYCLE_EVENTS)}")
    sent = hub.fire_lifecycle(sub, event)
    return web.json_response({"subscriptionId": sub.id, "event": event, "queued": sent,
                              "lifecycleNotificationUrl": sub.lifecycle_url}, status=202)


async def admin_get_faults(request: web.Request) -> web.Response:
    """The delivery faults still armed."""
    return web.json_response(request.app[SUBSCRIPTIONS_KEY].faults.as_dict())


async def admin_put_faults(request: web.Request) -> web.Response:
    """Replace the delivery faults: drop_next (N change notifications never sent; missed_on_drop: a `missed`
    lifecycle notification for each), duplicate_next / duplicate_rate (delivered twice), delay_ms (before the first
    attempt; with reorder: a random delay up to it, and shuffled batches), validation_timeout_next (the next N
    validation requests time out), seed."""
    hub = request.app[SUBSCRIPTIONS_KEY]
    body = await request.json()
    known = {f.name for f in fields(DeliveryFaults)}
    if not isinstance(body, dict) or not set(body) <= known:
        return _body_error(f"keys: {sorted(known)}")
    try:
        hub.faults = _typed(DeliveryFaults, body)
    except TypeError as exc:
        return _body_error(str(exc))
    return await admin_get_faults(request)


async def admin_get_config(request: web.Request) -> web.Response:
    """Timings and limits (Graph's by default)."""
    return web.json_response(asdict(request.app[SUBSCRIPTIONS_KEY].config))


async def admin_put_config(request: web.Request) -> web.Response:
    """Change some timings or limits, e.g. {"validation_timeout_seconds": 0.5, "retry_for_seconds": 5,
    "clock_offset_seconds": 86400}; {"reset": true} puts Graph's values back first."""
    hub = request.app[SUBSCRIPTIONS_KEY]
    body = await request.json()
    known = {f.name for f in fields(HubConfig)}
    if not isinstance(body, dict) or not set(body) <= known | {"reset"}:
        return _body_error(f"keys: {sorted(known)}")
    values = asdict(HubConfig() if body.pop("reset", False) else hub.config)
    values.update(body)
    try:
        hub.config = _typed(HubConfig, values)
    except TypeError as exc:
        return _body_error(str(exc))
    hub.wake()
    return await admin_get_config(request)


async def admin_settle(request: web.Request) -> web.Response:
    """{"timeout_seconds": 10}: wait until nothing is pending or in flight (a notification in back-off counts as
    pending); 200 {"settled": true} or, at the timeout, 200 {"settled": false} with what is left."""
    hub = request.app[SUBSCRIPTIONS_KEY]
    body = await request.json() if request.can_read_body else {}
    timeout = float(body.get("timeout_seconds", 10)) if isinstance(body, dict) else 10.0
    deadline = asyncio.get_running_loop().time() + timeout
    while hub.pending or hub.inflight_urls():
        if asyncio.get_running_loop().time() >= deadline:
            break
        await asyncio.sleep(0.02)
    settled = not hub.pending and not hub.inflight_urls()
    return web.json_response({"settled": settled, "pending": len(hub.pending), "in_flight": hub.inflight_urls()})


async def admin_list_deliveries(request: web.Request) -> web.Response:
    """Delivery attempts, oldest first (the last 2,000): each POST with its URL, kind (change, lifecycle,
    validation), subscription ids, status, outcome (delivered, failed, timeout, unreachable; validated,
    mismatch), elapsed time and the `value` sent. `?subscription=<id>`, `?kind=...`, `?limit=N` narrow it."""
    hub = request.app[SUBSCRIPTIONS_KEY]
    sub_id, kind = request.query.get("subscription"), request.query.get("kind")
    rows = [a for a in hub.attempts
            if (sub_id is None or sub_id in a["subscriptionIds"]) and (kind is None or kind in a["kind"])]
    limit = int(request.query.get("limit", "0") or 0)
    return web.json_response(rows[-limit:] if limit > 0 else rows)


SUBSCRIPTION_ADMIN_ROUTES = (
    web.get("/_admin/subscriptions", admin_list_subscriptions),
    web.delete("/_admin/subscriptions", admin_clear_subscriptions),
    web.get("/_admin/subscriptions/faults", admin_get_faults),
    web.put("/_admin/subscriptions/faults", admin_put_faults),
    web.get("/_admin/subscriptions/config", admin_get_config),
    web.put("/_admin/subscriptions/config", admin_put_config),
    web.get("/_admin/subscriptions/deliveries", admin_list_deliveries),
    web.post("/_admin/subscriptions/settle", admin_settle),
    web.post("/_admin/subscriptions/{id}/lifecycle", admin_fire_lifecycle),
)
