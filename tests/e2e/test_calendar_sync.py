"""Changes the staff member makes in Outlook come back (MEETING_KIND=calendar), end to end: the organizer's
subscription in the Graph emulator, its validation request and notifications posted to the app's HTTP functions
in the harness, the queue function reading the event and telling the scheduler, the timer's lifecycle answers.

The organizer "connects" by the call the connect page's callback makes (`services.on_connected`), as the
pipeline tests sign the seeded users in directly; the admin call `organizer-edit` plays the staff member's
move or cancel in Outlook.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared.identity.vault import VaultEntry
from tests.e2e.conftest import send
from tests.e2e.test_calendar import events_of
from tests.e2e.test_lifecycle import SCHEDULER, T1, T2, apt, by_type, lifecycle

pytestmark = pytest.mark.e2e
MOVED = ("2026-12-03T10:00:00", "2026-12-03T10:50:00")


@pytest.fixture
async def synced(stack: dict[str, Any], app_module: Any, host: Any, graph_admin: httpx.Client) -> AsyncIterator[Any]:
    """The app with MEETING_KIND=calendar and Graph posting to the harness; the emulator delivering quickly."""
    from shared.services import Services
    from shared.settings import load_settings

    graph_admin.delete("subscriptions")
    graph_admin.put("subscriptions/config", json={"reset": True, "batch_window_seconds": 0.05,
                                                  "retry_initial_seconds": 0.5})
    before = app_module.services
    settings = {**stack["settings"], "CREDENTIAL_MODE": "dev_password", "WEBHOOK_RETRY_BASE_SECONDS": "1",
                "MEETING_MANAGEMENT": "true", "MEETING_KIND": "calendar",
                "GRAPH_NOTIFICATION_BASE_URL": f"{host.http_base_url}/api"}
    app_module.services = Services(load_settings(settings))
    await app_module.services.subscriptions.remove(SCHEDULER)  # a row another test left
    try:
        yield app_module.services
    finally:
        await app_module.services.subscriptions.remove(SCHEDULER)
        await app_module.services.aclose()
        app_module.services = before
        graph_admin.delete("subscriptions")
        graph_admin.put("subscriptions/config", json={"reset": True})


async def connect(services: Any) -> None:
    """What the connect callback does once the organizer's connection is stored."""
    note = await services.on_connected(VaultEntry(oid=SCHEDULER, upn=SCHEDULER, display_name="Scheduler", cache=""))
    assert "now come back" in note, note


def active(graph_admin: httpx.Client) -> list[dict[str, Any]]:
    """The organizer's active subscriptions in the Graph emulator."""
    return graph_admin.get("subscriptions", params={"owner": SCHEDULER, "state": "active"}).json()["subscriptions"]


async def hooks_of(host: Any, receiver_admin: httpx.Client, appointment: str, wanted: str,
                   timeout: float = 45.0) -> dict[str, list[dict[str, Any]]]:
    """The appointment's webhooks by type, once one of type `wanted` has arrived."""
    deadline = time.monotonic() + timeout
    while True:
        await host.drain(timeout=60)
        hooks = by_type(receiver_admin.get("deliveries").json()["deliveries"], appointment)
        if wanted in hooks or time.monotonic() > deadline:
            return hooks
        await asyncio.sleep(0.3)


async def book(host: Any, queues_client: Any, graph_admin: httpx.Client, receiver_admin: httpx.Client
               ) -> tuple[str, dict[str, Any]]:
    appointment = apt()
    await send(queues_client, lifecycle("created", appointment, sequence=1, times=T1, subject="Follow-up"))
    await hooks_of(host, receiver_admin, appointment, "appointment.joinurl.ready")
    (event,) = events_of(graph_admin, appointment)
    return appointment, event


