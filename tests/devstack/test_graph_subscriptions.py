"""The Graph emulator's change-notification subscriptions behave as Graph v1.0 documents them ("Receive change
notifications through webhooks", lifecycle notifications): the validation request, batched at-least-once delivery
retried with back-off, lifecycle notifications, renewal, reauthorization, expiry and limits.

The emulator runs in-process (aiohttp test server) with tokens signed by an in-process Entra emulator, and a tiny
aiohttp receiver plays the app's notification and lifecycle endpoints.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from devstack.entra.app import create_entra_app
from devstack.entra.emulator import ENTRA_KEY
from devstack.graph import create_graph_app
from devstack.graph.subscription_endpoints import (
    NO_PATCH_PROPERTY,
    VALIDATION_MISMATCH,
    VALIDATION_NOT_200,
    VALIDATION_TIMED_OUT,
)
from devstack.graph.subscriptions import SUBSCRIPTIONS_KEY, SubscriptionHub

pytestmark = pytest.mark.e2e
DIRECTORY = json.loads((Path(__file__).resolve().parents[2] / "devstack/seed/directory.json").read_text())
CLIENT_ID = DIRECTORY["clients"][0]["client_id"]
SCHEDULER, ADAMS = DIRECTORY["users"][0], DIRECTORY["users"][1]
TENANT = DIRECTORY["tenant_id"]
ENTRA = create_entra_app(DIRECTORY, "https://login.test")[ENTRA_KEY]
IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}
EVENT = {"subject": "Consult", "start": {"dateTime": "2027-03-01T09:00:00", "timeZone": "UTC"},
         "end": {"dateTime": "2027-03-01T09:30:00", "timeZone": "UTC"}, "isOnlineMeeting": True,
         "onlineMeetingProvider": "teamsForBusiness"}
# Timings shrunk so a test runs in well under a second (Graph's: 10 s, 3 s, 10 s back-off for 4 hours).
# Generous enough for a loaded machine: a timeout here is only ever meant where a test makes the receiver slow.
FAST = {"validation_timeout_seconds": 2.0, "delivery_timeout_seconds": 1.0, "batch_window_seconds": 0.1,
        "retry_initial_seconds": 0.05, "retry_max_interval_seconds": 0.1, "tick_seconds": 0.05}


def token(user: dict[str, Any] = SCHEDULER, scopes: str | None = "Calendars.Read Calendars.ReadWrite",
          lifetime: int = 3600) -> str:
    """An access token as the Entra emulator issues it; `scopes=None` makes an app-only one."""
    now = int(time.time())
    claims: dict[str, Any] = {"aud": "https://graph.microsoft.com", "iss": ENTRA.issuer_for(TENANT), "iat": now,
                              "nbf": now, "exp": now + lifetime, "tid": TENANT, "oid": user["oid"],
                              "sub": user["oid"], "appid": CLIENT_ID, "azp": CLIENT_ID}
    if scopes is not None:
        claims.update({"scp": scopes, "upn": user["upn"]})
    return ENTRA.sign(claims)


def bearer(**kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(**kwargs)}"}


class Receiver:
    """The app's notification and lifecycle endpoints, told how to answer."""

    def __init__(self) -> None:
        self.validations: list[dict[str, Any]] = []
        self.posts: dict[str, list[dict[str, Any]]] = {"notify": [], "lifecycle": []}
        self.validation = "echo"  # echo | fail | slow | wrong
        self.fail_next = 0
        self.slow_next = 0
        self.failing: set[str] = set()  # kinds (notify, lifecycle) that always answer 500
        self.app = web.Application()
        self.app.router.add_post("/{kind}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        validation_token = request.query.get("validationToken")
        if validation_token is not None:
            self.validations.append({"kind": kind, "token": validation_token,
                                     "content_type": request.headers.get("Content-Type")})
            if self.validation == "fail":
                return web.Response(status=500)
            if self.validation == "slow":
                await asyncio.sleep(1.0)
            if self.validation == "wrong":
                return web.json_response({"token": validation_token})
            return web.Response(text=validation_token, content_type="text/plain")
        body = await request.json()
        if kind in self.failing or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            return web.Response(status=500)
        if self.slow_next > 0:
            self.slow_next -= 1
            await asyncio.sleep(1.5)
        self.posts[kind].append(body)
        return web.Response(status=202)

    def values(self, kind: str = "notify") -> list[dict[str, Any]]:
        return [v for post in self.posts[kind] for v in post["value"]]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    async with TestServer(rec.app, host="127.0.0.1") as server:
        yield rec, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def graph() -> AsyncIterator[TestClient[Any, Any]]:
    app = create_graph_app([], DIRECTORY, ENTRA.jwks(), ENTRA.base)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.put("/_admin/subscriptions/config", json=FAST)).status == 200
        yield client


