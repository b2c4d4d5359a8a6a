"""Calendar-backed meetings end to end (MEETING_KIND=calendar): Azurite → the harness and Azure's worker → the real
functions → msgraph-sdk → the Graph emulator's calendar. The appointment appears on the organizer's calendar with
its virtual-appointment link; the scheduler's own reschedule moves it, its cancel cancels it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shared import queues
from shared.graph.calendar import APPOINTMENT_PROPERTY
from tests.e2e.conftest import read_all, send
from tests.e2e.test_lifecycle import SCHEDULER, T1, T2, apt, by_type, lifecycle, outputs

pytestmark = pytest.mark.e2e


@pytest.fixture
async def calendar_kind(stack: dict[str, Any], app_module: Any) -> AsyncIterator[None]:
    """The app's services rebuilt with MEETING_MANAGEMENT=true and MEETING_KIND=calendar for one test."""
    from shared.services import Services
    from shared.settings import load_settings

    before = app_module.services
    settings = {**stack["settings"], "CREDENTIAL_MODE": "dev_password", "WEBHOOK_RETRY_BASE_SECONDS": "1",
                "MEETING_MANAGEMENT": "true", "MEETING_KIND": "calendar"}
    app_module.services = Services(load_settings(settings))
    try:
        yield
    finally:
        await app_module.services.aclose()
        app_module.services = before


def events_of(graph_admin: httpx.Client, appointment_id: str) -> list[dict[str, Any]]:
    listed = graph_admin.get("events", params={"organizer": SCHEDULER}).json()
    return [e for e in listed if {"id": APPOINTMENT_PROPERTY, "value": appointment_id}
            in e["singleValueExtendedProperties"]]


async def test_the_appointment_is_on_the_calendar_moved_and_cancelled_by_the_scheduler(
        calendar_kind, host, queues_client, graph_admin, receiver_admin):
    # GIVEN an appointment without a meeting, sent twice (a duplicate), then rescheduled and cancelled
    appointment = apt()
    created = lifecycle("created", appointment, sequence=1, times=T1, subject="Follow-up")
    await send(queues_client, created)
    await send(queues_client, lifecycle("created", appointment, sequence=1, times=T1, subject="Follow-up",
                                        event_id="again"))
    await host.drain(timeout=60)
    # THEN exactly one event is on the organizer's calendar, with a Teams meeting and no attendees
    (event,) = events_of(graph_admin, appointment)
    assert event["isOnlineMeeting"] and event["attendees"] == [] and event["subject"] == "Follow-up"
    assert event["start"]["dateTime"].startswith("2026-12-01T08:00:00")
    results = await outputs(queues_client, queues.JOIN_URLS)
    assert {r["onlineMeetingId"] for r in results} == {event["onlineMeetingId"]}
    first = results[0]
    assert first["joinUrl"].startswith("https://visit.teams.microsoft.com/")
    assert first["organizerJoinUrl"] == event["onlineMeeting"]["joinUrl"] and first["version"] == 1
    # WHEN the scheduler reschedules it, then cancels it
    await send(queues_client, lifecycle("rescheduled", appointment, sequence=2, times=T2))
    await host.drain(timeout=60)
    (moved,) = events_of(graph_admin, appointment)
    assert moved["start"]["dateTime"].startswith("2026-12-02T14:00:00")
    assert moved["onlineMeeting"]["joinUrl"] == event["onlineMeeting"]["joinUrl"]  # PATCH of times: link holds
    await send(queues_client, lifecycle("cancelled", appointment, sequence=3, cancellationReason="Feeling better"))
    await host.drain(timeout=60)
    # THEN the event is cancelled and in Deleted Items with the reason, its Teams meeting left alone
    (gone,) = events_of(graph_admin, appointment)
    assert gone["isCancelled"] and gone["folder"] == "deleteditems" and gone["comment"] == "Feeling better"
    meetings = graph_admin.get("meetings", params={"organizer": SCHEDULER}).json()
    assert event["onlineMeetingId"] in {m["id"] for m in meetings}
    # AND the scheduler heard .ready, .updated (version 2) and .cancelled (version 3), and nothing _by_organizer
    await host.drain(timeout=30)
    hooks = by_type(receiver_admin.get("deliveries").json()["deliveries"], appointment)
    assert hooks["appointment.joinurl.updated"][0]["version"] == 2
    assert hooks["appointment.joinurl.cancelled"][0]["version"] == 3
    assert not [t for t in hooks if t.endswith("_by_organizer")]
    assert await read_all(queues_client, queues.APPOINTMENTS_REJECTED) == []
    assert graph_admin.put("calendar", json={}).json()["invitations_sent"] == 0


async def test_a_standalone_appointment_made_before_the_switch_stays_standalone(
        stack, app_module, host, queues_client, graph_admin):
    from shared.graph.meetings import external_id
    from shared.services import Services
    from shared.settings import load_settings

    # GIVEN an appointment whose meeting was made standalone (createOrGet), before MEETING_KIND=calendar
    appointment = apt()
    await send(queues_client, lifecycle("created", appointment, sequence=1, times=T1))
    await host.drain(timeout=60)
    before = app_module.services
    app_module.services = Services(load_settings({**stack["settings"], "CREDENTIAL_MODE": "dev_password",
                                                  "MEETING_MANAGEMENT": "true", "MEETING_KIND": "calendar"}))
    try:
        # WHEN it is rescheduled and cancelled after the switch
        await send(queues_client, lifecycle("rescheduled", appointment, sequence=2, times=T2))
        await host.drain(timeout=60)
        listed = graph_admin.get("meetings", params={"organizer": SCHEDULER}).json()
        (meeting,) = [m for m in listed if m.get("externalId") == external_id(appointment)]
        assert meeting["startDateTime"].startswith("2026-12-02T14:00:00")  # PATCHed as a standalone meeting
        await send(queues_client, lifecycle("cancelled", appointment, sequence=3))
        await host.drain(timeout=60)
    finally:
        await app_module.services.aclose()
        app_module.services = before
    # THEN it never got a calendar event, and its standalone meeting was deleted as before
    assert events_of(graph_admin, appointment) == []
    deleted = graph_admin.get("meetings", params={"organizer": SCHEDULER, "deleted": "true"}).json()
    assert meeting["id"] in {m["id"] for m in deleted}
    assert await read_all(queues_client, queues.APPOINTMENTS_REJECTED) == []
