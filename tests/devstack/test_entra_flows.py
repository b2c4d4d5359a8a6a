"""Delegated flows of the Entra emulator with unmodified MSAL and azure-identity.

Authorization code + PKCE (the browser part done by httpx), device code, On-Behalf-Of, tokens for the
app's own API, forced interaction_required, and the refusals real Entra makes.
"""

from __future__ import annotations

import html
import json
import re
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urljoin, urlsplit

import httpx
import jwt
import msal
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import OnBehalfOfCredential
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.devstack.test_emulators import DevHttpClient

pytestmark = [
    pytest.mark.e2e,
    # MSAL 1.39 warns on every auth code flow not using form_post; query is what most tests here use.
    pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning"),
]

SEED = Path(__file__).resolve().parents[2] / "devstack" / "seed"
DIRECTORY = json.loads((SEED / "directory.json").read_text())
MEETINGS = json.loads((SEED / "meetings.json").read_text())
API, FRONT_END = DIRECTORY["clients"][0], DIRECTORY["clients"][1]
USERS = {u["upn"].split("@")[0]: u for u in DIRECTORY["users"]}
SCHEDULER, ADAMS = USERS["scheduler"], USERS["dr.adams"]
CARDIOLOGY = MEETINGS[0]
VA_READ = "https://graph.microsoft.com/VirtualAppointment.Read"
GRAPH_DEFAULT = "https://graph.microsoft.com/.default"
ACCESS_AS_USER = f"{API['app_id_uri']}/access_as_user"
API_CALLBACK = API["redirect_uris"][0]
FRONT_END_CALLBACK = FRONT_END["redirect_uris"][0]


@pytest.fixture()
def http(stack: dict[str, Any]) -> Iterator[httpx.Client]:
    """A plain client (no redirects followed); resets the emulator's config and forced interaction after."""
    with httpx.Client(verify=ssl.create_default_context(cafile=stack["ca_bundle"])) as client:
        yield client
        client.post(stack["entra"]["admin_url"] + "/reset").raise_for_status()


def _confidential(stack: dict[str, Any], client: dict[str, Any],
                  token_cache: msal.TokenCache | None = None) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client["client_id"], client_credential=client["client_secret"], authority=stack["entra"]["authority"],
        instance_discovery=False, http_client=DevHttpClient(stack["ca_bundle"], stack["entra"]["base_url"]),
        token_cache=token_cache)


def _public(stack: dict[str, Any], client: dict[str, Any]) -> msal.PublicClientApplication:
    return msal.PublicClientApplication(
        client["client_id"], authority=stack["entra"]["authority"], instance_discovery=False,
        http_client=DevHttpClient(stack["ca_bundle"], stack["entra"]["base_url"]))


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def _token_url(stack: dict[str, Any]) -> str:
    return stack["entra"]["authority"] + "/oauth2/v2.0/token"


def _form_field(page: str, name: str) -> str:
    match = re.search(rf'name="{name}"[^>]*value="([^"]*)"', page)
    assert match, f"no {name} field in the page"
    return match.group(1)


def _sign_in(http: httpx.Client, auth_uri: str, user: dict[str, Any], *, action: str = "accept",
             password: str | None = None) -> httpx.Response:
    """What a user does in the browser: open the authorize URL, fill the form, press a button."""
    page = http.get(auth_uri)
    assert page.status_code == 200, page.text
    action_url = urljoin(auth_uri, re.search(r'<form method="post" action="([^"]+)"', page.text).group(1))
    return http.post(action_url, data={"ctx": _form_field(page.text, "ctx"), "username": user["upn"],
                                       "password": user["password"] if password is None else password,
                                       "action": action})


def _auth_response(response: httpx.Response, redirect_uri: str) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(redirect_uri + "?"), location
    return dict(parse_qsl(urlsplit(location).query))


def _password_token(http: httpx.Client, stack: dict[str, Any], client: dict[str, Any], user: dict[str, Any],
                    scope: str) -> httpx.Response:
    return http.post(_token_url(stack), data={
        "grant_type": "password", "client_id": client["client_id"], "client_secret": client["client_secret"],
        "username": user["upn"], "password": user["password"], "scope": scope})


def _api_token(http: httpx.Client, stack: dict[str, Any], user: dict[str, Any]) -> str:
    """A user's token for the app's own API, as the front end would hold it."""
    response = _password_token(http, stack, FRONT_END, user, f"{ACCESS_AS_USER} openid")
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _error(response: httpx.Response) -> tuple[int, str, list[int]]:
    body = response.json()
    return response.status_code, body["error"], body["error_codes"]


