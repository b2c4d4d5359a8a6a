"""Unattended delegated auth on the local stack: connect page, device code, blob vault, revocation, OBO, keep-alive.

The browser is played by httpx: open the connect link, fill the emulator's sign-in form, follow the redirect
back to the callback with the cookie the connect page set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import re
import ssl
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from shared import organizers, queues
from shared.identity.keepalive import KeepAliveOutcome, run_keepalive
from shared.identity.msal import ClientType, MsalClients
from shared.identity.vault import ConnectionStatus
from shared.identity.vault_acquirer import VaultTokenAcquirer
from shared.identity.vault_blob import BlobTokenVault
from shared.services import Services
from shared.settings import load_settings
from tests.auth_fakes import SCHEDULER as SCHEDULER_CLAIMS
from tests.e2e.conftest import read_all, send
from tests.e2e.test_pipeline import CARDIOLOGY, plain

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning"),
]
FUNCTION_KEY = "local-dev-function-key"
PASSWORD = "Local-Dev-Passw0rd!"
SCHEDULER = {"upn": "scheduler@contoso.test", "oid": SCHEDULER_CLAIMS["oid"]}
ADAMS = {"upn": "dr.adams@contoso.test", "oid": "8e2f3a4b-5c6d-4e7f-9a0b-1c2d3e4f5a6b"}
FRONT_END = {"client_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
             "client_secret": "local-dev-frontend-secret-not-for-production"}


@pytest.fixture
async def vault_app(app_module: Any, stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
                    ) -> AsyncIterator[Services]:
    """The app in CREDENTIAL_MODE=vault, with a token vault container of its own."""
    values = {**stack["settings"], "CREDENTIAL_MODE": "vault",
              "TOKEN_VAULT_CONTAINER": f"vault-{uuid.uuid4().hex[:12]}"}
    services = Services(load_settings(values))
    monkeypatch.setattr(app_module, "services", services)
    yield services
    await services.aclose()


@pytest.fixture
def entra(stack: dict[str, Any]) -> Any:
    """The Entra emulator's admin API (its runtime config is reset afterwards)."""
    client = httpx.Client(base_url=stack["entra"]["admin_url"] + "/",
                          verify=trust(stack), timeout=10)
    yield client
    client.post("reset")
    client.close()


def browser(stack: dict[str, Any]) -> httpx.AsyncClient:
    """A cookie-keeping client that trusts the local CA and follows no redirects by itself."""
    return httpx.AsyncClient(verify=trust(stack), timeout=30)


async def connect_in_browser(host: Any, services: Services, client: httpx.AsyncClient, user: dict[str, str],
                             *, action: str = "accept") -> httpx.Response:
    """Connect link → emulator sign-in form → redirect back to the callback (carrying the cookie)."""
    start = await client.get(f"{host.http_base_url}/api/auth/connect",
                             params={"organizer": user["upn"], "code": FUNCTION_KEY})
    assert start.status_code == 302, start.text
    authorize = start.headers["location"]
    page = await client.get(authorize)
    assert page.status_code == 200, page.text
    form_action = urljoin(authorize, re.search(r'<form method="post" action="([^"]+)"', page.text).group(1))
    ctx = re.search(r'name="ctx"[^>]*value="([^"]*)"', page.text).group(1)
    signed = await client.post(form_action, data={"ctx": ctx, "username": user["upn"], "password": PASSWORD,
                                                  "action": action})
    assert signed.status_code == 302, signed.text
    redirect_uri = services.settings.auth_redirect_uri or ""
    location = signed.headers["location"]
    assert location.startswith(redirect_uri + "?")
    # The registered redirect URI names localhost:7071; the harness listens elsewhere, same path.
    return await client.get(host.http_base_url + location[len(redirect_uri.rsplit("/api/", 1)[0]):])


def expire_access_tokens(vault: BlobTokenVault, organizer: str) -> None:
    """As an hour later: the stored cache keeps its refresh token, its access tokens are gone."""
    entry = vault.get(organizer)
    cache = json.loads(entry.cache)
    cache["AccessToken"] = {}
    vault.save(dataclasses.replace(entry, cache=json.dumps(cache)))


