"""Schedulers as they really behave, end to end on the local stack: signed deliveries shaped like the vendors'
own (tests/intake_payloads.py names each source), posted out of order and twice, drained through the app.

Each ends as one appointment per booking chain, at the latest time, with the meeting the attendee was actually
sent, and no meeting deleted that still has a booking. The appointment is read back through the HTTP twin's
query form, which carries every appointment id (Calendly's have slashes).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from shared import queues
from shared.graph.meetings import external_id
from tests import intake_payloads as vendor
from tests.e2e.conftest import read_all

pytestmark = pytest.mark.e2e
KEY = "local-dev-function-key"
ORGANIZER = "scheduler@contoso.test"


async def post(host, route: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(f"{host.http_base_url}/api/{route}", params={"code": KEY}, content=body,
                                 headers=headers)


async def calcom(host, stack, doc: dict[str, Any]) -> httpx.Response:
    body = vendor.body(doc)
    return await post(host, "intake/calcom", body, vendor.calcom_headers(stack["settings"]["CALCOM_WEBHOOK_SECRET"],
                                                                          body))


async def calendly(host, stack, doc: dict[str, Any]) -> httpx.Response:
    body = vendor.body(doc)
    key = stack["settings"]["CALENDLY_WEBHOOK_SIGNING_KEY"]
    return await post(host, "intake/calendly", body, vendor.calendly_headers(key, body))


async def appointment(host, appointment_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.get(f"{host.http_base_url}/api/appointments",
                                  params={"code": KEY, "appointmentId": appointment_id})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def new_meeting(graph_admin, subject: str) -> dict[str, Any]:
    """A Teams meeting made outside the app (as Cal.com's Teams app or Calendly's integration makes one)."""
    made = graph_admin.post("meetings", json={"organizer": ORGANIZER, "subject": subject})
    assert made.status_code == 201, made.text
    meeting: dict[str, Any] = made.json()
    return meeting


def webhook_types(receiver_admin, appointment_id: str) -> list[str]:
    return [d["type"] for d in receiver_admin.get("deliveries").json()["deliveries"]
            if d["verified"] and (d.get("body") or {}).get("data", {}).get("appointmentId") == appointment_id]


def deleted_ids(graph_admin) -> set[str]:
    return {m["id"] for m in graph_admin.get("meetings", params={"deleted": "true"}).json()}


async def test_calcom_triggers_of_other_shapes_are_200_ignored(host, queues_client, stack):
    # Cal.com's scheduleTrigger: MEETING_STARTED / MEETING_ENDED are the flat booking row, no payload object
    for doc in (vendor.calcom_scheduled("MEETING_ENDED"), vendor.calcom_scheduled("MEETING_STARTED"),
                {"triggerEvent": "RECORDING_READY", "downloadLink": "https://app.cal.com/r/1"}):
        for _ in range(2):
            answer = await calcom(host, stack, doc)
            assert answer.status_code == 200 and "ignored" in answer.json(), answer.text
    # AND a body the app needs but cannot read is still 400, a forged one 401
    broken = await calcom(host, stack, {"triggerEvent": "BOOKING_CREATED"})
    assert broken.status_code == 400 and broken.json()["reason"] == "invalid_payload"
    body = vendor.body(vendor.calcom_scheduled())
    forged = await post(host, "intake/calcom", body, vendor.calcom_headers("not-the-secret", body))
    assert forged.status_code == 401
    assert await read_all(queues_client, queues.APPOINTMENTS) == []
    assert host.stats["process_appointment"]["invoked"] == 0


async def test_calcom_request_reschedule_keeps_the_appointment_and_follows_the_new_meeting(
        host, receiver_admin, graph_admin, stack):
    # GIVEN a Cal.com booking whose Teams meeting Cal.com's Teams app made (metadata.videoCallUrl)
    tag = uuid.uuid4().hex[:10]
    first, second = new_meeting(graph_admin, "first booking"), new_meeting(graph_admin, "the new time")
    booking = {"uid": f"u1{tag}", "iCalUID": f"u1{tag}@Cal.com", "metadata": {"videoCallUrl": first["joinWebUrl"]},
               "startTime": "2026-12-10T09:00:00Z", "endTime": "2026-12-10T09:30:00Z"}
    created = await calcom(host, stack, vendor.calcom(**booking))
    assert created.status_code == 202, created.text
    appointment_id = created.json()["appointmentId"]
    await host.drain(timeout=60)
    # WHEN the host asks the attendee to reschedule (Cal.com cancels the booking with its request-reschedule marks)
    asked = vendor.calcom_request_reschedule(uid=booking["uid"], iCalUID=booking["iCalUID"],
                                             startTime=booking["startTime"], endTime=booking["endTime"])
    # AND the attendee books the new time: BOOKING_RESCHEDULED naming the old booking, same iCalUID, and the
    # Teams app's new meeting; Cal.com retries, and the request-reschedule cancel arrives again, late
    moved = vendor.calcom("BOOKING_RESCHEDULED", uid=f"u2{tag}", rescheduleUid=booking["uid"],
                          iCalUID=booking["iCalUID"], metadata={"videoCallUrl": second["joinWebUrl"]},
                          startTime="2026-12-12T14:00:00Z", endTime="2026-12-12T14:30:00Z")
    moved["createdAt"] = "2023-05-24T13:00:00.000Z"
    answers = []
    for doc in (asked, moved, moved, asked):
        answers.append(await calcom(host, stack, doc))
        # one at a time: two copies of one event in flight at once wait on each other by design (a requeue)
        await host.drain(timeout=60)
    assert [a.status_code for a in answers] == [200, 202, 202, 200], [a.text for a in answers]
    assert answers[0].json()["appointmentId"] == appointment_id == answers[1].json()["appointmentId"]
    # THEN one appointment, alive, at the new time, with the link of the meeting the attendee was sent
    now = await appointment(host, appointment_id)
    assert now["status"] == "scheduled" and now["startDateTime"] == "2026-12-12T14:00:00.000Z"
    assert now["onlineMeetingId"] == second["id"] and now["joinUrl"] == second["virtualAppointmentJoinWebUrl"]
    assert now["organizerJoinUrl"] == second["joinWebUrl"] and now["meetingCreatedByApp"] is False
    # AND the scheduler heard ready, then updated with the new links; no meeting was deleted
    assert webhook_types(receiver_admin, appointment_id) == ["appointment.joinurl.ready",
                                                             "appointment.joinurl.updated"]
    updated = [d for d in receiver_admin.get("deliveries").json()["deliveries"]
               if d["type"] == "appointment.joinurl.updated" and d["body"]["data"]["appointmentId"] == appointment_id]
    assert updated[0]["body"]["data"]["joinUrl"] == second["virtualAppointmentJoinWebUrl"]
    assert not {first["id"], second["id"]} & deleted_ids(graph_admin)


async def test_a_reschedule_with_another_supplied_meeting_out_of_order_and_twice(
        host, receiver_admin, graph_admin, stack):
    # Cal.com's Teams app makes a new meeting when a booking moves; here the reschedule arrives first
    tag = uuid.uuid4().hex[:10]
    first, second = new_meeting(graph_admin, "before"), new_meeting(graph_admin, "after")
    created = vendor.calcom(uid=f"v1{tag}", iCalUID=f"v1{tag}@Cal.com", metadata={"videoCallUrl": first["joinWebUrl"]})
    moved = vendor.calcom("BOOKING_RESCHEDULED", uid=f"v2{tag}", rescheduleUid=f"v1{tag}", iCalUID=f"v1{tag}@Cal.com",
                          metadata={"videoCallUrl": second["joinWebUrl"]})
    moved["createdAt"] = "2023-05-24T11:00:00.000Z"
    for doc in (moved, created, moved, created):
        answer = await calcom(host, stack, doc)
        assert answer.status_code == 202, answer.text
        await host.drain(timeout=60)
    now = await appointment(host, f"calcom:v1{tag}@Cal.com")
    assert now["onlineMeetingId"] == second["id"] and now["startDateTime"] == "2023-05-26T11:00:00.000Z"
    assert now["joinUrl"] == second["virtualAppointmentJoinWebUrl"]
    assert not {first["id"], second["id"]} & deleted_ids(graph_admin)


async def test_a_late_calendly_retry_ends_as_one_appointment_at_the_latest_time_with_one_meeting(
        host, receiver_admin, graph_admin, stack):
    # GIVEN a Calendly booking (phone location: the app makes the meeting), rescheduled twice; Calendly's
    # deliveries of the first booking and of the first reschedule fail and are retried late, after the second
    tag = uuid.uuid4().hex[:8].upper()
    a, b, c = f"A{tag}", f"B{tag}", f"C{tag}"
    phone = {"type": "outbound_call", "location": "+14155550100"}

    def at(doc: dict[str, Any], minute: int) -> dict[str, Any]:
        doc["created_at"] = f"2026-11-20T10:{minute:02d}:00.000000Z"
        return doc

    booked = at(vendor.calendly(invitee=a, location=phone, start_time="2026-12-01T09:00:00Z",
                                end_time="2026-12-01T09:30:00Z"), 0)
    first_cancel = at(vendor.calendly("invitee.canceled", invitee=a, rescheduled=True, new_invitee=b,
                                      location=phone), 1)
    first_move = at(vendor.calendly(invitee=b, old_invitee=a, location=phone, start_time="2026-12-02T10:00:00Z",
                                    end_time="2026-12-02T10:30:00Z"), 1)
    second_cancel = at(vendor.calendly("invitee.canceled", invitee=b, rescheduled=True, new_invitee=c,
                                       location=phone), 2)
    second_move = at(vendor.calendly(invitee=c, old_invitee=b, location=phone, start_time="2026-12-03T11:00:00Z",
                                     end_time="2026-12-03T11:30:00Z"), 2)
    # WHEN they arrive: the second reschedule first, then the late retries, then every one again
    order = [second_move, second_cancel, booked, first_move, first_cancel]
    for doc in order + order:
        answer = await calendly(host, stack, doc)
        assert answer.status_code in (200, 202), answer.text
        await host.drain(timeout=60)
    # THEN the first booking's appointment is the chain's one live appointment, at the latest booking's time
    root = f"calendly:{booked['payload']['uri']}"
    now = await appointment(host, root)
    assert now["status"] == "scheduled" and now["startDateTime"] == "2026-12-03T11:00:00.000Z", now
    assert now["meetingCreatedByApp"] is True
    # AND the part that was cut off (keyed by B while B's link was missing) is cancelled
    cut = await appointment(host, f"calendly:{first_move['payload']['uri']}")
    assert cut["status"] == "cancelled"
    # AND of the app's meetings for this chain one is live, the appointment's own, at the latest time
    made = [m for m in graph_admin.get("meetings").json()
            if m.get("externalId") in {external_id(root), external_id(f"calendly:{first_move['payload']['uri']}")}]
    assert [m["id"] for m in made] == [now["onlineMeetingId"]]
    assert made[0]["startDateTime"].startswith("2026-12-03T11:00:00")
    # AND the scheduler heard the chain's last word on each: the appointment updated, the cut part cancelled
    assert webhook_types(receiver_admin, root)[-1] == "appointment.joinurl.updated"
    assert webhook_types(receiver_admin, f"calendly:{first_move['payload']['uri']}")[-1] == (
        "appointment.joinurl.cancelled")


async def test_a_teams_link_in_a_calendly_custom_location_is_the_meeting(host, graph_admin, stack):
    # A clinic's standing meeting, pasted as Calendly's custom location (free text around the link)
    tag = uuid.uuid4().hex[:8].upper()
    standing = new_meeting(graph_admin, "standing clinic meeting")
    custom = {"type": "custom", "location": f"Online clinic: {standing['joinWebUrl']}"}
    doc = vendor.calendly(invitee=f"S{tag}", location=custom)
    for _ in range(2):
        answer = await calendly(host, stack, doc)
        assert answer.status_code == 202, answer.text
    await host.drain(timeout=60)
    appointment_id = answer.json()["appointmentId"]
    assert "/" in appointment_id  # a Calendly invitee URI, looked up through the query form
    now = await appointment(host, appointment_id)
    assert now["onlineMeetingId"] == standing["id"] and now["meetingCreatedByApp"] is False
    assert now["joinUrl"] == standing["virtualAppointmentJoinWebUrl"]
    assert not [m for m in graph_admin.get("meetings").json() if m.get("externalId") == external_id(appointment_id)]