async def test_the_organizer_moves_then_cancels_in_outlook_and_the_scheduler_hears_both(
        synced, host, queues_client, graph_admin, receiver_admin):
    # GIVEN the organizer connected (one subscription on me/events, with a lifecycle URL) and an appointment booked
    await connect(synced)
    (subscription,) = active(graph_admin)
    assert subscription["resource"].lower().endswith("events") and subscription.get("lifecycleNotificationUrl")
    assert subscription["changeType"] == "created,updated,deleted" and subscription["immutableIds"] is True
    expires = datetime.fromisoformat(subscription["expirationDateTime"].replace("Z", "+00:00"))
    assert timedelta(days=2) < expires - datetime.now(UTC) <= timedelta(minutes=10080)  # well inside Graph's most
    appointment, event = await book(host, queues_client, graph_admin, receiver_admin)
    # WHEN the staff member moves it in Outlook
    edit = graph_admin.post(f"events/{event['id']}/organizer-edit", json={"start": MOVED[0], "end": MOVED[1]})
    assert edit.status_code == 200, edit.text
    hooks = await hooks_of(host, receiver_admin, appointment, "appointment.rescheduled_by_organizer")
    # THEN the scheduler hears it with the new times and the links, as version 2
    (moved,) = hooks["appointment.rescheduled_by_organizer"]
    ready = hooks["appointment.joinurl.ready"][0]
    assert moved["startDateTime"].startswith("2026-12-03T10:00:00") and moved["endDateTime"].startswith(
        "2026-12-03T10:50:00")
    assert moved["joinUrl"] == ready["joinUrl"] and moved["organizerJoinUrl"] == ready["organizerJoinUrl"]
    assert moved["version"] == 2 and moved["status"] == "scheduled"
    # AND the record says so, as the HTTP twin answers it
    async with httpx.AsyncClient(base_url=host.http_base_url, timeout=10,
                                 headers={"x-functions-key": "local-dev-function-key"}) as client:
        twin = (await client.get(f"/api/appointments/{appointment}")).json()
    assert twin["startDateTime"].startswith("2026-12-03T10:00:00") and twin["version"] == 2
    assert twin["lastEventType"] == "appointment.rescheduled_by_organizer" and twin["status"] == "scheduled"
    # WHEN the staff member cancels it in Outlook
    graph_admin.post(f"events/{event['id']}/organizer-edit", json={"cancel": True, "comment": "Off sick"})
    hooks = await hooks_of(host, receiver_admin, appointment, "appointment.cancelled_by_organizer")
    # THEN the scheduler hears it once (the event's several notifications are one change), version 3
    (cancelled,) = hooks["appointment.cancelled_by_organizer"]
    assert cancelled["status"] == "cancelled" and cancelled["version"] == 3 and cancelled["joinUrl"] is None
    assert (await synced.appointments.get(appointment)).status == "cancelled"
    assert len(hooks["appointment.rescheduled_by_organizer"]) == 1


async def test_the_apps_own_reschedule_and_cancel_tell_nothing_by_organizer(
        synced, host, queues_client, graph_admin, receiver_admin):
    await connect(synced)
    appointment, _ = await book(host, queues_client, graph_admin, receiver_admin)
    # WHEN the scheduler reschedules and cancels (the app PATCHes and cancels the event; Graph notifies both)
    await send(queues_client, lifecycle("rescheduled", appointment, sequence=2, times=T2))
    await hooks_of(host, receiver_admin, appointment, "appointment.joinurl.updated")
    await send(queues_client, lifecycle("cancelled", appointment, sequence=3))
    await hooks_of(host, receiver_admin, appointment, "appointment.joinurl.cancelled")
    # THEN Graph did notify the app of its own writes, and nothing _by_organizer went out
    deliveries = graph_admin.get("subscriptions/deliveries").json()
    assert [d for d in deliveries if "change" in d["kind"]], "Graph sent no change notification"
    await asyncio.sleep(1.0)
    hooks = await hooks_of(host, receiver_admin, appointment, "never", timeout=2.0)
    assert not [t for t in hooks if t.endswith("_by_organizer")], hooks.keys()


async def test_a_lost_notification_is_repaired_by_the_resync_after_missed(
        synced, host, queues_client, graph_admin, receiver_admin):
    await connect(synced)
    appointment, event = await book(host, queues_client, graph_admin, receiver_admin)
    await host.drain(timeout=30)
    # GIVEN Graph drops the next change notification and sends `missed` instead
    graph_admin.put("subscriptions/faults", json={"drop_next": 1, "missed_on_drop": True})
    # WHEN the staff member moves the appointment
    graph_admin.post(f"events/{event['id']}/organizer-edit", json={"start": MOVED[0], "end": MOVED[1]})
    hooks = await hooks_of(host, receiver_admin, appointment, "appointment.rescheduled_by_organizer")
    # THEN the resync (calendarView/delta) found the move all the same
    (moved,) = hooks["appointment.rescheduled_by_organizer"]
    assert moved["startDateTime"].startswith("2026-12-03T10:00:00")
    sent = graph_admin.get("subscriptions/deliveries", params={"kind": "lifecycle"}).json()
    assert any(item.get("lifecycleEvent") == "missed" for attempt in sent for item in attempt.get("value") or [])


