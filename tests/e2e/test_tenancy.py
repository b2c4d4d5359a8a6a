"""Organizers of several tenants on the local stack (issue 15, item 8): a customer's admin consents through the
app's link, organizers of two allowed tenants connect, a third tenant's organizer is refused at connect, events
of both tenants resolve and carry their tenant, a cross-tenant event is rejected, bearer callers of both allowed
tenants get answers and a forged or foreign-tenant token gets 401 — all with the app proving itself to Entra with
its managed identity (federated credential), no client secret configured.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urljoin

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from shared import queues
from shared.identity.vault import ConnectionStatus
from shared.services import Services
from shared.settings import load_settings
from tests.e2e.conftest import read_all, send
from tests.e2e.test_auth_flow import FRONT_END, FUNCTION_KEY, PASSWORD, browser, trust

pytestmark = [pytest.mark.e2e,
              pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")]
CONTOSO = "7d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10"
FABRIKAM = "3f9a7c21-6b4d-4e8a-a1c5-9d2e8f7b6a40"
NORTHWIND = "b2c4e6a8-0d1f-4a3b-8c5e-7f9a1b3d5e60"
CONTOSO_SCHEDULER = {"upn": "scheduler@contoso.test", "oid": "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a"}
FABRIKAM_SCHEDULER = {"upn": "scheduler@fabrikam.test", "oid": "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"}
FABRIKAM_ADMIN = {"upn": "admin@fabrikam.test"}
NORTHWIND_SCHEDULER = {"upn": "scheduler@northwind.test"}
CARDIOLOGY = "MSo0YzdlMWQyYS05YjNmLTRlNWQtOGE2Yy0xZjJlM2Q0YzViNmEqMCoqMTk6bWVldGluZ19jYXJkaW9sb2d5QHRocmVhZC52Mg=="
DENTAL = "MSpjMWQyZTNmNC1hNWI2LTRjN2QtOGU5Zi0wYTFiMmMzZDRlNWYqMCoqMTk6bWVldGluZ19mYWJyaWthbV9kZW50YWxAdGhyZWFkLnYy"
API_SCOPE = "api://5b1f0c2e-8d4a-4f6b-9c3e-2a7d6e5f4c3b/access_as_user"


@pytest.fixture
def entra_admin(stack: dict[str, Any]) -> Iterator[httpx.Client]:
    """The Entra emulator's admin API; Fabrikam has not consented to the app before or after the test."""
    with httpx.Client(base_url=stack["entra"]["admin_url"] + "/", verify=trust(stack), timeout=10) as client:
        def withdraw() -> None:
            for tenant, app in ((FABRIKAM, stack["client"]["client_id"]), (NORTHWIND, FRONT_END["client_id"])):
                client.request("DELETE", "consent", json={"tenant": tenant, "client_id": app})

        withdraw()
        yield client
        withdraw()
        client.post("reset")


@pytest.fixture
async def tenancy_app(app_module: Any, stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
                      ) -> AsyncIterator[Services]:
    """The app in vault mode, multi-tenant, federated credential (the stack's settings), its own vault container."""
    values = {**stack["settings"], "CREDENTIAL_MODE": "vault",
              "TOKEN_VAULT_CONTAINER": f"vault-{uuid.uuid4().hex[:12]}"}
    assert values["ENTRA_APP_CREDENTIAL"] == "federated" and not values.get("ENTRA_CLIENT_SECRET")
    services = Services(load_settings(values))
    monkeypatch.setattr(app_module, "services", services)
    yield services
    await services.aclose()


def _back_at_the_app(host: Any, services: Services, location: str) -> str:
    # The registered redirect URI names localhost:7071; the harness listens elsewhere, same path.
    redirect_uri = services.settings.auth_redirect_uri or ""
    assert location.startswith(redirect_uri + "?"), location
    return host.http_base_url + location[len(redirect_uri.rsplit("/api/", 1)[0]):]


async def _entra_form(client: httpx.AsyncClient, url: str, user: dict[str, str]) -> httpx.Response:
    """Open an Entra emulator page with a form and submit it as the user would."""
    page = await client.get(url)
    assert page.status_code == 200, page.text
    action = urljoin(url, re.search(r'<form method="post" action="([^"]+)"', page.text).group(1))
    ctx = re.search(r'name="ctx"[^>]*value="([^"]*)"', page.text).group(1)
    return await client.post(action, data={"ctx": ctx, "username": user["upn"], "password": PASSWORD,
                                           "action": "accept"})


async def admin_consents(host: Any, services: Services, client: httpx.AsyncClient, tenant: str,
                         admin: dict[str, str]) -> httpx.Response:
    """The app's admin-consent link → Entra's admin consent page → back at the app."""
    start = await client.get(f"{host.http_base_url}/api/auth/admin-consent",
                             params={"tenant": tenant, "code": FUNCTION_KEY})
    assert start.status_code == 302, start.text
    granted = await _entra_form(client, start.headers["location"], admin)
    assert granted.status_code == 302, granted.text
    return await client.get(_back_at_the_app(host, services, granted.headers["location"]))