def token_requests(entra: httpx.Client) -> int:
    return int(entra.get("stats").json()["token_requests"])


async def test_connect_page_with_a_plain_http_client_then_events_resolve(host, vault_app, stack, queues_client):
    # GIVEN an organizer who follows the connect link and signs in
    async with browser(stack) as client:
        done = await connect_in_browser(host, vault_app, client, SCHEDULER)
        # THEN the page says so, and the vault holds their token cache
        assert done.status_code == 200 and "Scheduling service account" in done.text
        assert done.headers["content-security-policy"].startswith("default-src 'none'")
        entry = vault_app.vault.get(SCHEDULER["upn"])
        assert entry.status == ConnectionStatus.CONNECTED and entry.oid == SCHEDULER["oid"]
        assert "RefreshToken" in entry.cache
        # AND replaying the callback is refused
        replay = await client.get(str(done.request.url))
        assert replay.status_code == 400
    # AND a callback from a browser that did not start the flow is refused
    async with browser(stack) as client, browser(stack) as attacker:
        start = await client.get(f"{host.http_base_url}/api/auth/connect", params={"code": FUNCTION_KEY})
        state = re.search(r"state=([^&]+)", start.headers["location"]).group(1)
        forged = await attacker.get(f"{host.http_base_url}/api/auth/callback",
                                    params={"code": "stolen", "state": state})
        assert forged.status_code == 400 and "not started from this browser" in forged.text
    # AND events of that organizer now get their join URLs through the vault credential
    await send(queues_client, plain("vault-1", appointment_id="apt-vault", organizer=SCHEDULER["upn"]))
    await host.drain(timeout=30)
    (result,) = [json.loads(t) for t in await read_all(queues_client, queues.JOIN_URLS)]
    assert result["eventId"] == "vault-1" and "meeting_cardiology" in result["joinUrl"]


async def test_cancelled_sign_in_stores_nothing(host, vault_app, stack):
    async with browser(stack) as client:
        page = await connect_in_browser(host, vault_app, client, SCHEDULER, action="cancel")
    assert page.status_code == 400 and "Sign-in was not completed" in page.text
    assert vault_app.vault.get(SCHEDULER["upn"]) is None


async def test_device_code_connect_with_admin_approval_and_the_cli(vault_app, stack, entra, tmp_path):
    settings = vault_app.settings

    def approve(flow: dict[str, Any]) -> None:
        answer = entra.post("device/approve", json={"user_code": flow["user_code"], "user": ADAMS["upn"]})
        assert answer.status_code == 200, answer.text

    out = io.StringIO()
    status = await asyncio.to_thread(organizers.connect_device, settings, vault_app.vault, MsalClients(settings),
                                     ADAMS["upn"], out, approve)
    assert status == 0, out.getvalue()
    assert "enter the code" in out.getvalue() and "Connected Dr. Adams" in out.getvalue()
    entry = vault_app.vault.get(ADAMS["oid"])
    assert entry.client_type == ClientType.PUBLIC
    # The device-code refresh token belongs to a public client: refreshing it without the secret works.
    acquirer = VaultTokenAcquirer(settings, vault_app.vault, MsalClients(settings))
    await asyncio.to_thread(acquirer.refresh, acquirer.identify(ADAMS["upn"], None))
    assert vault_app.vault.get(ADAMS["upn"]).cache != entry.cache
    # The operator CLI, with a local.settings.json-style file
    settings_file = tmp_path / "local.settings.json"
    settings_file.write_text(json.dumps({"Values": {**stack["settings"], "CREDENTIAL_MODE": "vault",
                                                    "TOKEN_VAULT_CONTAINER": settings.token_vault_container}}))
    listing = io.StringIO()
    assert organizers.main(["--settings", str(settings_file), "list"], out=listing) == 0
    assert "dr.adams@contoso.test" in listing.getvalue() and "connected" in listing.getvalue()
    revoked = io.StringIO()
    assert organizers.main(["--settings", str(settings_file), "revoke", ADAMS["upn"]], out=revoked) == 0
    assert "does NOT revoke anything at Microsoft Entra ID" in revoked.getvalue()
    assert vault_app.vault.get(ADAMS["upn"]) is None