async def test_a_wrong_client_state_is_dropped_and_disconnect_removes_the_subscription(
        synced, host, graph_admin):
    await connect(synced)
    (subscription,) = active(graph_admin)
    # GIVEN a stranger posts a notification naming the subscription with a guessed clientState
    body = {"value": [{"subscriptionId": subscription["id"], "clientState": "guess", "changeType": "updated",
                       "resource": "Users/x/Events/y", "resourceData": {"id": "y"}}]}
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{host.http_base_url}/api/graph/notifications", json=body)
        echo = await client.post(f"{host.http_base_url}/api/graph/notifications",
                                 params={"validationToken": "Validation: a b+c"})
    assert answer.status_code == 202
    assert echo.status_code == 200 and echo.text == "Validation: a b+c"
    assert echo.headers["content-type"].startswith("text/plain")
    await host.drain(timeout=30)
    assert synced.calendar_sync.dropped.get("client_state_mismatch") == 1
    # WHEN the organizer disconnects
    assert await synced.subscriptions.remove(SCHEDULER)
    # THEN Graph has no subscription of theirs, and reconnecting makes one again
    assert active(graph_admin) == []
    await connect(synced)
    assert len(active(graph_admin)) == 1


async def wait_for(check: Any, host: Any, timeout: float = 30.0) -> Any:
    """The first truthy answer of `check()`, the app's queues drained between tries."""
    deadline = time.monotonic() + timeout
    while True:
        await host.drain(timeout=60)
        found = check()
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.3)


async def test_lifecycle_notifications_are_answered(synced, host, graph_admin):
    await connect(synced)
    (first,) = active(graph_admin)
    # WHEN Graph asks for reauthorization
    graph_admin.post(f"subscriptions/{first['id']}/lifecycle", json={"event": "reauthorizationRequired"})
    answered = await wait_for(lambda: [s for s in active(graph_admin) if not s["reauthorizationRequiredSince"]],
                              host)
    # THEN the app reauthorized the same subscription
    assert [s["id"] for s in answered] == [first["id"]]
    # WHEN Graph removes the subscription
    graph_admin.post(f"subscriptions/{first['id']}/lifecycle", json={"event": "subscriptionRemoved"})
    again = await wait_for(lambda: [s for s in active(graph_admin) if s["id"] != first["id"]], host)
    # THEN the app made a new one, with a new clientState, and keeps it
    (second,) = again
    assert second["clientState"] != first["clientState"]
    assert await synced.subscriptions.store.by_subscription(second["id"]) is not None


async def test_the_timer_keeps_the_subscription_and_resyncs(synced, host, graph_admin):
    await connect(synced)
    (subscription,) = active(graph_admin)
    await host.fire_timer("sync_calendars")
    row = await synced.subscriptions.store.by_subscription(subscription["id"])
    assert row is not None and row.state == "active" and row.last_resync_at and row.delta_link
    assert [s["id"] for s in active(graph_admin)] == [subscription["id"]]


async def test_a_full_mailbox_is_reported_and_not_retried(synced, host, graph_admin):
    graph_admin.put("subscriptions/config", json={"max_per_mailbox": 0})
    note = await synced.on_connected(VaultEntry(oid=SCHEDULER, upn=SCHEDULER, display_name="Scheduler", cache=""))
    assert "subscription_limit" in note
    await host.fire_timer("sync_calendars")
    (row,) = [r for r in await synced.subscriptions.store.all() if r.organizer == SCHEDULER]
    assert row.state == "subscription_limit" and row.subscription_id is None
    creates = [a for a in graph_admin.get("subscriptions/deliveries").json() if "validation" in a["kind"]]
    assert creates == []  # Graph refused before any validation; the timer did not try again
