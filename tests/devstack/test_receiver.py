"""The local webhook receiver, driven by the app's own sender: verification, recording, injected faults."""

import base64
import ssl

import aiohttp
import pytest
from aiohttp import web

from devstack.certs import ensure_certs
from devstack.receiver import create_receiver_app
from shared.exceptions import WebhookTransientError
from shared.pipeline.notifications import ready_event
from shared.pipeline.records import JoinUrlResult
from shared.webhooks.sender import WebhookSender

pytestmark = pytest.mark.unit

SECRET = "whsec_" + base64.b64encode(b"receiver-test-secret-0123456789").decode()
OTHER = "whsec_" + base64.b64encode(b"some-other-secret-abcdefghijklmn").decode()
RESULT = JoinUrlResult("appt-1", "o@contoso.example", "m-1", "https://teams.example/j", "evt-1", "2026-11-03T20:00:00Z")


@pytest.fixture
async def base_url():
    runner = web.AppRunner(create_receiver_app([SECRET]), access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    await runner.cleanup()


async def admin(base_url, method, path, json=None):
    async with aiohttp.ClientSession() as session, session.request(method, base_url + path, json=json) as resp:
        return resp.status, await resp.json()


async def send(base_url, secret=SECRET):
    sender = WebhookSender(secrets=[secret], default_url=base_url + "/webhooks", development=True)
    try:
        return await sender.deliver(ready_event(RESULT).to_message())
    finally:
        await sender.aclose()


async def test_verified_delivery_is_recorded(base_url):
    assert (await send(base_url)).delivered
    _, doc = await admin(base_url, "GET", "/_admin/deliveries")
    (delivery,) = doc["deliveries"]
    assert delivery["webhook_id"] == "evt-1_ready" and delivery["verified"] is True
    assert delivery["type"] == "appointment.joinurl.ready" and delivery["received_at"]


async def test_bad_signature_gets_401_and_is_recorded_unverified(base_url):
    result = await send(base_url, secret=OTHER)
    assert result.dead_letter is not None and result.status == 401
    _, doc = await admin(base_url, "GET", "/_admin/deliveries")
    assert doc["deliveries"][0]["verified"] is False


async def test_injected_failures_then_recovery_and_reset(base_url):
    status, _ = await admin(base_url, "PUT", "/_admin/fail", {"status": 503, "times": 1, "delay_ms": 0,
                                                               "probability": 1.0, "retry_after": "3"})
    assert status == 200
    with pytest.raises(WebhookTransientError) as caught:
        await send(base_url)
    assert caught.value.retry_after == 3.0
    assert (await send(base_url)).delivered
    await admin(base_url, "POST", "/_admin/reset")
    _, doc = await admin(base_url, "GET", "/_admin/deliveries")
    assert doc["deliveries"] == []
    status, _ = await admin(base_url, "PUT", "/_admin/fail", {"status": 99})
    assert status == 400


async def test_https_with_the_stack_certificate_and_tls_ca_bundle(tmp_path):
    # As the local stack serves it: the devstack server certificate, trusted through TLS_CA_BUNDLE.
    certs = ensure_certs(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs.server_cert_pem, certs.server_key_pem)
    runner = web.AppRunner(create_receiver_app([SECRET]), access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    sender = WebhookSender(secrets=[SECRET], default_url=f"https://127.0.0.1:{port}/webhooks", development=True,
                           ca_bundle=certs.ca_pem)
    try:
        assert (await sender.deliver(ready_event(RESULT).to_message())).delivered
    finally:
        await sender.aclose()
        await runner.cleanup()
