"""End-to-end checks of the local Entra/Graph emulators with the real MSAL, azure-identity and msgraph-sdk."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import jwt
import msal
import pytest
import requests
import requests.certs
from azure.identity import ClientSecretCredential
from cryptography.hazmat.primitives.asymmetric import rsa
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_http.middleware.options import RetryHandlerOption
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.online_meetings.online_meetings_request_builder import (
    OnlineMeetingsRequestBuilder,
)
from msgraph.graph_request_adapter import options as graph_adapter_options
from msgraph_core import GraphClientFactory

from devstack.stack import start_stack

pytestmark = pytest.mark.e2e

SEED = Path(__file__).resolve().parents[2] / "devstack" / "seed"
DIRECTORY = json.loads((SEED / "directory.json").read_text())
MEETINGS = json.loads((SEED / "meetings.json").read_text())
CLIENT = DIRECTORY["clients"][0]
USERS = {u["upn"].split("@")[0]: u for u in DIRECTORY["users"]}
SCHEDULER, ADAMS, OUTSIDER = USERS["scheduler"], USERS["dr.adams"], USERS["outsider"]
CARDIOLOGY, DERMATOLOGY = MEETINGS[0], MEETINGS[1]
VA_READ = "https://graph.microsoft.com/VirtualAppointment.Read"
GRAPH_DEFAULT = "https://graph.microsoft.com/.default"


@pytest.fixture()
def admin(stack: dict[str, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(verify=_tls(stack)) as client:
        client.post(stack["graph"]["admin_url"] + "/reset").raise_for_status()
        yield client
        client.post(stack["graph"]["admin_url"] + "/reset").raise_for_status()


class DevHttpClient(requests.Session):
    """requests session for MSAL against the emulator: pins the CA and restores the port MSAL drops.

    MSAL's ROPC first GETs https://{host}/common/userrealm/... built from the authority's host name
    *without its port*, and requests lets REQUESTS_CA_BUNDLE override a Session's `verify`.
    """

    def __init__(self, ca_bundle: str, entra_base_url: str) -> None:
        super().__init__()
        self._ca_bundle = ca_bundle
        self._netloc = urlsplit(entra_base_url).netloc
        self._host = urlsplit(entra_base_url).hostname

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        parts = urlsplit(str(url))
        if parts.netloc == self._host:
            url = urlunsplit(parts._replace(netloc=self._netloc))
        kwargs["verify"] = self._ca_bundle
        return super().request(method, url, *args, **kwargs)


def _tls(stack: dict[str, Any]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=stack["ca_bundle"])


def _msal(stack: dict[str, Any]) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        CLIENT["client_id"], client_credential=CLIENT["client_secret"], authority=stack["entra"]["authority"],
        instance_discovery=False, http_client=DevHttpClient(stack["ca_bundle"], stack["entra"]["base_url"]))


def _user_token(stack: dict[str, Any], user: dict[str, Any], scopes: list[str]) -> str:
    result = _msal(stack).acquire_token_by_username_password(user["upn"], user["password"], scopes=scopes)
    assert "access_token" in result, result
    return result["access_token"]


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


@pytest.fixture(scope="module")
def tokens(stack: dict[str, Any]) -> dict[str, str]:
    app_token = ClientSecretCredential(
        stack["entra"]["tenant_id"], CLIENT["client_id"], CLIENT["client_secret"],
        authority=stack["entra"]["base_url"].removeprefix("https://"), disable_instance_discovery=True,
        connection_verify=stack["ca_bundle"]).get_token(GRAPH_DEFAULT).token
    return {
        "scheduler": _user_token(stack, SCHEDULER, [VA_READ]),
        "scheduler_all": _user_token(stack, SCHEDULER, [GRAPH_DEFAULT]),
        "adams": _user_token(stack, ADAMS, [VA_READ]),
        "outsider": _user_token(stack, OUTSIDER, [VA_READ]),
        "app": app_token,
    }


class _StaticToken(AccessTokenProvider):
    def __init__(self, token: str) -> None:
        self.token = token

    async def get_authorization_token(self, uri: str, additional_authentication_context: Any = None) -> str:
        return self.token

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return AllowedHostsValidator(["127.0.0.1"])


def _graph(stack: dict[str, Any], token: str) -> GraphServiceClient:
    # The adapter's default options carry the /me URL rewrite; a hand-built client must pass them on.
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(verify=_tls(stack)), options=graph_adapter_options)
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(_StaticToken(token)), client=http)
    adapter.base_url = stack["graph"]["base_url"]
    return GraphServiceClient(request_adapter=adapter)


def _join_url_builder(client: GraphServiceClient, user: str, meeting_id: str) -> Any:
    return (client.users.by_user_id(user).online_meetings.by_online_meeting_id(meeting_id)
            .get_virtual_appointment_join_web_url)


# --- Entra -----------------------------------------------------------------------------------------

def test_msal_ropc_then_silent_from_cache(stack: dict[str, Any]) -> None:
    app = _msal(stack)
    first = app.acquire_token_by_username_password(SCHEDULER["upn"], SCHEDULER["password"], scopes=[VA_READ])
    assert "access_token" in first, first
    claims = _claims(first["access_token"])
    assert claims["scp"] == "VirtualAppointment.Read"
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["iss"] == stack["entra"]["issuer"]
    assert (claims["oid"], claims["upn"], claims["appid"]) == (SCHEDULER["oid"], SCHEDULER["upn"],
                                                               CLIENT["client_id"])
    stats_before = httpx.get(stack["entra"]["admin_url"] + "/stats", verify=_tls(stack)).json()

    [account] = app.get_accounts(username=SCHEDULER["upn"].upper())
    assert account["home_account_id"] == f"{SCHEDULER['oid']}.{stack['entra']['tenant_id']}"
    silent = app.acquire_token_silent([VA_READ], account=account)
    assert silent and silent["access_token"] == first["access_token"]
    assert silent["token_source"] == "cache"
    stats_after = httpx.get(stack["entra"]["admin_url"] + "/stats", verify=_tls(stack)).json()
    assert stats_after["token_requests"] == stats_before["token_requests"]


def test_plain_msal_verify_is_not_enough(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents the two pitfalls DevHttpClient works around."""
    def plain() -> msal.ConfidentialClientApplication:
        return msal.ConfidentialClientApplication(
            CLIENT["client_id"], client_credential=CLIENT["client_secret"],
            authority=stack["entra"]["authority"], instance_discovery=False, verify=stack["ca_bundle"])

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    with pytest.raises(requests.exceptions.SSLError):
        plain().acquire_token_for_client([GRAPH_DEFAULT])
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert "access_token" in plain().acquire_token_for_client([GRAPH_DEFAULT])
    with pytest.raises(requests.exceptions.ConnectionError, match="port=443"):
        plain().acquire_token_by_username_password(SCHEDULER["upn"], SCHEDULER["password"], scopes=[VA_READ])


