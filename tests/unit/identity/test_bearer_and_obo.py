"""Bearer validation (forged, expired, wrong audience or issuer, alg none, HS256 confusion, scope) and OBO source."""

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.exceptions import BearerError, ForbiddenError, TokenServiceUnavailableError
from shared.identity.bearer import BearerValidator, Caller
from shared.identity.obo import OboTokenSource
from shared.problems import bearer_problem, bearer_token
from shared.settings import load_settings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]
CLIENT_ID = "5b1f0c2e-8d4a-4f6b-9c3e-2a7d6e5f4c3b"
TENANT = "7d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10"
ISSUER = f"https://127.0.0.1:5443/{TENANT}/v2.0"
USER = "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def settings():
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    values["DEV_USERS_FILE"] = str(ROOT / values["DEV_USERS_FILE"])
    values.pop("TLS_CA_BUNDLE")
    return load_settings(values)


class FakeJwks:
    """PyJWKClient's one method the validator uses: keys by kid, unknown kid refused."""

    def __init__(self, keys):
        self.keys = keys

    def get_signing_key(self, kid):
        if kid not in self.keys:
            raise jwt.PyJWKClientError(f'Unable to find a signing key that matches: "{kid}"')
        return jwt.PyJWK.from_dict(json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key())))


@pytest.fixture
def validator(settings):
    return BearerValidator(settings, jwks_client=FakeJwks({"k1": KEY}))


def claims(**overrides):
    now = int(time.time())
    base = {"iss": ISSUER, "aud": f"api://{CLIENT_ID}", "iat": now, "nbf": now, "exp": now + 3600, "tid": TENANT,
            "oid": USER, "preferred_username": "scheduler@contoso.test", "scp": "access_as_user", "ver": "2.0"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload, key=KEY, kid="k1", alg="RS256"):
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def b64(doc):
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def refused(validator, token):
    with pytest.raises(BearerError) as caught:
        validator.validate(token)
    return caught.value


def test_a_good_token_is_accepted(validator):
    caller = validator.validate(sign(claims()))
    assert caller.oid == USER and caller.upn == "scheduler@contoso.test" and caller.is_("SCHEDULER@contoso.test")


def test_v2_tokens_with_the_bare_client_id_as_audience_are_accepted(validator):
    assert validator.validate(sign(claims(aud=CLIENT_ID))).oid == USER


@pytest.mark.parametrize(("name", "token_factory", "detail"), [
    ("forged signature", lambda: sign(claims(), key=OTHER_KEY), "invalid"),
    ("unknown key id", lambda: sign(claims(), kid="attacker"), "not signed by the authority"),
    ("expired", lambda: sign(claims(exp=int(time.time()) - 600, iat=int(time.time()) - 4000)), "expired"),
    ("not yet valid", lambda: sign(claims(nbf=int(time.time()) + 600)), "not valid yet"),
    ("wrong audience", lambda: sign(claims(aud="api://someone-else")), "another audience"),
    ("wrong issuer", lambda: sign(claims(iss="https://login.microsoftonline.com/other/v2.0")), "another issuer"),
    ("no exp", lambda: sign(claims(exp=None)), "invalid"),
    ("not a jwt", lambda: "not-a-token", "not a JWT"),
    ("alg none", lambda: f"{b64({'alg': 'none', 'kid': 'k1'})}.{b64(claims())}.", "RS256"),
])
def test_bad_tokens_are_refused_with_401(validator, name, token_factory, detail):
    error = refused(validator, token_factory())
    assert error.status == 401 and error.error == "invalid_token" and detail in error.detail, name


def test_hs256_signed_with_the_public_key_is_refused(validator):
    # The classic key-confusion attack: the public key (which anyone can fetch) used as an HMAC secret.
    public_pem = KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64({"alg": "HS256", "typ": "JWT", "kid": "k1"})
    payload = b64(claims())
    import hashlib
    import hmac

    signature = base64.urlsafe_b64encode(hmac.new(public_pem, f"{header}.{payload}".encode(),
                                                  hashlib.sha256).digest()).rstrip(b"=").decode()
    error = refused(validator, f"{header}.{payload}.{signature}")
    assert error.status == 401


def test_missing_scope_is_403_with_the_scope_named(validator):
    error = refused(validator, sign(claims(scp="User.Read")))
    assert error.status == 403 and error.error == "insufficient_scope" and error.scope == "access_as_user"
    response = bearer_problem(error)
    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="access_as_user"'


def test_app_only_tokens_cannot_act_for_a_user(validator):
    error = refused(validator, sign(claims(scp=None, roles=["Access.All"], idtyp="app")))
    assert error.status == 403


def test_401_carries_the_bearer_challenge_and_problem_json(validator):
    response = bearer_problem(refused(validator, sign(claims(), key=OTHER_KEY)))
    body = json.loads(response.get_body())
    assert response.status_code == 401 and response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert body["reason"] == "invalid_token"


def test_bearer_token_is_read_from_the_authorization_header():
    import azure.functions as func

    def req(value):
        return func.HttpRequest("GET", "http://x/api/join-url", headers={"Authorization": value}, body=b"")

    assert bearer_token(req("Bearer abc")) == "abc" and bearer_token(req("bearer  abc ")) == "abc"
    assert bearer_token(req("Basic abc")) is None


class FakeOboCredential:
    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    def get_token(self, *scopes):
        self.calls.append(scopes)
        if isinstance(self.answer, Exception):
            raise self.answer
        from azure.core.credentials import AccessToken

        return AccessToken(self.answer, int(time.time()) + 3600)


def delegated(name="graph"):
    return f"{b64({'alg': 'RS256'})}.{b64({'scp': 'VirtualAppointment.Read', 'name': name})}.sig"


CALLER = Caller(oid=USER, upn="scheduler@contoso.test", claims={})


async def test_obo_source_exchanges_once_per_scope_set_for_the_caller_only(settings):
    credential = FakeOboCredential(delegated())
    source = OboTokenSource(settings, "assertion", CALLER, credential_factory=lambda s, a: credential)
    assert await source.token_for(USER) == await source.token_for("scheduler@contoso.test")
    assert len(credential.calls) == 1
    with pytest.raises(ForbiddenError) as caught:
        await source.token_for("dr.adams@contoso.test")
    assert caught.value.reason == "organizer_mismatch"


@pytest.mark.parametrize(("message", "error"), [
    ("AADSTS65001: The user or administrator has not consented", ForbiddenError),
    ("invalid_grant: assertion expired", ForbiddenError),
    ("Connection refused", TokenServiceUnavailableError),
])
async def test_obo_failures_are_classified(settings, message, error):
    credential = FakeOboCredential(ClientAuthenticationError(message=message))
    source = OboTokenSource(settings, "assertion", CALLER, credential_factory=lambda s, a: credential)
    with pytest.raises(error):
        await source.token_for(USER)
