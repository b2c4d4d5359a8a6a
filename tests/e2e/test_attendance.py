"""Attendance end to end: an appointment ends, the Graph emulator plays its session, and the scheduler's receiver
gets `appointment.attendance` through the worker (check_attendance reading the reports as the organizer)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared import queues
from shared.graph.meetings import external_id
from tests.e2e.conftest import read_all, send

pytestmark = pytest.mark.e2e
SCHEDULER = "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a"
CLIENT = "pat.client@example.org"
FUNCTION_KEY = "local-dev-function-key"


@pytest.fixture
async def attendance_on(stack: dict[str, Any], app_module: Any) -> AsyncIterator[Any]:
    """The worker's services with ATTENDANCE_REPORTS on and no grace, for this test only."""
    from shared.services import Services
    from shared.settings import load_settings

    before = app_module.services
    settings = {**stack["settings"], "CREDENTIAL_MODE": "dev_password", "WEBHOOK_RETRY_BASE_SECONDS": "1",
                "ATTENDANCE_REPORTS": "true", "ATTENDANCE_GRACE_MINUTES": "0"}
    app_module.services = Services(load_settings(settings))
    try:
        yield app_module.services
    finally:
        await app_module.services.aclose()
        app_module.services = before


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def _meeting(graph_admin: httpx.Client, appointment_id: str) -> dict[str, Any]:
    for _ in range(200):
        listed = graph_admin.get("meetings", params={"organizer": SCHEDULER}).json()
        found = [m for m in listed if m.get("externalId") == external_id(appointment_id)]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError("the app made no meeting")


async def _ended_appointment(host, queues_client, graph_admin, attendees_of) -> dict[str, Any]:
    """An appointment that ends a few seconds from now (its check waits for it), and its session, played."""
    appointment = f"apt-{uuid.uuid4().hex[:10]}"
    now = datetime.now(UTC)
    start, end = now - timedelta(minutes=30), now + timedelta(seconds=6)
    await send(queues_client, json.dumps({
        "id": f"{appointment}-created", "type": "appointment.created", "appointmentId": appointment,
        "organizer": SCHEDULER, "startDateTime": _iso(start), "endDateTime": _iso(end), "sequence": 1,
        "clients": [{"displayName": "Pat", "email": CLIENT}]}))
    meeting = await _meeting(graph_admin, appointment)
    session_start = now - timedelta(minutes=25)
    played = graph_admin.post(f"meetings/{meeting['id']}/sessions",
                              json={"start": _iso(session_start), "attendees": attendees_of(session_start)})
    assert played.status_code == 201, played.text
    await host.drain(timeout=60)
    return {"appointment": appointment, "meeting": meeting}


def _attendance_hooks(receiver_admin: httpx.Client, appointment: str) -> list[dict[str, Any]]:
    return [d for d in receiver_admin.get("deliveries").json()["deliveries"]
            if d["type"] == "appointment.attendance" and d["body"]["data"]["appointmentId"] == appointment]


async def test_a_client_who_never_joins_is_a_client_no_show(attendance_on, host, queues_client, graph_admin,
                                                            receiver_admin):
    # GIVEN an appointment whose session had only its organizer, for 20 minutes
    made = await _ended_appointment(host, queues_client, graph_admin, lambda start: [
        {"user": SCHEDULER, "role": "Organizer", "joinOffsetSeconds": 0, "seconds": 1200}])
    # THEN the scheduler hears client_no_show, with the organizer's time present
    (hook,) = _attendance_hooks(receiver_admin, made["appointment"])
    data = hook["body"]["data"]
    assert data["outcome"] == "client_no_show" and data["sessions"] == 1, (data["reason"], data["detail"])
    assert data["organizerAttendance"]["secondsPresent"] == 1200 and data["clients"] == []
    # AND the attendance queue has the record, and the HTTP twin's appointment shows it
    results = [json.loads(t) for t in await read_all(queues_client, queues.ATTENDANCE)]
    assert [r["outcome"] for r in results if r["appointmentId"] == made["appointment"]] == ["client_no_show"]
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{host.http_base_url}/api/appointments/{made['appointment']}",
                                  params={"code": FUNCTION_KEY})
    assert answer.status_code == 200 and answer.json()["attendance"]["outcome"] == "client_no_show"


async def test_both_joining_is_attended_with_both_durations(attendance_on, host, queues_client, graph_admin,
                                                            receiver_admin):
    # GIVEN a session the organizer joined for 20 minutes and the client (by the e-mail the scheduler sent) for 15
    made = await _ended_appointment(host, queues_client, graph_admin, lambda start: [
        {"user": SCHEDULER, "role": "Organizer", "joinOffsetSeconds": 0, "seconds": 1200},
        {"email": CLIENT, "displayName": "Pat", "role": "Attendee", "joinOffsetSeconds": 120, "seconds": 900},
        {"displayName": "Interpreter", "role": "Attendee", "intervals": [
            {"joinOffsetSeconds": 60, "seconds": 300}, {"joinOffsetSeconds": 600, "seconds": 300}]}])
    (hook,) = _attendance_hooks(receiver_admin, made["appointment"])
    data = hook["body"]["data"]
    assert data["outcome"] == "attended"
    assert data["organizerAttendance"]["secondsPresent"] == 1200
    named = [c for c in data["clients"] if c["email"] == CLIENT]
    assert named and named[0]["secondsPresent"] == 900
    # An anonymous guest is counted as a client, never named
    assert data["clientsJoined"] == 2 and [c["secondsPresent"] for c in data["clients"] if c["email"] is None] == [600]