def hub_of(graph: TestClient[Any, Any]) -> SubscriptionHub:
    return graph.server.app[SUBSCRIPTIONS_KEY]


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def _in(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


async def subscribe(graph: TestClient[Any, Any], base: str, *, headers: dict[str, str] | None = None,
                    **overrides: Any) -> Any:
    body = {"changeType": "created,updated,deleted", "notificationUrl": f"{base}/notify",
            "lifecycleNotificationUrl": f"{base}/lifecycle", "resource": "me/events",
            "expirationDateTime": _in(3 * 24 * 60), "clientState": "secret-state", **overrides}
    return await graph.post("/v1.0/subscriptions", json={k: v for k, v in body.items() if v is not None},
                            headers={**bearer(), **IMMUTABLE, **(headers or {})})


async def made(graph: TestClient[Any, Any], base: str, **overrides: Any) -> dict[str, Any]:
    answer = await subscribe(graph, base, **overrides)
    assert answer.status == 201, await answer.text()
    body: dict[str, Any] = await answer.json()
    return body


async def new_event(graph: TestClient[Any, Any], subject: str = "Consult") -> dict[str, Any]:
    answer = await graph.post("/v1.0/me/events", json={**EVENT, "subject": subject}, headers={**bearer(), **IMMUTABLE})
    assert answer.status == 201
    body: dict[str, Any] = await answer.json()
    return body


async def error_of(answer: Any) -> tuple[int, str, str]:
    body = await answer.json()
    return answer.status, body["error"]["code"], body["error"]["message"]


Graph = TestClient[Any, Any]
Check = Callable[[], Awaitable[None]]


async def test_create_validates_both_endpoints_and_answers_the_subscription(graph: Graph, receiver: Any) -> None:
    rec, base = receiver
    sub = await made(graph, base)
    # Both URLs got Graph's validation request (text/plain, the token URL-encoded and decoded by the receiver)
    assert [v["kind"] for v in rec.validations] == ["notify", "lifecycle"]
    assert all(v["token"].startswith("Validation: Testing client application reachability") for v in rec.validations)
    assert all(v["content_type"].startswith("text/plain") for v in rec.validations)
    assert sub["@odata.context"].endswith("$metadata#subscriptions/$entity")
    assert {k: sub[k] for k in ("resource", "applicationId", "changeType", "clientState", "creatorId",
                                "latestSupportedTlsVersion")} == {
        "resource": "me/events", "applicationId": CLIENT_ID, "changeType": "created,updated,deleted",
        "clientState": "secret-state", "creatorId": SCHEDULER["oid"], "latestSupportedTlsVersion": "v1_2"}
    assert sub["notificationUrl"] == f"{base}/notify" and sub["lifecycleNotificationUrl"] == f"{base}/lifecycle"
    assert sub["expirationDateTime"].endswith("Z")
    listed = await (await graph.get("/v1.0/subscriptions", headers=bearer())).json()
    assert [s["id"] for s in listed["value"]] == [sub["id"]]
    one = await graph.get(f"/v1.0/subscriptions/{sub['id']}", headers=bearer())
    assert one.status == 200 and (await one.json())["id"] == sub["id"]
    # Another user of the same app sees none of it
    assert (await (await graph.get("/v1.0/subscriptions", headers=bearer(user=ADAMS))).json())["value"] == []
    assert (await graph.get(f"/v1.0/subscriptions/{sub['id']}", headers=bearer(user=ADAMS))).status == 404
    # users/{id}/events for the caller works too
    assert (await subscribe(graph, base, resource=f"users/{SCHEDULER['oid']}/events")).status == 201


@pytest.mark.parametrize(("mode", "status", "code", "message"), [
    ("fail", 400, "ValidationError", VALIDATION_NOT_200),
    ("slow", 400, "InvalidRequest", VALIDATION_TIMED_OUT),
    ("wrong", 400, "ValidationError", VALIDATION_MISMATCH),
])
async def test_a_failed_or_slow_validation_makes_no_subscription(graph: Graph, receiver: Any, mode: str,
                                                                 status: int, code: str, message: str) -> None:
    rec, base = receiver
    rec.validation = mode
    await graph.put("/_admin/subscriptions/config", json={"validation_timeout_seconds": 0.3})
    assert await error_of(await subscribe(graph, base)) == (status, code, message)
    assert hub_of(graph).subscriptions == {}
    attempts = await (await graph.get("/_admin/subscriptions/deliveries", params={"kind": "validation"})).json()
    assert attempts[-1]["outcome"] in ("failed", "timeout", "mismatch")


async def test_the_validation_budget_is_graphs_10_seconds_unless_shrunk(graph: Graph, receiver: Any) -> None:
    rec, base = receiver
    rec.validation = "slow"  # answers after 1 s: within Graph's 10 s
    await graph.put("/_admin/subscriptions/config", json={"validation_timeout_seconds": 10})
    assert (await subscribe(graph, base)).status == 201
    # The fault knob: the next validation times out whatever the endpoint does
    rec.validation = "echo"
    await graph.put("/_admin/subscriptions/faults", json={"validation_timeout_next": 1})
    assert (await error_of(await subscribe(graph, base)))[2] == VALIDATION_TIMED_OUT
    assert (await subscribe(graph, base)).status == 201


async def test_refusals_as_graph_answers_them(graph: Graph, receiver: Any) -> None:
    _, base = receiver
    app_only = {"Authorization": f"Bearer {token(scopes=None)}"}
    assert (await error_of(await subscribe(graph, base, headers=app_only)))[:2] == (400, "BadRequest")
    assert (await error_of(await subscribe(graph, base, headers=app_only,
                                           resource=f"users/{SCHEDULER['oid']}/events")))[:2] == (403, "ExtensionError")
    no_scope = {"Authorization": f"Bearer {token(scopes='OnlineMeetings.Read')}"}
    assert await error_of(await subscribe(graph, base, headers=no_scope)) == (
        403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; Reason: Access denied]")
    assert (await error_of(await subscribe(graph, base, resource=f"users/{ADAMS['oid']}/events")))[0] == 403
    assert await error_of(await subscribe(graph, base, expirationDateTime=_in(10081))) == (
        400, "ExtensionError", "Subscription expiration can only be 10080 minutes in the future.")
    assert (await error_of(await subscribe(graph, base, notificationUrl="http://example.com/n")))[2] == \
        "NotificationUrl scheme='http' is not supported."
    assert (await error_of(await subscribe(graph, base, clientState="x" * 129)))[0] == 400
    assert (await error_of(await subscribe(graph, base, changeType="moved")))[0] == 400
    assert (await error_of(await subscribe(graph, base, resource="me/messages")))[0] == 400
    # Under 45 minutes is set to 45 minutes; 10,080 minutes is accepted
    short = await made(graph, base, expirationDateTime=_in(5))
    expires = datetime.fromisoformat(short["expirationDateTime"].replace("0Z", "+00:00"))
    assert timedelta(minutes=44) < expires - datetime.now(UTC) <= timedelta(minutes=45)
    assert (await subscribe(graph, base, expirationDateTime=_in(10079))).status == 201
    # A lifecycleNotificationUrl is optional for Outlook events (required beyond 1 hour only for Teams resources)
    assert (await subscribe(graph, base, lifecycleNotificationUrl=None)).status == 201
    await graph.put("/_admin/subscriptions/config", json={"require_lifecycle_url_over_one_hour": True})
    assert (await error_of(await subscribe(graph, base, lifecycleNotificationUrl=None)))[0] == 400


async def test_the_1001st_subscription_on_a_mailbox_is_refused(graph: Graph, receiver: Any) -> None:
    _, base = receiver
    await graph.put("/_admin/subscriptions/config", json={"max_per_mailbox": 2})
    assert [(await subscribe(graph, base)).status for _ in range(2)] == [201, 201]
    assert await error_of(await subscribe(graph, base)) == (
        403, "ExtensionError",
        "Operation: Create; Exception: [Status Code: Forbidden; Reason: Maximum number of subscriptions has been "
        "reached]")
    # Another mailbox has its own count
    assert (await subscribe(graph, base, headers=bearer(user=ADAMS))).status == 201
    assert hub_of(graph).config.max_per_mailbox == 2
    await graph.put("/_admin/subscriptions/config", json={"reset": True})
    assert hub_of(graph).config.max_per_mailbox == 1000


async def test_changes_are_delivered_in_batches_with_graphs_payload(graph: Graph, receiver: Any) -> None:
    rec, base = receiver
    await graph.put("/_admin/subscriptions/config", json={"batch_window_seconds": 0.3})
    sub = await made(graph, base)
    events = [await new_event(graph, f"Consult {i}") for i in range(3)]
    await until(lambda: len(rec.values()) == 3)
    # Three changes within the window: one POST
    assert len(rec.posts["notify"]) == 1
    first = rec.values()[0]
    event_id = events[0]["id"]
    path = f"Users/{SCHEDULER['oid']}/Events/{event_id}"
    assert first == {
        "subscriptionId": sub["id"], "subscriptionExpirationDateTime": sub["expirationDateTime"],
        "changeType": "created", "resource": path,
        "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": path,
                         "@odata.etag": events[0]["@odata.etag"], "id": event_id},
        "clientState": "secret-state", "tenantId": TENANT}
    # Updated, then cancelled (updated + deleted), all with the immutable id
    await graph.patch(f"/v1.0/me/events/{event_id}", headers={**bearer(), **IMMUTABLE},
                      json={"start": {"dateTime": "2027-03-02T09:00:00", "timeZone": "UTC"},
                            "end": {"dateTime": "2027-03-02T09:30:00", "timeZone": "UTC"}})
    await graph.post(f"/v1.0/me/events/{event_id}/cancel", headers=bearer(), json={})
    settled = await (await graph.post("/_admin/subscriptions/settle", json={"timeout_seconds": 5})).json()
    assert settled == {"settled": True, "pending": 0, "in_flight": []}
    assert [v["changeType"] for v in rec.values()[3:]] == ["updated", "updated", "deleted"]
    assert {v["resourceData"]["id"] for v in rec.values()[3:]} == {event_id}
    stats = (await (await graph.get("/_admin/subscriptions")).json())["subscriptions"][0]["stats"]
    assert stats["delivered"] == 6 and stats["notifications"] == 6


