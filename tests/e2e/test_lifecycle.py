"""The appointment lifecycle end to end: Azurite queues and table → harness → real functions → msgraph-sdk →
the Graph emulator, which keeps the meetings the app creates, updates and deletes."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest

from shared import queues
from shared.graph.meetings import external_id
from tests.e2e.conftest import read_all, send

pytestmark = pytest.mark.e2e
SCHEDULER = "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a"
DR_ADAMS = "dr.adams@contoso.test"
CARDIOLOGY = "MSo0YzdlMWQyYS05YjNmLTRlNWQtOGE2Yy0xZjJlM2Q0YzViNmEqMCoqMTk6bWVldGluZ19jYXJkaW9sb2d5QHRocmVhZC52Mg=="
T1 = ("2026-12-01T09:00:00+01:00", "2026-12-01T09:30:00+01:00")
T2 = ("2026-12-02T14:00:00Z", "2026-12-02T14:45:00Z")
CLIENT_ID = "5b1f0c2e-8d4a-4f6b-9c3e-2a7d6e5f4c3b"


def apt() -> str:
    return f"apt-{uuid.uuid4().hex[:10]}"


def lifecycle(event_type: str, appointment_id: str, *, sequence: int | None = None,
              times: tuple[str, str] | None = None, event_id: str | None = None, **fields: Any) -> str:
    body: dict[str, Any] = {"id": event_id or f"{appointment_id}-{event_type}-{sequence}",
                            "type": f"appointment.{event_type}", "appointmentId": appointment_id,
                            "organizer": SCHEDULER, **fields}
    if sequence is not None:
        body["sequence"] = sequence
    if times is not None:
        body["startDateTime"], body["endDateTime"] = times
    return json.dumps(body)


async def outputs(client, queue: str) -> list[dict[str, Any]]:
    return [json.loads(text) for text in await read_all(client, queue)]


def meetings_of(graph_admin: httpx.Client, appointment_id: str, deleted: bool = False) -> list[dict[str, Any]]:
    listed = graph_admin.get("meetings", params={"organizer": SCHEDULER,
                                                 **({"deleted": "true"} if deleted else {})}).json()
    return [m for m in listed if m.get("externalId") == external_id(appointment_id)]


def by_type(deliveries: list[dict[str, Any]], appointment_id: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for d in deliveries:
        body = d.get("body") or {}
        if isinstance(body, dict) and (body.get("data") or {}).get("appointmentId") == appointment_id:
            found.setdefault(d["type"], []).append(body["data"])
    return found


async def test_created_without_a_meeting_gets_one_and_both_links(host, queues_client, graph_admin, receiver_admin):
    # GIVEN an appointment with no meeting, its times, subject and a member of staff
    appointment = apt()
    await send(queues_client, lifecycle("created", appointment, sequence=1, times=T1, subject="Follow-up",
                                        participants=[{"user": DR_ADAMS, "role": "presenter"}]))
    # WHEN the app processes it
    await host.drain(timeout=60)
    # THEN Graph made exactly one meeting, as the organizer, with those times and that staff member
    (meeting,) = meetings_of(graph_admin, appointment)
    assert meeting["startDateTime"].startswith("2026-12-01T08:00:00") and meeting["subject"] == "Follow-up"
    assert meeting["participants"] == ["8e2f3a4b-5c6d-4e7f-9a0b-1c2d3e4f5a6b"]
    # AND the result carries both links, the meeting, its times and that the app created it
    (result,) = await outputs(queues_client, queues.JOIN_URLS)
    assert result["joinUrl"].startswith("https://visit.teams.microsoft.com/")
    assert result["organizerJoinUrl"] == meeting["joinWebUrl"] and result["onlineMeetingId"] == meeting["id"]
    assert (result["startDateTime"], result["endDateTime"]) == ("2026-12-01T08:00:00.000Z", "2026-12-01T08:30:00.000Z")
    assert result["meetingCreatedByApp"] is True and result["status"] == "scheduled"
    assert result["eventType"] == "appointment.created"
    # AND the scheduler got it as a signed .ready webhook
    await host.drain(timeout=30)
    hooks = by_type(receiver_admin.get("deliveries").json()["deliveries"], appointment)
    assert hooks["appointment.joinurl.ready"][0]["organizerJoinUrl"] == meeting["joinWebUrl"]


async def test_duplicates_and_replays_make_one_meeting(host, queues_client, graph_admin):
    # GIVEN the same created event twice, and a replay of it under a new event id
    appointment = apt()
    created = lifecycle("created", appointment, sequence=1, times=T1)
    await send(queues_client, created)
    await send(queues_client, created)
    await send(queues_client, lifecycle("created", appointment, sequence=1, times=T1, event_id="replayed"))
    # WHEN all are processed
    await host.drain(timeout=60)
    # THEN there is one meeting, and every answer names it
    (meeting,) = meetings_of(graph_admin, appointment)
    answers = await outputs(queues_client, queues.JOIN_URLS)
    assert answers and {a["onlineMeetingId"] for a in answers} == {meeting["id"]}
    assert await read_all(queues_client, queues.APPOINTMENTS_REJECTED) == []


async def test_reschedule_patches_both_times_and_cancel_deletes(host, queues_client, graph_admin, receiver_admin):
    appointment = apt()
    await send(queues_client, lifecycle("created", appointment, sequence=1, times=T1))
    await host.drain(timeout=60)
    (meeting,) = meetings_of(graph_admin, appointment)
    # WHEN it is rescheduled
    await send(queues_client, lifecycle("rescheduled", appointment, sequence=2, times=T2, subject="Moved"))
    await host.drain(timeout=60)
    # THEN one PATCH moved both times, and the links stayed the same
    (moved,) = meetings_of(graph_admin, appointment)
    assert graph_admin.get("config").json()["updates"] == 1
    assert moved["id"] == meeting["id"] and moved["startDateTime"].startswith("2026-12-02T14:00:00")
    assert moved["endDateTime"].startswith("2026-12-02T14:45:00") and moved["subject"] == "Moved"
    # WHEN it is cancelled
    await send(queues_client, lifecycle("cancelled", appointment, sequence=3))
    await host.drain(timeout=60)
    # THEN the meeting is deleted, once
    assert meetings_of(graph_admin, appointment) == []
    assert [m["id"] for m in meetings_of(graph_admin, appointment, deleted=True)] == [meeting["id"]]
    results = {r["eventType"]: r for r in await outputs(queues_client, queues.JOIN_URLS)}
    assert results["appointment.rescheduled"]["joinUrl"] == results["appointment.created"]["joinUrl"]
    assert results["appointment.cancelled"]["status"] == "cancelled"
    assert results["appointment.cancelled"]["joinUrl"] is None
    # AND the scheduler heard .updated (new times) and .cancelled
    await host.drain(timeout=30)
    hooks = by_type(receiver_admin.get("deliveries").json()["deliveries"], appointment)
    assert hooks["appointment.joinurl.updated"][0]["startDateTime"] == "2026-12-02T14:00:00.000Z"
    assert hooks["appointment.joinurl.cancelled"][0]["status"] == "cancelled"


async def test_reschedule_before_create_creates_with_the_new_times(host, queues_client, graph_admin):
    appointment = apt()
    await send(queues_client, lifecycle("rescheduled", appointment, sequence=2, times=T2))
    await host.drain(timeout=60)
    await send(queues_client, lifecycle("created", appointment, sequence=1, times=T1))
    await host.drain(timeout=60)
    (meeting,) = meetings_of(graph_admin, appointment)
    assert meeting["startDateTime"].startswith("2026-12-02T14:00:00")
    # The late create is answered from the record (a scheduler's retry): the appointment as it now is, no rejection
    assert await outputs(queues_client, queues.APPOINTMENTS_REJECTED) == []
    late = [r for r in await outputs(queues_client, queues.JOIN_URLS) if r.get("eventType") == "appointment.created"]
    assert late and late[-1]["startDateTime"].startswith("2026-12-02T14:00:00")


async def test_stale_reschedule_changes_nothing(host, queues_client, graph_admin):
    appointment = apt()
    await send(queues_client, lifecycle("created", appointment, sequence=1, times=T1))
    await host.drain(timeout=60)
    await send(queues_client, lifecycle("rescheduled", appointment, sequence=3, times=T2))
    await host.drain(timeout=60)
    await send(queues_client, lifecycle("rescheduled", appointment, sequence=2, times=T1))
    await host.drain(timeout=60)
    (meeting,) = meetings_of(graph_admin, appointment)
    assert meeting["startDateTime"].startswith("2026-12-02T14:00:00")
    assert graph_admin.get("config").json()["updates"] == 1
    (rejection,) = await outputs(queues_client, queues.APPOINTMENTS_REJECTED)
    assert rejection["reason"] == "stale_event"


async def test_create_or_reschedule_after_cancel_makes_no_meeting(host, queues_client, graph_admin):
    appointment = apt()
    await send(queues_client, lifecycle("cancelled", appointment, sequence=3))
    await host.drain(timeout=60)
    await send(queues_client, lifecycle("created", appointment, sequence=1, times=T1))
    await send(queues_client, lifecycle("rescheduled", appointment, sequence=2, times=T2))
    await host.drain(timeout=60)
    assert meetings_of(graph_admin, appointment) == [] == meetings_of(graph_admin, appointment, deleted=True)
    reasons = sorted(r["reason"] for r in await outputs(queues_client, queues.APPOINTMENTS_REJECTED))
    assert reasons == ["appointment_cancelled", "appointment_cancelled"]


async def test_events_of_one_appointment_at_once_never_make_two_meetings_or_leave_one(host, queues_client,
                                                                                     graph_admin):
    # GIVEN create, two reschedules and the cancel of one appointment, all in the queue together, twice over
    appointment = apt()
    messages = [lifecycle("created", appointment, sequence=1, times=T1),
                lifecycle("rescheduled", appointment, sequence=2, times=T2),
                lifecycle("rescheduled", appointment, sequence=3, times=T1),
                lifecycle("cancelled", appointment, sequence=4)]
    await asyncio.gather(*(send(queues_client, m) for m in messages + messages[::-1]))
    # WHEN the host runs them concurrently (events that meet another's lease come back after 5 s, 15 s, 45 s...:
    # a loaded machine can need the fourth round)
    await host.drain(timeout=300)
    # THEN at most one meeting was ever made, and none is left behind
    assert meetings_of(graph_admin, appointment) == []
    assert len(meetings_of(graph_admin, appointment, deleted=True)) <= 1
    assert await read_all(queues_client, queues.APPOINTMENTS_POISON) == []


async def test_a_supplied_meeting_is_never_changed_or_deleted(host, queues_client, graph_admin):
    appointment = apt()
    await send(queues_client, lifecycle("created", appointment, sequence=1, onlineMeetingId=CARDIOLOGY))
    await host.drain(timeout=60)
    await send(queues_client, lifecycle("rescheduled", appointment, sequence=2, times=T2))
    await host.drain(timeout=60)
    await send(queues_client, lifecycle("cancelled", appointment, sequence=3))
    await host.drain(timeout=60)
    listed = {m["id"] for m in graph_admin.get("meetings").json()}
    assert CARDIOLOGY in listed and graph_admin.get("config").json()["updates"] == 0
    results = {r["eventType"]: r for r in await outputs(queues_client, queues.JOIN_URLS)}
    assert results["appointment.rescheduled"]["startDateTime"] == "2026-12-02T14:00:00.000Z"
    assert results["appointment.rescheduled"]["meetingCreatedByApp"] is False
    assert results["appointment.cancelled"]["status"] == "cancelled"


async def test_organizer_without_the_write_scope_is_rejected_missing_scope_on_the_first_attempt(
        host, queues_client, stack, graph_admin):
    # GIVEN a tenant whose admin consented only to the read scopes, and an organizer who never consented more
    import ssl

    verify = ssl.create_default_context(cafile=stack["ca_bundle"])
    with httpx.Client(base_url=stack["entra"]["admin_url"] + "/", verify=verify, timeout=10) as entra:
        entra.put("consent", json={"client_id": CLIENT_ID,
                                   "scopes": ["VirtualAppointment.Read", "OnlineMeetings.Read"]}).raise_for_status()
        # (and who has not consented to it either, on a consent page of an earlier test)
        entra.request("DELETE", "consent", json={"user": DR_ADAMS}).raise_for_status()
        try:
            # (an organizer no earlier test used, so no token with the scope is cached in the worker)
            appointment = apt()
            await send(queues_client, lifecycle("created", appointment, sequence=1, times=T1, organizer=DR_ADAMS))
            await host.drain(timeout=60)
        finally:
            entra.post("reset").raise_for_status()
    # THEN it is rejected at once with missing_scope and how to grant it; no meeting, no retries
    (rejection,) = await outputs(queues_client, queues.APPOINTMENTS_REJECTED)
    assert rejection["reason"] == "missing_scope" and rejection["dequeueCount"] == 1
    assert "OnlineMeetings.ReadWrite" in rejection["detail"] and "consent" in rejection["detail"]
    assert graph_admin.get("meetings", params={"organizer": DR_ADAMS}).json() == [
        m for m in graph_admin.get("meetings").json() if m["organizer"] == "8e2f3a4b-5c6d-4e7f-9a0b-1c2d3e4f5a6b"
        and not m.get("externalId")]
    assert host.stats["process_appointment"]["failed"] == 0


async def test_the_http_twin_answers_from_the_appointment_record(host, queues_client, graph_admin, stack):
    appointment = apt()
    await send(queues_client, lifecycle("created", appointment, sequence=1, times=T1))
    await host.drain(timeout=60)
    requests_before = graph_admin.get("stats").json()["requests"]
    async with httpx.AsyncClient(base_url=host.http_base_url, timeout=10,
                                 headers={"x-functions-key": "local-dev-function-key"}) as client:
        found = await client.get(f"/api/appointments/{appointment}")
        missing = await client.get("/api/appointments/never-seen")
    assert found.status_code == 200
    body = found.json()
    assert body["joinUrl"] and body["organizerJoinUrl"] and body["meetingCreatedByApp"] is True
    assert body["status"] == "scheduled" and body["startDateTime"] == "2026-12-01T08:00:00.000Z"
    assert graph_admin.get("stats").json()["requests"] == requests_before  # no Graph call
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["reason"] == "appointment_not_found"


@pytest.fixture
async def sms_app(app_module, stack):
    """The app with client SMS (and the reminder) on, for one test; the session's services come back after."""
    from shared.services import Services
    from shared.settings import load_settings

    original = app_module.services
    app_module.services = Services(load_settings({**stack["settings"], "CREDENTIAL_MODE": "dev_password",
                                                  "CLIENT_SMS": "true", "CLIENT_SMS_REMINDER": "mins15"}))
    try:
        yield app_module
    finally:
        await app_module.services.aclose()
        app_module.services = original