async def connects(host: Any, services: Services, client: httpx.AsyncClient, user: dict[str, str],
                   **params: str) -> httpx.Response:
    """The app's connect link → Entra's sign-in → back at the app's callback."""
    start = await client.get(f"{host.http_base_url}/api/auth/connect",
                             params={"organizer": user["upn"], "code": FUNCTION_KEY, **params})
    assert start.status_code == 302, start.text
    signed = await _entra_form(client, start.headers["location"], user)
    assert signed.status_code == 302, signed.text
    return await client.get(_back_at_the_app(host, services, signed.headers["location"]))


def event(event_id: str, organizer: str, meeting: str, **extra: str) -> str:
    return json.dumps({"id": event_id, "type": "appointment.created", "appointmentId": f"apt-{event_id}",
                       "organizer": organizer, "onlineMeetingId": meeting, **extra})


async def test_organizers_of_two_tenants_connect_a_third_is_refused_and_events_keep_to_their_tenant(
        host, tenancy_app, stack, entra_admin, queues_client, receiver_admin):
    services = tenancy_app
    async with browser(stack) as client:
        # GIVEN Fabrikam, whose users may not consent themselves: its admin opens the app's admin-consent link
        consented = await admin_consents(host, services, client, FABRIKAM, FABRIKAM_ADMIN)
        assert consented.status_code == 200 and "Admin consent granted" in consented.text
        # WHEN an organizer of each allowed tenant connects (through `organizations`), and one of Northwind tries
        contoso = await connects(host, services, client, CONTOSO_SCHEDULER)
        fabrikam = await connects(host, services, client, FABRIKAM_SCHEDULER)
        northwind = await connects(host, services, client, NORTHWIND_SCHEDULER)
    # THEN the two are stored under their tenants, and Northwind is refused with a page saying why
    assert contoso.status_code == 200 and fabrikam.status_code == 200, (contoso.text, fabrikam.text)
    assert services.vault.get(CONTOSO_SCHEDULER["upn"]).tenant_id == CONTOSO
    assert services.vault.get(FABRIKAM_SCHEDULER["upn"]).tenant_id == FABRIKAM
    assert northwind.status_code == 403 and NORTHWIND in northwind.text
    assert {e.tenant_id for e in services.vault.entries()} == {CONTOSO, FABRIKAM}
    # AND events of both tenants resolve, each with its tenant; a cross-tenant event is rejected on its first
    # attempt; a Fabrikam organizer naming a Contoso meeting is refused by Graph (a token never crosses tenants)
    await send(queues_client, event("t-contoso", CONTOSO_SCHEDULER["upn"], CARDIOLOGY))
    await send(queues_client, event("t-fabrikam", FABRIKAM_SCHEDULER["upn"], DENTAL, tenantId=FABRIKAM))
    await send(queues_client, event("t-cross", CONTOSO_SCHEDULER["upn"], CARDIOLOGY, tenantId=FABRIKAM))
    await send(queues_client, event("t-wall", FABRIKAM_SCHEDULER["oid"], CARDIOLOGY))
    await host.drain(timeout=60)
    results = {r["eventId"]: r for r in map(json.loads, await read_all(queues_client, queues.JOIN_URLS))}
    assert set(results) == {"t-contoso", "t-fabrikam"}
    assert results["t-contoso"]["tenantId"] == CONTOSO and "meeting_cardiology" in results["t-contoso"]["joinUrl"]
    assert results["t-fabrikam"]["tenantId"] == FABRIKAM and f"tid={FABRIKAM}" in results["t-fabrikam"]["joinUrl"]
    rejected = {r["eventId"]: r for r in map(json.loads, await read_all(queues_client, queues.APPOINTMENTS_REJECTED))}
    assert rejected["t-cross"]["reason"] == "organizer_not_connected" and rejected["t-cross"]["dequeueCount"] == 1
    assert rejected["t-cross"]["tenantId"] == FABRIKAM
    assert "does not belong to the event's tenantId" in rejected["t-cross"]["detail"]
    assert rejected["t-wall"]["reason"] == "forbidden" and rejected["t-wall"]["tenantId"] == FABRIKAM
    # AND the webhooks carry the tenant too
    bodies = {d["webhook_id"]: json.loads(d["raw_body"]) for d in receiver_admin.get("deliveries").json()["deliveries"]}
    assert bodies["t-fabrikam_ready"]["data"]["tenantId"] == FABRIKAM
    assert bodies["t-cross_failed"]["data"]["tenantId"] == FABRIKAM
    # AND every token request for the Fabrikam organizer went to Fabrikam's own authority, with no secret
    stats = entra_admin.get("stats").json()
    assert stats["by_authority"].get(FABRIKAM, 0) >= 1 and stats["by_credential"].get("secret", 0) == 0
    assert stats["by_credential"]["federated"] >= 3
    # AND the operator page shows both, with their tenants
    async with httpx.AsyncClient(timeout=30) as http:
        page = await http.get(f"{host.http_base_url}/api/manage/organizers", params={"code": FUNCTION_KEY})
    assert page.status_code == 200 and CONTOSO in page.text and FABRIKAM in page.text
    assert page.text.count('class="status connected"') == 2


