"""`/v1.0/subscriptions` on calendar events, as Graph v1.0 documents it (Create, List, Get, Update, Delete,
reauthorize), with the validation request before a subscription is made.

Error texts: Graph's where its docs or field reports give them (expiry beyond the maximum, validation failed or
timed out, an http URL, PATCH without either property, the subscription limit, access denied); the emulator's own
wording elsewhere (docs/maintain/local-stack.md lists which).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import jwt

from devstack.graph.calendar import immutable_ids
from devstack.graph.emulator import GraphError
from devstack.graph.meeting_writes import json_body
from devstack.graph.routing import Call
from devstack.graph.subscriptions import CHANGE_TYPES, GRAPH_ROOT, SUBSCRIPTIONS_KEY, Subscription, SubscriptionHub

READ_SCOPES = frozenset({"Calendars.Read", "Calendars.ReadWrite"})
_EVENTS_RESOURCE = re.compile(r"^/?(?:me|users/([^/]+))/events/?$", re.IGNORECASE)
_FRACTION = re.compile(r"(\.\d{6})\d+")
_LOOPBACK = ("127.", "::1", "[::1]", "localhost")
VALIDATION_TIMED_OUT = "Subscription validation request timed out."
VALIDATION_NOT_200 = ("Subscription validation request failed. Notification endpoint must respond with 200 OK to "
                      "validation request.")
VALIDATION_MISMATCH = ("Subscription validation request failed. Response must exactly match validationToken query "
                       "parameter.")
NO_PATCH_PROPERTY = ("Subscription must contain either the 'expirationDateTime' or 'notificationUrl' property and "
                     "its value.")
LIFECYCLE_URL_REQUIRED = ("lifecycleNotificationUrl is a required property for subscription creation on this resource "
                          "when the expirationDateTime value is set to greater than 1 hour.")


def _hub(call: Call) -> SubscriptionHub:
    return call.request.app[SUBSCRIPTIONS_KEY]


def _denied(operation: str, reason: str = "Access denied") -> GraphError:
    return GraphError(403, "ExtensionError", f"Operation: {operation}; Exception: [Status Code: Forbidden; "
                                             f"Reason: {reason}]")


def _claims(call: Call) -> dict[str, Any]:
    """The (already verified) token's claims: its application and expiry are the subscription's."""
    token = call.request.headers.get("Authorization", "").partition(" ")[2].strip()
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _application(call: Call) -> str:
    claims = _claims(call)
    return str(claims.get("azp") or claims.get("appid") or "")


def _require_read(call: Call, operation: str) -> None:
    """A delegated caller with Calendars.Read (or ReadWrite); an app-only token is refused as Graph refuses one
    without an application permission (the product uses delegated permissions only)."""
    if call.caller.app_only or not call.caller.scopes & READ_SCOPES:
        raise _denied(operation)


def _owner(call: Call, resource: Any) -> str:
    """The mailbox the resource names: the caller's own (delegated permission reaches no other mailbox)."""
    match = _EVENTS_RESOURCE.match(resource) if isinstance(resource, str) else None
    if match is None:
        raise GraphError(400, "InvalidRequest", f"The resource '{resource}' is not supported: the emulator "
                                                "serves me/events and users/{id}/events.")
    ref = match.group(1)
    if ref is None and call.caller.app_only:
        raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
    if ref is not None and call.emu.oid_of(ref) != call.caller.oid:
        raise _denied("Create")
    return call.caller.oid


def _change_types(raw: Any) -> tuple[str, ...]:
    parts = [p.strip() for p in raw.split(",")] if isinstance(raw, str) else []
    if not parts or any(p not in CHANGE_TYPES for p in parts):
        raise GraphError(400, "InvalidRequest", f"Invalid 'changeType' attribute: '{raw}'.")
    return tuple(t for t in CHANGE_TYPES if t in parts)


