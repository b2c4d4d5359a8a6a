"""connect, callback, keep_alive and the bearer twin invoked through Azure's Python worker, as the host would."""

import dataclasses
import json
import re
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from devstack.harness import call_http, call_timer
from shared.identity.vault import flow_key
from shared.pages import connect as auth_flow
from tests.auth_fakes import SCHEDULER, connected_entry
from tests.functional.pages.conftest import KEY

pytestmark = pytest.mark.functional
COOKIE = "va-connect"  # development over http; __Host-va-connect with https (see test below)


def get(path, params=None, headers=None):
    return {"path": f"/api/{path}", "params": params or {}, "headers": headers or {}}


async def call(worker, name, req):
    return (await call_http(worker, name, **req)).http


def assert_page_headers(response):
    headers = response.headers
    assert headers["Cache-Control"] == "no-store" and headers["X-Frame-Options"] == "DENY"
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert headers["Referrer-Policy"] == "no-referrer"


async def start(worker, **params):
    response = await call(worker, "connect", get("auth/connect", params))
    state = re.search(r"state=([^&]+)", response.headers["Location"]).group(1)
    cookie = response.headers["Set-Cookie"].split(";")[0]
    return response, state, cookie


async def finish(worker, state, cookie, code="code-scheduler", **extra):
    headers = {"Cookie": cookie} if cookie else {}
    return await call(worker, "callback", get("auth/callback", {"code": code, "state": state, **extra}, headers))


def text(response):
    return response.get_body().decode()


async def test_connect_redirects_to_sign_in_and_binds_the_flow_to_the_browser(worker, world):
    _, vault = world
    response, state, cookie = await start(worker, organizer="scheduler@contoso.test")
    assert response.status_code == 302 and response.headers["Location"].startswith("https://login.example/")
    set_cookie = response.headers["Set-Cookie"]
    assert cookie == f"{COOKIE}={flow_key(state)}"
    # As the host writes it (ASP.NET Core: attribute names lower-case) from the cookie the worker parsed.
    for attribute in ("httponly", "samesite=lax", "path=/", "max-age=600"):
        assert attribute in set_cookie.lower()
    assert "secure" not in set_cookie.lower()  # plain-http development only
    assert_page_headers(response)
    stored = vault.raw(f"flows/{flow_key(state)}")
    assert stored and json.loads(stored)["flow"]["flow"]["login_hint"] == "scheduler@contoso.test"


def test_cookie_is_secure_and_host_prefixed_over_https(function_app_module):
    settings = dataclasses.replace(function_app_module.services.settings,
                                   auth_redirect_uri="https://app.example/api/auth/callback")
    cookie = auth_flow._cookie(settings, "abc", 600)
    assert cookie.startswith("__Host-va-connect=abc;") and "; Secure" in cookie and "Domain" not in cookie


async def test_callback_stores_the_connection_once(worker, world):
    idp, vault = world
    _, state, cookie = await start(worker)
    response = await finish(worker, state, cookie)
    assert response.status_code == 200 and "Scheduling service account" in text(response)
    assert_page_headers(response)
    assert "max-age=0" in response.headers["Set-Cookie"].lower()
    entry = vault.get(SCHEDULER["upn"])
    assert entry.status == "connected" and idp.is_valid(entry.cache) and entry.client_type == "confidential"
    assert vault.raw(f"flows/{flow_key(state)}") is None
    # Replay of the very same callback: refused, nothing changes
    replay = await finish(worker, state, cookie)
    assert replay.status_code == 400 and "already used" in text(replay)
    assert vault.get(SCHEDULER["upn"]).etag == entry.etag


async def test_callback_without_the_browser_cookie_is_refused_and_does_not_burn_the_flow(worker, world):
    _, vault = world
    _, state, cookie = await start(worker)
    for forged in (None, f"{COOKIE}={flow_key('another-state')}", f"{COOKIE}="):
        response = await finish(worker, state, forged)
        assert response.status_code == 400 and "not started from this browser" in text(response)
    assert vault.get(SCHEDULER["upn"]) is None
    assert (await finish(worker, state, cookie)).status_code == 200