def api_token(stack: dict[str, Any], tenant: str, upn: str) -> str:
    """A user's token for the app's API, issued in their tenant, as the scheduling front end holds it."""
    answer = httpx.post(f"{stack['entra']['base_url']}/{tenant}/oauth2/v2.0/token", verify=trust(stack), data={
        "grant_type": "password", **FRONT_END, "username": upn, "password": PASSWORD, "scope": API_SCOPE})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


async def test_bearer_callers_of_both_allowed_tenants_get_answers_and_others_get_401(host, tenancy_app, stack,
                                                                                     entra_admin):
    # GIVEN both allowed tenants consented to the app (On-Behalf-Of cannot ask), and a Northwind caller whose
    # front end is consented there
    for tenant, app in ((FABRIKAM, stack["client"]["client_id"]), (NORTHWIND, FRONT_END["client_id"])):
        entra_admin.post("consent", json={"tenant": tenant, "client_id": app}).raise_for_status()
    url = f"{host.http_base_url}/api/me/join-url"
    async with httpx.AsyncClient(timeout=30) as client:
        async def lookup(token: str, meeting: str) -> httpx.Response:
            return await client.get(url, params={"meetingId": meeting}, headers={"Authorization": f"Bearer {token}"})

        # WHEN callers of each allowed tenant look up their own meetings THEN they get answers, in their tenant
        contoso = await lookup(api_token(stack, CONTOSO, CONTOSO_SCHEDULER["upn"]), CARDIOLOGY)
        fabrikam_token = api_token(stack, FABRIKAM, FABRIKAM_SCHEDULER["upn"])
        fabrikam = await lookup(fabrikam_token, DENTAL)
        assert contoso.status_code == 200 and contoso.json()["tenantId"] == CONTOSO, contoso.text
        assert fabrikam.status_code == 200 and fabrikam.json()["tenantId"] == FABRIKAM, fabrikam.text
        # AND a Northwind caller (a genuine token of a tenant the app does not serve) gets 401 problem+json
        foreign = await lookup(api_token(stack, NORTHWIND, NORTHWIND_SCHEDULER["upn"]), DENTAL)
        assert foreign.status_code == 401 and foreign.headers["content-type"].startswith("application/problem+json")
        assert "tenant" in foreign.json()["detail"]
        # AND a forged one (Fabrikam's claims, another key) too
        forged = jwt.encode(jwt.decode(fabrikam_token, options={"verify_signature": False}),
                            rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256",
                            headers={"kid": jwt.get_unverified_header(fabrikam_token)["kid"]})
        refused = await lookup(forged, DENTAL)
        assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["www-authenticate"]
        # AND a Fabrikam caller may not name another tenant
        other = await client.get(url, params={"meetingId": DENTAL, "tenantId": CONTOSO},
                                 headers={"Authorization": f"Bearer {fabrikam_token}"})
        assert other.status_code == 403
    assert tenancy_app.vault.get(FABRIKAM_SCHEDULER["upn"]) is None  # no vault involved: On-Behalf-Of


async def test_an_organizer_lapsed_in_one_tenant_shows_on_the_operator_page_with_a_reconnect_link(
        host, tenancy_app, stack, entra_admin):
    async with browser(stack) as client:
        assert (await connects(host, tenancy_app, client, CONTOSO_SCHEDULER, tenant=CONTOSO)).status_code == 200
    entry = tenancy_app.vault.get(CONTOSO_SCHEDULER["upn"], CONTOSO)
    tenancy_app.vault.save(dataclasses.replace(entry, status=ConnectionStatus.NEEDS_RECONNECT, consecutive_failures=1,
                                               last_error="invalid_grant (AADSTS70008): expired"))
    async with httpx.AsyncClient(timeout=30) as http:
        page = (await http.get(f"{host.http_base_url}/api/manage/organizers",
                               params={"code": FUNCTION_KEY, "tenant": CONTOSO})).text
    [link] = re.findall(r'href="([^"]*)">Reconnect<', page)
    assert "organizer=scheduler%40contoso.test" in link.replace("&amp;", "&") and f"tenant={CONTOSO}" in link