# --- discovery -------------------------------------------------------------------------------------

def test_discovery_announces_the_new_endpoints_and_grants(stack: dict[str, Any], http: httpx.Client) -> None:
    doc = http.get(stack["entra"]["authority"] + "/v2.0/.well-known/openid-configuration").json()
    assert doc["device_authorization_endpoint"] == stack["entra"]["authority"] + "/oauth2/v2.0/devicecode"
    assert {"authorization_code", "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:grant-type:jwt-bearer"} <= set(doc["grant_types_supported"])


# --- authorization code + PKCE ---------------------------------------------------------------------

def test_msal_auth_code_flow_with_pkce_then_refresh(stack: dict[str, Any], http: httpx.Client) -> None:
    app = _confidential(stack, API)
    flow = app.initiate_auth_code_flow([VA_READ], redirect_uri=API_CALLBACK, login_hint=SCHEDULER["upn"])
    query = dict(parse_qsl(urlsplit(flow["auth_uri"]).query))
    assert query["code_challenge_method"] == "S256" and query["nonce"]

    page = http.get(flow["auth_uri"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element_id in ("username", "password", "accept", "cancel"):
        assert f'id="{element_id}"' in page.text
    assert _form_field(page.text, "username") == SCHEDULER["upn"]
    assert "VirtualAppointment.Read" in page.text

    auth_response = _auth_response(_sign_in(http, flow["auth_uri"], SCHEDULER), API_CALLBACK)
    assert auth_response["state"] == flow["state"]
    assert {"code", "session_state", "client_info"} <= auth_response.keys()

    result = app.acquire_token_by_auth_code_flow(flow, auth_response)  # MSAL checks state and nonce
    assert "access_token" in result, result
    assert "refresh_token" in result and result["id_token_claims"]["preferred_username"] == SCHEDULER["upn"]
    claims = _claims(result["access_token"])
    assert (claims["aud"], claims["oid"], claims["scp"]) == ("https://graph.microsoft.com", SCHEDULER["oid"],
                                                            "VirtualAppointment.Read")

    [account] = app.get_accounts(username=SCHEDULER["upn"])
    assert account["home_account_id"] == f"{SCHEDULER['oid']}.{stack['entra']['tenant_id']}"
    refreshed = app.acquire_token_silent([VA_READ], account=account, force_refresh=True)
    assert refreshed and refreshed["token_source"] == "identity_provider", refreshed
    assert refreshed["access_token"] != result["access_token"]


def test_code_is_one_time_and_needs_the_pkce_verifier(stack: dict[str, Any], http: httpx.Client) -> None:
    app = _confidential(stack, API)
    flow = app.initiate_auth_code_flow([VA_READ], redirect_uri=API_CALLBACK)
    code = _auth_response(_sign_in(http, flow["auth_uri"], ADAMS), API_CALLBACK)["code"]
    redeem = {"grant_type": "authorization_code", "code": code, "redirect_uri": API_CALLBACK,
              "client_id": API["client_id"], "client_secret": API["client_secret"],
              "scope": f"{VA_READ} openid offline_access", "code_verifier": flow["code_verifier"]}

    wrong_verifier = http.post(_token_url(stack), data={**redeem, "code_verifier": "x" * 43})
    assert _error(wrong_verifier) == (400, "invalid_grant", [501481])
    no_verifier = http.post(_token_url(stack), data={k: v for k, v in redeem.items() if k != "code_verifier"})
    assert _error(no_verifier)[:2] == (400, "invalid_request")
    other_redirect = http.post(_token_url(stack), data={**redeem, "redirect_uri": FRONT_END_CALLBACK})
    assert _error(other_redirect) == (400, "invalid_grant", [500112])

    first = http.post(_token_url(stack), data=redeem)
    assert first.status_code == 200, first.text
    assert _claims(first.json()["access_token"])["oid"] == ADAMS["oid"]
    reused = http.post(_token_url(stack), data=redeem)
    assert _error(reused) == (400, "invalid_grant", [54005])


def test_code_expires(stack: dict[str, Any], http: httpx.Client) -> None:
    http.put(stack["entra"]["admin_url"] + "/config", json={"auth_code_lifetime": 1}).raise_for_status()
    app = _confidential(stack, API)
    flow = app.initiate_auth_code_flow([VA_READ], redirect_uri=API_CALLBACK)
    auth_response = _auth_response(_sign_in(http, flow["auth_uri"], ADAMS), API_CALLBACK)
    time.sleep(1.1)
    result = app.acquire_token_by_auth_code_flow(flow, auth_response)
    assert result.get("error") == "invalid_grant" and result["error_codes"] == [70008], result


def test_unregistered_redirect_uri_is_an_error_page_not_a_redirect(stack: dict[str, Any],
                                                                   http: httpx.Client) -> None:
    authorize = stack["entra"]["authority"] + "/oauth2/v2.0/authorize"
    params = {"client_id": API["client_id"], "response_type": "code", "scope": VA_READ, "state": "s1",
              "redirect_uri": "https://attacker.test/callback"}
    response = http.get(authorize, params=params)
    assert response.status_code == 400 and "location" not in response.headers
    assert "AADSTS50011" in response.text and "https://attacker.test/callback" in response.text

    unknown_client = http.get(authorize, params={**params, "client_id": "00000000-0000-0000-0000-000000000001"})
    assert unknown_client.status_code == 401 and "AADSTS700016" in unknown_client.text
    assert "location" not in unknown_client.headers

    # Another client's registered URI is not this client's.
    crossed = http.get(authorize, params={**params, "redirect_uri": FRONT_END_CALLBACK})
    assert crossed.status_code == 400 and "AADSTS50011" in crossed.text


def test_cancel_redirects_with_access_denied(stack: dict[str, Any], http: httpx.Client) -> None:
    app = _confidential(stack, API)
    flow = app.initiate_auth_code_flow([VA_READ], redirect_uri=API_CALLBACK)
    auth_response = _auth_response(_sign_in(http, flow["auth_uri"], SCHEDULER, action="cancel"), API_CALLBACK)
    assert auth_response["error"] == "access_denied" and auth_response["state"] == flow["state"]
    assert auth_response["error_description"].startswith("AADSTS65004")
    result = app.acquire_token_by_auth_code_flow(flow, auth_response)
    assert result["error"] == "access_denied"


def test_wrong_password_shows_the_page_again_escaped(stack: dict[str, Any], http: httpx.Client) -> None:
    app = _confidential(stack, API)
    flow = app.initiate_auth_code_flow([VA_READ], redirect_uri=API_CALLBACK, login_hint='<b>"x"</b>')
    page = http.get(flow["auth_uri"])
    assert '<b>"x"</b>' not in page.text and "&lt;b&gt;&quot;x&quot;&lt;/b&gt;" in page.text

    wrong = _sign_in(http, flow["auth_uri"], SCHEDULER, password="not-it")
    assert wrong.status_code == 200 and 'id="error"' in wrong.text and "AADSTS50126" in wrong.text
    assert _form_field(wrong.text, "username") == SCHEDULER["upn"]
    assert "not-it" not in wrong.text
    # The same page (same ctx) still works with the right password.
    retry = http.post(urljoin(flow["auth_uri"], urlsplit(flow["auth_uri"]).path), data={
        "ctx": _form_field(wrong.text, "ctx"), "username": SCHEDULER["upn"], "password": SCHEDULER["password"],
        "action": "accept"})
    assert "code" in _auth_response(retry, API_CALLBACK)


def test_form_post_response_mode(stack: dict[str, Any], http: httpx.Client) -> None:
    app = _confidential(stack, API)
    flow = app.initiate_auth_code_flow([VA_READ], redirect_uri=API_CALLBACK, response_mode="form_post")
    page = _sign_in(http, flow["auth_uri"], SCHEDULER)
    assert page.status_code == 200 and "location" not in page.headers
    assert f'<form method="post" action="{API_CALLBACK}"' in page.text
    fields = {name: html.unescape(value)
              for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text)}
    assert fields["state"] == flow["state"]
    result = app.acquire_token_by_auth_code_flow(flow, fields)
    assert "access_token" in result, result


def test_front_end_gets_a_token_for_the_api_by_auth_code(stack: dict[str, Any], http: httpx.Client) -> None:
    app = _confidential(stack, FRONT_END)
    flow = app.initiate_auth_code_flow([ACCESS_AS_USER], redirect_uri=FRONT_END_CALLBACK)
    result = app.acquire_token_by_auth_code_flow(
        flow, _auth_response(_sign_in(http, flow["auth_uri"], ADAMS), FRONT_END_CALLBACK))
    assert "access_token" in result, result
    claims = _claims(result["access_token"])
    assert claims["aud"] == API["app_id_uri"] and claims["scp"] == "access_as_user"
    assert claims["azp"] == FRONT_END["client_id"] and claims["iss"] == stack["entra"]["issuer"]
    assert claims["oid"] == ADAMS["oid"]


# --- tokens for the app's own API, and resource mixing ---------------------------------------------

def test_password_grant_for_the_api_and_mixed_resources_refused(stack: dict[str, Any], http: httpx.Client) -> None:
    claims = _claims(_api_token(http, stack, SCHEDULER))
    assert (claims["aud"], claims["scp"], claims["azp"]) == (API["app_id_uri"], "access_as_user",
                                                             FRONT_END["client_id"])
    assert claims["iss"] == stack["entra"]["issuer"] and claims["oid"] == SCHEDULER["oid"]

    mixed = _password_token(http, stack, FRONT_END, SCHEDULER,
                            f"{ACCESS_AS_USER} https://graph.microsoft.com/User.Read openid offline_access")
    assert _error(mixed) == (400, "invalid_scope", [28000])

    unknown_scope = _password_token(http, stack, FRONT_END, SCHEDULER, f"{API['app_id_uri']}/nope")
    assert _error(unknown_scope) == (400, "invalid_scope", [70011])
    unknown_api = _password_token(http, stack, FRONT_END, SCHEDULER, "api://unknown/access_as_user")
    assert _error(unknown_api) == (400, "invalid_resource", [500011])
    # The Graph emulator does not take a token for the app's API.
    url = f"{stack['graph']['base_url']}/me/onlineMeetings/x/getVirtualAppointmentJoinWebUrl()"
    assert http.get(url, headers={"Authorization": f"Bearer {_api_token(http, stack, SCHEDULER)}"}
                    ).status_code == 401


def test_mixed_resources_at_authorize_go_back_as_an_error(stack: dict[str, Any], http: httpx.Client) -> None:
    app = _confidential(stack, FRONT_END)
    flow = app.initiate_auth_code_flow([ACCESS_AS_USER, "https://graph.microsoft.com/User.Read"],
                                       redirect_uri=FRONT_END_CALLBACK)
    auth_response = _auth_response(http.get(flow["auth_uri"]), FRONT_END_CALLBACK)
    assert auth_response["error"] == "invalid_scope" and "AADSTS28000" in auth_response["error_description"]


# --- device code -----------------------------------------------------------------------------------

def test_msal_device_flow_approved_through_admin(stack: dict[str, Any], http: httpx.Client) -> None:
    app = _public(stack, API)
    flow = app.initiate_device_flow([VA_READ])
    assert "user_code" in flow, flow
    assert flow["interval"] == 1
    assert flow["verification_uri"] == stack["entra"]["authority"] + "/oauth2/deviceauth"
    assert flow["user_code"] in flow["message"]

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(app.acquire_token_by_device_flow, flow)
        time.sleep(1.5)  # MSAL has polled and been told authorization_pending at least once
        assert not pending.done()
        approve = http.post(stack["entra"]["admin_url"] + "/device/approve",
                            json={"user_code": flow["user_code"].lower(), "user": SCHEDULER["upn"]})
        assert approve.status_code == 200, approve.text
        result = pending.result(timeout=10)
    assert "access_token" in result, result
    assert _claims(result["access_token"])["oid"] == SCHEDULER["oid"] and "refresh_token" in result
    polls = http.get(stack["entra"]["admin_url"] + "/stats").json()["by_grant"]
    assert polls["urn:ietf:params:oauth:grant-type:device_code"] >= 2

    again = http.post(_token_url(stack), data={"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                                               "client_id": API["client_id"], "device_code": flow["device_code"]})
    assert _error(again)[:2] == (400, "bad_verification_code")
    unknown = http.post(stack["entra"]["admin_url"] + "/device/approve",
                        json={"user_code": flow["user_code"], "user": SCHEDULER["upn"]})
    assert unknown.status_code == 404


def test_device_flow_refresh_token_belongs_to_a_public_client(stack: dict[str, Any], http: httpx.Client) -> None:
    """Like Entra: a refresh token from a public flow is refused when a secret comes with it (AADSTS700025)."""
    public = _public(stack, API)
    flow = public.initiate_device_flow([VA_READ])
    http.post(stack["entra"]["admin_url"] + "/device/approve",
              json={"user_code": flow["user_code"], "user": ADAMS["upn"]}).raise_for_status()
    result = public.acquire_token_by_device_flow(flow)
    assert "refresh_token" in result, result

    with_secret = http.post(_token_url(stack), data={
        "grant_type": "refresh_token", "refresh_token": result["refresh_token"],
        "client_id": API["client_id"], "client_secret": API["client_secret"]})
    assert _error(with_secret) == (401, "invalid_client", [700025])
    [account] = public.get_accounts(username=ADAMS["upn"])
    refreshed = public.acquire_token_silent([VA_READ], account=account, force_refresh=True)
    assert refreshed and "access_token" in refreshed, refreshed


def test_device_flow_through_the_verification_page(stack: dict[str, Any], http: httpx.Client) -> None:
    start = http.post(stack["entra"]["authority"] + "/oauth2/v2.0/devicecode",
                      data={"client_id": API["client_id"], "scope": f"{VA_READ} openid offline_access"})
    assert start.status_code == 200, start.text
    flow = start.json()
    poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": API["client_id"],
            "device_code": flow["device_code"]}
    assert _error(http.post(_token_url(stack), data=poll)) == (400, "authorization_pending", [70016])

    page = http.get(flow["verification_uri"])
    for element_id in ("user_code", "username", "password", "accept"):
        assert f'id="{element_id}"' in page.text
    wrong_code = http.post(flow["verification_uri"], data={
        "user_code": "NOPE", "username": ADAMS["upn"], "password": ADAMS["password"], "action": "accept"})
    assert 'id="error"' in wrong_code.text
    approved = http.post(flow["verification_uri"], data={
        "user_code": flow["user_code"], "username": ADAMS["upn"], "password": ADAMS["password"],
        "action": "accept"})
    assert approved.status_code == 200 and "signed in" in approved.text

    tokens = http.post(_token_url(stack), data=poll)
    assert tokens.status_code == 200, tokens.text
    assert _claims(tokens.json()["access_token"])["oid"] == ADAMS["oid"]


def test_device_flow_declined_and_expired(stack: dict[str, Any], http: httpx.Client) -> None:
    devicecode = stack["entra"]["authority"] + "/oauth2/v2.0/devicecode"
    poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": API["client_id"]}

    declined = http.post(devicecode, data={"client_id": API["client_id"], "scope": VA_READ}).json()
    http.post(declined["verification_uri"], data={"user_code": declined["user_code"], "action": "cancel"})
    refused = http.post(_token_url(stack), data={**poll, "device_code": declined["device_code"]})
    assert _error(refused)[:2] == (400, "authorization_declined")

    http.put(stack["entra"]["admin_url"] + "/config", json={"device_code_lifetime": 1}).raise_for_status()
    short = http.post(devicecode, data={"client_id": API["client_id"], "scope": VA_READ}).json()
    assert short["expires_in"] == 1
    time.sleep(1.1)
    expired = http.post(_token_url(stack), data={**poll, "device_code": short["device_code"]})
    assert _error(expired) == (400, "expired_token", [70019])


# --- On-Behalf-Of ----------------------------------------------------------------------------------

def _obo(stack: dict[str, Any], assertion: str) -> OnBehalfOfCredential:
    return OnBehalfOfCredential(
        stack["entra"]["tenant_id"], API["client_id"], client_secret=API["client_secret"], user_assertion=assertion,
        authority=stack["entra"]["base_url"].removeprefix("https://"), disable_instance_discovery=True,
        connection_verify=stack["ca_bundle"])


def test_azure_identity_on_behalf_of_then_graph(stack: dict[str, Any], http: httpx.Client) -> None:
    graph_token = _obo(stack, _api_token(http, stack, SCHEDULER)).get_token(GRAPH_DEFAULT).token
    claims = _claims(graph_token)
    assert (claims["aud"], claims["oid"], claims["appid"]) == ("https://graph.microsoft.com", SCHEDULER["oid"],
                                                              API["client_id"])
    # `.default`: every Graph permission the admin consented for the app (directory.json's delegated_scopes)
    assert set(claims["scp"].split()) == set(API["delegated_scopes"])

    mid = quote(CARDIOLOGY["id"], safe="")
    url = f"{stack['graph']['base_url']}/me/onlineMeetings/{mid}/getVirtualAppointmentJoinWebUrl()"
    response = http.get(url, headers={"Authorization": f"Bearer {graph_token}"})
    assert response.status_code == 200 and response.json()["value"] == CARDIOLOGY["virtualAppointmentJoinWebUrl"]


def _obo_request(http: httpx.Client, stack: dict[str, Any], assertion: str) -> httpx.Response:
    return http.post(_token_url(stack), data={
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "requested_token_use": "on_behalf_of",
        "assertion": assertion, "scope": f"{GRAPH_DEFAULT} offline_access openid",
        "client_id": API["client_id"], "client_secret": API["client_secret"]})


def test_on_behalf_of_refusals(stack: dict[str, Any], http: httpx.Client) -> None:
    good = _api_token(http, stack, ADAMS)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(_claims(good), other_key, algorithm="RS256",
                        headers={"kid": jwt.get_unverified_header(good)["kid"]})
    assert _error(_obo_request(http, stack, forged)) == (400, "invalid_grant", [50013])

    graph_token = _password_token(http, stack, FRONT_END, ADAMS, "User.Read").json()["access_token"]
    wrong_audience = _obo_request(http, stack, graph_token)
    assert _error(wrong_audience) == (400, "invalid_grant", [50013])
    assert "audience" in wrong_audience.json()["error_description"]

    http.put(stack["entra"]["admin_url"] + "/config", json={"access_token_lifetime": 1}).raise_for_status()
    short_lived = _api_token(http, stack, ADAMS)
    http.post(stack["entra"]["admin_url"] + "/reset").raise_for_status()
    time.sleep(1.1)
    assert _error(_obo_request(http, stack, short_lived)) == (400, "invalid_grant", [500133])

    no_secret = http.post(_token_url(stack), data={
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "requested_token_use": "on_behalf_of",
        "assertion": good, "scope": GRAPH_DEFAULT, "client_id": API["client_id"]})
    assert _error(no_secret) == (401, "invalid_client", [7000218])

    with pytest.raises(ClientAuthenticationError, match="AADSTS50013"):
        _obo(stack, forged).get_token(GRAPH_DEFAULT)


# --- forced interaction_required -------------------------------------------------------------------

def test_interaction_required_forced_then_cleared(stack: dict[str, Any], http: httpx.Client) -> None:
    app = _confidential(stack, API)
    first = app.acquire_token_by_username_password(ADAMS["upn"], ADAMS["password"], scopes=[VA_READ])
    assert "access_token" in first, first
    [account] = app.get_accounts(username=ADAMS["upn"])
    admin = stack["entra"]["admin_url"] + "/interaction_required"

    forced = http.post(admin, json={"user": ADAMS["upn"]})
    assert forced.json() == {"user": ADAMS["oid"], "interaction_required": True}
    result = app.acquire_token_silent_with_error([VA_READ], account=account, force_refresh=True)
    assert result is not None and result["error"] == "interaction_required", result
    assert result["error_codes"] == [50076] and result["suberror"] == "basic_action"
    assert result["classification"] == "basic_action" and "capolids" in result["claims"]

    cleared = http.request("DELETE", admin, json={"user": ADAMS["oid"]})
    assert cleared.json() == {"user": ADAMS["oid"], "interaction_required": False}
    # MSAL replays an identical request's HTTP 400 from its own cache for 60 s (per app instance), so
    # the same app would still see interaction_required: a new app on the same token cache does not.
    stale = app.acquire_token_silent_with_error([VA_READ], account=account, force_refresh=True)
    assert stale is not None and stale["error"] == "interaction_required"
    fresh_app = _confidential(stack, API, token_cache=app.token_cache)
    # The refresh token was not spent by the refusal.
    again = fresh_app.acquire_token_silent_with_error([VA_READ], account=account, force_refresh=True)
    assert again is not None and "access_token" in again, again

    assert http.post(admin, json={"user": "nobody@contoso.test"}).status_code == 404
    assert http.post(admin, content=b"not json").status_code == 400


def test_admin_endpoints_in_form(stack: dict[str, Any], http: httpx.Client) -> None:
    stats = http.get(stack["entra"]["admin_url"] + "/stats").json()
    assert {"token_requests", "by_grant", "by_user", "open"} <= stats.keys()
    config = http.put(stack["entra"]["admin_url"] + "/config", json={"auth_code_lifetime": 30})
    assert config.json() == {"access_token_lifetime": 3600, "auth_code_lifetime": 30, "device_code_lifetime": 900,
                             "refresh_token_rotation": "entra"}
    assert http.put(stack["entra"]["admin_url"] + "/config", json={"device_code_lifetime": 0}).status_code == 400
