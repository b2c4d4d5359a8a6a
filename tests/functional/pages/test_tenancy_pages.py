"""Tenancy at the pages, called as the host would: connect in a tenant, the allow-list at the callback, the
admin-consent link and its result, the operator page, and bearer tokens of other tenants."""

import base64
import hashlib
import json
import logging
import re
import time
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest

from shared.identity.vault import ConnectionStatus
from shared.pages.look import STYLESHEET
from tests.auth_fakes import FABRIKAM_SCHEDULER, FOREIGN_TENANT, OTHER_TENANT, SCHEDULER, TENANT, connected_entry
from tests.functional.pages.conftest import KEY
from tests.functional.pages.test_connect_page import call, finish, get, start, text

pytestmark = pytest.mark.functional


async def test_an_organizer_of_another_allowed_tenant_connects_into_their_tenant(worker, world):
    _, vault = world
    _, state, cookie = await start(worker, organizer="scheduler@fabrikam.test", tenant=OTHER_TENANT)
    response = await finish(worker, state, cookie, code="code-fabrikam")
    assert response.status_code == 200 and OTHER_TENANT in text(response)
    entry = vault.get(FABRIKAM_SCHEDULER["upn"])
    assert entry.tenant_id == OTHER_TENANT and entry.scopes == "VirtualAppointment.Read"
    assert vault.get(FABRIKAM_SCHEDULER["upn"], TENANT) is None


async def test_a_tenant_off_the_allow_list_is_refused_at_the_callback_with_a_page_and_a_log_line(worker, world,
                                                                                                 caplog):
    _, vault = world
    _, state, cookie = await start(worker)
    with caplog.at_level(logging.WARNING, logger="shared.pages.connect"):
        response = await finish(worker, state, cookie, code="code-northwind")
    body = text(response)
    assert response.status_code == 403 and "not served by this app" in body and FOREIGN_TENANT in body
    assert list(vault.entries()) == []
    [line] = [r for r in caplog.records if getattr(r, "outcome", None) == "refused_tenant"]
    assert FOREIGN_TENANT in line.getMessage()


async def test_connect_links_name_only_allowed_tenants(worker, world):
    refused = await call(worker, "connect", get("auth/connect", {"tenant": FOREIGN_TENANT}))
    assert refused.status_code == 400 and "is not on this app&#x27;s list" in text(refused)
    not_a_tenant = await call(worker, "connect", get("auth/connect", {"tenant": "contoso"}))
    assert not_a_tenant.status_code == 400


async def test_signing_in_to_another_tenant_than_the_link_names_stores_nothing(worker, world):
    _, vault = world
    _, state, cookie = await start(worker, tenant=OTHER_TENANT)
    response = await finish(worker, state, cookie, code="code-scheduler")
    assert response.status_code == 400 and "another organization" in text(response)
    assert list(vault.entries()) == []


async def test_admin_consent_link_goes_to_the_tenants_adminconsent_and_comes_back(worker, world, function_app_module):
    settings = function_app_module.services.settings
    response = await call(worker, "request_admin_consent", get("auth/admin-consent", {"tenant": OTHER_TENANT}))
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == f"/{OTHER_TENANT}/v2.0/adminconsent"
    query = dict(parse_qsl(location.query))
    assert query["client_id"] == settings.client_id and query["redirect_uri"] == settings.auth_redirect_uri
    assert "VirtualAppointment.Read" in query["scope"] and "offline_access" in query["scope"]
    cookie = response.headers["Set-Cookie"].split(";")[0]
    # Entra's answer, as the callback gets it
    granted = await call(worker, "callback", get("auth/callback", {
        "admin_consent": "True", "tenant": OTHER_TENANT, "state": query["state"]}, {"Cookie": cookie}))
    assert granted.status_code == 200 and "Admin consent granted" in text(granted)
    replayed = await call(worker, "callback", get("auth/callback", {
        "admin_consent": "True", "tenant": OTHER_TENANT, "state": query["state"]}, {"Cookie": cookie}))
    assert replayed.status_code == 400


async def test_admin_consent_declined_or_for_another_tenant_says_so(worker, world):
    for answer in ({"error": "access_denied", "error_description": "AADSTS65004: User declined to consent."},
                   {"admin_consent": "True", "tenant": TENANT}):
        response = await call(worker, "request_admin_consent", get("auth/admin-consent", {"tenant": OTHER_TENANT}))
        state = dict(parse_qsl(urlsplit(response.headers["Location"]).query))["state"]
        cookie = response.headers["Set-Cookie"].split(";")[0]
        page = await call(worker, "callback", get("auth/callback", {**answer, "state": state}, {"Cookie": cookie}))
        assert page.status_code == 400 and "not granted" in text(page)
    no_tenant = await call(worker, "request_admin_consent", get("auth/admin-consent"))
    assert no_tenant.status_code == 400