class BarrierVault(BlobTokenVault):
    """The blob vault, but each thread's first read waits for the other's, so both start from one ETag.

    Its refresh lease excludes no one: this is the race the lease prevents, which must still come out right
    when the lease cannot be held (storage unreachable, or a holder slower than its lease).
    """

    def __init__(self, conn: Any, container: str, barrier: threading.Barrier, armed: threading.Event) -> None:
        super().__init__(conn, container)
        self._barrier, self._armed, self._seen = barrier, armed, threading.local()

    def _lease(self, name: str, seconds: int) -> str | None:
        return f"racing-{threading.get_ident()}" if self._armed.is_set() else super()._lease(name, seconds)

    def _release(self, name: str, lease_id: str) -> None:
        if not lease_id.startswith("racing-"):
            super()._release(name, lease_id)

    def get(self, organizer: str, tenant: str | None = None) -> Any:
        entry = super().get(organizer, tenant)
        if self._armed.is_set() and not getattr(self._seen, "done", False):
            self._seen.done = True
            self._barrier.wait()
        return entry


@pytest.mark.parametrize("rotation", ["strict", "entra"])
async def test_two_workers_refreshing_at_once_never_lose_the_rotated_refresh_token(host, vault_app, stack, entra,
                                                                                   rotation):
    # GIVEN a platform whose refresh tokens work once (strict), or stay valid after use as Entra's do
    entra.put("config", json={"refresh_token_rotation": rotation}).raise_for_status()
    # AND a connected organizer and two workers (own MSAL apps, own vault clients) on the same blob vault
    async with browser(stack) as client:
        assert (await connect_in_browser(host, vault_app, client, SCHEDULER)).status_code == 200
    settings = vault_app.settings
    identity = vault_app.vault.get(SCHEDULER["oid"]).identity
    before = entra.get("stats").json()["by_grant"].get("refresh_token", 0)
    rounds = 3
    for _ in range(rounds):
        barrier, armed = threading.Barrier(2, timeout=10), threading.Event()
        workers = [VaultTokenAcquirer(settings, BarrierVault(settings.storage, settings.token_vault_container,
                                                             barrier, armed), MsalClients(settings))
                   for _ in range(2)]
        armed.set()
        # WHEN both redeem the same refresh token at the same moment
        tokens = await asyncio.gather(*(asyncio.to_thread(w.refresh, identity) for w in workers))
        # THEN both end with a working token and the stored refresh token is the live one
        assert all(t.token for t in tokens)
        entry = vault_app.vault.get(SCHEDULER["oid"])
        assert entry.status == ConnectionStatus.CONNECTED and entry.consecutive_failures == 0
    redeemed = entra.get("stats").json()["by_grant"]["refresh_token"] - before
    print(f"\n{rounds} racing rounds ({rotation} rotation): {redeemed} refresh-token redemptions")
    if rotation == "strict":
        assert rounds <= redeemed <= 2 * rounds  # each round: one winner, and the loser's refused attempt
    else:
        assert redeemed == 2 * rounds  # both succeed; the second write meets a 412 and keeps the newer entry
    # AND a third worker can still refresh: a lost write would have left a spent refresh token behind
    fresh = VaultTokenAcquirer(settings, vault_app.vault, MsalClients(settings))
    assert (await asyncio.to_thread(fresh.refresh, identity)).token