async def test_client_sms_go_out_and_a_failed_one_is_recorded_without_touching_the_link(
        sms_app, host, queues_client, graph_admin, receiver_admin):
    clients = [{"displayName": "Ann Lee", "phone": "+14255550100", "timeZone": "America/New_York"}]
    # GIVEN a tenant with Teams Premium: the created appointment's client gets a confirmation and the reminder
    appointment = apt()
    await send(queues_client, lifecycle("created", appointment, sequence=1, times=T1, clients=clients))
    await host.drain(timeout=60)
    sent = graph_admin.get("config").json()["sms_sent"]
    assert sorted(s["type"] for s in sent) == ["confirmation", "mins15"] and all(s["recipients"] == 1 for s in sent)
    # WHEN the tenant has no Teams Premium and the appointment is cancelled
    graph_admin.put("config", json={"teams_premium": False}).raise_for_status()
    await send(queues_client, lifecycle("cancelled", appointment, sequence=2, clients=clients))
    await host.drain(timeout=60)
    # THEN the meeting is still deleted and the scheduler told so; the failed text has its record and webhook
    assert meetings_of(graph_admin, appointment) == []
    results = {r["eventType"]: r for r in await outputs(queues_client, queues.JOIN_URLS)}
    assert results["appointment.cancelled"]["status"] == "cancelled"
    (failed,) = await outputs(queues_client, queues.SMS_FAILED)
    assert failed["messageType"] == "cancellation" and failed["reason"] == "forbidden"
    await host.drain(timeout=30)
    hooks = by_type(receiver_admin.get("deliveries").json()["deliveries"], appointment)
    assert hooks["appointment.joinurl.sms_failed"][0]["messageType"] == "cancellation"
    assert hooks["appointment.joinurl.cancelled"]