async def test_without_the_prefer_header_the_ids_are_rest_ids_and_change_types_filter(graph: Graph,
                                                                                      receiver: Any) -> None:
    rec, base = receiver
    await graph.post("/v1.0/subscriptions", headers=bearer(), json={
        "changeType": "updated", "notificationUrl": f"{base}/notify", "resource": "/me/events",
        "expirationDateTime": _in(60), "clientState": "s"})
    event = await new_event(graph)  # created: not subscribed
    await graph.patch(f"/v1.0/me/events/{event['id']}", headers=bearer(), json={"subject": "Moved"})
    await until(lambda: len(rec.values()) == 1)
    [value] = rec.values()
    assert value["changeType"] == "updated"
    rest_id = hub_of(graph).emu.events[event["id"]]["rest_id"]
    assert value["resourceData"]["id"] == rest_id != event["id"]
    # A deleted event is named by the REST id it had in the calendar (not its new one in Deleted Items)
    await graph.post("/v1.0/subscriptions", headers=bearer(), json={
        "changeType": "deleted", "notificationUrl": f"{base}/notify", "resource": "me/events",
        "expirationDateTime": _in(60)})
    assert (await graph.delete(f"/v1.0/me/events/{rest_id}", headers=bearer())).status == 204
    await until(lambda: len(rec.values()) == 2)
    assert rec.values()[1]["changeType"] == "deleted" and rec.values()[1]["resourceData"]["id"] == rest_id
    assert rec.values()[1]["clientState"] is None


