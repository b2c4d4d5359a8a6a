"""Entra ID (Azure AD v2.0 endpoint) emulator that unmodified MSAL and azure-identity can talk to.

Endpoints (under /{tenant}, where tenant is the tenant id, `organizations` or `common`):
  GET  /v2.0/.well-known/openid-configuration   OIDC discovery
  GET  /discovery/v2.0/keys                      JWKS
  GET|POST /oauth2/v2.0/authorize                sign-in and consent page (authorization code + PKCE)
  POST /oauth2/v2.0/devicecode                   device authorization (RFC 8628)
  GET|POST /oauth2/deviceauth                    where the user enters a device code
  POST /oauth2/v2.0/token                        grants: see DEFAULT_GRANTS
Admin (loopback only): /_admin/stats|reset|config|revoke|interaction_required|device/approve.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import logging
import secrets
import string
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus, urlencode, urlsplit, urlunsplit

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

log = logging.getLogger(__name__)

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
# What an admin "consented" for the app when the seed does not say otherwise.
DEFAULT_DELEGATED_SCOPES = ("VirtualAppointment.Read", "OnlineMeetings.Read")
TENANT_ALIASES = frozenset({"organizations", "common"})
REFRESH_TOKEN_LIFETIME = 90 * 24 * 3600
AUTH_CODE_LIFETIME = 300
DEVICE_CODE_LIFETIME = 900
# Entra says 5; 1 keeps MSAL's polling (and the tests) quick.
DEVICE_POLL_INTERVAL = 1
# How long an open sign-in page stays usable.
SIGN_IN_LIFETIME = 600
USER_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

GRANT_AUTHORIZATION_CODE = "authorization_code"
GRANT_DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Grants a public client (no secret) may use; client_credentials and On-Behalf-Of need a secret.
PUBLIC_CLIENT_GRANTS = frozenset({"password", "refresh_token", GRANT_AUTHORIZATION_CODE, GRANT_DEVICE_CODE})
LIFETIME_SETTINGS = ("access_token_lifetime", "auth_code_lifetime", "device_code_lifetime")


class EntraError(Exception):
    """An OAuth error that the token endpoint renders in Entra's JSON error shape."""

    def __init__(self, status: int, error: str, code: int, description: str,
                 extra: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{error}: AADSTS{code}")
        self.status, self.error, self.code, self.description = status, error, code, description
        self.extra = dict(extra or {})

    @property
    def message(self) -> str:
        return f"AADSTS{self.code}: {self.description}"


def _invalid_grant(code: int, description: str) -> EntraError:
    return EntraError(400, "invalid_grant", code, description)


EXPIRED_GRANT = ("The provided authorization code or refresh token has expired due to inactivity, "
                 "was already used or was revoked.")


@dataclass
class TokenRequest:
    """A parsed, client-authenticated request to the token endpoint."""

    tenant: str
    form: Mapping[str, str]
    client: dict[str, Any]
    correlation_id: str
    # False when the client sent no secret (a public client flow).
    confidential: bool = True

    @property
    def wants_client_info(self) -> bool:
        return self.form.get("client_info") == "1"


@dataclass
class RefreshGrant:
    """Server-side state behind one opaque refresh token."""

    user_oid: str
    client_id: str
    scope: str
    expires_at: float
    # Issued to a public client flow: Entra then refuses a secret on redemption (AADSTS700025).
    public: bool = False


@dataclass
class SignIn:
    """A validated authorize request waiting for the user on the sign-in page."""

    tenant: str
    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str
    response_mode: str
    login_hint: str
    client_info: bool
    expires_at: float


@dataclass
class AuthCode:
    """An issued authorization code: one use, bound to its sign-in and user."""

    sign_in: SignIn
    user_oid: str
    expires_at: float
    redeemed: bool = False


@dataclass
class DeviceAuthorization:
    """One device flow: pending until a user approves (or declines) its user code."""

    client_id: str
    scope: str
    user_code: str
    expires_at: float
    user_oid: str | None = None
    declined: bool = False


@dataclass(frozen=True)
class ScopeGrant:
    """A resolved scope request: one resource, its granted scopes, and the OIDC scopes."""

    resource: str
    scopes: tuple[str, ...]
    oidc: tuple[str, ...]

    @property
    def response_scope(self) -> str:
        """The `scope` of a token response: resource-qualified scopes plus OIDC ones (no offline_access)."""
        return " ".join([f"{self.resource}/{s}" for s in self.scopes]
                        + [s for s in self.oidc if s != "offline_access"])


@dataclass
class EntraStats:
    """Counters served by /_admin/stats."""

    token_requests: int = 0
    by_grant: Counter[str] = field(default_factory=Counter)
    by_user: Counter[str] = field(default_factory=Counter)


GrantHandler = Callable[["EntraEmulator", TokenRequest], Awaitable[dict[str, Any]]]


class EntraEmulator:
    """State of one emulated tenant: signing key, directory, issued grants, counters and grant handlers."""

    def __init__(self, directory: Mapping[str, Any], issuer_base: str,
                 access_token_lifetime: int = 3600) -> None:
        self.tenant_id: str = directory["tenant_id"]
        self.base = issuer_base.rstrip("/")
        self.issuer = f"{self.base}/{self.tenant_id}/v2.0"
        self.access_token_lifetime = access_token_lifetime
        self.auth_code_lifetime = AUTH_CODE_LIFETIME
        self.device_code_lifetime = DEVICE_CODE_LIFETIME
        self.users = {u["oid"]: dict(u) for u in directory.get("users", [])}
        self._users_by_upn = {u["upn"].lower(): u for u in self.users.values()}
        self.clients = {c["client_id"]: dict(c) for c in directory.get("clients", [])}
        # APIs the tenant exposes, by app id URI and by client id (both name the resource in a scope).
        self.apis: dict[str, dict[str, Any]] = {}
        for c in self.clients.values():
            if c.get("app_id_uri"):
                self.apis[c["app_id_uri"].lower()] = c
                self.apis[c["client_id"].lower()] = c
        self.refresh_tokens: dict[str, RefreshGrant] = {}
        self.sign_ins: dict[str, SignIn] = {}
        self.auth_codes: dict[str, AuthCode] = {}
        self.device_auths: dict[str, DeviceAuthorization] = {}
        # Users whose refresh token grants answer interaction_required (as under a new MFA policy).
        self.interaction_required: set[str] = set()
        self.stats = EntraStats()
        # Extension point: grant_type -> handler.
        self.grants: dict[str, GrantHandler] = dict(DEFAULT_GRANTS)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(8)

    # --- keys and tokens -------------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        """Public signing keys in JWKS form."""
        jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256", "kty": "RSA", "issuer": self.issuer})
        return {"keys": [jwk]}

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Sign claims as an RS256 JWT with this tenant's key."""
        # The key object, not PEM: PyJWT would re-parse and re-validate a PEM key on every call (~30 ms).
        return jwt.encode(dict(claims), self._key, algorithm="RS256",
                          headers={"kid": self.kid, "typ": "JWT"})

    def find_user(self, upn_or_oid: str) -> dict[str, Any] | None:
        """Look a user up by object id or (case-insensitive) UPN."""
        return self.users.get(upn_or_oid) or self._users_by_upn.get(upn_or_oid.lower())

    def check_password(self, username: str, password: str) -> dict[str, Any] | None:
        """The user if the password is theirs, else None."""
        user = self.find_user(username.strip()) if username else None
        expected = user.get("password") if user else None
        if not (expected and password and secrets.compare_digest(password.encode(), expected.encode())):
            return None
        return user

    def service_principal_id(self, client: Mapping[str, Any]) -> str:
        """Object id of the client's service principal (stable per client id)."""
        return client.get("service_principal_id") or str(uuid.uuid5(uuid.NAMESPACE_URL, client["client_id"]))

    # --- scopes ----------------------------------------------------------------------------------

    def resolve_scopes(self, scope: str, client: Mapping[str, Any]) -> ScopeGrant:
        """Resolve a requested scope string to one resource's scopes, enforcing consent.

        One token has one audience, so scopes of two resources in one request are refused
        (AADSTS28000), as Entra does; the OIDC scopes MSAL always adds go with any resource.
        """
        by_resource: dict[str, list[str]] = {}
        oidc: list[str] = []
        for raw in scope.split():
            if raw in OIDC_SCOPES:
                oidc.append(raw)
                continue
            resource, name = self._split_scope(raw)
            by_resource.setdefault(resource, []).append(name)
        if len(by_resource) > 1:
            raise EntraError(400, "invalid_scope", 28000,
                             f"Provided value for the input parameter scope is not valid because it contains "
                             f"more than one resource. Scope {scope} is not valid.")
        if not by_resource:
            return ScopeGrant(GRAPH_RESOURCE, (), tuple(oidc))
        [(resource, names)] = by_resource.items()
        available = self._consented_scopes(resource, client)
        granted: list[str] = []
        for name in names:
            for wanted in (list(available.values()) if name == ".default" else [name]):
                canonical = available.get(wanted.lower())
                if canonical is None:
                    raise _invalid_grant(65001,
                                         f"The user or administrator has not consented to use the application "
                                         f"with ID '{client['client_id']}'. Send an interactive authorization "
                                         f"request for this user and resource.")
                if canonical not in granted:
                    granted.append(canonical)
        return ScopeGrant(resource, tuple(granted), tuple(oidc))

    def _split_scope(self, raw: str) -> tuple[str, str]:
        """(resource, scope name) for a requested scope; bare names are Graph scopes, as in Entra."""
        graph_name = _graph_scope_name(raw)
        if graph_name is not None:
            return GRAPH_RESOURCE, graph_name
        prefix, _, name = raw.rpartition("/")
        api = self.apis.get(prefix.lower())
        if api is None or not name:
            raise EntraError(400, "invalid_resource", 500011,
                             f"The resource principal named {prefix or raw} was not found in the tenant named "
                             f"{self.tenant_id}.")
        if name != ".default" and name.lower() not in {s.lower() for s in api.get("exposed_scopes", [])}:
            raise EntraError(400, "invalid_scope", 70011,
                             f"The provided value for the input parameter 'scope' is not valid. The scope "
                             f"{raw} does not exist.")
        return api["app_id_uri"], name

    def _consented_scopes(self, resource: str, client: Mapping[str, Any]) -> dict[str, str]:
        """Scopes (lower-case name -> canonical name) the client may get for the resource."""
        if resource == GRAPH_RESOURCE:
            names = client.get("delegated_scopes", DEFAULT_DELEGATED_SCOPES)
        else:
            api = self.apis[resource.lower()]
            trusted = client["client_id"] == api["client_id"] or \
                client["client_id"] in api.get("pre_authorized_client_ids", [])
            names = api.get("exposed_scopes", []) if trusted else []
        return {s.lower(): s for s in names}

    # --- issuing ---------------------------------------------------------------------------------

    def issue_user_tokens(self, user: Mapping[str, Any], client: Mapping[str, Any], scope: str,
                          *, nonce: str | None = None, client_info: bool = True,
                          public: bool = False) -> dict[str, Any]:
        """Build a delegated token response (access, id, refresh token, client_info) for a user."""
        grant = self.resolve_scopes(scope, client)
        now = int(time.time())
        lifetime = self.access_token_lifetime
        client_id = client["client_id"]
        scp = grant.scopes or tuple(s for s in grant.oidc if s != "offline_access")
        access = {
            "aud": grant.resource, "iss": self.issuer, "iat": now, "nbf": now, "exp": now + lifetime,
            "tid": self.tenant_id, "oid": user["oid"], "sub": user["oid"], "upn": user["upn"],
            "preferred_username": user["upn"], "name": user.get("display_name", user["upn"]),
            "scp": " ".join(scp), "appid": client_id, "azp": client_id, "azpacr": "0" if public else "1",
            "ver": "2.0", "idtyp": "user", "uti": secrets.token_urlsafe(16),
        }
        body: dict[str, Any] = {
            "token_type": "Bearer", "scope": grant.response_scope,
            "expires_in": lifetime, "ext_expires_in": lifetime,
            "access_token": self.sign(access),
        }
        if "offline_access" in grant.oidc:
            rt = secrets.token_urlsafe(48)
            self.refresh_tokens[rt] = RefreshGrant(user["oid"], client_id, scope,
                                                   time.time() + REFRESH_TOKEN_LIFETIME, public)
            body["refresh_token"] = rt
        if "openid" in grant.oidc:
            id_claims = {
                "aud": client_id, "iss": self.issuer, "iat": now, "nbf": now, "exp": now + lifetime,
                "tid": self.tenant_id, "oid": user["oid"], "sub": user["oid"],
                "preferred_username": user["upn"], "name": user.get("display_name", user["upn"]),
                "ver": "2.0",
            }
            if nonce:
                id_claims["nonce"] = nonce
            body["id_token"] = self.sign(id_claims)
        if client_info:
            # MSAL builds the account's home_account_id ("uid.utid") from this, not from the id_token.
            body["client_info"] = self.client_info(user)
        self.stats.by_user[user["upn"]] += 1
        return body

    def client_info(self, user: Mapping[str, Any]) -> str:
        """Entra's client_info: base64url JSON of the user's object id and tenant id."""
        info = json.dumps({"uid": user["oid"], "utid": self.tenant_id}).encode()
        return base64.urlsafe_b64encode(info).rstrip(b"=").decode()

    def issue_app_token(self, client: Mapping[str, Any]) -> dict[str, Any]:
        """Build an app-only (client credentials) token response for Graph."""
        now = int(time.time())
        sp = self.service_principal_id(client)
        claims = {
            "aud": GRAPH_RESOURCE, "iss": self.issuer, "iat": now, "nbf": now,
            "exp": now + self.access_token_lifetime, "tid": self.tenant_id, "oid": sp, "sub": sp,
            "roles": list(client.get("application_roles", [])), "idtyp": "app",
            "appid": client["client_id"], "azp": client["client_id"], "ver": "2.0",
            "uti": secrets.token_urlsafe(16),
        }
        return {"token_type": "Bearer", "expires_in": self.access_token_lifetime,
                "ext_expires_in": self.access_token_lifetime, "access_token": self.sign(claims)}

    def revoke_user(self, upn_or_oid: str) -> int:
        """Drop every refresh token of a user; returns how many were dropped."""
        user = self.find_user(upn_or_oid)
        if user is None:
            return 0
        doomed = [rt for rt, g in self.refresh_tokens.items() if g.user_oid == user["oid"]]
        for rt in doomed:
            del self.refresh_tokens[rt]
        return len(doomed)

    # --- incoming assertions (On-Behalf-Of) ------------------------------------------------------

    def verify_user_assertion(self, assertion: str, client: Mapping[str, Any]) -> dict[str, Any]:
        """Claims of a user token this tenant signed for the client's own API, else invalid_grant."""
        audiences = [client["client_id"], *([client["app_id_uri"]] if client.get("app_id_uri") else [])]
        try:
            kid = jwt.get_unverified_header(assertion).get("kid")
            if kid != self.kid:
                raise _invalid_grant(50013, "Assertion failed signature validation. "
                                            "[Reason - The key was not found.]")
            claims = jwt.decode(assertion, self._key.public_key(), algorithms=["RS256"], audience=audiences,
                                issuer=self.issuer, options={"require": ["exp", "aud", "iss", "oid"]})
        except jwt.ExpiredSignatureError:
            raise _invalid_grant(500133, "Assertion is not within its valid time range. Ensure that the access "
                                         "token is not expired before using it for user assertion, or request "
                                         "a new token.") from None
        except jwt.InvalidAudienceError:
            raise _invalid_grant(50013, f"Assertion audience does not match the Client app presenting the "
                                        f"assertion. The expected audience is '{audiences[-1]}' or one of the "
                                        f"Application Uris of this application with App ID "
                                        f"'{client['client_id']}'.") from None
        except jwt.InvalidSignatureError:
            raise _invalid_grant(50013, "Assertion failed signature validation. [Reason - The provided "
                                        "signature value did not match the expected signature value.]") from None
        except jwt.PyJWTError as exc:
            raise _invalid_grant(50013, f"Assertion failed validation: {type(exc).__name__}.") from None
        if claims.get("idtyp") == "app" or not claims.get("scp"):
            raise _invalid_grant(50013, "Assertion is not a delegated user token.")
        return claims

    # --- interactive state: sign-ins, codes, device flows ----------------------------------------

    def begin_sign_in(self, sign_in: SignIn) -> str:
        """Remember a validated authorize request; returns the handle the sign-in form posts back."""
        self._purge()
        ctx = secrets.token_urlsafe(24)
        self.sign_ins[ctx] = sign_in
        return ctx

    def issue_code(self, sign_in: SignIn, user: Mapping[str, Any]) -> str:
        """A one-time authorization code for a completed sign-in."""
        code = secrets.token_urlsafe(48)
        self.auth_codes[code] = AuthCode(sign_in, user["oid"], time.time() + self.auth_code_lifetime)
        return code

    def start_device_flow(self, client: Mapping[str, Any], scope: str) -> tuple[str, DeviceAuthorization]:
        """Create a device flow; returns (device_code, state)."""
        self._purge()
        user_code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(9))
        device_code = secrets.token_urlsafe(48)
        auth = DeviceAuthorization(client["client_id"], scope, user_code, time.time() + self.device_code_lifetime)
        self.device_auths[device_code] = auth
        return device_code, auth

    def find_device_flow(self, user_code: str) -> DeviceAuthorization | None:
        """The pending, unexpired device flow with this user code (case, spaces and dashes ignored)."""
        wanted = "".join(user_code.split()).replace("-", "").upper()
        for auth in self.device_auths.values():
            if auth.user_code == wanted and auth.user_oid is None and not auth.declined \
                    and auth.expires_at > time.time():
                return auth
        return None

    def _purge(self) -> None:
        """Forget sign-ins, codes and device flows well past their expiry."""
        horizon = time.time() - 600
        for store in (self.sign_ins, self.auth_codes, self.device_auths):
            for key in [k for k, v in store.items() if v.expires_at < horizon]:
                del store[key]

    # --- client authentication -------------------------------------------------------------------

    def authenticate_client(self, request: web.Request, form: Mapping[str, str]) -> tuple[dict[str, Any], bool]:
        """Resolve and authenticate the client (body or HTTP Basic); returns (client, confidential)."""
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                user, _, pw = base64.b64decode(header[6:].strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise EntraError(401, "invalid_client", 7000215,
                                 "Invalid client secret provided.") from None
            client_id, secret = unquote_plus(user), unquote_plus(pw)
        if not client_id:
            raise EntraError(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'client_id'.")
        client = self.find_client(client_id)
        expected = client.get("client_secret")
        if secret:
            if expected is None:
                raise _public_client_with_secret()
            if not secrets.compare_digest(secret.encode(), expected.encode()):
                raise EntraError(401, "invalid_client", 7000215,
                                 "Invalid client secret provided. Ensure the secret being sent in the request "
                                 "is the client secret value, not the client secret ID, for a secret added to "
                                 f"app '{client_id}'.")
            return client, True
        if expected is not None and not client.get("allow_public_client"):
            raise _secret_required()
        return client, False

    def find_client(self, client_id: str) -> dict[str, Any]:
        """The registered client, else invalid_client AADSTS700016."""
        client = self.clients.get(client_id)
        if client is None:
            raise EntraError(401, "invalid_client", 700016,
                             f"Application with identifier '{client_id}' was not found in the directory "
                             f"'{self.tenant_id}'.")
        return client


def _secret_required() -> EntraError:
    return EntraError(401, "invalid_client", 7000218,
                      "The request body must contain the following parameter: 'client_assertion' or "
                      "'client_secret'.")


def _public_client_with_secret() -> EntraError:
    return EntraError(401, "invalid_client", 700025,
                      "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.")


def _graph_scope_name(raw: str) -> str | None:
    """Short Graph scope name for a requested scope, or None if it targets another resource."""
    for prefix in (f"{GRAPH_RESOURCE}//", f"{GRAPH_RESOURCE}/", f"{GRAPH_APP_ID}/"):
        if raw.lower().startswith(prefix):
            return raw[len(prefix):]
    if "/" not in raw and ":" not in raw:
        return raw
    return None


def _require(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise EntraError(400, "invalid_request", 900144,
                         f"The request body must contain the following parameter: '{name}'.")
    return value


def _pkce_matches(verifier: str, challenge: str, method: str) -> bool:
    if method == "plain":
        return secrets.compare_digest(verifier, challenge)
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return secrets.compare_digest(base64.urlsafe_b64encode(digest).rstrip(b"=").decode(), challenge)


def _user_of(emu: EntraEmulator, oid: str) -> dict[str, Any]:
    user = emu.users.get(oid)
    if user is None:
        raise _invalid_grant(50034, "The user account does not exist in the directory.")
    return user


# --- grants ----------------------------------------------------------------------------------------

async def grant_password(emu: EntraEmulator, req: TokenRequest) -> dict[str, Any]:
    """Resource owner password credentials (ROPC): local dev credential only."""
    user = emu.check_password(_require(req.form, "username"), _require(req.form, "password"))
    if user is None:
        raise _invalid_grant(50126, "Error validating credentials due to invalid username or password.")
    return emu.issue_user_tokens(user, req.client, _require(req.form, "scope"),
                                 client_info=req.wants_client_info, public=not req.confidential)


async def grant_refresh_token(emu: EntraEmulator, req: TokenRequest) -> dict[str, Any]:
    """Refresh token grant with strict rotation: a refresh token works exactly once."""
    rt = _require(req.form, "refresh_token")
    grant = emu.refresh_tokens.get(rt)
    if grant is None or grant.expires_at < time.time():
        raise _invalid_grant(70008, EXPIRED_GRANT)
    if grant.client_id != req.client["client_id"]:
        raise _invalid_grant(70000, "Provided grant is invalid or malformed: it was issued to a different client.")
    if grant.public and req.confidential:
        raise _public_client_with_secret()
    if not grant.public and not req.confidential:
        raise _secret_required()
    user = _user_of(emu, grant.user_oid)
    if user["oid"] in emu.interaction_required:
        # The refresh token stays valid: after an interactive sign-in the user is fine again.
        raise EntraError(400, "interaction_required", 50076,
                         "Due to a configuration change made by your administrator, or because you moved to "
                         "a new location, you must use multi-factor authentication to access the resource.",
                         extra={"suberror": "basic_action",
                                "claims": '{"access_token":{"capolids":{"essential":true,'
                                          '"values":["00000000-0000-0000-0000-00000000c0de"]}}}'})
    del emu.refresh_tokens[rt]
    scope = req.form.get("scope") or grant.scope
    if "offline_access" not in scope.split():
        # Entra keeps handing out refresh tokens on a refresh even if offline_access is not repeated.
        scope += " offline_access"
    return emu.issue_user_tokens(user, req.client, scope, client_info=req.wants_client_info, public=grant.public)


async def grant_client_credentials(emu: EntraEmulator, req: TokenRequest) -> dict[str, Any]:
    """Client credentials grant: app-only token for Graph."""
    scope = _require(req.form, "scope").strip()
    if _graph_scope_name(scope) != ".default":
        raise EntraError(400, "invalid_scope", 1002012,
                         f"The provided value for scope {scope} is not valid. Client credential flows must "
                         f"have a scope value with /.default suffixed to the resource identifier "
                         f"(application ID URI).")
    return emu.issue_app_token(req.client)


async def grant_authorization_code(emu: EntraEmulator, req: TokenRequest) -> dict[str, Any]:
    """Authorization code grant: one use, same client and redirect URI, PKCE verifier if a challenge was sent."""
    code = emu.auth_codes.get(_require(req.form, "code"))
    if code is None:
        raise _invalid_grant(9002313, "Invalid request. Request is malformed or invalid: unknown code.")
    if code.redeemed:
        raise _invalid_grant(54005, "OAuth2 Authorization code was already redeemed, please retry with a new "
                                    "valid code or use an existing refresh token.")
    if code.expires_at < time.time():
        raise _invalid_grant(70008, EXPIRED_GRANT)
    sign_in = code.sign_in
    if sign_in.client_id != req.client["client_id"]:
        raise _invalid_grant(70000, "Provided grant is invalid or malformed: it was issued to a different client.")
    redirect_uri = _require(req.form, "redirect_uri")
    if redirect_uri != sign_in.redirect_uri:
        raise _invalid_grant(500112, f"The reply address '{redirect_uri}' does not match the reply address "
                                     f"'{sign_in.redirect_uri}' provided when requesting Authorization code.")
    if sign_in.code_challenge is not None:
        verifier = _require(req.form, "code_verifier")
        if not _pkce_matches(verifier, sign_in.code_challenge, sign_in.code_challenge_method):
            raise _invalid_grant(501481, "The Code_Verifier does not match the code_challenge supplied in the "
                                         "authorization request.")
    user = _user_of(emu, code.user_oid)
    code.redeemed = True
    return emu.issue_user_tokens(user, req.client, sign_in.scope, nonce=sign_in.nonce,
                                 client_info=req.wants_client_info, public=not req.confidential)


async def grant_device_code(emu: EntraEmulator, req: TokenRequest) -> dict[str, Any]:
    """Device code grant: authorization_pending until the user approves, then tokens once."""
    device_code = _require(req.form, "device_code")
    auth = emu.device_auths.get(device_code)
    if auth is None or auth.client_id != req.client["client_id"]:
        raise EntraError(400, "bad_verification_code", 70000,
                         "The device code was not recognized.")
    if auth.expires_at < time.time():
        del emu.device_auths[device_code]
        raise EntraError(400, "expired_token", 70019, "Verification code expired.")
    if auth.declined:
        del emu.device_auths[device_code]
        raise EntraError(400, "authorization_declined", 70000, "The end user denied the authorization request.")
    if auth.user_oid is None:
        raise EntraError(400, "authorization_pending", 70016,
                         "OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
    del emu.device_auths[device_code]
    return emu.issue_user_tokens(_user_of(emu, auth.user_oid), req.client, auth.scope,
                                 client_info=req.wants_client_info, public=not req.confidential)


async def grant_on_behalf_of(emu: EntraEmulator, req: TokenRequest) -> dict[str, Any]:
    """On-Behalf-Of: a user token for this client's API becomes a token for another resource, same user."""
    if req.form.get("requested_token_use") != "on_behalf_of":
        raise EntraError(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'requested_token_use' "
                         "with the value 'on_behalf_of'.")
    claims = emu.verify_user_assertion(_require(req.form, "assertion"), req.client)
    user = _user_of(emu, claims["oid"])
    return emu.issue_user_tokens(user, req.client, _require(req.form, "scope"),
                                 client_info=req.wants_client_info)


DEFAULT_GRANTS: dict[str, GrantHandler] = {
    "password": grant_password,
    "refresh_token": grant_refresh_token,
    "client_credentials": grant_client_credentials,
    GRANT_AUTHORIZATION_CODE: grant_authorization_code,
    GRANT_DEVICE_CODE: grant_device_code,
    GRANT_JWT_BEARER: grant_on_behalf_of,
}

# --- HTML pages ------------------------------------------------------------------------------------
# Every value is html.escape()d by _html_page; fragments are built from escaped values only.

_PAGE = string.Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body{font-family:system-ui,sans-serif;max-width:30rem;margin:3rem auto;padding:0 1rem}
label{display:block;margin-top:.8rem}
input{width:100%;padding:.4rem;box-sizing:border-box}
fieldset{margin-top:1rem}
button{margin:1rem .5rem 0 0;padding:.4rem 1.2rem}
.error{color:#a4262c}
</style>
</head>
<body>
<main>
$content
<p><small>Local Entra ID emulator. Test accounts only.</small></p>
</main>
</body>
</html>
""")

_SIGN_IN = string.Template("""<h1>Sign in</h1>
<p>to continue to <strong>$app</strong></p>
$error
<form method="post" action="$action">
<input type="hidden" name="ctx" value="$ctx">
<label for="username">Email or username</label>
<input id="username" name="username" type="text" autocomplete="username" value="$username" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<fieldset>
<legend>Permissions requested</legend>
<p>$app would like to:</p>
<ul id="scopes">$scopes</ul>
</fieldset>
<button id="accept" type="submit" name="action" value="accept">Accept</button>
<button id="cancel" type="submit" name="action" value="cancel" formnovalidate>Cancel</button>
</form>""")

_DEVICE_LOGIN = string.Template("""<h1>Enter code</h1>
<p>Enter the code displayed on your app or device, then sign in to allow access.</p>
$error
<form method="post" action="$action">
<label for="user_code">Code</label>
<input id="user_code" name="user_code" type="text" autocomplete="off" value="$user_code" required>
<label for="username">Email or username</label>
<input id="username" name="username" type="text" autocomplete="username" value="$username" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button id="accept" type="submit" name="action" value="accept">Accept</button>
<button id="cancel" type="submit" name="action" value="cancel" formnovalidate>Cancel</button>
</form>""")

_MESSAGE = string.Template("""<h1>$heading</h1>
<p id="message">$message</p>""")

_ERROR = string.Template("""<h1>Sorry, but we're having trouble signing you in.</h1>
<p class="error" role="alert" id="error">$message</p>""")

_FORM_POST = string.Template("""<form method="post" action="$action" id="response">$fields
<noscript><button type="submit">Continue</button></noscript>
</form>
<script>document.getElementById("response").submit()</script>""")

_HTML_HEADERS = {
    "Cache-Control": "no-store", "Pragma": "no-cache", "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
}
SCOPE_DESCRIPTIONS = {
    "openid": "Sign you in",
    "profile": "View your basic profile",
    "email": "View your email address",
    "offline_access": "Maintain access to data you have given it access to",
}


def _html_page(title: str, template: string.Template, *, status: int = 200,
               fragments: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
               **values: str) -> web.Response:
    content = template.substitute({k: html.escape(v) for k, v in values.items()}, **(fragments or {}))
    return web.Response(text=_PAGE.substitute(title=html.escape(title), content=content), status=status,
                        content_type="text/html", headers={**_HTML_HEADERS, **(headers or {})})


def _error_fragment(message: str | None) -> str:
    return f'<p class="error" role="alert" id="error">{html.escape(message)}</p>' if message else ""


def _scope_items(scope: str) -> str:
    def describe(s: str) -> str:
        return f"{SCOPE_DESCRIPTIONS[s]} ({s})" if s in SCOPE_DESCRIPTIONS else s
    return "".join(f"<li>{html.escape(describe(s))}</li>" for s in scope.split())


def _app_name(emu: EntraEmulator, client_id: str) -> str:
    return str(emu.clients.get(client_id, {}).get("display_name") or client_id)


def _error_page(err: EntraError) -> web.Response:
    """An error shown to the user, never a redirect (as for an unregistered redirect URI)."""
    return _html_page("Sign in error", _ERROR, status=err.status, message=err.message)


def _sign_in_page(emu: EntraEmulator, request: web.Request, ctx: str, sign_in: SignIn, *,
                  username: str, error: str | None = None) -> web.Response:
    return _html_page("Sign in to your account", _SIGN_IN,
                      fragments={"error": _error_fragment(error), "scopes": _scope_items(sign_in.scope)},
                      app=_app_name(emu, sign_in.client_id), action=request.path, ctx=ctx, username=username)


def _device_page(request: web.Request, *, user_code: str = "", username: str = "",
                 error: str | None = None) -> web.Response:
    return _html_page("Enter code", _DEVICE_LOGIN, fragments={"error": _error_fragment(error)},
                      action=request.path, user_code=user_code, username=username)


def _message_page(heading: str, message: str) -> web.Response:
    return _html_page(heading, _MESSAGE, heading=heading, message=message)


def _redirect_to_client(sign_in: SignIn, params: Mapping[str, str]) -> web.Response:
    """Send the authorize response to the client's redirect URI in the requested response mode."""
    params = {**params, **({"state": sign_in.state} if sign_in.state is not None else {})}
    if "code" in params:
        params["session_state"] = str(uuid.uuid4())
    if sign_in.response_mode == "form_post":
        fields = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in params.items())
        return _html_page("Working...", _FORM_POST, fragments={"fields": fields}, action=sign_in.redirect_uri,
                          headers={"Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'"})
    query = urlencode(params)
    if sign_in.response_mode == "fragment":
        location = f"{sign_in.redirect_uri}#{query}"
    else:
        location = f"{sign_in.redirect_uri}{'&' if '?' in sign_in.redirect_uri else '?'}{query}"
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


# --- HTTP layer ------------------------------------------------------------------------------------

ENTRA_KEY = web.AppKey("entra", EntraEmulator)
RESPONSE_MODES = frozenset({"query", "fragment", "form_post"})
# Authorize-time names for errors the token endpoint names differently.
AUTHORIZE_ERROR_NAMES = {65001: "consent_required"}


def _error_response(err: EntraError, correlation_id: str) -> web.Response:
    trace_id = str(uuid.uuid4())
    ts = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return web.json_response({
        "error": err.error,
        "error_description": f"{err.message} Trace ID: {trace_id} Correlation ID: {correlation_id} "
                             f"Timestamp: {ts}",
        "error_codes": [err.code], "timestamp": ts, "trace_id": trace_id,
        "correlation_id": correlation_id, "error_uri": f"https://login.microsoftonline.com/error?code={err.code}",
        **err.extra,
    }, status=err.status, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _tenant(request: web.Request, emu: EntraEmulator) -> str:
    tenant = request.match_info["tenant"]
    if tenant != emu.tenant_id and tenant.lower() not in TENANT_ALIASES:
        raise EntraError(400, "invalid_tenant", 90002,
                         f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID.")
    return tenant


def _correlation_id(request: web.Request) -> str:
    return request.headers.get("client-request-id") or str(uuid.uuid4())


async def _form(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}


async def openid_configuration(request: web.Request) -> web.Response:
    """OIDC discovery document (the fields MSAL and azure-identity read, plus the usual extras)."""
    emu = request.app[ENTRA_KEY]
    try:
        tenant = _tenant(request, emu)
    except EntraError as err:
        return _error_response(err, _correlation_id(request))
    root = f"{emu.base}/{tenant}"
    return web.json_response({
        "issuer": emu.issuer,
        "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
        "token_endpoint": f"{root}/oauth2/v2.0/token",
        "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
        "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
        "jwks_uri": f"{root}/discovery/v2.0/keys",
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "kerberos_endpoint": f"{root}/kerberos",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                  "client_secret_basic"],
        "response_modes_supported": sorted(RESPONSE_MODES),
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                             "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time",
                             "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash",
                             "c_hash", "email"],
        "grant_types_supported": sorted(emu.grants),
        "request_uri_parameter_supported": False,
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    })


async def jwks(request: web.Request) -> web.Response:
    """Signing keys."""
    emu = request.app[ENTRA_KEY]
    try:
        _tenant(request, emu)
    except EntraError as err:
        return _error_response(err, _correlation_id(request))
    return web.json_response(emu.jwks())


async def user_realm(request: web.Request) -> web.Response:
    """MSAL asks this before ROPC to learn whether the user is federated; everyone here is managed."""
    emu = request.app[ENTRA_KEY]
    user = emu.find_user(request.match_info["username"])
    return web.json_response({
        "ver": "1.0", "account_type": "Managed" if user else "Unknown",
        "domain_name": request.match_info["username"].rpartition("@")[2],
        "cloud_instance_name": "microsoftonline.com", "cloud_audience_urn": "urn:federation:MicrosoftOnline",
    })


async def token(request: web.Request) -> web.Response:
    """The token endpoint: client authentication then dispatch on grant_type."""
    emu = request.app[ENTRA_KEY]
    correlation_id = _correlation_id(request)
    emu.stats.token_requests += 1
    fields = await _form(request)
    grant_type = fields.get("grant_type", "")
    emu.stats.by_grant[grant_type] += 1
    try:
        tenant = _tenant(request, emu)
        if not grant_type:
            raise EntraError(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'grant_type'.")
        handler = emu.grants.get(grant_type)
        if handler is None:
            raise EntraError(400, "unsupported_grant_type", 70003,
                             f"The app requested an unsupported grant type '{grant_type}'.")
        client, confidential = emu.authenticate_client(request, fields)
        if not confidential and grant_type not in PUBLIC_CLIENT_GRANTS:
            raise _secret_required()
        body = await handler(emu, TokenRequest(tenant, fields, client, correlation_id, confidential))
    except EntraError as err:
        log.info("token request failed: grant=%s error=%s AADSTS%d", grant_type, err.error, err.code)
        return _error_response(err, correlation_id)
    return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache",
                                            "client-request-id": correlation_id})


# --- authorization code: the sign-in page ----------------------------------------------------------

def _without_loopback_port(uri: str) -> str:
    # Entra ignores the port of http loopback redirect URIs (http://localhost:<any>/path matches
    # http://localhost/path), so native and local apps can listen on whatever port is free.
    parts = urlsplit(uri)
    if parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1"):
        return urlunsplit(parts._replace(netloc=parts.hostname))
    return uri


def _registered_redirect_uri(client: Mapping[str, Any], requested: str | None) -> str:
    registered = [str(uri) for uri in client.get("redirect_uris", [])]
    if requested is None and len(registered) == 1:
        return registered[0]
    if requested is None or _without_loopback_port(requested) not in {_without_loopback_port(u) for u in registered}:
        raise EntraError(400, "invalid_request", 50011,
                         f"The redirect URI '{requested}' specified in the request does not match the redirect "
                         f"URIs configured for the application '{client['client_id']}'. Make sure the redirect "
                         f"URI sent in the request matches one added to your application in the Azure portal.")
    return requested


def _check_authorize_request(emu: EntraEmulator, client: Mapping[str, Any], query: Mapping[str, str],
                             sign_in: SignIn) -> None:
    """Checks made after the redirect URI is trusted: failures go back to the client as errors."""
    response_type = query.get("response_type", "")
    if response_type != "code":
        raise EntraError(400, "unsupported_response_type", 700054,
                         f"response_type '{response_type}' is not enabled for the application.")
    response_mode = query.get("response_mode", "query")
    if response_mode not in RESPONSE_MODES:
        raise EntraError(400, "invalid_request", 900144, f"Invalid response_mode '{response_mode}'.")
    if sign_in.code_challenge is not None and sign_in.code_challenge_method not in ("S256", "plain"):
        raise EntraError(400, "invalid_request", 501491,
                         f"Invalid code_challenge_method '{sign_in.code_challenge_method}'.")
    emu.resolve_scopes(_require(query, "scope"), client)
    if query.get("prompt") == "none":
        raise EntraError(400, "login_required", 50058,
                         "A silent sign-in request was sent but no user is signed in.")


async def authorize(request: web.Request) -> web.Response:
    """GET authorize: validate the request, then show the sign-in and consent page."""
    emu = request.app[ENTRA_KEY]
    query = request.query
    try:
        tenant = _tenant(request, emu)
        client = emu.find_client(_require(query, "client_id"))
        redirect_uri = _registered_redirect_uri(client, query.get("redirect_uri"))
    except EntraError as err:
        return _error_page(err)
    response_mode = query.get("response_mode", "query")
    sign_in = SignIn(
        tenant=tenant, client_id=client["client_id"], redirect_uri=redirect_uri, scope=query.get("scope", ""),
        state=query.get("state"), nonce=query.get("nonce"), code_challenge=query.get("code_challenge"),
        code_challenge_method=query.get("code_challenge_method", "plain"),
        response_mode=response_mode if response_mode in RESPONSE_MODES else "query",
        login_hint=query.get("login_hint", ""), client_info=query.get("client_info") == "1",
        expires_at=time.time() + SIGN_IN_LIFETIME)
    try:
        _check_authorize_request(emu, client, query, sign_in)
    except EntraError as err:
        return _redirect_to_client(sign_in, {"error": AUTHORIZE_ERROR_NAMES.get(err.code, err.error),
                                             "error_description": err.message})
    ctx = emu.begin_sign_in(sign_in)
    return _sign_in_page(emu, request, ctx, sign_in, username=sign_in.login_hint)


async def authorize_submit(request: web.Request) -> web.Response:
    """POST of the sign-in form: cancel, wrong credentials (page again) or a code for the client."""
    emu = request.app[ENTRA_KEY]
    form = await _form(request)
    ctx = form.get("ctx", "")
    sign_in = emu.sign_ins.get(ctx)
    if sign_in is None or sign_in.expires_at < time.time():
        return _error_page(EntraError(400, "invalid_request", 50089,
                                      "Flow token expired. Start the sign-in again from the application."))
    if form.get("action") == "cancel":
        del emu.sign_ins[ctx]
        return _redirect_to_client(sign_in, {"error": "access_denied", "error_description":
                                             "AADSTS65004: User declined to consent to access the app."})
    user = emu.check_password(form.get("username", ""), form.get("password", ""))
    if user is None:
        log.info("sign-in failed for client %s: invalid credentials", sign_in.client_id)
        return _sign_in_page(emu, request, ctx, sign_in, username=form.get("username", ""),
                             error="Your account or password is incorrect. (AADSTS50126)")
    del emu.sign_ins[ctx]
    params = {"code": emu.issue_code(sign_in, user)}
    if sign_in.client_info:
        params["client_info"] = emu.client_info(user)
    return _redirect_to_client(sign_in, params)


# --- device code -----------------------------------------------------------------------------------

async def device_authorization(request: web.Request) -> web.Response:
    """Start a device flow: codes for the device and the user."""
    emu = request.app[ENTRA_KEY]
    correlation_id = _correlation_id(request)
    form = await _form(request)
    try:
        tenant = _tenant(request, emu)
        client = emu.find_client(_require(form, "client_id"))
        scope = _require(form, "scope")
        emu.resolve_scopes(scope, client)
    except EntraError as err:
        return _error_response(err, correlation_id)
    device_code, auth = emu.start_device_flow(client, scope)
    verification_uri = f"{emu.base}/{tenant}/oauth2/deviceauth"
    return web.json_response({
        "device_code": device_code, "user_code": auth.user_code, "verification_uri": verification_uri,
        "expires_in": emu.device_code_lifetime, "interval": DEVICE_POLL_INTERVAL,
        "message": f"To sign in, use a web browser to open the page {verification_uri} and enter the code "
                   f"{auth.user_code} to authenticate.",
    }, headers={"Cache-Control": "no-store", "client-request-id": correlation_id})


async def device_login(request: web.Request) -> web.Response:
    """GET the page where a user enters a device's code."""
    try:
        _tenant(request, request.app[ENTRA_KEY])
    except EntraError as err:
        return _error_page(err)
    return _device_page(request, user_code=request.query.get("user_code", ""))


async def device_login_submit(request: web.Request) -> web.Response:
    """POST of the device code page: approve (code and credentials) or decline."""
    emu = request.app[ENTRA_KEY]
    form = await _form(request)
    user_code, username = form.get("user_code", ""), form.get("username", "")
    auth = emu.find_device_flow(user_code)
    if form.get("action") == "cancel":
        if auth is not None:
            auth.declined = True
        return _message_page("Sign-in cancelled", "You declined to sign in on the device. You may now close "
                                                  "this window.")
    if auth is None:
        return _device_page(request, user_code=user_code, username=username,
                            error="That code didn't work. Check the code and try again. (AADSTS70019)")
    user = emu.check_password(username, form.get("password", ""))
    if user is None:
        return _device_page(request, user_code=user_code, username=username,
                            error="Your account or password is incorrect. (AADSTS50126)")
    auth.user_oid = user["oid"]
    return _message_page("You're signed in", f"You have signed in to {_app_name(emu, auth.client_id)} on your "
                                             f"device. You may now close this window.")


# --- admin -----------------------------------------------------------------------------------------

@web.middleware
async def loopback_admin(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
    """Admin endpoints have no auth, so only loopback callers may use them."""
    if request.path.startswith("/_admin") and not _is_loopback(request.remote):
        return web.json_response({"error": "forbidden"}, status=403)
    return await handler(request)


def _is_loopback(remote: str | None) -> bool:
    return remote is not None and (remote == "::1" or remote.startswith("127."))


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}', content_type="application/json")
    return body


async def _admin_user(request: web.Request, emu: EntraEmulator) -> dict[str, Any]:
    """The user named by {"user": upn-or-oid} in the JSON body."""
    name = (await _json_body(request)).get("user")
    if not isinstance(name, str):
        raise web.HTTPBadRequest(text='{"error": "body must be {\\"user\\": upn-or-oid}"}',
                                 content_type="application/json")
    user = emu.find_user(name)
    if user is None:
        raise web.HTTPNotFound(text='{"error": "unknown user"}', content_type="application/json")
    return user


async def admin_stats(request: web.Request) -> web.Response:
    """Token request counters, and how much interactive state is open."""
    emu = request.app[ENTRA_KEY]
    s = emu.stats
    return web.json_response({"token_requests": s.token_requests, "by_grant": dict(s.by_grant),
                              "by_user": dict(s.by_user),
                              "open": {"sign_ins": len(emu.sign_ins), "auth_codes": len(emu.auth_codes),
                                       "device_flows": len(emu.device_auths),
                                       "refresh_tokens": len(emu.refresh_tokens)}})


async def admin_reset(request: web.Request) -> web.Response:
    """Reset counters, lifetimes and forced interaction (refresh tokens survive; see /_admin/revoke)."""
    emu = request.app[ENTRA_KEY]
    emu.stats = EntraStats()
    emu.access_token_lifetime = request.app[DEFAULT_LIFETIME_KEY]
    emu.auth_code_lifetime = AUTH_CODE_LIFETIME
    emu.device_code_lifetime = DEVICE_CODE_LIFETIME
    emu.interaction_required.clear()
    return web.json_response({"ok": True})


async def admin_config(request: web.Request) -> web.Response:
    """Change lifetimes (seconds): access_token_lifetime, auth_code_lifetime, device_code_lifetime."""
    emu = request.app[ENTRA_KEY]
    body = await _json_body(request)
    for name in LIFETIME_SETTINGS:
        if name in body:
            seconds = int(body[name])
            if seconds <= 0:
                return web.json_response({"error": f"{name} must be positive"}, status=400)
            setattr(emu, name, seconds)
    return web.json_response({name: getattr(emu, name) for name in LIFETIME_SETTINGS})


async def admin_revoke(request: web.Request) -> web.Response:
    """Invalidate every refresh token of a user (upn or oid)."""
    user = (await _json_body(request)).get("user")
    if not isinstance(user, str):
        return web.json_response({"error": "body must be {\"user\": upn-or-oid}"}, status=400)
    return web.json_response({"revoked": request.app[ENTRA_KEY].revoke_user(user)})


async def admin_interaction_required(request: web.Request) -> web.Response:
    """POST: the user's refresh token grants answer interaction_required (AADSTS50076). DELETE: clear."""
    emu = request.app[ENTRA_KEY]
    user = await _admin_user(request, emu)
    if request.method == "DELETE":
        emu.interaction_required.discard(user["oid"])
    else:
        emu.interaction_required.add(user["oid"])
    return web.json_response({"user": user["oid"], "interaction_required": user["oid"] in emu.interaction_required})


async def admin_device_approve(request: web.Request) -> web.Response:
    """Approve a pending device flow as a user, without a browser: {"user_code": ..., "user": upn-or-oid}."""
    emu = request.app[ENTRA_KEY]
    body = await _json_body(request)
    user_code = body.get("user_code")
    auth = emu.find_device_flow(user_code) if isinstance(user_code, str) else None
    if auth is None:
        return web.json_response({"error": "no pending device flow with that user_code"}, status=404)
    user = await _admin_user(request, emu)
    auth.user_oid = user["oid"]
    return web.json_response({"approved": True, "client_id": auth.client_id, "user": user["oid"]})


DEFAULT_LIFETIME_KEY = web.AppKey("entra_default_lifetime", int)


def create_entra_app(directory: Mapping[str, Any], issuer_base: str,
                     access_token_lifetime: int = 3600) -> web.Application:
    """Build the Entra emulator aiohttp app; the EntraEmulator state is at app[ENTRA_KEY]."""
    app = web.Application(middlewares=[loopback_admin])
    app[ENTRA_KEY] = EntraEmulator(directory, issuer_base, access_token_lifetime)
    app[DEFAULT_LIFETIME_KEY] = access_token_lifetime
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration)
    app.router.add_get("/{tenant}/discovery/v2.0/keys", jwks)
    app.router.add_get("/{tenant}/oauth2/v2.0/authorize", authorize)
    app.router.add_post("/{tenant}/oauth2/v2.0/authorize", authorize_submit)
    app.router.add_post("/{tenant}/oauth2/v2.0/devicecode", device_authorization)
    app.router.add_get("/{tenant}/oauth2/deviceauth", device_login)
    app.router.add_post("/{tenant}/oauth2/deviceauth", device_login_submit)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token)
    app.router.add_get("/common/userrealm/{username}", user_realm)
    app.router.add_get("/_admin/stats", admin_stats)
    app.router.add_post("/_admin/reset", admin_reset)
    app.router.add_put("/_admin/config", admin_config)
    app.router.add_post("/_admin/revoke", admin_revoke)
    app.router.add_post("/_admin/interaction_required", admin_interaction_required)
    app.router.add_delete("/_admin/interaction_required", admin_interaction_required)
    app.router.add_post("/_admin/device/approve", admin_device_approve)
    return app
