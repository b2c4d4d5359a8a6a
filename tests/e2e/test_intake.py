"""Scheduler webhooks end to end: a signed Cal.com or Calendly delivery posted to the app on the local stack ends
as a join URL on `join-urls` and a webhook at the local scheduling system; a forged one gets 401 and enqueues
nothing. The bookings carry a Teams meeting link (the Graph emulator's seeded cardiology meeting)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from shared import queues
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