async def test_retried_with_back_off_on_500_and_on_a_slow_answer(graph: Graph, receiver: Any) -> None:
    rec, base = receiver
    sub = await made(graph, base)
    rec.fail_next = 2
    await new_event(graph)
    await until(lambda: len(rec.values()) == 1)
    rec.slow_next = 1  # slower than the delivery timeout: a retry, and the slow answer is not counted
    await new_event(graph)
    await until(lambda: len(rec.values()) >= 2)
    deliveries = await (await graph.get("/_admin/subscriptions/deliveries",
                                        params={"subscription": sub["id"], "kind": "change"})).json()
    assert [d["outcome"] for d in deliveries] == ["failed", "failed", "delivered", "timeout", "delivered"]
    assert [d["attempt"] for d in deliveries] == [1, 2, 3, 1, 2]
    assert [d["status"] for d in deliveries[:3]] == [500, 500, 202]


async def test_dropped_after_the_retry_window_then_missed(graph: Graph, receiver: Any) -> None:
    rec, base = receiver
    await graph.put("/_admin/subscriptions/config", json={"retry_for_seconds": 0.3})
    sub = await made(graph, base)
    rec.failing = {"notify"}
    await new_event(graph)
    await until(lambda: len(rec.values("lifecycle")) == 1)
    assert rec.values() == []
    assert rec.values("lifecycle") == [{
        "subscriptionId": sub["id"], "subscriptionExpirationDateTime": sub["expirationDateTime"],
        "tenantId": TENANT, "clientState": "secret-state", "lifecycleEvent": "missed"}]
    stats = (await (await graph.get("/_admin/subscriptions")).json())["subscriptions"][0]["stats"]
    assert stats["dropped"] == 1 and stats["retries"] >= 1


