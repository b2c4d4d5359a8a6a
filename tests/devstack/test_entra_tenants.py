"""The Entra and Graph emulators with several tenants: the organizations authority, tid and each tenant's issuer,
consent per tenant (user, admin), refreshes at the user's own tenant, the app's certificate and federated
credentials (client assertions), the App Service managed-identity endpoint, and Graph's tenant wall.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit

import httpx
import jwt
import msal
import pytest
from azure.identity import ManagedIdentityCredential

from devstack.certs import public_certificate
from tests.devstack.test_emulators import DevHttpClient
from tests.devstack.test_entra_flows import _auth_response, _claims, _form_field, _sign_in, _token_url

pytestmark = [pytest.mark.e2e,
              pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")]

SEED = Path(__file__).resolve().parents[2] / "devstack" / "seed"
DIRECTORY = json.loads((SEED / "directory.json").read_text())
MEETINGS = {m["subject"]: m for m in json.loads((SEED / "meetings.json").read_text())}
API, FRONT_END, REPORTING = DIRECTORY["clients"]
CONTOSO = DIRECTORY["tenant_id"]
FABRIKAM, NORTHWIND = (t["tenant_id"] for t in DIRECTORY["customer_tenants"])
USERS = {u["upn"]: u for t in (DIRECTORY, *DIRECTORY["customer_tenants"]) for u in t["users"]}
SCHEDULER = USERS["scheduler@contoso.test"]
FAB_SCHEDULER, FAB_ADMIN = USERS["scheduler@fabrikam.test"], USERS["admin@fabrikam.test"]
NW_SCHEDULER = USERS["scheduler@northwind.test"]
MANAGED_IDENTITY = DIRECTORY["managed_identities"][0]
VA_READ = "https://graph.microsoft.com/VirtualAppointment.Read"
CALLBACK = API["redirect_uris"][0]


@pytest.fixture()
def http(stack: dict[str, Any]) -> Iterator[httpx.Client]:
    """A plain client; before and after, Fabrikam has not consented to the app; afterwards the emulator's config
    and counters are reset."""
    admin = stack["entra"]["admin_url"]
    with httpx.Client(verify=ssl.create_default_context(cafile=stack["ca_bundle"])) as client:
        client.request("DELETE", admin + "/consent", json={"tenant": FABRIKAM, "client_id": API["client_id"]})
        yield client
        client.post(admin + "/reset").raise_for_status()
        client.request("DELETE", admin + "/consent", json={"tenant": FABRIKAM, "client_id": API["client_id"]})


def _authority(stack: dict[str, Any], tenant: str) -> str:
    return f"{stack['entra']['base_url']}/{tenant}"


def _app(stack: dict[str, Any], tenant: str, credential: Any = None, client: dict[str, Any] = API,
         cache: msal.TokenCache | None = None) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client["client_id"], client_credential=credential or client["client_secret"],
        authority=_authority(stack, tenant), instance_discovery=False, token_cache=cache,
        http_client=DevHttpClient(stack["ca_bundle"], stack["entra"]["base_url"]))


def _consent(http: httpx.Client, stack: dict[str, Any], tenant: str) -> None:
    http.post(stack["entra"]["admin_url"] + "/consent",
              json={"tenant": tenant, "client_id": API["client_id"]}).raise_for_status()


def _sign_in_at_organizations(stack: dict[str, Any], http: httpx.Client, user: dict[str, Any]
                              ) -> tuple[msal.ConfidentialClientApplication, dict[str, Any], httpx.Response]:
    app = _app(stack, "organizations")
    flow = app.initiate_auth_code_flow([VA_READ], redirect_uri=CALLBACK)
    return app, flow, _sign_in(http, flow["auth_uri"], user)


# --- discovery and tokens ------------------------------------------------------------------------------

def test_each_tenant_has_its_issuer_and_organizations_has_the_template(stack: dict[str, Any],
                                                                       http: httpx.Client) -> None:
    for tenant in (CONTOSO, FABRIKAM):
        doc = http.get(f"{_authority(stack, tenant)}/v2.0/.well-known/openid-configuration").json()
        assert doc["issuer"] == f"{_authority(stack, tenant)}/v2.0"
    organizations = http.get(f"{_authority(stack, 'organizations')}/v2.0/.well-known/openid-configuration").json()
    assert organizations["issuer"] == f"{stack['entra']['base_url']}/{{tenantid}}/v2.0"
    assert organizations["token_endpoint"] == f"{_authority(stack, 'organizations')}/oauth2/v2.0/token"
    unknown = http.get(f"{_authority(stack, '00000000-0000-4000-8000-000000000000')}/discovery/v2.0/keys")
    assert unknown.status_code == 400 and unknown.json()["error_codes"] == [90002]


def test_a_user_of_a_tenant_that_lets_users_consent_signs_in_through_organizations(stack: dict[str, Any],
                                                                                   http: httpx.Client) -> None:
    app, flow, signed = _sign_in_at_organizations(stack, http, NW_SCHEDULER)
    result = app.acquire_token_by_auth_code_flow(flow, _auth_response(signed, CALLBACK))
    assert "access_token" in result, result
    access, identity = _claims(result["access_token"]), result["id_token_claims"]
    assert access["tid"] == identity["tid"] == NORTHWIND
    assert access["iss"] == f"{_authority(stack, NORTHWIND)}/v2.0" and access["oid"] == NW_SCHEDULER["oid"]
    [account] = app.get_accounts()
    # MSAL files the account under the authority it signed in at (realm "organizations"), the user's tenant
    # only in the home account id: a refresh at the tenant's own authority finds the refresh token all the same.
    assert account["home_account_id"] == f"{NW_SCHEDULER['oid']}.{NORTHWIND}" and account["realm"] == "organizations"


def test_a_tenant_that_lets_only_admins_consent_needs_admin_consent_first(stack: dict[str, Any],
                                                                          http: httpx.Client) -> None:
    _, _, refused = _sign_in_at_organizations(stack, http, FAB_SCHEDULER)
    assert refused.status_code == 403 and "AADSTS90094" in refused.text and "Need admin approval" in refused.text
    _consent(http, stack, FABRIKAM)
    app, flow, signed = _sign_in_at_organizations(stack, http, FAB_SCHEDULER)
    result = app.acquire_token_by_auth_code_flow(flow, _auth_response(signed, CALLBACK))
    assert _claims(result["access_token"])["tid"] == FABRIKAM, result


def test_a_user_of_another_tenant_cannot_sign_in_at_a_tenant_endpoint(stack: dict[str, Any],
                                                                      http: httpx.Client) -> None:
    flow = _app(stack, CONTOSO).initiate_auth_code_flow([VA_READ], redirect_uri=CALLBACK)
    page = _sign_in(http, flow["auth_uri"], NW_SCHEDULER)
    assert page.status_code == 200 and "AADSTS50020" in page.text and 'name="ctx"' in page.text


def test_a_single_tenant_app_is_refused_outside_its_home_tenant(stack: dict[str, Any], http: httpx.Client) -> None:
    query = {"client_id": REPORTING["client_id"], "response_type": "code", "scope": "User.Read",
             "redirect_uri": REPORTING["redirect_uris"][0]}
    common = http.get(f"{_authority(stack, 'organizations')}/oauth2/v2.0/authorize?{urlencode(query)}")
    assert common.status_code == 400 and "AADSTS50194" in common.text
    other = http.get(f"{_authority(stack, FABRIKAM)}/oauth2/v2.0/authorize?{urlencode(query)}")
    assert other.status_code == 400 and "AADSTS700016" in other.text


def test_refresh_tokens_are_redeemed_at_the_users_own_tenant(stack: dict[str, Any], http: httpx.Client) -> None:
    _consent(http, stack, FABRIKAM)
    cache = msal.SerializableTokenCache()
    app = _app(stack, "organizations", cache=cache)
    flow = app.initiate_auth_code_flow([VA_READ], redirect_uri=CALLBACK)
    result = app.acquire_token_by_auth_code_flow(flow, _auth_response(_sign_in(http, flow["auth_uri"], FAB_SCHEDULER),
                                                                      CALLBACK))
    refresh = {"grant_type": "refresh_token", "refresh_token": result["refresh_token"],
               "client_id": API["client_id"], "client_secret": API["client_secret"]}
    wrong = http.post(f"{_authority(stack, CONTOSO)}/oauth2/v2.0/token", data=refresh)
    assert wrong.status_code == 400 and wrong.json()["error_codes"] == [50020]
    # The same cache, loaded into an app at the organizer's own tenant, refreshes there.
    own = _app(stack, FABRIKAM, cache=cache)
    [account] = own.get_accounts()
    refreshed = own.acquire_token_silent([VA_READ], account=account, force_refresh=True)
    assert refreshed and _claims(refreshed["access_token"])["tid"] == FABRIKAM, refreshed
    assert http.get(stack["entra"]["admin_url"] + "/stats").json()["by_authority"][FABRIKAM] >= 1


def test_password_and_device_approval_need_consent_in_the_users_tenant(stack: dict[str, Any],
                                                                       http: httpx.Client) -> None:
    ropc = http.post(_token_url(stack).replace(CONTOSO, FABRIKAM), data={
        "grant_type": "password", "client_id": API["client_id"], "client_secret": API["client_secret"],
        "username": FAB_SCHEDULER["upn"], "password": FAB_SCHEDULER["password"], "scope": VA_READ})
    assert ropc.status_code == 400 and ropc.json()["error_codes"] == [65001]
    device = http.post(f"{_authority(stack, 'organizations')}/oauth2/v2.0/devicecode",
                       data={"client_id": API["client_id"], "scope": VA_READ}).json()
    approve = http.post(stack["entra"]["admin_url"] + "/device/approve",
                        json={"user_code": device["user_code"], "user": FAB_SCHEDULER["upn"]})
    assert approve.status_code == 403 and "AADSTS90094" in approve.json()["error_description"]


# --- admin consent -----------------------------------------------------------------------------------

def _admin_consent_page(http: httpx.Client, stack: dict[str, Any], tenant: str, **extra: str) -> httpx.Response:
    query = {"client_id": API["client_id"], "redirect_uri": CALLBACK, "state": "st-1",
             "scope": f"{VA_READ} offline_access", **extra}
    return http.get(f"{_authority(stack, tenant)}/v2.0/adminconsent?{urlencode(query)}")


def _submit(http: httpx.Client, page: httpx.Response, user: dict[str, Any], action: str = "accept") -> httpx.Response:
    action_url = urljoin(str(page.url), "adminconsent")
    return http.post(action_url, data={"ctx": _form_field(page.text, "ctx"), "username": user["upn"],
                                       "password": user["password"], "action": action})


def test_admin_consent_grants_the_app_for_the_whole_tenant(stack: dict[str, Any], http: httpx.Client) -> None:
    page = _admin_consent_page(http, stack, FABRIKAM)
    assert page.status_code == 200 and "Fabrikam Clinics" in page.text and "VirtualAppointment.Read" in page.text
    not_admin = _submit(http, page, FAB_SCHEDULER)
    assert not_admin.status_code == 200 and "not an administrator" in not_admin.text
    other_tenant = _submit(http, page, USERS["admin@contoso.test"])
    assert "AADSTS50020" in other_tenant.text
    granted = _submit(http, page, FAB_ADMIN)
    assert granted.status_code == 302
    location = granted.headers["location"]
    assert location.startswith(CALLBACK + "?")
    assert dict(parse_qsl(urlsplit(location).query)) == {"admin_consent": "True", "tenant": FABRIKAM,
                                                         "state": "st-1", "scope": f"{VA_READ} offline_access"}
    # Now the tenant's organizers sign in without being asked.
    _, _, signed = _sign_in_at_organizations(stack, http, FAB_SCHEDULER)
    assert signed.status_code == 302


def test_admin_consent_cancelled_and_refused_requests(stack: dict[str, Any], http: httpx.Client) -> None:
    cancelled = _submit(http, _admin_consent_page(http, stack, FABRIKAM), FAB_ADMIN, action="cancel")
    answer = dict(parse_qsl(urlsplit(cancelled.headers["location"]).query))
    assert answer["error"] == "access_denied" and answer["state"] == "st-1"
    unregistered = _admin_consent_page(http, stack, FABRIKAM, redirect_uri="https://attacker.example/cb")
    assert unregistered.status_code == 400 and "AADSTS50011" in unregistered.text and "location" not in \
        unregistered.headers


# --- the app's credential: certificate and federated ---------------------------------------------------

def test_the_app_proves_itself_with_its_certificate(stack: dict[str, Any], http: httpx.Client) -> None:
    pem = Path(stack["client"]["app_credential_pem"]).read_text()
    key = pem[:pem.index("-----BEGIN CERTIFICATE-----")]
    app = _app(stack, CONTOSO, credential={"private_key": key, "public_certificate": public_certificate(pem)})
    result = app.acquire_token_by_username_password(SCHEDULER["upn"], SCHEDULER["password"], scopes=[VA_READ])
    assert "access_token" in result, result
    assert http.get(stack["entra"]["admin_url"] + "/stats").json()["by_credential"]["certificate"] >= 1
    # A certificate the app registration does not hold is refused.
    from trustme import CA, KeyType

    stranger = CA(key_type=KeyType.RSA).issue_cert("stranger.local", key_type=KeyType.RSA)
    refused = _app(stack, CONTOSO, credential={
        "private_key": stranger.private_key_pem.bytes().decode(),
        "public_certificate": stranger.cert_chain_pems[0].bytes().decode()}).acquire_token_for_client(
        ["https://graph.microsoft.com/.default"])
    assert refused["error"] == "invalid_client" and refused["error_codes"] == [700027]


def _managed_identity(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch, header: str | None = None,
                      client_id: str = MANAGED_IDENTITY["client_id"]) -> ManagedIdentityCredential:
    monkeypatch.setenv("IDENTITY_ENDPOINT", stack["entra"]["identity_endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", header or DIRECTORY["identity_header"])
    return ManagedIdentityCredential(client_id=client_id, connection_verify=stack["ca_bundle"])


def test_managed_identity_endpoint_in_the_app_service_form(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                           http: httpx.Client) -> None:
    token = _managed_identity(stack, monkeypatch).get_token("api://AzureADTokenExchange/.default")
    claims = _claims(token.token)
    assert (claims["aud"], claims["sub"], claims["iss"]) == (
        "api://AzureADTokenExchange", MANAGED_IDENTITY["principal_id"], stack["entra"]["issuer"])
    raw = http.get(stack["entra"]["identity_endpoint"], params={"api-version": "2019-08-01", "resource": "x"})
    assert raw.status_code == 401 and "X-IDENTITY-HEADER" in raw.json()["message"]
    from azure.identity import CredentialUnavailableError

    with pytest.raises(CredentialUnavailableError):
        _managed_identity(stack, monkeypatch, header="wrong").get_token("api://AzureADTokenExchange/.default")


def test_the_app_proves_itself_with_its_managed_identity_and_no_secret(stack: dict[str, Any],
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       http: httpx.Client) -> None:
    identity = _managed_identity(stack, monkeypatch)

    def assertion() -> str:
        return str(identity.get_token("api://AzureADTokenExchange/.default").token)

    app = _app(stack, CONTOSO, credential={"client_assertion": assertion})
    result = app.acquire_token_by_username_password(SCHEDULER["upn"], SCHEDULER["password"], scopes=[VA_READ])
    assert "access_token" in result, result
    assert http.get(stack["entra"]["admin_url"] + "/stats").json()["by_credential"]["federated"] >= 1
    # A token for another audience (or of another identity) matches no federated credential on the app.
    wrong = str(identity.get_token("https://storage.azure.com/.default").token)
    refused = _app(stack, CONTOSO, credential={"client_assertion": lambda: wrong}).acquire_token_for_client(
        ["https://graph.microsoft.com/.default"])
    assert refused["error_codes"] == [70021] and "No matching federated identity record" in \
        refused["error_description"]


# --- Graph: a token of one tenant reaches no meeting of another ---------------------------------------

def test_graph_refuses_a_token_whose_tenant_does_not_own_the_meeting(stack: dict[str, Any],
                                                                     http: httpx.Client) -> None:
    def token(user: dict[str, Any], tenant: str) -> str:
        answer = http.post(f"{_authority(stack, tenant)}/oauth2/v2.0/token", data={
            "grant_type": "password", "client_id": API["client_id"], "client_secret": API["client_secret"],
            "username": user["upn"], "password": user["password"],
            "scope": f"{VA_READ} https://graph.microsoft.com/OnlineMeetings.Read"})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    _consent(http, stack, FABRIKAM)
    fabrikam = token(FAB_SCHEDULER, FABRIKAM)
    graph = stack["graph"]["base_url"]

    def join(meeting: dict[str, Any], bearer: str) -> httpx.Response:
        url = f"{graph}/me/onlineMeetings/{quote(meeting['id'], safe='')}/getVirtualAppointmentJoinWebUrl()"
        return http.get(url, headers={"Authorization": f"Bearer {bearer}"})

    own = join(MEETINGS["Dental check-up"], fabrikam)
    assert own.status_code == 200 and f"tid={FABRIKAM}" in own.json()["value"]
    foreign = join(MEETINGS["Cardiology follow-up"], fabrikam)
    assert foreign.status_code == 403 and "another tenant" in foreign.json()["error"]["message"]
    listed = http.get(f"{graph}/me/onlineMeetings", params={
        "$filter": f"JoinWebUrl eq '{MEETINGS['Cardiology follow-up']['joinWebUrl']}'"},
        headers={"Authorization": f"Bearer {fabrikam}"})
    assert listed.status_code == 200 and listed.json()["value"] == []
    stats = http.get(stack["graph"]["admin_url"] + "/stats").json()
    assert stats["by_tenant"][FABRIKAM] >= 3
    # A token signed by the right key but naming an unknown tenant is not a Graph token.
    claims = {**_claims(fabrikam), "tid": "00000000-0000-4000-8000-000000000000"}
    assert jwt.get_unverified_header(fabrikam)["kid"]
    unknown = http.get(f"{graph}/me/onlineMeetings", params={"$filter": "JoinWebUrl eq 'x'"},
                       headers={"Authorization": "Bearer " + jwt.encode(claims, "k" * 32, algorithm="HS256")})
    assert unknown.status_code == 401