def _expiration(hub: SubscriptionHub, raw: Any) -> datetime:
    if not isinstance(raw, str):
        raise GraphError(400, "InvalidRequest", "The 'expirationDateTime' property is required.")
    try:
        value = datetime.fromisoformat(_FRACTION.sub(r"\1", raw.strip()))
    except ValueError:
        raise GraphError(400, "InvalidRequest", f"Cannot convert '{raw}' to a DateTimeOffset.") from None
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    now = hub.now()
    if value > now + timedelta(minutes=hub.config.max_expiration_minutes):
        raise GraphError(400, "ExtensionError", f"Subscription expiration can only be "
                                                f"{hub.config.max_expiration_minutes} minutes in the future.")
    # "Any value under 45 minutes after the time of the request is automatically set to 45 minutes after it."
    return max(value, now + timedelta(minutes=hub.config.min_expiration_minutes))


def _url(name: str, raw: Any) -> str:
    """An https URL, or http on loopback (the local stack's app)."""
    if not isinstance(raw, str) or not raw:
        raise GraphError(400, "InvalidRequest", f"The '{name}' property is required.")
    parts = urlsplit(raw)
    host = parts.hostname or ""
    if not parts.netloc or parts.scheme not in ("http", "https"):
        raise GraphError(400, "InvalidRequest", f"Invalid '{name}': '{raw}'.")
    if parts.scheme == "http" and not host.startswith(_LOOPBACK):
        raise GraphError(400, "InvalidRequest", f"{name[0].upper()}{name[1:]} scheme='http' is not supported.")
    return raw


async def validate_endpoint(hub: SubscriptionHub, url: str) -> None:
    """Graph's validation request: POST `<url>?validationToken=<token>`; 200 text/plain with the decoded token
    within the budget, else 400 and no subscription."""
    loop_time = asyncio.get_running_loop().time
    started = loop_time()
    token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
    target = f"{url}{'&' if '?' in url else '?'}validationToken={quote(token, safe='')}"
    outcome, status = "validated", None
    try:
        if hub.faults.validation_timeout_next > 0:
            hub.faults.validation_timeout_next -= 1
            outcome = "timeout"
            raise GraphError(400, "InvalidRequest", VALIDATION_TIMED_OUT)
        try:
            async with hub.session().post(
                    target, data=b"", headers={"Content-Type": "text/plain; charset=utf-8"},
                    timeout=aiohttp.ClientTimeout(total=hub.config.validation_timeout_seconds)) as resp:
                status = resp.status
                text = await resp.text(errors="replace")
                content_type = resp.headers.get("Content-Type", "")
        except TimeoutError:
            outcome = "timeout"
            raise GraphError(400, "InvalidRequest", VALIDATION_TIMED_OUT) from None
        except aiohttp.ClientError:
            outcome = "unreachable"
            raise GraphError(400, "ValidationError", VALIDATION_NOT_200) from None
        if status != 200:
            outcome = "failed"
            raise GraphError(400, "ValidationError", VALIDATION_NOT_200)
        if text != token or not content_type.lower().startswith("text/plain"):
            outcome = "mismatch"
            raise GraphError(400, "ValidationError", VALIDATION_MISMATCH)
    finally:
        hub.totals["validations"] += 1
        hub.attempts.append({"kind": ["validation"], "url": url, "status": status, "outcome": outcome,
                             "elapsed_ms": round((loop_time() - started) * 1000, 1), "subscriptionIds": [],
                             "count": 0, "value": []})


def _entity(sub: Subscription) -> dict[str, Any]:
    return {"@odata.context": f"{GRAPH_ROOT}/$metadata#subscriptions/$entity", **sub.resource_doc()}