def test_client_secret_credential_gets_app_only_token(tokens: dict[str, str]) -> None:
    claims = _claims(tokens["app"])
    assert "scp" not in claims
    assert claims["idtyp"] == "app" and claims["roles"] == CLIENT["application_roles"]
    assert claims["oid"] == claims["sub"] != claims["appid"]


def _password_refresh_token(http: httpx.Client, url: str, auth: dict[str, str]) -> str:
    first = http.post(url, data={**auth, "grant_type": "password", "username": ADAMS["upn"],
                                 "password": ADAMS["password"], "scope": f"{VA_READ} offline_access"})
    assert first.status_code == 200, first.text
    return str(first.json()["refresh_token"])


def test_refresh_tokens_rotate_and_a_used_one_stays_valid_until_revoked(stack: dict[str, Any]) -> None:
    # Entra's documented behaviour: a new refresh token with every refresh, and the old one is not revoked by use.
    url = stack["entra"]["authority"] + "/oauth2/v2.0/token"
    auth = {"client_id": CLIENT["client_id"], "client_secret": CLIENT["client_secret"]}
    with httpx.Client(verify=_tls(stack)) as http:
        rt1 = _password_refresh_token(http, url, auth)
        second = http.post(url, data={**auth, "grant_type": "refresh_token", "refresh_token": rt1})
        assert second.status_code == 200, second.text
        rt2 = second.json()["refresh_token"]
        assert rt2 != rt1 and _claims(second.json()["access_token"])["oid"] == ADAMS["oid"]

        reused = http.post(url, data={**auth, "grant_type": "refresh_token", "refresh_token": rt1})
        assert reused.status_code == 200, reused.text

        revoke = http.post(stack["entra"]["admin_url"] + "/revoke", json={"user": ADAMS["upn"]})
        assert revoke.json()["revoked"] >= 2
        for spent in (rt1, rt2):
            revoked = http.post(url, data={**auth, "grant_type": "refresh_token", "refresh_token": spent})
            assert revoked.status_code == 400 and revoked.json()["error"] == "invalid_grant"


