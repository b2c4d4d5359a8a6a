"""Scheduler webhooks end to end: a signed Cal.com or Calendly delivery posted to the app on the local stack ends
as a join URL on `join-urls` and a webhook at the local scheduling system; a forged one gets 401 and enqueues
nothing. The bookings carry a Teams meeting link (the Graph emulator's seeded cardiology meeting)."""

from __future__ import annotations

import json
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


async def post(host, route: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(f"{host.http_base_url}/api/{route}", params={"code": KEY}, content=body,
                                 headers=headers)


async def ends_as_join_url(host, queues_client, receiver_admin, appointment_id: str, event_id: str) -> dict[str, Any]:
    await host.drain(timeout=60)
    results = [json.loads(text) for text in await read_all(queues_client, queues.JOIN_URLS)]
    (result,) = [r for r in results if r["appointmentId"] == appointment_id]
    assert result["eventId"] == event_id and "meeting_cardiology" in result["joinUrl"]
    deliveries = receiver_admin.get("deliveries").json()["deliveries"]
    assert [d["webhook_id"] for d in deliveries if d["verified"]] == [f"{event_id}_ready"]
    return result


async def test_calcom_booking_ends_as_join_url_and_webhook(host, queues_client, receiver_admin, stack):
    # GIVEN Cal.com's BOOKING_CREATED for a booking with a Teams link, signed with the configured secret
    body = vendor.body(vendor.calcom(uid="e2eBooking1", iCalUID="e2eBooking1@Cal.com"))
    headers = vendor.calcom_headers(stack["settings"]["CALCOM_WEBHOOK_SECRET"], body)
    # WHEN Cal.com posts it
    answer = await post(host, "intake/calcom", body, headers)
    # THEN 202, and the join URL and its webhook follow
    assert answer.status_code == 202, answer.text
    event_id = answer.json()["eventId"]
    await ends_as_join_url(host, queues_client, receiver_admin, "calcom:e2eBooking1@Cal.com", event_id)
    # AND a redelivery (Cal.com retrying) maps to the same event id: no second webhook
    again = await post(host, "intake/calcom", body, headers)
    assert again.status_code == 202 and again.json()["eventId"] == event_id
    await host.drain(timeout=60)
    deliveries = receiver_admin.get("deliveries").json()["deliveries"]
    assert [d["webhook_id"] for d in deliveries if d["verified"]] == [f"{event_id}_ready"]


async def test_calendly_booking_ends_as_join_url_and_webhook(host, queues_client, receiver_admin, stack):
    body = vendor.body(vendor.calendly())
    answer = await post(host, "intake/calendly", body,
                        vendor.calendly_headers(stack["settings"]["CALENDLY_WEBHOOK_SIGNING_KEY"], body))
    assert answer.status_code == 202, answer.text
    await ends_as_join_url(host, queues_client, receiver_admin, answer.json()["appointmentId"],
                           answer.json()["eventId"])


@pytest.mark.parametrize("route", ["intake/calcom", "intake/calendly", "intake/standard-webhooks"])
async def test_forged_delivery_gets_401_and_enqueues_nothing(host, queues_client, route):
    body = vendor.body(vendor.calcom() if route.endswith("calcom") else vendor.calendly())
    forged = {**vendor.calcom_headers("not-the-secret", body), **vendor.calendly_headers("not-the-key", body),
              "webhook-id": "msg_1", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"}
    answer = await post(host, route, body, forged)
    assert answer.status_code == 401 and answer.headers["content-type"].startswith("application/problem+json")
    assert await read_all(queues_client, queues.APPOINTMENTS) == []
    assert host.stats["process_appointment"]["invoked"] == 0


async def test_the_function_key_is_checked_by_the_host_first(host):
    body = vendor.body(vendor.calcom())
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(f"{host.http_base_url}/api/intake/calcom", content=body)
    assert answer.status_code == 401


async def test_a_calendly_booking_rescheduled_twice_then_cancelled_keeps_one_meeting(
        host, queues_client, receiver_admin, graph_admin, stack):
    # GIVEN a Calendly booking with no Teams link: the app makes its meeting (MEETING_MANAGEMENT=true)
    key = stack["settings"]["CALENDLY_WEBHOOK_SIGNING_KEY"]
    tag = uuid.uuid4().hex[:8].upper()
    first, second, third = f"A{tag}", f"B{tag}", f"C{tag}"
    phone = {"type": "outbound_call", "location": "+14155550100"}

    async def deliver(doc: dict[str, Any], minute: int) -> dict[str, Any]:
        doc["created_at"] = f"2026-11-20T10:{minute:02d}:00.000000Z"
        body = vendor.body(doc)
        answer = await post(host, "intake/calendly", body, vendor.calendly_headers(key, body))
        assert answer.status_code in (200, 202), answer.text
        await host.drain(timeout=60)
        return answer.json()

    created = await deliver(vendor.calendly(invitee=first, location=phone, start_time="2026-12-01T09:00:00Z",
                                            end_time="2026-12-01T09:30:00Z"), 0)
    appointment = created["appointmentId"]
    # WHEN the invitee reschedules twice (each: the cancel half, then the new invitee naming the old one)
    # and then cancels the last booking
    for minute, (old, new, start) in enumerate([(first, second, "10"), (second, third, "11")], start=1):
        ignored = await deliver(vendor.calendly("invitee.canceled", invitee=old, rescheduled=True, new_invitee=new,
                                                location=phone), minute * 2)
        assert "ignored" in ignored
        moved = await deliver(vendor.calendly(invitee=new, old_invitee=old, location=phone,
                                              start_time=f"2026-12-0{minute + 1}T{start}:00:00Z",
                                              end_time=f"2026-12-0{minute + 1}T{start}:30:00Z"), minute * 2 + 1)
        # THEN every event of the chain is about the first booking's appointment
        assert moved["appointmentId"] == appointment and moved["type"] == "appointment.rescheduled"
    cancelled = await deliver(vendor.calendly("invitee.canceled", invitee=third, location=phone), 9)
    assert cancelled["appointmentId"] == appointment
    # AND Graph saw one meeting for the whole chain, moved twice and deleted at the end; none for the new ids
    listed = graph_admin.get("meetings", params={"deleted": "true"}).json()
    made = [m for m in listed if m.get("externalId") == external_id(appointment)]
    assert len(made) == 1 and made[0]["startDateTime"].startswith("2026-12-03T11:00:00")
    assert not [m for m in graph_admin.get("meetings").json() if m.get("externalId") == external_id(appointment)]
    others = {external_id(f"calendly:{vendor.calendly(invitee=i)['payload']['uri']}") for i in (second, third)}
    assert not [m for m in listed + graph_admin.get("meetings").json() if m.get("externalId") in others]
    # AND the scheduler heard ready, updated twice, then cancelled
    types = [d["type"] for d in receiver_admin.get("deliveries").json()["deliveries"]
             if d["verified"] and (d.get("body") or {}).get("data", {}).get("appointmentId") == appointment]
    assert types == ["appointment.joinurl.ready", "appointment.joinurl.updated", "appointment.joinurl.updated",
                     "appointment.joinurl.cancelled"]