async def create_subscription(call: Call) -> tuple[int, Any]:
    """POST /subscriptions: validate the request and its endpoints, then 201 with the subscription."""
    hub = _hub(call)
    body = await json_body(call)
    owner = _owner(call, body.get("resource"))
    _require_read(call, "Create")
    change_types = _change_types(body.get("changeType"))
    notification_url = _url("notificationUrl", body.get("notificationUrl"))
    raw_lifecycle = body.get("lifecycleNotificationUrl")
    lifecycle_url = None if raw_lifecycle is None else _url("lifecycleNotificationUrl", raw_lifecycle)
    expiration = _expiration(hub, body.get("expirationDateTime"))
    client_state = body.get("clientState")
    if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
        raise GraphError(400, "InvalidRequest", "The 'clientState' property can be at most 128 characters long.")
    if (hub.config.require_lifecycle_url_over_one_hour and lifecycle_url is None
            and expiration - hub.now() > timedelta(hours=1)):
        raise GraphError(400, "InvalidRequest", LIFECYCLE_URL_REQUIRED)
    if hub.active_for_mailbox(owner) >= hub.config.max_per_mailbox:
        raise _denied("Create", "Maximum number of subscriptions has been reached")
    await validate_endpoint(hub, notification_url)
    if lifecycle_url is not None:
        await validate_endpoint(hub, lifecycle_url)
    sub = Subscription(
        id=hub.new_id(), resource=body["resource"], owner=owner, tenant_id=call.caller.tenant_id,
        application_id=_application(call), change_types=change_types, notification_url=notification_url,
        lifecycle_url=lifecycle_url, client_state=client_state, expiration=expiration,
        immutable_ids=immutable_ids(call), latest_tls=str(body.get("latestSupportedTlsVersion") or "v1_2"),
        token_expires=float(_claims(call)["exp"]))
    hub.add(sub)
    return 201, _entity(sub)


def _visible(call: Call) -> list[Subscription]:
    """The subscriptions the calling app made for the signed-in user."""
    app = _application(call)
    return [s for s in _hub(call).subscriptions.values() if s.owner == call.caller.oid and s.application_id == app]


def _find(call: Call) -> Subscription:
    wanted = call.params["subscription_id"]
    for sub in _visible(call):
        if sub.id == wanted:
            return sub
    raise GraphError(404, "ResourceNotFound", "The object was not found.")


async def list_subscriptions(call: Call) -> tuple[int, Any]:
    """GET /subscriptions: the calling app's subscriptions for the signed-in user."""
    _require_read(call, "List")
    return 200, {"@odata.context": f"{GRAPH_ROOT}/$metadata#subscriptions",
                 "value": [s.resource_doc() for s in _visible(call)]}


async def get_subscription(call: Call) -> tuple[int, Any]:
    """GET /subscriptions/{id}."""
    _require_read(call, "Read")
    return 200, _entity(_find(call))


async def update_subscription(call: Call) -> tuple[int, Any]:
    """PATCH /subscriptions/{id}: renew (expirationDateTime) and/or move (notificationUrl, validated again);
    renewing also reauthorizes."""
    _require_read(call, "Update")
    sub = _find(call)
    body = await json_body(call)
    if body.get("expirationDateTime") is None and body.get("notificationUrl") is None:
        raise GraphError(400, "InvalidRequest", NO_PATCH_PROPERTY)
    hub = _hub(call)
    expiration = sub.expiration if body.get("expirationDateTime") is None else \
        _expiration(hub, body["expirationDateTime"])
    if body.get("notificationUrl") is not None:
        url = _url("notificationUrl", body["notificationUrl"])
        await validate_endpoint(hub, url)
        sub.notification_url = url
    sub.expiration = expiration
    hub.reauthorized(sub, float(_claims(call)["exp"]))
    sub.stats["renewals"] += 1
    return 200, _entity(sub)


async def delete_subscription(call: Call) -> tuple[int, Any]:
    """DELETE /subscriptions/{id}: 204; no more notifications."""
    _require_read(call, "Delete")
    sub = _find(call)
    _hub(call).remove(sub.id, "deleted")
    return 204, None


async def reauthorize_subscription(call: Call) -> tuple[int, Any]:
    """POST /subscriptions/{id}/reauthorize: 204; the challenge is met without changing the expiry."""
    _require_read(call, "Reauthorize")
    sub = _find(call)
    _hub(call).reauthorized(sub, float(_claims(call)["exp"]))
    sub.stats["reauthorizations"] += 1
    return 204, None