async def test_two_instances_refreshing_at_once_redeem_once_behind_the_lease(host, vault_app, stack, entra):
    # GIVEN strict single-use refresh tokens (the harshest platform) and a connected organizer
    entra.put("config", json={"refresh_token_rotation": "strict"}).raise_for_status()
    async with browser(stack) as client:
        assert (await connect_in_browser(host, vault_app, client, SCHEDULER)).status_code == 200
    settings = vault_app.settings
    identity = vault_app.vault.get(SCHEDULER["oid"]).identity
    expire_access_tokens(vault_app.vault, SCHEDULER["upn"])
    before = entra.get("stats").json()["by_grant"].get("refresh_token", 0)
    # WHEN two instances (own MSAL apps, own blob clients) need a token for the organizer at the same moment
    workers = [VaultTokenAcquirer(settings, BlobTokenVault(settings.storage, settings.token_vault_container),
                                  MsalClients(settings)) for _ in range(2)]
    scopes = ["https://graph.microsoft.com/VirtualAppointment.Read"]
    tokens = await asyncio.gather(*(asyncio.to_thread(w.acquire, identity, scopes) for w in workers))
    # THEN one redeems the refresh token under the blob lease and the other takes the token it stored
    assert all(t.token for t in tokens)
    assert entra.get("stats").json()["by_grant"]["refresh_token"] - before == 1
    entry = vault_app.vault.get(SCHEDULER["oid"])
    assert entry.status == ConnectionStatus.CONNECTED and entry.consecutive_failures == 0


async def test_revoked_organizer_is_rejected_on_the_first_attempt(host, vault_app, stack, entra, queues_client):
    # GIVEN a connected organizer whose sessions an admin revokes at Entra, an hour after the last token
    async with browser(stack) as client:
        assert (await connect_in_browser(host, vault_app, client, SCHEDULER)).status_code == 200
    assert entra.post("revoke", json={"user": SCHEDULER["upn"]}).json()["revoked"] >= 1
    expire_access_tokens(vault_app.vault, SCHEDULER["upn"])
    # WHEN an event arrives for them
    message = plain("revoked-1", appointment_id="apt-revoked", organizer=SCHEDULER["upn"])
    await send(queues_client, message)
    await host.drain(timeout=30)
    # THEN it is rejected on its first attempt, saying how to reconnect, and the vault marks the organizer
    (record,) = [json.loads(t) for t in await read_all(queues_client, queues.APPOINTMENTS_REJECTED)]
    assert record["reason"] == "organizer_not_connected" and record["dequeueCount"] == 1
    assert "/api/auth/connect" in record["detail"]
    assert await read_all(queues_client, queues.JOIN_URLS) == []
    entry = vault_app.vault.get(SCHEDULER["upn"])
    assert entry.status == ConnectionStatus.NEEDS_RECONNECT and "invalid_grant" in entry.last_error
    # AND reconnecting makes it work again
    async with browser(stack) as client:
        assert (await connect_in_browser(host, vault_app, client, SCHEDULER)).status_code == 200
    assert vault_app.vault.get(SCHEDULER["upn"]).status == ConnectionStatus.CONNECTED


def trust(stack: dict[str, Any]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=stack["ca_bundle"])


def api_token(stack: dict[str, Any], user: dict[str, str]) -> str:
    """A user's token for the app's API, as the scheduling front end holds it (password grant, local only)."""
    answer = httpx.post(stack["entra"]["authority"] + "/oauth2/v2.0/token", verify=trust(stack), data={
        "grant_type": "password", **FRONT_END, "username": user["upn"], "password": PASSWORD,
        "scope": "api://5b1f0c2e-8d4a-4f6b-9c3e-2a7d6e5f4c3b/access_as_user"})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


