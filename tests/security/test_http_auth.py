"""Hostile callers of the HTTP twin, through the harness as the host serves it: no key, wrong keys, forged tokens."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

pytestmark = pytest.mark.e2e
KEY = "local-dev-function-key"
SCHEDULER = "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a"
CARDIOLOGY = "MSo0YzdlMWQyYS05YjNmLTRlNWQtOGE2Yy0xZjJlM2Q0YzViNmEqMCoqMTk6bWVldGluZ19jYXJkaW9sb2d5QHRocmVhZC52Mg=="
LOOKUP = {"organizer": SCHEDULER, "meetingId": CARDIOLOGY}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join((_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)))


@pytest.mark.parametrize(("where", "key"), [
    ("none", None),
    ("header", "wrong-key"),
    ("header", ""),
    ("header", KEY + "x"),
    ("header", KEY.upper()),
    ("query", "wrong-key"),
    ("other-header", KEY),  # a key in a header the host does not read is no key
])
def test_function_key_route_refuses_missing_and_wrong_keys(twin, where, key):
    params, headers = dict(LOOKUP), {}
    if where == "header":
        headers["x-functions-key"] = key
    elif where == "query":
        params["code"] = key
    elif where == "other-header":
        headers["x-api-key"] = key
    answer = httpx.get(twin["base_url"] + "/api/join-url", params=params, headers=headers, timeout=30)
    assert answer.status_code == 401 and "joinUrl" not in answer.text


def test_the_right_key_is_accepted(twin):
    answer = httpx.get(twin["base_url"] + "/api/join-url", params=LOOKUP, headers={"x-functions-key": KEY},
                       timeout=30)
    assert answer.status_code == 200 and answer.json()["joinUrl"].startswith("https://")


def _forgeries(token: str) -> dict[str, str]:
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = other_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    head, body, signature = token.split(".")
    tampered = _b64(json.dumps({**claims, "oid": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"}).encode())
    return {
        "other_key_same_kid": jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": header["kid"]}),
        "alg_none": _unsigned({"alg": "none", "typ": "JWT", "kid": header["kid"]}, claims),
        "alg_none_no_kid": _unsigned({"alg": "none", "typ": "JWT"}, claims),
        # Algorithm confusion: HMAC "signed" with public key material as the secret.
        "hs256_confusion": _unsigned({"alg": "HS256", "typ": "JWT", "kid": header["kid"]}, claims,
                                     public_pem[:32]),
        "payload_tampered": f"{head}.{tampered}.{signature}",
        "signature_stripped": f"{head}.{body}.",
        "unknown_kid": jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": "not-a-key-id"}),
        "other_issuer": jwt.encode({**claims, "iss": "https://login.evil.example/x/v2.0"}, other_key,
                                   algorithm="RS256", headers={"kid": header["kid"]}),
        "expired_self_signed": jwt.encode({**claims, "exp": int(time.time()) - 3600}, other_key, algorithm="RS256",
                                          headers={"kid": header["kid"]}),
        "garbage": "not-a-token",
        "empty_segments": "..",
        "huge": "eyJ" + "A" * 7_000,  # just under the server's 8 KiB header limit
    }


@pytest.mark.parametrize("forgery", ["other_key_same_kid", "alg_none", "alg_none_no_kid", "hs256_confusion",
                                     "payload_tampered", "signature_stripped", "unknown_kid", "other_issuer",
                                     "expired_self_signed", "garbage", "empty_segments", "huge"])
def test_bearer_route_refuses_forged_tokens(twin, api_token, forgery):
    token = _forgeries(api_token)[forgery]
    answer = httpx.get(twin["base_url"] + "/api/me/join-url", params={"meetingId": CARDIOLOGY},
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.headers["www-authenticate"].startswith("Bearer") and "joinUrl" not in answer.text


def test_bearer_route_without_a_token_and_with_the_genuine_one(twin, api_token):
    url = twin["base_url"] + "/api/me/join-url"
    assert httpx.get(url, params={"meetingId": CARDIOLOGY}, timeout=30).status_code == 401
    # A function key is not a bearer token: the bearer route ignores it.
    assert httpx.get(url, params={"meetingId": CARDIOLOGY}, headers={"x-functions-key": KEY},
                     timeout=30).status_code == 401
    ok = httpx.get(url, params={"meetingId": CARDIOLOGY}, headers={"Authorization": f"Bearer {api_token}"},
                   timeout=30)
    assert ok.status_code == 200 and ok.json()["organizer"] == SCHEDULER


def test_a_bearer_token_opens_no_function_key_route(twin, api_token):
    answer = httpx.get(twin["base_url"] + "/api/join-url", params=LOOKUP,
                       headers={"Authorization": f"Bearer {api_token}"}, timeout=30)
    assert answer.status_code == 401
