"""Property-based: the HTTP twin's functions, called as the host calls them with any query and any token,
answer as the OpenAPI document says (documented status, problem+json with a reason), never with an exception.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jsonschema
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import event, given
from hypothesis import strategies as st

from devstack.harness import Worker, call_http
from devstack.harness.rpc import HttpAnswer
from shared.http_twin.openapi import openapi_document
from shared.identity.bearer import BearerValidator
from shared.pipeline.join_url_resolver import JoinUrlResolver
from shared.settings import load_settings
from tests.fakes import FakeGraph, no_sleep

pytestmark = [pytest.mark.functional, pytest.mark.fuzz]
ORG = "scheduler@contoso.test"
OID = "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a"
URL = "https://visit.teams.microsoft.com/webrtc-svc/api/route?convId=1"
DOC = json.loads(openapi_document())
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class _Jwks:
    """The authority's keys as PyJWKClient would give them: one key id, KEY."""

    def get_signing_key(self, kid: str) -> Any:
        if kid != "k1":
            raise jwt.PyJWKClientError(f"no key {kid}")
        return type("SigningKey", (), {"key": KEY.public_key()})()


def _schema(name: str) -> dict[str, Any]:
    return {**DOC["components"]["schemas"][name], "components": DOC["components"]}


def _worker() -> Worker:
    import function_app

    return asyncio.run(Worker.for_script(function_app.__file__))


@pytest.fixture(scope="module")
def twin_functions() -> Any:
    import function_app

    settings = load_settings()
    services = function_app.services
    graph = FakeGraph({(ORG, "m1"): URL, (OID, "m1"): URL}, {(ORG, "https://teams.microsoft.com/l/x"): "m1"})
    saved = {name: services.__dict__.get(name) for name in ("resolver", "bearer")}
    services.__dict__["resolver"] = JoinUrlResolver(graph, inline_throttle_budget=2.0, sleep=no_sleep)
    services.__dict__["bearer"] = BearerValidator(settings, jwks_client=_Jwks())
    try:
        yield _worker(), settings
    finally:
        for name, value in saved.items():
            if value is None:
                services.__dict__.pop(name, None)
            else:
                services.__dict__[name] = value


def _token(settings: Any, variant: str) -> str:
    now = int(time.time())
    claims = {"iss": f"{settings.authority_url}/v2.0", "aud": settings.client_id, "oid": OID,
              "preferred_username": ORG, "scp": "access_as_user", "iat": now, "nbf": now, "exp": now + 600}
    key, headers = KEY, {"kid": "k1"}
    if variant == "other_key":
        key = OTHER_KEY
    elif variant == "expired":
        claims.update(exp=now - 600, iat=now - 1200, nbf=now - 1200)
    elif variant == "wrong_audience":
        claims["aud"] = "https://graph.microsoft.com"
    elif variant == "no_scope":
        claims.pop("scp")
    elif variant == "unknown_kid":
        headers = {"kid": "k2"}
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


values = st.sampled_from([ORG, OID, "m1", "unknown", "https://teams.microsoft.com/l/x", "http://x", "", " ",
                         "a\nb", "\x00", "x" * 3000, "nobody", f" {ORG} ", ORG.upper()]) | st.text(max_size=60)
params = st.one_of(
    st.dictionaries(st.sampled_from(["organizer", "meetingId", "joinWebUrl", "code", "x"]) | st.text(max_size=8),
                    values, max_size=4),
    st.fixed_dictionaries({}, optional={"organizer": values, "meetingId": values, "joinWebUrl": values}),
    st.fixed_dictionaries({"organizer": st.sampled_from([ORG, OID, f" {ORG} "]), "meetingId": values}),
)
tokens = st.sampled_from(["valid", "other_key", "expired", "wrong_audience", "no_scope", "unknown_kid", "none",
                          "garbage", "empty"])


def _call(worker: Worker, route: str, path: str, headers: dict[str, str], query: dict[str, str]) -> HttpAnswer:
    called = asyncio.run(call_http(worker, route, path=f"/api{path}", headers=headers, params=query))
    assert called.http is not None
    return called.http


@given(route=st.sampled_from(["get_join_url", "get_my_join_url"]), query=params, token=tokens)
def test_any_query_and_token_get_a_documented_answer(twin_functions, route, query, token):
    worker, settings = twin_functions
    headers = {}
    if token == "garbage":
        headers["authorization"] = "Bearer not.a.jwt"
    elif token == "empty":
        headers["authorization"] = "Bearer "
    elif token != "none":
        headers["authorization"] = f"Bearer {_token(settings, token)}"
    path = "/me/join-url" if route == "get_my_join_url" else "/join-url"
    # InvocationFailed (an exception in the function) fails the test: the host would answer 500.
    response = _call(worker, route, path, headers, query)
    status = response.status_code
    event(f"{route} {status}")
    documented = DOC["paths"][path]["get"]["responses"]
    assert str(status) in documented and status != 500, response.get_body()
    body = json.loads(response.get_body())
    if status == 200:
        jsonschema.validate(body, _schema("JoinUrlLookup"))
        assert route == "get_join_url" or token == "valid", "only a genuine token opens the bearer route"
    else:
        assert response.mimetype == "application/problem+json"
        jsonschema.validate(body, _schema("Problem"))
        assert body["status"] == status and body["reason"]
