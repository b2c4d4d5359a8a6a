"""Entra ID (Azure AD v2.0 endpoint) emulator that unmodified MSAL and azure-identity can talk to."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

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


class EntraError(Exception):
    """An OAuth error that the token endpoint renders in Entra's JSON error shape."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(f"{error}: AADSTS{code}")
        self.status, self.error, self.code, self.description = status, error, code, description


@dataclass
class TokenRequest:
    """A parsed, client-authenticated request to the token endpoint."""

    tenant: str
    form: Mapping[str, str]
    client: dict[str, Any]
    correlation_id: str


@dataclass
class RefreshGrant:
    """Server-side state behind one opaque refresh token."""

    user_oid: str
    client_id: str
    scope: str
    expires_at: float


@dataclass
class EntraStats:
    """Counters served by /_admin/stats."""

    token_requests: int = 0
    by_grant: Counter[str] = field(default_factory=Counter)
    by_user: Counter[str] = field(default_factory=Counter)


GrantHandler = Callable[["EntraEmulator", TokenRequest], Awaitable[dict[str, Any]]]


class EntraEmulator:
    """State of one emulated tenant: signing key, directory, refresh tokens, counters and grants."""

    def __init__(self, directory: Mapping[str, Any], issuer_base: str,
                 access_token_lifetime: int = 3600) -> None:
        self.tenant_id: str = directory["tenant_id"]
        self.base = issuer_base.rstrip("/")
        self.issuer = f"{self.base}/{self.tenant_id}/v2.0"
        self.access_token_lifetime = access_token_lifetime
        self.users = {u["oid"]: dict(u) for u in directory.get("users", [])}
        self._users_by_upn = {u["upn"].lower(): u for u in self.users.values()}
        self.clients = {c["client_id"]: dict(c) for c in directory.get("clients", [])}
        self.refresh_tokens: dict[str, RefreshGrant] = {}
        self.stats = EntraStats()
        # Extension point: other grant types (authorization_code, device_code, OBO) register here.
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

    def service_principal_id(self, client: Mapping[str, Any]) -> str:
        """Object id of the client's service principal (stable per client id)."""
        return client.get("service_principal_id") or str(uuid.uuid5(uuid.NAMESPACE_URL, client["client_id"]))

    def resolve_delegated_scopes(self, scope: str, client: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """Split a requested scope string into granted Graph scopes and OIDC scopes, enforcing consent."""
        consented = {s.lower(): s for s in client.get("delegated_scopes", DEFAULT_DELEGATED_SCOPES)}
        graph: list[str] = []
        oidc: list[str] = []
        for raw in scope.split():
            if raw in OIDC_SCOPES:
                oidc.append(raw)
                continue
            short = _graph_scope_name(raw)
            if short is None:
                raise EntraError(400, "invalid_resource", 500011,
                                 f"The resource principal named {raw} was not found in the tenant named "
                                 f"{self.tenant_id}.")
            names = list(consented.values()) if short == ".default" else [short]
            for name in names:
                canonical = consented.get(name.lower())
                if canonical is None:
                    raise EntraError(400, "invalid_grant", 65001,
                                     f"The user or administrator has not consented to use the application "
                                     f"with ID '{client['client_id']}'. Send an interactive authorization "
                                     f"request for this user and resource.")
                if canonical not in graph:
                    graph.append(canonical)
        return graph, oidc

    def issue_user_tokens(self, user: Mapping[str, Any], client: Mapping[str, Any], scope: str,
                          *, nonce: str | None = None, client_info: bool = True) -> dict[str, Any]:
        """Build a delegated token response (access, id, refresh token, client_info) for a user."""
        graph_scopes, oidc = self.resolve_delegated_scopes(scope, client)
        now = int(time.time())
        lifetime = self.access_token_lifetime
        client_id = client["client_id"]
        scp = graph_scopes or [s for s in oidc if s != "offline_access"]
        access = {
            "aud": GRAPH_RESOURCE, "iss": self.issuer, "iat": now, "nbf": now, "exp": now + lifetime,
            "tid": self.tenant_id, "oid": user["oid"], "sub": user["oid"], "upn": user["upn"],
            "preferred_username": user["upn"], "name": user.get("display_name", user["upn"]),
            "scp": " ".join(scp), "appid": client_id, "azp": client_id, "ver": "2.0",
            "idtyp": "user", "uti": secrets.token_urlsafe(16),
        }
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join([f"{GRAPH_RESOURCE}/{s}" for s in graph_scopes]
                              + [s for s in oidc if s != "offline_access"]),
            "expires_in": lifetime, "ext_expires_in": lifetime,
            "access_token": self.sign(access),
        }
        if "offline_access" in oidc:
            rt = secrets.token_urlsafe(48)
            self.refresh_tokens[rt] = RefreshGrant(user["oid"], client_id, scope,
                                                   time.time() + REFRESH_TOKEN_LIFETIME)
            body["refresh_token"] = rt
        if "openid" in oidc:
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
            info = json.dumps({"uid": user["oid"], "utid": self.tenant_id}).encode()
            body["client_info"] = base64.urlsafe_b64encode(info).rstrip(b"=").decode()
        self.stats.by_user[user["upn"]] += 1
        return body

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

    # --- client authentication -------------------------------------------------------------------

    def authenticate_client(self, request: web.Request, form: Mapping[str, str]) -> dict[str, Any]:
        """Resolve and authenticate the client from the body or an HTTP Basic header."""
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
        client = self.clients.get(client_id)
        if client is None:
            raise EntraError(401, "invalid_client", 700016,
                             f"Application with identifier '{client_id}' was not found in the directory "
                             f"'{self.tenant_id}'.")
        expected = client.get("client_secret")
        if expected is not None and not (secret and secrets.compare_digest(secret, expected)):
            raise EntraError(401, "invalid_client", 7000215,
                             "Invalid client secret provided. Ensure the secret being sent in the request "
                             "is the client secret value, not the client secret ID, for a secret added to "
                             f"app '{client_id}'.")
        return client


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