async def test_sign_in_error_is_shown_escaped(worker, world):
    _, state, cookie = await start(worker)
    response = await finish(worker, state, cookie, code="", error="access_denied",
                            error_description="<b>The user cancelled</b>")
    body = text(response)
    assert response.status_code == 400 and "&lt;b&gt;The user cancelled&lt;/b&gt;" in body and "<b>" not in body


async def test_names_on_the_success_page_are_escaped(worker, world):
    _, state, cookie = await start(worker)
    body = text(await finish(worker, state, cookie, code="code-script"))
    assert "&lt;script&gt;" in body and "<script>" not in body


async def test_signing_in_as_someone_else_connects_them_and_says_so(worker, world):
    _, vault = world
    _, state, cookie = await start(worker, organizer="scheduler@contoso.test")
    body = text(await finish(worker, state, cookie, code="code-script"))
    assert "you signed in as dr.adams@contoso.test" in body and vault.get("dr.adams@contoso.test")


async def test_refused_code_is_a_failure_page(worker, world):
    _, state, cookie = await start(worker)
    response = await finish(worker, state, cookie, code="stolen")
    assert response.status_code == 400 and "AADSTS54005" in text(response)


async def test_expired_flow_is_refused(worker, world):
    _, vault = world
    vault.put_flow(flow_key("old"), {"flow": {"state": "old"}, "organizer": None}, ttl_seconds=-1)
    response = await finish(worker, "old", f"{COOKIE}={flow_key('old')}")
    assert response.status_code == 400 and "expired" in text(response)


async def test_connect_with_a_bad_organizer_is_a_400_page(worker, world):
    response = await call(worker, "connect", get("auth/connect", {"organizer": "<not an organizer>"}))
    assert response.status_code == 400 and "&lt;" not in text(response)


def test_auth_functions_are_worker_with_the_right_auth_levels(worker):
    def trigger(name):
        return worker.functions[name].trigger

    assert trigger("connect")["authLevel"].lower() == "function"
    for anonymous in ("callback", "get_my_join_url"):
        assert trigger(anonymous)["authLevel"].lower() == "anonymous"
    assert trigger("keep_alive")["schedule"] == "0 0 */6 * * *"
    assert trigger("callback")["route"] == "auth/callback" and trigger("get_my_join_url")["route"] == "me/join-url"


async def test_keep_alive_timer_refreshes_idle_organizers(worker, world, caplog):
    idp, vault = world
    old = (datetime.now(UTC) - timedelta(days=4)).isoformat()
    before = vault.save(connected_entry(idp, last_refreshed_at=old))
    await call_timer(worker, "keep_alive")
    after = vault.get(SCHEDULER["oid"])
    assert after.last_refreshed_at > old and after.cache != before.cache and idp.is_valid(after.cache)


# --- the bearer twin ------------------------------------------------------------------------------------

def api_token(settings, **overrides):
    now = int(time.time())
    claims = {"iss": f"{settings.authority_url}/v2.0", "aud": settings.api_audience, "exp": now + 600, "nbf": now,
              "oid": SCHEDULER["oid"], "preferred_username": SCHEDULER["upn"], "scp": "access_as_user",
              "tid": settings.tenant_id, **overrides}
    return jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": "k1"})


async def test_bearer_twin_answers_for_the_caller(worker, bearer_world):
    token = api_token(bearer_world)
    response = await call(worker, "get_my_join_url",
                          get("me/join-url", {"meetingId": "m1"}, {"Authorization": f"Bearer {token}"}))
    body = json.loads(response.get_body())
    assert response.status_code == 200 and body["organizer"] == SCHEDULER["oid"]


async def test_bearer_twin_requires_a_valid_token(worker, bearer_world):
    missing = await call(worker, "get_my_join_url", get("me/join-url", {"meetingId": "m1"}))
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    expired = api_token(bearer_world, exp=int(time.time()) - 3600)
    response = await call(worker, "get_my_join_url",
                          get("me/join-url", {"meetingId": "m1"}, {"Authorization": f"Bearer {expired}"}))
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_bearer_caller_cannot_name_another_organizer(worker, bearer_world):
    token = api_token(bearer_world)
    response = await call(worker, "get_my_join_url", get("me/join-url", {
        "meetingId": "m1", "organizer": "dr.adams@contoso.test"}, {"Authorization": f"Bearer {token}"}))
    assert response.status_code == 403 and json.loads(response.get_body())["reason"] == "organizer_mismatch"