async def test_duplicate_and_drop_faults(graph: Graph, receiver: Any) -> None:
    rec, base = receiver
    await made(graph, base)
    await graph.put("/_admin/subscriptions/faults", json={"duplicate_next": 1})
    event = await new_event(graph)
    await until(lambda: len(rec.values()) == 2)
    assert rec.values()[0] == rec.values()[1] and len(rec.posts["notify"]) == 2
    await graph.put("/_admin/subscriptions/faults", json={"drop_next": 1, "missed_on_drop": True})
    await graph.patch(f"/v1.0/me/events/{event['id']}", headers=bearer(), json={"subject": "Lost"})
    await until(lambda: len(rec.values("lifecycle")) == 1)
    assert rec.values("lifecycle")[0]["lifecycleEvent"] == "missed"
    assert len(rec.values()) == 2
    faults = await (await graph.get("/_admin/subscriptions/faults")).json()
    assert faults["drop_next"] == 0 and faults["duplicate_next"] == 0
    # A duplicate rate of 1: every notification twice
    await graph.put("/_admin/subscriptions/faults", json={"duplicate_rate": 1.0, "seed": 7})
    await new_event(graph)
    await until(lambda: len(rec.values()) == 4)


async def test_lifecycle_events_fired_by_the_admin_call(graph: Graph, receiver: Any) -> None:
    rec, base = receiver
    sub = await made(graph, base)
    fired = await graph.post(f"/_admin/subscriptions/{sub['id']}/lifecycle", json={"event": "reauthorizationRequired"})
    assert fired.status == 202
    await until(lambda: len(rec.values("lifecycle")) == 1)
    assert rec.values("lifecycle")[0]["lifecycleEvent"] == "reauthorizationRequired"
    view = (await (await graph.get("/_admin/subscriptions")).json())["subscriptions"][0]
    assert view["reauthorizationRequiredSince"] is not None
    assert (await graph.post(f"/v1.0/subscriptions/{sub['id']}/reauthorize", headers=bearer())).status == 204
    view = (await (await graph.get("/_admin/subscriptions")).json())["subscriptions"][0]
    assert view["reauthorizationRequiredSince"] is None and view["stats"]["reauthorizations"] == 1
    # subscriptionRemoved: notified, and the subscription is gone
    await graph.post(f"/_admin/subscriptions/{sub['id']}/lifecycle", json={"event": "subscriptionRemoved"})
    await until(lambda: len(rec.values("lifecycle")) == 2)
    assert rec.values("lifecycle")[1]["lifecycleEvent"] == "subscriptionRemoved"
    assert (await graph.get(f"/v1.0/subscriptions/{sub['id']}", headers=bearer())).status == 404
    await new_event(graph)
    await asyncio.sleep(0.3)
    assert rec.values() == []
    states = {s["id"]: s["state"] for s in (await (await graph.get("/_admin/subscriptions")).json())["subscriptions"]}
    assert states == {sub["id"]: "removed"}
    assert (await graph.post(f"/_admin/subscriptions/{sub['id']}/lifecycle", json={"event": "missed"})).status == 404