# --- grants ----------------------------------------------------------------------------------------

async def grant_password(emu: EntraEmulator, req: TokenRequest) -> dict[str, Any]:
    """Resource owner password credentials (ROPC): local dev credential only."""
    username = _require(req.form, "username")
    password = _require(req.form, "password")
    user = emu.find_user(username)
    if user is None or not secrets.compare_digest(password, user.get("password", "")):
        raise EntraError(400, "invalid_grant", 50126,
                         "Error validating credentials due to invalid username or password.")
    return emu.issue_user_tokens(user, req.client, _require(req.form, "scope"),
                                 client_info=req.form.get("client_info") == "1")


async def grant_refresh_token(emu: EntraEmulator, req: TokenRequest) -> dict[str, Any]:
    """Refresh token grant with strict rotation: a refresh token works exactly once."""
    rt = _require(req.form, "refresh_token")
    grant = emu.refresh_tokens.pop(rt, None)
    if grant is None or grant.expires_at < time.time():
        raise EntraError(400, "invalid_grant", 70008,
                         "The provided authorization code or refresh token has expired due to inactivity, "
                         "was already used or was revoked.")
    if grant.client_id != req.client["client_id"]:
        raise EntraError(400, "invalid_grant", 70000,
                         "Provided grant is invalid or malformed: it was issued to a different client.")
    user = emu.users.get(grant.user_oid)
    if user is None:
        raise EntraError(400, "invalid_grant", 50034, "The user account does not exist in the directory.")
    scope = req.form.get("scope") or grant.scope
    if "offline_access" not in scope.split():
        # Entra keeps handing out refresh tokens on a refresh even if offline_access is not repeated.
        scope += " offline_access"
    return emu.issue_user_tokens(user, req.client, scope, client_info=req.form.get("client_info") == "1")


async def grant_client_credentials(emu: EntraEmulator, req: TokenRequest) -> dict[str, Any]:
    """Client credentials grant: app-only token for Graph."""
    scope = _require(req.form, "scope").strip()
    if _graph_scope_name(scope) != ".default":
        raise EntraError(400, "invalid_scope", 1002012,
                         f"The provided value for scope {scope} is not valid. Client credential flows must "
                         f"have a scope value with /.default suffixed to the resource identifier "
                         f"(application ID URI).")
    return emu.issue_app_token(req.client)