# --- the operator page ---------------------------------------------------------------------------------------------

async def test_operator_page_lists_each_organizer_with_tenant_status_and_links(worker, world):
    idp, vault = world
    vault.save(connected_entry(idp))
    vault.save(connected_entry(idp, user=FABRIKAM_SCHEDULER, status=ConnectionStatus.NEEDS_RECONNECT,
                               consecutive_failures=2, last_error="invalid_grant (AADSTS70008): expired"))
    response = await call(worker, "manage_organizers", get("manage/organizers", {"code": "k"}))
    body = text(response)
    assert response.status_code == 200 and response.mimetype == "text/html"
    for needle in ("Scheduling service account", "scheduler@fabrikam.test", TENANT, OTHER_TENANT, "needs reconnect",
                   "VirtualAppointment.Read", "AADSTS70008"):
        assert needle in body, needle
    reconnects = re.findall(r'href="([^"]*)">Reconnect<', body)
    assert len(reconnects) == 1 and f"tenant={OTHER_TENANT}" in reconnects[0] and "code=k" in reconnects[0]
    assert f"/api/auth/admin-consent?tenant={OTHER_TENANT}" in body and 'id="connect"' in body
    only_fabrikam = text(await call(worker, "manage_organizers", get("manage/organizers", {"tenant": OTHER_TENANT})))
    assert "scheduler@fabrikam.test" in only_fabrikam and "Scheduling service account" not in only_fabrikam


async def test_pages_are_styled_by_a_hashed_stylesheet_only_and_read_on_a_phone(worker, world):
    response = await call(worker, "manage_organizers", get("manage/organizers"))
    policy = response.headers["Content-Security-Policy"]
    digest = base64.b64encode(hashlib.sha256(STYLESHEET.encode()).digest()).decode()
    assert policy.startswith("default-src 'none'") and f"style-src 'sha256-{digest}'" in policy
    assert "unsafe-inline" not in policy and "script-src" not in policy
    body = text(response)
    assert f"<style>{STYLESHEET}</style>" in body and 'name="viewport"' in body and "@media (max-width:40rem)" in body
    assert "<script" not in body
    _, state, cookie = await start(worker)
    connected = await finish(worker, state, cookie)
    assert connected.headers["Content-Security-Policy"] == policy and f"<style>{STYLESHEET}</style>" in text(connected)


async def test_names_on_the_operator_page_are_escaped(worker, world):
    idp, vault = world
    vault.save(connected_entry(idp, user={**SCHEDULER, "name": "<script>alert(1)</script>"}))
    body = text(await call(worker, "manage_organizers", get("manage/organizers")))
    assert "&lt;script&gt;" in body and "<script>" not in body


def test_no_route_begins_with_admin_which_the_host_keeps_for_itself(worker):
    routes = {name: fn.trigger.get("route") for name, fn in worker.functions.items()}
    http_routes = {name: route for name, route in routes.items() if route}
    assert http_routes["manage_organizers"] == "manage/organizers"
    assert not [r for r in http_routes.values() if r.lower().startswith("admin")]
    assert not [name for name in worker.functions if name.lower().startswith("admin")]


# --- bearer tokens of allowed and other tenants ---------------------------------------------------------------------

def tenant_token(settings, tenant, **overrides):
    now = int(time.time())
    claims = {"iss": f"{settings.authority_for(tenant)}/v2.0", "aud": settings.api_audience, "exp": now + 600,
              "nbf": now, "oid": FABRIKAM_SCHEDULER["oid"], "preferred_username": FABRIKAM_SCHEDULER["upn"],
              "scp": "access_as_user", "tid": tenant, **overrides}
    return jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": "k1"})


async def test_bearer_tokens_of_allowed_tenants_are_checked_against_their_own_issuer(worker, bearer_world):
    def lookup(token):
        return call(worker, "get_my_join_url", get("me/join-url", {"meetingId": "m1"},
                                                    {"Authorization": f"Bearer {token}"}))

    # Another allowed tenant, its own issuer: the caller is identified in that tenant.
    ok = await lookup(tenant_token(bearer_world, OTHER_TENANT))
    assert ok.status_code in (200, 404) and ok.headers.get("WWW-Authenticate") is None
    # The same token claiming one tenant but issued by another: refused.
    mixed = await lookup(tenant_token(bearer_world, OTHER_TENANT, iss=f"{bearer_world.authority_for(TENANT)}/v2.0"))
    assert mixed.status_code == 401 and "another issuer" in json.loads(mixed.get_body())["detail"]
    # A tenant off the allow-list: 401 problem+json, before any key is fetched.
    foreign = await lookup(tenant_token(bearer_world, FOREIGN_TENANT))
    assert foreign.status_code == 401 and foreign.mimetype == "application/problem+json"
    assert "tenant" in json.loads(foreign.get_body())["detail"]
    assert foreign.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
