"""Webhooks end to end: signed delivery, outages, dead letters, duplicates (local stack)."""

from __future__ import annotations

import asyncio
import json

import pytest
from standardwebhooks.webhooks import Webhook

from shared import queues
from tests.e2e.conftest import read_all, send
from tests.e2e.test_pipeline import CARDIOLOGY, plain
from tests.schemas import assert_message_valid

pytestmark = pytest.mark.e2e


def deliveries(receiver_admin) -> list[dict]:
    return receiver_admin.get("deliveries").json()["deliveries"]


async def test_ready_webhook_arrives_signed_per_standard_webhooks(host, queues_client, receiver_admin, stack):
    # GIVEN an appointment WHEN it is processed
    await send(queues_client, plain("wh-1", appointment_id="apt-wh-1"))
    await host.drain(timeout=30)
    # THEN exactly one delivery arrived, verifiable with the reference implementation
    (delivery,) = deliveries(receiver_admin)
    assert delivery["webhook_id"] == "wh-1_ready" and delivery["verified"] and delivery["status"] == 200
    headers = {"webhook-id": delivery["webhook_id"], "webhook-timestamp": delivery["timestamp"],
               "webhook-signature": delivery["signature"]}
    payload = Webhook(stack["settings"]["WEBHOOK_SECRET"]).verify(delivery["raw_body"], headers)
    assert payload["type"] == "appointment.joinurl.ready" and payload["data"]["appointmentId"] == "apt-wh-1"
    assert "meeting_cardiology" in payload["data"]["joinUrl"]


async def test_rejection_sends_a_failed_webhook_with_the_reason(host, queues_client, receiver_admin):
    await send(queues_client, plain("wh-2", appointment_id="apt-wh-2", meeting_id="MSpub3RoZXJl"))
    await host.drain(timeout=30)
    (delivery,) = deliveries(receiver_admin)
    assert delivery["type"] == "appointment.joinurl.failed"
    assert delivery["body"]["data"]["reason"] == "meeting_not_found" and delivery["body"]["data"]["detail"]


async def test_receiver_down_then_up_is_delivered_exactly_once(host, queues_client, receiver_admin, graph_admin):
    # GIVEN the receiver answers 503 to the next three attempts (an outage)
    receiver_admin.put("fail", json={"status": 503, "times": 3})
    await send(queues_client, plain("wh-3", appointment_id="apt-wh-3"))
    # WHEN the host works through the backed-off retries
    await host.drain(timeout=90)
    # THEN the fourth attempt got through, once; Graph was called once; nothing is in poison
    answered = [d["status"] for d in deliveries(receiver_admin)]
    assert answered == [503, 503, 503, 200]
    assert {d["webhook_id"] for d in deliveries(receiver_admin)} == {"wh-3_ready"}
    assert graph_admin.get("stats").json()["requests"] == 1
    assert await read_all(queues_client, queues.WEBHOOK_OUTBOX_POISON) == []


async def test_gone_receiver_dead_letters_with_status_and_excerpt(host, queues_client, receiver_admin):
    receiver_admin.put("fail", json={"status": 410, "times": 1})
    await send(queues_client, plain("wh-4", appointment_id="apt-wh-4"))
    await host.drain(timeout=30)
    (record,) = [json.loads(t) for t in await read_all(queues_client, queues.WEBHOOK_DEAD_LETTER)]
    assert record["status"] == 410 and record["webhookId"] == "wh-4_ready" and "injected_failure" in \
        record["responseExcerpt"]
    assert len(deliveries(receiver_admin)) == 1
    # The app writes the dead letter itself, valid against its schema and without expiry (never the 7-day default)
    assert_message_valid(queues.WEBHOOK_DEAD_LETTER, json.dumps(record))
    (message,) = await queues_client.get_queue_client(queues.WEBHOOK_DEAD_LETTER).peek_messages()
    assert message.expires_on.year == 9999


async def test_duplicate_event_makes_one_graph_call_and_one_delivery(host, queues_client, receiver_admin,
                                                                     graph_admin):
    message = plain("wh-5", appointment_id="apt-wh-5", meeting_id=CARDIOLOGY)
    await send(queues_client, message)
    await host.drain(timeout=30)
    await send(queues_client, message)  # the scheduler sends it again
    await host.drain(timeout=30)
    await asyncio.sleep(0.2)
    assert graph_admin.get("stats").json()["requests"] == 1
    assert [d["webhook_id"] for d in deliveries(receiver_admin)] == ["wh-5_ready"]


async def test_receiver_not_running_then_started_gets_the_webhook_once(app_module, host, queues_client, stack,
                                                                       monkeypatch):
    """A real outage: nothing listens on the webhook port (connection refused) until the receiver starts."""
    import socket
    import ssl

    from aiohttp import web

    from devstack.certs import ensure_certs
    from devstack.receiver import STATE_KEY, create_receiver_app
    from shared.services import Services
    from shared.settings import load_settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = {**stack["settings"], "CREDENTIAL_MODE": "dev_password", "WEBHOOK_RETRY_BASE_SECONDS": "1",
                "WEBHOOK_URL": f"https://127.0.0.1:{port}/webhooks"}
    services = Services(load_settings(settings))
    monkeypatch.setattr(app_module, "services", services)
    # GIVEN the scheduling system is down WHEN an appointment is processed
    await send(queues_client, plain("wh-down-1", appointment_id="apt-down"))
    await asyncio.sleep(3)  # the first attempts are refused and backed off
    # THEN once it comes up, the backed-off retry delivers it, once
    certs = ensure_certs(stack["state_dir"])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certs.server_cert_pem, certs.server_key_pem)
    receiver = create_receiver_app([stack["settings"]["WEBHOOK_SECRET"]])
    runner = web.AppRunner(receiver, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
    try:
        await host.drain(timeout=60)
        received = receiver[STATE_KEY].deliveries
        assert [(d.webhook_id, d.status, d.verified) for d in received] == [("wh-down-1_ready", 200, True)]
        assert await read_all(queues_client, queues.WEBHOOK_OUTBOX_POISON) == []
    finally:
        await runner.cleanup()
        await services.aclose()