DEFAULT_GRANTS: dict[str, GrantHandler] = {
    "password": grant_password,
    "refresh_token": grant_refresh_token,
    "client_credentials": grant_client_credentials,
}

# --- HTTP layer ------------------------------------------------------------------------------------

ENTRA_KEY = web.AppKey("entra", EntraEmulator)


def _error_response(err: EntraError, correlation_id: str) -> web.Response:
    trace_id = str(uuid.uuid4())
    ts = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return web.json_response({
        "error": err.error,
        "error_description": f"AADSTS{err.code}: {err.description} Trace ID: {trace_id} "
                             f"Correlation ID: {correlation_id} Timestamp: {ts}",
        "error_codes": [err.code], "timestamp": ts, "trace_id": trace_id,
        "correlation_id": correlation_id, "error_uri": f"https://login.microsoftonline.com/error?code={err.code}",
    }, status=err.status, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _tenant(request: web.Request, emu: EntraEmulator) -> str:
    tenant = request.match_info["tenant"]
    if tenant != emu.tenant_id and tenant.lower() not in TENANT_ALIASES:
        raise EntraError(400, "invalid_tenant", 90002,
                         f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID.")
    return tenant


def _correlation_id(request: web.Request) -> str:
    return request.headers.get("client-request-id") or str(uuid.uuid4())


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
        "response_modes_supported": ["query", "fragment", "form_post"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
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
    form = await request.post()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
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
        client = emu.authenticate_client(request, fields)
        body = await handler(emu, TokenRequest(tenant, fields, client, correlation_id))
    except EntraError as err:
        log.info("token request failed: grant=%s error=%s AADSTS%d", grant_type, err.error, err.code)
        return _error_response(err, correlation_id)
    return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache",
                                            "client-request-id": correlation_id})


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


async def admin_stats(request: web.Request) -> web.Response:
    """Token request counters."""
    s = request.app[ENTRA_KEY].stats
    return web.json_response({"token_requests": s.token_requests, "by_grant": dict(s.by_grant),
                              "by_user": dict(s.by_user)})


async def admin_reset(request: web.Request) -> web.Response:
    """Reset counters and config (refresh tokens survive; use /_admin/revoke for those)."""
    emu = request.app[ENTRA_KEY]
    emu.stats = EntraStats()
    emu.access_token_lifetime = request.app[DEFAULT_LIFETIME_KEY]
    return web.json_response({"ok": True})


async def admin_config(request: web.Request) -> web.Response:
    """Change runtime settings such as the access token lifetime."""
    emu = request.app[ENTRA_KEY]
    body = await request.json()
    if "access_token_lifetime" in body:
        lifetime = int(body["access_token_lifetime"])
        if lifetime <= 0:
            return web.json_response({"error": "access_token_lifetime must be positive"}, status=400)
        emu.access_token_lifetime = lifetime
    return web.json_response({"access_token_lifetime": emu.access_token_lifetime})


async def admin_revoke(request: web.Request) -> web.Response:
    """Invalidate every refresh token of a user (upn or oid)."""
    body = await request.json()
    user = body.get("user")
    if not isinstance(user, str):
        return web.json_response({"error": "body must be {\"user\": upn-or-oid}"}, status=400)
    return web.json_response({"revoked": request.app[ENTRA_KEY].revoke_user(user)})


DEFAULT_LIFETIME_KEY = web.AppKey("entra_default_lifetime", int)


def create_entra_app(directory: Mapping[str, Any], issuer_base: str,
                     access_token_lifetime: int = 3600) -> web.Application:
    """Build the Entra emulator aiohttp app; the EntraEmulator state is at app[ENTRA_KEY]."""
    app = web.Application(middlewares=[loopback_admin])
    app[ENTRA_KEY] = EntraEmulator(directory, issuer_base, access_token_lifetime)
    app[DEFAULT_LIFETIME_KEY] = access_token_lifetime
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration)
    app.router.add_get("/{tenant}/discovery/v2.0/keys", jwks)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token)
    app.router.add_get("/common/userrealm/{username}", user_realm)
    app.router.add_get("/_admin/stats", admin_stats)
    app.router.add_post("/_admin/reset", admin_reset)
    app.router.add_put("/_admin/config", admin_config)
    app.router.add_post("/_admin/revoke", admin_revoke)
    return app