async def test_bearer_caller_gets_the_join_url_on_behalf_of_themselves(host, vault_app, stack, entra, monkeypatch):
    url = f"{host.http_base_url}/api/me/join-url"
    token = api_token(stack, SCHEDULER)
    async with httpx.AsyncClient(timeout=30) as client:
        # A real emulator-issued token for the API: 200, without any function key or vault connection
        ok = await client.get(url, params={"meetingId": CARDIOLOGY}, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["organizer"] == SCHEDULER["oid"] and "meeting_cardiology" in ok.json()["joinUrl"]
        # No token: 401 with the bare challenge
        missing = await client.get(url, params={"meetingId": CARDIOLOGY})
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        # Forged: same claims and key id, another key
        header = jwt.get_unverified_header(token)
        forged = jwt.encode(jwt.decode(token, options={"verify_signature": False}),
                            rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256",
                            headers={"kid": header["kid"]})
        refused = await client.get(url, params={"meetingId": CARDIOLOGY},
                                   headers={"Authorization": f"Bearer {forged}"})
        assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["www-authenticate"]
        assert refused.headers["content-type"].startswith("application/problem+json")
        # A Graph token (wrong audience) is no token for this API
        graph_token = httpx.post(stack["entra"]["authority"] + "/oauth2/v2.0/token", verify=trust(stack),
                                 data={"grant_type": "password", "client_id": stack["client"]["client_id"],
                                       "client_secret": stack["client"]["client_secret"],
                                       "username": SCHEDULER["upn"], "password": PASSWORD,
                                       "scope": "https://graph.microsoft.com/VirtualAppointment.Read"}
                                 ).json()["access_token"]
        wrong_audience = await client.get(url, params={"meetingId": CARDIOLOGY},
                                          headers={"Authorization": f"Bearer {graph_token}"})
        assert wrong_audience.status_code == 401
        # Someone else's meeting: Graph would refuse, the app refuses first
        other = await client.get(url, params={"meetingId": CARDIOLOGY, "organizer": ADAMS["upn"]},
                                 headers={"Authorization": f"Bearer {token}"})
        assert other.status_code == 403
        # Expired, with a genuine signature (no clock leeway for this check)
        monkeypatch.setattr("shared.identity.bearer.LEEWAY_SECONDS", 0)
        entra.put("config", json={"access_token_lifetime": 1})
        short_lived = api_token(stack, SCHEDULER)
        await asyncio.sleep(2.1)
        expired = await client.get(url, params={"meetingId": CARDIOLOGY},
                                   headers={"Authorization": f"Bearer {short_lived}"})
        assert expired.status_code == 401 and "expired" in expired.json()["detail"]


async def test_a_thousand_invocations_make_one_token_request(vault_app, app_module, stack, entra):
    # GIVEN a connected organizer whose stored access token has expired (so a refresh is due)
    await asyncio.to_thread(_connect_by_device_code, vault_app, entra, SCHEDULER)
    expire_access_tokens(vault_app.vault, SCHEDULER["upn"])
    before = token_requests(entra)
    from devstack.harness import Worker, call_queue

    worker = await Worker.for_script(app_module.__file__)

    async def invoke(n: int) -> str | None:
        body = plain(f"k-{uuid.uuid4().hex}", appointment_id=f"apt-{n}", organizer=SCHEDULER["upn"])
        called = await call_queue(worker, "process_appointment", body, message_id=f"m-{n}")
        results = called.texts("results")
        return results[0] if results else None

    # WHEN 1,000 invocations for that organizer run, up to 100 at a time
    started = time.perf_counter()
    outcomes: list[str | None] = []
    for batch in range(10):
        outcomes += await asyncio.gather(*(invoke(batch * 100 + i) for i in range(100)))
    elapsed = time.perf_counter() - started
    # THEN every one resolved, and the identity platform was asked once (the refresh)
    requests = token_requests(entra) - before
    print(f"\n1,000 invocations in {elapsed:.1f}s: {requests} token request(s)")
    assert all(outcomes) and requests <= 1
    assert vault_app.credentials.requests == 1


def _connect_by_device_code(services: Services, entra: httpx.Client, user: dict[str, str]) -> None:
    def approve(flow: dict[str, Any]) -> None:
        entra.post("device/approve", json={"user_code": flow["user_code"], "user": user["upn"]}).raise_for_status()

    out = io.StringIO()
    assert organizers.connect_device(services.settings, services.vault, MsalClients(services.settings),
                                     user["upn"], out, approve) == 0, out.getvalue()


async def test_keep_alive_refreshes_an_idle_connection_on_the_stack(vault_app, entra):
    await asyncio.to_thread(_connect_by_device_code, vault_app, entra, SCHEDULER)
    entry = vault_app.vault.get(SCHEDULER["upn"])
    idle = (datetime.now(UTC) - timedelta(hours=100)).isoformat()
    vault_app.vault.save(dataclasses.replace(entry, last_refreshed_at=idle))
    report = await asyncio.to_thread(run_keepalive, vault_app.vault, vault_app.vault_acquirer, 72)
    assert [o.outcome for o in report.organizers] == [KeepAliveOutcome.REFRESHED]
    after = vault_app.vault.get(SCHEDULER["upn"])
    assert after.last_refreshed_at > idle and after.cache != entry.cache