def test_strict_rotation_is_an_option_and_reset_restores_entra_behaviour(stack: dict[str, Any]) -> None:
    url = stack["entra"]["authority"] + "/oauth2/v2.0/token"
    auth = {"client_id": CLIENT["client_id"], "client_secret": CLIENT["client_secret"]}
    admin = stack["entra"]["admin_url"]
    with httpx.Client(verify=_tls(stack)) as http:
        try:
            assert http.put(admin + "/config", json={"refresh_token_rotation": "strict"}).json()[
                "refresh_token_rotation"] == "strict"
            rt1 = _password_refresh_token(http, url, auth)
            assert http.post(url, data={**auth, "grant_type": "refresh_token", "refresh_token": rt1}).status_code == 200
            reused = http.post(url, data={**auth, "grant_type": "refresh_token", "refresh_token": rt1})
            assert reused.status_code == 400 and reused.json()["error_codes"] == [70008]
            assert http.put(admin + "/config", json={"refresh_token_rotation": "sometimes"}).status_code == 400
        finally:
            http.post(admin + "/reset").raise_for_status()
        assert http.put(admin + "/config", json={}).json()["refresh_token_rotation"] == "entra"


def test_token_endpoint_errors_look_like_entra(stack: dict[str, Any]) -> None:
    url = stack["entra"]["authority"] + "/oauth2/v2.0/token"
    base = {"grant_type": "password", "username": SCHEDULER["upn"], "password": SCHEDULER["password"],
            "scope": VA_READ, "client_id": CLIENT["client_id"]}
    with httpx.Client(verify=_tls(stack)) as http:
        bad_secret = http.post(url, data={**base, "client_secret": "nope"})
        assert bad_secret.status_code == 401
        body = bad_secret.json()
        assert body["error"] == "invalid_client" and body["error_codes"] == [7000215]
        assert body["error_description"].startswith("AADSTS7000215")
        assert {"timestamp", "trace_id", "correlation_id"} <= body.keys()

        good = {**base, "client_secret": CLIENT["client_secret"]}
        bad_password = http.post(url, data={**good, "password": "x"})
        assert bad_password.status_code == 400 and bad_password.json()["error_codes"] == [50126]

        basic_auth = (CLIENT["client_id"], CLIENT["client_secret"])
        basic = http.post(url, data={**base, "client_id": ""}, auth=basic_auth)
        assert basic.status_code == 200, basic.text

        odd = http.post(url, data={**good, "grant_type": "magic"})
        assert odd.status_code == 400 and odd.json()["error"] == "unsupported_grant_type"


# --- Graph through msgraph-sdk ---------------------------------------------------------------------

@pytest.mark.asyncio
async def test_sdk_join_url_for_organizer_and_participant(stack: dict[str, Any],
                                                          tokens: dict[str, str]) -> None:
    organizer = _graph(stack, tokens["scheduler"])
    for user in (SCHEDULER["oid"], SCHEDULER["upn"], SCHEDULER["oid"]):  # one client, several calls
        result = await _join_url_builder(organizer, user, CARDIOLOGY["id"]).get()
        assert result is not None and result.value == CARDIOLOGY["virtualAppointmentJoinWebUrl"]
    participant = _graph(stack, tokens["adams"])
    result = await _join_url_builder(participant, ADAMS["oid"], CARDIOLOGY["id"]).get()
    assert result is not None and result.value == CARDIOLOGY["virtualAppointmentJoinWebUrl"]


@pytest.mark.asyncio
async def test_sdk_me_path(stack: dict[str, Any], tokens: dict[str, str]) -> None:
    client = _graph(stack, tokens["scheduler"])
    result = await (client.me.online_meetings.by_online_meeting_id(DERMATOLOGY["id"])
                    .get_virtual_appointment_join_web_url.get())
    assert result is not None and result.value == DERMATOLOGY["virtualAppointmentJoinWebUrl"]


@pytest.mark.asyncio
@pytest.mark.parametrize(("token_name", "user", "meeting", "status", "code"), [
    ("app", SCHEDULER["oid"], CARDIOLOGY["id"], 403, "Forbidden"),
    ("outsider", OUTSIDER["oid"], CARDIOLOGY["id"], 403, "Forbidden"),
    ("adams", ADAMS["oid"], DERMATOLOGY["id"], 403, "Forbidden"),
    ("adams", SCHEDULER["oid"], CARDIOLOGY["id"], 403, "Forbidden"),
    ("scheduler", SCHEDULER["oid"], "bm90LWEtbWVldGluZw==", 404, "NotFound"),
])
async def test_sdk_errors(stack: dict[str, Any], tokens: dict[str, str], token_name: str, user: str,
                          meeting: str, status: int, code: str) -> None:
    client = _graph(stack, tokens[token_name])
    with pytest.raises(ODataError) as info:
        await _join_url_builder(client, user, meeting).get()
    assert info.value.response_status_code == status
    assert info.value.error is not None and info.value.error.code == code
    assert info.value.response_headers.get("request-id")