async def test_no_lifecycle_url_no_lifecycle_notifications(graph: Graph, receiver: Any) -> None:
    rec, base = receiver
    sub = await made(graph, base, lifecycleNotificationUrl=None, expirationDateTime=_in(50))
    answer = await graph.post(f"/_admin/subscriptions/{sub['id']}/lifecycle", json={"event": "missed"})
    assert (await answer.json())["queued"] is False
    await asyncio.sleep(0.2)
    assert rec.posts["lifecycle"] == []


async def test_renewal_expiry_and_the_challenge_before_expiry(graph: Graph, receiver: Any) -> None:
    rec, base = receiver
    sub = await made(graph, base, expirationDateTime=_in(120))
    new_expiry = _in(3 * 24 * 60)
    renewed = await graph.patch(f"/v1.0/subscriptions/{sub['id']}", headers=bearer(),
                                json={"expirationDateTime": new_expiry})
    assert renewed.status == 200
    assert (await renewed.json())["expirationDateTime"][:19] == new_expiry[:19]
    assert await error_of(await graph.patch(f"/v1.0/subscriptions/{sub['id']}", headers=bearer(), json={})) == (
        400, "InvalidRequest", NO_PATCH_PROPERTY)
    too_far = await graph.patch(f"/v1.0/subscriptions/{sub['id']}", headers=bearer(),
                                json={"expirationDateTime": _in(10081)})
    assert too_far.status == 400
    # Close to expiry (the clock jumps ahead): reauthorizationRequired, once
    await graph.put("/_admin/subscriptions/config", json={"clock_offset_seconds": 3 * 24 * 3600 - 1800})
    await until(lambda: len(rec.values("lifecycle")) == 1)
    assert rec.values("lifecycle")[0]["lifecycleEvent"] == "reauthorizationRequired"
    # Past expiry: gone, and nothing delivered any more
    await graph.put("/_admin/subscriptions/config", json={"clock_offset_seconds": 3 * 24 * 3600 + 60})
    await until(lambda: hub_of(graph).subscriptions == {})
    await new_event(graph)
    await asyncio.sleep(0.3)
    assert rec.values() == [] and len(rec.values("lifecycle")) == 1
    listed = await (await graph.get("/_admin/subscriptions")).json()
    assert [s["state"] for s in listed["subscriptions"]] == ["expired"]
    assert (await graph.patch(f"/v1.0/subscriptions/{sub['id']}", headers=bearer(),
                              json={"expirationDateTime": _in(60)})).status == 404


