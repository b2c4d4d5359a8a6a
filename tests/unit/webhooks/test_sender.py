"""Webhook events and delivery: contract, signatures, answer classification, and destination safety (SSRF)."""

import asyncio
import base64
import json
import ssl
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import trustme
from aiohttp import web
from standardwebhooks.webhooks import Webhook

import shared.webhooks.destination as destination
from shared.common.retry_after import MAX_RETRY_AFTER_SECONDS, parse_retry_after
from shared.exceptions import SettingsError, TransientError, WebhookTransientError
from shared.pipeline.notifications import failed_event, ready_event
from shared.pipeline.records import JoinUrlResult, Rejection
from shared.settings import load_settings
from shared.webhooks.destination import address_refusal, host_allowed
from shared.webhooks.outbound import (
    EVENT_FAILED,
    EVENT_READY,
    WebhookEvent,
    webhook_event,
    webhook_id_for,
)
from shared.webhooks.sender import WebhookSender
from tests.unit.test_settings import sample_env

pytestmark = pytest.mark.unit

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
RESULT = JoinUrlResult("appt-1", "organizer@contoso.example", "MSo1N2Y5", "https://teams.example/join/secret",
                       "evt-1", "2026-11-03T20:26:10.344Z")


class Receiver:
    """An aiohttp server on loopback whose answers each test scripts."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        # A factory: an aiohttp response object can be sent only once.
        self.answer = lambda: web.json_response({"ok": True})
        self.delay = 0.0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers), await request.read()))
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.answer()

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> "Receiver":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def receiver():
    server = await Receiver().start()
    yield server
    await server.stop()


def sender(default_url: str | None, *, development: bool = True, **options) -> WebhookSender:
    return WebhookSender(secrets=[SECRET], default_url=default_url, development=development,
                         connect_timeout=options.pop("connect_timeout", 2.0),
                         read_timeout=options.pop("read_timeout", 2.0), **options)


def message(callback_url: str | None = None) -> str:
    return ready_event(RESULT, callback_url).to_message()


async def deliver(snd: WebhookSender, text: str):
    try:
        return await snd.deliver(text)
    finally:
        await snd.aclose()


# --- events -----------------------------------------------------------------------------------------

def test_ready_event_body_is_the_contract_and_is_serialized_once():
    event = ready_event(RESULT, "https://cb.example/hook")
    body = json.loads(event.body)
    assert body == {"type": EVENT_READY, "timestamp": RESULT.resolved_at, "data": RESULT.to_dict()}
    outbox = json.loads(event.to_message())
    assert outbox["webhookId"] == "evt-1_ready" and outbox["type"] == EVENT_READY
    assert outbox["body"] == event.body and outbox["callbackUrl"] == "https://cb.example/hook"
    assert WebhookEvent.from_message(event.to_message()) == event


def test_failed_event_carries_reason_and_detail():
    rejection = Rejection(reason="meeting_not_found", detail="no such meeting", original_message="{}",
                          event_id="evt-2", appointment_id="appt-2", organizer="o@contoso.example",
                          rejected_at="2026-11-03T20:00:00.000Z", tenant_id="7d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10")
    event = failed_event(rejection)
    assert event is not None and event.webhook_id == "evt-2_failed"
    assert json.loads(event.body) == {"type": EVENT_FAILED, "timestamp": "2026-11-03T20:00:00.000Z", "data": {
        "appointmentId": "appt-2", "organizer": "o@contoso.example", "tenantId": "7d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10",
        "eventId": "evt-2", "reason": "meeting_not_found", "detail": "no such meeting"}}


def test_failed_event_without_an_appointment_is_not_sent_and_without_event_id_is_stable():
    assert failed_event(Rejection("invalid_json", "not JSON", "garbage")) is None
    first = failed_event(Rejection("invalid_event", "x", '{"appointmentId":"a"}', appointment_id="a"))
    again = failed_event(Rejection("invalid_event", "x", '{"appointmentId":"a"}', appointment_id="a"))
    assert first is not None and again is not None and first.webhook_id == again.webhook_id


def test_webhook_ids_are_stable_and_never_contain_dots():
    assert webhook_id_for("8a1c-22", "ready") == "8a1c-22_ready"
    hashed = webhook_id_for("scheduler.events/42", EVENT_FAILED)
    assert hashed == webhook_id_for("scheduler.events/42", "failed") and "." not in hashed
    assert hashed.endswith("_failed") and webhook_id_for("a", "ready") != webhook_id_for("a", "failed")
    with pytest.raises(ValueError):
        webhook_event("created", {}, "e")


# --- policy -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "category"), [
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("169.254.169.254", "link_local"),
    ("fe80::1", "link_local"), ("fc00::1", "private"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("100.64.0.1", "cgnat"), ("240.0.0.1", "reserved"),
    ("::ffff:10.0.0.1", "private"), ("::ffff:169.254.169.254", "link_local"), ("64:ff9b::a00:1", "private"),
    ("2002:0a00:0001::1", "private"),
])
def test_non_public_addresses_are_refused(address, category):
    assert address_refusal(address) == category


@pytest.mark.parametrize("address", ["20.190.160.1", "2603:1030::1", "::ffff:20.190.160.1"])
def test_public_addresses_pass(address):
    assert address_refusal(address) is None


def test_development_allows_loopback_and_nothing_else():
    assert address_refusal("127.0.0.1", allow_loopback=True) is None
    assert address_refusal("::ffff:127.0.0.1", allow_loopback=True) is None
    assert address_refusal("10.0.0.1", allow_loopback=True) == "private"


def test_host_allow_list_exact_and_wildcard():
    patterns = ("hooks.contoso.example", "*.fabrikam.example")
    assert host_allowed("HOOKS.contoso.example.", patterns)
    assert host_allowed("a.b.fabrikam.example", patterns)
    assert not host_allowed("fabrikam.example", patterns)
    assert not host_allowed("evilfabrikam.example", patterns)
    assert not host_allowed("contoso.example", patterns)


def test_retry_after_seconds_and_http_date():
    # The parser itself is pinned in tests/unit/common/test_retry_after.py; this is the webhook's cap.
    assert parse_retry_after("7", cap=MAX_RETRY_AFTER_SECONDS) == 7.0
    now = datetime(2026, 11, 3, 20, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, cap=MAX_RETRY_AFTER_SECONDS, now=now.timestamp()) == pytest.approx(90.0)
    assert parse_retry_after("999999", cap=MAX_RETRY_AFTER_SECONDS) == 24 * 3600.0


# --- delivery ---------------------------------------------------------------------------------------

async def test_delivery_is_signed_and_sends_the_stored_bytes(receiver):
    text = message()
    result = await deliver(sender(receiver.url()), text)
    assert result.delivered and result.status == 200 and result.destination_host == "127.0.0.1"
    path, headers, body = receiver.requests[0]
    assert path == "/hooks" and body == json.loads(text)["body"].encode()
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["content-type"] == "application/json" and lowered["user-agent"].startswith("va-join-links")
    assert lowered["webhook-id"] == "evt-1_ready"
    assert Webhook(SECRET).verify(body, lowered)["data"]["joinUrl"] == RESULT.join_url


async def test_retries_send_identical_bytes_under_the_same_id(receiver):
    snd = sender(receiver.url())
    text = message()
    await snd.deliver(text)
    await deliver(snd, text)
    (_, h1, b1), (_, h2, b2) = receiver.requests
    assert b1 == b2 and h1["webhook-id"] == h2["webhook-id"]


async def test_gone_is_a_dead_letter_with_a_bounded_excerpt(receiver):
    receiver.answer = lambda: web.Response(status=410, text="gone " * 400)
    text = message()
    result = await deliver(sender(receiver.url()), text)
    dead = result.dead_letter
    assert not result.delivered and dead is not None
    record = json.loads(dead.to_json())
    assert record["status"] == 410 and record["reason"] == "receiver_rejected"
    assert len(record["responseExcerpt"]) == 500 and record["responseExcerpt"].startswith("gone")
    assert record["webhookId"] == "evt-1_ready" and record["destinationHost"] == "127.0.0.1"
    assert record["outboxMessage"] == text


@pytest.mark.parametrize(("status", "headers", "reason", "retry_after"), [
    (503, {"Retry-After": "7"}, "receiver_unavailable", 7.0),
    (429, {"Retry-After": "30"}, "receiver_throttled", 30.0),
    (408, {}, "receiver_timeout", None),
    (502, {}, "receiver_unavailable", None),
])
async def test_retryable_answers_raise_transient_with_retry_after(receiver, status, headers, reason, retry_after):
    receiver.answer = lambda: web.Response(status=status, headers=headers)
    with pytest.raises(WebhookTransientError) as caught:
        await deliver(sender(receiver.url()), message())
    assert isinstance(caught.value, TransientError)
    assert caught.value.reason == reason and caught.value.retry_after == retry_after


async def test_redirects_are_not_followed(receiver):
    receiver.answer = lambda: web.Response(status=302, headers={"Location": receiver.url("/internal/admin")})
    result = await deliver(sender(receiver.url()), message())
    assert result.dead_letter is not None and result.dead_letter.reason == "redirect_not_followed"
    assert result.dead_letter.status == 302
    assert [path for path, _, _ in receiver.requests] == ["/hooks"]


async def test_timeout_and_refused_connection_are_transient(receiver):
    receiver.delay = 1.0
    with pytest.raises(WebhookTransientError) as caught:
        await deliver(sender(receiver.url(), read_timeout=0.2), message())
    assert caught.value.reason == "receiver_timeout"
    port = receiver.port
    await receiver.stop()
    with pytest.raises(WebhookTransientError) as caught:
        await deliver(sender(f"http://127.0.0.1:{port}/hooks"), message())
    assert caught.value.reason == "network_error"


async def test_callback_url_needs_the_allow_list(receiver):
    allowed = sender("https://default.example/hook", allowed_hosts=("127.0.0.1",))
    result = await deliver(allowed, message(receiver.url("/cb")))
    assert result.delivered and receiver.requests[0][0] == "/cb"
    refused = await deliver(sender(receiver.url(), allowed_hosts=("*.contoso.example",)),
                            message("https://attacker.example/hook"))
    assert refused.dead_letter is not None and refused.dead_letter.reason == "callback_not_allowed"
    assert len(receiver.requests) == 1


async def test_no_destination_and_bad_outbox_messages_are_dead_letters():
    result = await deliver(sender(None), message())
    assert result.dead_letter is not None and result.dead_letter.reason == "no_destination"
    result = await deliver(sender("https://hooks.example/x"), "not json")
    assert result.dead_letter is not None and result.dead_letter.reason == "invalid_outbox_message"
    assert result.dead_letter.outbox_message == "not json"


# --- SSRF ---------------------------------------------------------------------------------------------

async def _refused(url: str, *, development: bool = False, resolver=None) -> str:
    result = await deliver(sender(url, development=development, resolver=resolver), message())
    assert result.dead_letter is not None, result
    return result.dead_letter.reason


@pytest.mark.parametrize("url", ["https://10.0.0.5/hook", "https://169.254.169.254/latest/meta-data",
                                 "https://[::ffff:192.168.0.1]/hook", "https://100.64.1.1/"])
async def test_non_public_ip_literals_are_refused_at_connect(url):
    assert await _refused(url) == "destination_refused"


async def test_plain_http_is_refused_outside_development(receiver):
    assert await _refused(receiver.url()) == "destination_refused"
    assert await _refused("http://hooks.example/hook", development=True) == "destination_refused"
    assert receiver.requests == []


async def test_a_name_resolving_to_loopback_is_refused_outside_development(receiver, monkeypatch):
    async def fake_resolve(host: str, port: int) -> list[str]:
        assert host == "hooks.contoso.example"
        return ["127.0.0.1"]

    # The module-level resolver, as a real rebinding DNS answer would reach it.
    monkeypatch.setattr(destination, "resolve_host", fake_resolve)
    assert await _refused(f"https://hooks.contoso.example:{receiver.port}/hooks") == "destination_refused"
    assert receiver.requests == []


async def test_localhost_is_refused_outside_development(receiver):
    assert await _refused(f"https://localhost:{receiver.port}/hooks") == "destination_refused"


async def test_one_private_address_among_public_ones_refuses_the_name():
    async def mixed(host: str, port: int) -> list[str]:
        return ["20.190.160.1", "10.0.0.7"]

    assert await _refused("https://hooks.contoso.example/hook", resolver=mixed) == "destination_refused"


async def test_connects_to_the_checked_ip_but_verifies_tls_for_the_name(tmp_path):
    # The certificate names only hooks.contoso.test; the name "resolves" to loopback (development mode).
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.contoso.test").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = await Receiver().start(server_ctx)
    resolved: list[str] = []

    async def to_loopback(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    try:
        good = await deliver(sender(f"https://hooks.contoso.test:{server.port}/hooks", resolver=to_loopback,
                                    ca_bundle=ca_file), message())
        assert good.delivered and resolved == ["hooks.contoso.test"]
        assert server.requests[0][1]["Host"] == f"hooks.contoso.test:{server.port}"
        # Same server, but the URL names the IP: the certificate does not cover it, so TLS fails.
        with pytest.raises(WebhookTransientError):
            await deliver(sender(f"https://127.0.0.1:{server.port}/hooks", ca_bundle=ca_file), message())
    finally:
        await server.stop()


# --- settings ---------------------------------------------------------------------------------------

def test_webhook_settings_are_typed_and_validated():
    settings = load_settings(sample_env() | {"WEBHOOK_SECRET": f"{SECRET}, {SECRET}",
                                             "WEBHOOK_ALLOWED_HOSTS": "A.example, *.b.example"})
    assert settings.webhook_secrets == (SECRET, SECRET)
    assert settings.webhook_allowed_hosts == ("a.example", "*.b.example")
    assert settings.webhook_connect_timeout_seconds == 5.0 and settings.idempotency_table == "idempotency"
    assert WebhookSender.from_settings(settings) is not None


def test_bad_webhook_settings_are_all_named_without_the_secret():
    env = sample_env() | {"WEBHOOK_SECRET": "whsec_c2hvcnQ=", "WEBHOOK_ALLOWED_HOSTS": "*",
                          "WEBHOOK_URL": "http://hooks.example/x", "IDEMPOTENCY_TABLE": "bad-name"}
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    text = str(caught.value)
    for name in ("WEBHOOK_SECRET", "WEBHOOK_ALLOWED_HOSTS", "WEBHOOK_URL", "IDEMPOTENCY_TABLE"):
        assert name in text
    assert "c2hvcnQ" not in text


def test_webhook_url_is_optional_and_http_only_to_loopback_in_development():
    env = sample_env()
    del env["WEBHOOK_URL"]
    assert load_settings(env).webhook_url is None
    assert load_settings(env | {"WEBHOOK_URL": "http://127.0.0.1:9/x"}).webhook_url == "http://127.0.0.1:9/x"
    with pytest.raises(SettingsError, match="WEBHOOK_URL"):
        load_settings(env | {"WEBHOOK_URL": "http://127.0.0.1:9/x", "APP_ENVIRONMENT": "production",
                             "CREDENTIAL_MODE": "dev_password"})