@pytest.mark.asyncio
async def test_sdk_sees_429_with_retry_after(stack: dict[str, Any], tokens: dict[str, str],
                                            admin: httpx.Client) -> None:
    admin.put(stack["graph"]["admin_url"] + "/faults", json={"rules": [
        {"meeting_id": CARDIOLOGY["id"], "status": 429, "retry_after": 7, "times": 1}]}).raise_for_status()
    client = _graph(stack, tokens["scheduler"])
    no_retry = RequestConfiguration(options=[RetryHandlerOption(max_retries=0)])
    builder = _join_url_builder(client, SCHEDULER["oid"], CARDIOLOGY["id"])
    with pytest.raises(ODataError) as info:
        await builder.get(request_configuration=no_retry)
    assert info.value.response_status_code == 429
    assert info.value.response_headers.get("Retry-After") == "7"
    # The rule was used once and is spent now.
    result = await builder.get(request_configuration=no_retry)
    assert result is not None and result.value == CARDIOLOGY["virtualAppointmentJoinWebUrl"]
    stats = admin.get(stack["graph"]["admin_url"] + "/stats").json()
    assert stats["by_status"] == {"429": 1, "200": 1}
    assert stats["by_meeting"] == {CARDIOLOGY["id"]: 2}


@pytest.mark.asyncio
async def test_sdk_retry_handler_honours_retry_after(stack: dict[str, Any], tokens: dict[str, str],
                                                     admin: httpx.Client) -> None:
    admin.put(stack["graph"]["admin_url"] + "/faults", json={"rules": [
        {"meeting_id": "*", "status": 503, "retry_after": 1, "times": 1}]}).raise_for_status()
    client = _graph(stack, tokens["scheduler"])
    result = await _join_url_builder(client, SCHEDULER["oid"], CARDIOLOGY["id"]).get()
    assert result is not None and result.value == CARDIOLOGY["virtualAppointmentJoinWebUrl"]
    assert admin.get(stack["graph"]["admin_url"] + "/stats").json()["by_status"] == {"503": 1, "200": 1}


@pytest.mark.asyncio
async def test_sdk_filter_by_join_web_url(stack: dict[str, Any], tokens: dict[str, str]) -> None:
    def by_join_url(url: str) -> RequestConfiguration[Any]:
        escaped = url.replace("'", "''")
        params = OnlineMeetingsRequestBuilder.OnlineMeetingsRequestBuilderGetQueryParameters(
            filter=f"JoinWebUrl eq '{escaped}'")
        return RequestConfiguration(query_parameters=params)

    client = _graph(stack, tokens["scheduler_all"])
    found = await client.users.by_user_id(SCHEDULER["oid"]).online_meetings.get(
        request_configuration=by_join_url(CARDIOLOGY["joinWebUrl"]))
    assert found is not None and found.value is not None and len(found.value) == 1
    meeting = found.value[0]
    assert meeting.id == CARDIOLOGY["id"] and meeting.subject == CARDIOLOGY["subject"]
    assert meeting.participants.organizer.identity.user.id == SCHEDULER["oid"]

    none = await client.me.online_meetings.get(request_configuration=by_join_url("https://x.test/it's"))
    assert none is not None and none.value == []

    narrow = _graph(stack, tokens["scheduler"])  # VirtualAppointment.Read only
    with pytest.raises(ODataError) as info:
        await narrow.me.online_meetings.get(request_configuration=by_join_url(CARDIOLOGY["joinWebUrl"]))
    assert info.value.response_status_code == 403


# --- Graph wire details ----------------------------------------------------------------------------