async def test_an_expiring_access_token_brings_a_challenge_and_reauthorize_answers_it(graph: Graph,
                                                                                     receiver: Any) -> None:
    rec, base = receiver
    sub = await made(graph, base, headers=bearer(lifetime=600))  # within 15 minutes of its expiry
    await until(lambda: len(rec.values("lifecycle")) == 1)
    assert rec.values("lifecycle")[0]["lifecycleEvent"] == "reauthorizationRequired"
    # Answered with a token as close to expiry: challenged again only after the interval (15 minutes)
    stale = {"Authorization": f"Bearer {token(lifetime=600)}"}
    assert (await graph.post(f"/v1.0/subscriptions/{sub['id']}/reauthorize", headers=stale)).status == 204
    await asyncio.sleep(0.3)
    assert len(rec.values("lifecycle")) == 1
    await graph.put("/_admin/subscriptions/config", json={"reauthorize_interval_seconds": 0.5})
    await until(lambda: len(rec.values("lifecycle")) == 2)
    # Answered with a fresh token: no more challenges
    assert (await graph.post(f"/v1.0/subscriptions/{sub['id']}/reauthorize", headers=bearer())).status == 204
    await graph.post("/_admin/subscriptions/settle")
    challenges = len(rec.values("lifecycle"))
    await asyncio.sleep(0.8)
    assert len(rec.values("lifecycle")) == challenges
    # Unanswered challenges can pause delivery (a knob): changes in the pause are lost
    await graph.put("/_admin/subscriptions/config", json={"pause_unanswered_reauthorization_seconds": 0})
    await graph.post(f"/_admin/subscriptions/{sub['id']}/lifecycle", json={"event": "reauthorizationRequired"})
    await new_event(graph)
    await asyncio.sleep(0.3)
    assert rec.values() == []
    await graph.post(f"/v1.0/subscriptions/{sub['id']}/reauthorize", headers=bearer())
    await new_event(graph)
    await until(lambda: len(rec.values()) == 1)


async def test_delete_stops_notifications(graph: Graph, receiver: Any) -> None:
    rec, base = receiver
    sub = await made(graph, base)
    assert (await graph.delete(f"/v1.0/subscriptions/{sub['id']}", headers=bearer())).status == 204
    assert (await graph.delete(f"/v1.0/subscriptions/{sub['id']}", headers=bearer())).status == 404
    await new_event(graph)
    await asyncio.sleep(0.3)
    assert rec.values() == []


async def test_moving_the_notification_url_validates_it(graph: Graph, receiver: Any) -> None:
    rec, base = receiver
    sub = await made(graph, base)
    rec.validation = "fail"
    moved = await graph.patch(f"/v1.0/subscriptions/{sub['id']}", headers=bearer(),
                              json={"notificationUrl": f"{base}/notify?moved=1"})
    assert (await error_of(moved))[2] == VALIDATION_NOT_200
    rec.validation = "echo"
    moved = await graph.patch(f"/v1.0/subscriptions/{sub['id']}", headers=bearer(),
                              json={"notificationUrl": f"{base}/notify?moved=1"})
    assert (await moved.json())["notificationUrl"].endswith("?moved=1")


async def test_an_organizer_edit_in_outlook_is_notified(graph: Graph, receiver: Any) -> None:
    rec, base = receiver
    await made(graph, base)
    event = await new_event(graph)
    edit = await graph.post(f"/_admin/events/{event['id']}/organizer-edit",
                            json={"start": "2027-03-05T10:00:00", "end": "2027-03-05T10:30:00"})
    assert edit.status == 200
    await graph.post(f"/_admin/events/{event['id']}/organizer-edit", json={"cancel": True, "comment": "Away"})
    await until(lambda: len(rec.values()) == 4)
    assert [v["changeType"] for v in rec.values()] == ["created", "updated", "updated", "deleted"]