def test_graph_accepts_wire_variants_and_rejects_bad_tokens(stack: dict[str, Any],
                                                            tokens: dict[str, str]) -> None:
    base = stack["graph"]["base_url"]
    mid = quote(CARDIOLOGY["id"], safe="")
    upn = quote(SCHEDULER["upn"].upper(), safe="")
    bearer = {"Authorization": f"Bearer {tokens['scheduler']}", "client-request-id": "abc-123"}
    with httpx.Client(verify=_tls(stack)) as http:
        fn = "getVirtualAppointmentJoinWebUrl"
        for path in (f"{base}/users/{SCHEDULER['oid']}/onlineMeetings/{mid}/{fn}()",
                     f"{base}//users/{upn}/onlineMeetings/{mid}/{fn}",
                     f"{base}/me/onlineMeetings/{CARDIOLOGY['id']}/{fn}"):
            response = http.get(path, headers=bearer)
            assert response.status_code == 200, (path, response.text)
            assert response.json()["@odata.context"].endswith("$metadata#Edm.String")
            assert response.headers["client-request-id"] == "abc-123"

        url = f"{base}/me/onlineMeetings/{mid}/getVirtualAppointmentJoinWebUrl()"
        empty = http.get(url)
        assert empty.status_code == 401
        assert empty.json()["error"]["code"] == "InvalidAuthenticationToken"
        assert empty.json()["error"]["message"] == "Access token is empty."

        kid = jwt.get_unverified_header(tokens["scheduler"])["kid"]
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(_claims(tokens["scheduler"]), other_key, algorithm="RS256", headers={"kid": kid})
        assert http.get(url, headers={"Authorization": f"Bearer {forged}"}).status_code == 401

        all_scopes = {"Authorization": f"Bearer {tokens['scheduler_all']}"}
        no_filter = http.get(f"{base}/me/onlineMeetings", headers=all_scopes)
        assert no_filter.status_code == 400 and no_filter.json()["error"]["code"] == "BadRequest"


def test_start_stack_is_idempotent(stack: dict[str, Any]) -> None:
    again = start_stack(Path(stack["state_dir"]), "auto")
    assert again["pids"] == stack["pids"]
    assert again["graph"]["base_url"] == stack["graph"]["base_url"]


def test_hang_fault_is_cut_by_client_timeout_and_latency_applies(
        stack: dict[str, Any], tokens: dict[str, str], admin: httpx.Client) -> None:
    admin.put(stack["graph"]["admin_url"] + "/faults", json={"latency_ms": 50, "rules": [
        {"meeting_id": "*", "status": "hang", "times": 1}]}).raise_for_status()
    mid = quote(CARDIOLOGY["id"], safe="")
    url = f"{stack['graph']['base_url']}/me/onlineMeetings/{mid}/getVirtualAppointmentJoinWebUrl()"
    bearer = {"Authorization": f"Bearer {tokens['scheduler']}"}
    with httpx.Client(verify=_tls(stack)) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.get(url, headers=bearer, timeout=0.5)
        started = time.monotonic()
        assert http.get(url, headers=bearer).status_code == 200
        assert time.monotonic() - started >= 0.05


def test_expired_access_token_is_rejected(stack: dict[str, Any]) -> None:
    with httpx.Client(verify=_tls(stack)) as http:
        config = http.put(stack["entra"]["admin_url"] + "/config", json={"access_token_lifetime": 1})
        config.raise_for_status()
        try:
            token = _user_token(stack, SCHEDULER, [VA_READ])
        finally:
            http.post(stack["entra"]["admin_url"] + "/reset").raise_for_status()
        assert _claims(token)["exp"] - _claims(token)["iat"] == 1
        time.sleep(1.1)
        url = f"{stack['graph']['base_url']}/me/onlineMeetings/x/getVirtualAppointmentJoinWebUrl"
        response = http.get(url, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert response.json()["error"]["message"].startswith("Lifetime validation failed")


@pytest.mark.asyncio
async def test_admin_added_meeting_is_served_then_deleted(stack: dict[str, Any], tokens: dict[str, str],
                                                         admin: httpx.Client) -> None:
    created = admin.post(stack["graph"]["admin_url"] + "/meetings", json={
        "organizer": ADAMS["upn"], "participants": [SCHEDULER["upn"]], "subject": "Ad hoc"})
    assert created.status_code == 201
    meeting = created.json()
    client = _graph(stack, tokens["scheduler"])
    result = await _join_url_builder(client, SCHEDULER["oid"], meeting["id"]).get()
    assert result is not None and result.value == meeting["virtualAppointmentJoinWebUrl"]

    deleted = admin.delete(stack["graph"]["admin_url"] + "/meetings/" + quote(meeting["id"], safe=""))
    assert deleted.status_code == 200
    with pytest.raises(ODataError) as info:
        await _join_url_builder(client, SCHEDULER["oid"], meeting["id"]).get()
    assert info.value.response_status_code == 404


def test_cli_status_and_env(stack: dict[str, Any]) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "devstack", *args, "--state-dir", stack["state_dir"]],
                              capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
                              timeout=60, check=False)

    status = cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("[up]") == 3
    env = cli("env")
    assert f"export GRAPH_BASE_URL={stack['graph']['base_url']}" in env.stdout.splitlines()