async def test_admin_reset_restores_graphs_timings_and_clear_forgets_subscriptions(graph: Graph,
                                                                                  receiver: Any) -> None:
    _, base = receiver
    await made(graph, base)
    await graph.put("/_admin/subscriptions/faults", json={"drop_next": 3})
    await graph.post("/_admin/reset")
    assert hub_of(graph).config.validation_timeout_seconds == 10.0
    assert (await (await graph.get("/_admin/subscriptions/faults")).json())["drop_next"] == 0
    assert len(hub_of(graph).subscriptions) == 1
    assert (await (await graph.delete("/_admin/subscriptions")).json()) == {"cleared": 1}
    assert (await graph.put("/_admin/subscriptions/faults", json={"nope": 1})).status == 400
    assert (await graph.put("/_admin/subscriptions/faults", json={"drop_next": "2"})).status == 400
    assert (await graph.put("/_admin/subscriptions/config", json={"missed_on_drop": True})).status == 400
    assert (await graph.put("/_admin/subscriptions/config", json={"retry_for_seconds": True})).status == 400
    assert (await graph.put("/_admin/subscriptions/config", json={"retry_for_seconds": 5})).status == 200


async def test_delay_and_reorder_still_deliver_everything_and_settle_waits(graph: Graph, receiver: Any) -> None:
    rec, base = receiver
    await made(graph, base)
    await graph.put("/_admin/subscriptions/faults", json={"delay_ms": 300, "reorder": True, "seed": 3})
    events = [await new_event(graph, f"Consult {i}") for i in range(6)]
    assert (await (await graph.post("/_admin/subscriptions/settle", json={"timeout_seconds": 5})).json())["settled"]
    assert sorted(v["resourceData"]["id"] for v in rec.values()) == sorted(e["id"] for e in events)
    # A notification in back-off is still pending: settle says so at its timeout
    await graph.put("/_admin/subscriptions/faults", json={})
    await graph.put("/_admin/subscriptions/config",
                    json={"retry_initial_seconds": 30, "retry_max_interval_seconds": 30})
    rec.failing = {"notify"}
    await new_event(graph)
    left = await (await graph.post("/_admin/subscriptions/settle", json={"timeout_seconds": 0.5})).json()
    assert left["settled"] is False and left["pending"] == 1


async def test_a_slow_endpoint_is_throttled_then_dropped_as_graph_documents(graph: Graph, receiver: Any) -> None:
    rec, base = receiver
    await graph.put("/_admin/subscriptions/config", json={
        "delivery_timeout_seconds": 0.5, "throttle_min_notifications": 8, "throttle_delay_seconds": 0.8,
        "throttle_window_seconds": 60})
    await made(graph, base)

    async def change() -> float:
        started = time.monotonic()
        await new_event(graph)
        assert (await (await graph.post("/_admin/subscriptions/settle")).json())["settled"]
        return time.monotonic() - started

    async def state() -> str:
        endpoints = (await (await graph.get("/_admin/subscriptions")).json())["endpoints"]
        return str(endpoints[f"{base}/notify"]["state"])

    rec.slow_next = 1
    await change()  # one slow answer (a timeout), then delivered: 2 notifications counted, 1 slow
    for _ in range(6):
        await change()
    # 1 slow of 8 (12.5 %): throttled, the next notification waits the throttling delay
    assert await state() == "throttled"
    assert await change() >= 0.7
    assert len(rec.values()) == 8
    # 2 slow of 10 (20 %): dropping, and the subscription hears `missed`
    rec.slow_next = 1
    await change()
    assert await state() == "dropping"
    await change()
    assert len(rec.values()) == 9
    assert [v["lifecycleEvent"] for v in rec.values("lifecycle")] == ["missed"]
