"""EntraEmulator: the signing key, the directory (tenants, users, apps), issued grants, and the tokens it issues.

Like Entra, one signing key serves every tenant; each token names its tenant (`tid`) and its issuer is that
tenant's (`<base>/<tid>/v2.0`).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from devstack.entra.assertions import JWT_BEARER_ASSERTION, verify_client_assertion
from devstack.entra.directory import Directory
from devstack.entra.errors import EntraError, invalid_grant, public_client_with_secret, secret_required
from devstack.entra.grants import DEFAULT_GRANTS, GrantHandler
from devstack.entra.model import (
    AUTH_CODE_LIFETIME,
    DEFAULT_DELEGATED_SCOPES,
    DEVICE_CODE_LIFETIME,
    GRAPH_RESOURCE,
    OIDC_SCOPES,
    REFRESH_TOKEN_LIFETIME,
    ROTATION_ENTRA,
    TENANT_ALIASES,
    USER_CODE_ALPHABET,
    AuthCode,
    DeviceAuthorization,
    EntraStats,
    RefreshGrant,
    ScopeGrant,
    SignIn,
    graph_scope_name,
)


class EntraEmulator:
    """State of the emulated identity platform: signing key, directory, issued grants, counters and grant handlers."""

    def __init__(self, directory: Mapping[str, Any], issuer_base: str,
                 access_token_lifetime: int = 3600) -> None:
        self.directory = Directory(directory)
        # The home tenant: where the app registrations live; the default for tenant-less requests.
        self.tenant_id: str = self.directory.home_tenant_id
        self.base = issuer_base.rstrip("/")
        self.issuer = self.issuer_for(self.tenant_id)
        self.access_token_lifetime = access_token_lifetime
        self.auth_code_lifetime = AUTH_CODE_LIFETIME
        self.device_code_lifetime = DEVICE_CODE_LIFETIME
        # Entra's documented behaviour: a used refresh token stays valid until it expires or is revoked.
        # ROTATION_STRICT (single use) is an option for tests that need the stricter platform.
        self.refresh_token_rotation = ROTATION_ENTRA
        self.users = self.directory.users
        self.clients = self.directory.clients
        # APIs the home tenant exposes, by app id URI and by client id (both name the resource in a scope).
        self.apis: dict[str, dict[str, Any]] = {}
        for c in self.clients.values():
            if c.get("app_id_uri"):
                self.apis[c["app_id_uri"].lower()] = c
                self.apis[c["client_id"].lower()] = c
        self.refresh_tokens: dict[str, RefreshGrant] = {}
        # What each user consented to for a client on a consent page (authorize, device code), beyond the
        # tenant-wide admin consent (a client's `delegated_scopes`): (user oid, client id) -> scope names.
        self.user_consents: dict[tuple[str, str], set[str]] = {}
        self.seed_admin_consent = {c["client_id"]: c.get("delegated_scopes") for c in self.clients.values()}
        self.sign_ins: dict[str, SignIn] = {}
        self.auth_codes: dict[str, AuthCode] = {}
        self.device_auths: dict[str, DeviceAuthorization] = {}
        self.consent_requests: dict[str, dict[str, Any]] = {}
        # Users whose refresh token grants answer interaction_required (as under a new MFA policy).
        self.interaction_required: set[str] = set()
        self.stats = EntraStats()
        # Extension point: grant_type -> handler.
        self.grants: dict[str, GrantHandler] = dict(DEFAULT_GRANTS)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(8)

    def issuer_for(self, tenant_id: str) -> str:
        """The issuer of tokens a tenant's users and apps get."""
        return f"{self.base}/{tenant_id}/v2.0"

    def token_tenant(self, path_tenant: str) -> str:
        """The tenant an app-only token is for: the one in the path, the home tenant for an alias."""
        return self.tenant_id if path_tenant.lower() in TENANT_ALIASES else path_tenant

    # --- keys and tokens -------------------------------------------------------------------------

    def jwks(self, path_tenant: str | None = None) -> dict[str, Any]:
        """Public signing keys in JWKS form (one key for every tenant, as in Entra)."""
        jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        tenant = path_tenant or self.tenant_id
        issuer = self.issuer_for("{tenantid}" if tenant.lower() in TENANT_ALIASES else tenant)
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256", "kty": "RSA", "issuer": issuer})
        return {"keys": [jwk]}

    @property
    def public_key(self) -> Any:
        """The public half of the signing key."""
        return self._key.public_key()

    def signed_here(self, token: str) -> bool:
        """Whether a JWT names this emulator's signing key (its signature still needs checking)."""
        try:
            return bool(jwt.get_unverified_header(token).get("kid") == self.kid)
        except jwt.PyJWTError:
            return False

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Sign claims as an RS256 JWT with this tenant's key."""
        # The key object, not PEM: PyJWT would re-parse and re-validate a PEM key on every call (~30 ms).
        return jwt.encode(dict(claims), self._key, algorithm="RS256",
                          headers={"kid": self.kid, "typ": "JWT"})

    def find_user(self, upn_or_oid: str) -> dict[str, Any] | None:
        """Look a user of any tenant up by object id or (case-insensitive) UPN."""
        return self.directory.find_user(upn_or_oid)

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

    def resolve_scopes(self, scope: str, client: Mapping[str, Any], *, user_oid: str | None = None,
                       interactive: bool = False) -> ScopeGrant:
        """Resolve a requested scope string to one resource's scopes, enforcing consent.

        One token has one audience, so scopes of two resources in one request are refused
        (AADSTS28000), as Entra does; the OIDC scopes MSAL always adds go with any resource. A Graph scope
        needs admin consent, or the user's own consent: given on a consent page (`interactive`, for any
        permission the app registration lists), or earlier for this client. Otherwise AADSTS65001.
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
        if resource == GRAPH_RESOURCE:
            extra = (client.get("api_permissions", []) if interactive
                     else self.user_consents.get((user_oid or "", client["client_id"]), set()))
            available = {**{s.lower(): s for s in extra}, **available}
        granted: list[str] = []
        for name in names:
            for wanted in (list(available.values()) if name == ".default" else [name]):
                canonical = available.get(wanted.lower())
                if canonical is None:
                    raise invalid_grant(65001,
                                        f"The user or administrator has not consented to use the application "
                                        f"with ID '{client['client_id']}'. Send an interactive authorization "
                                        f"request for this user and resource.")
                if canonical not in granted:
                    granted.append(canonical)
        return ScopeGrant(resource, tuple(granted), tuple(oidc))

    def _split_scope(self, raw: str) -> tuple[str, str]:
        """(resource, scope name) for a requested scope; bare names are Graph scopes, as in Entra."""
        graph_name = graph_scope_name(raw)
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
                          public: bool = False, consented: bool = False) -> dict[str, Any]:
        """Build a delegated token response (access, id, refresh token, client_info) for a user.

        `consented`: the user has just been through a consent page for these scopes (remembered).
        """
        grant = self.resolve_scopes(scope, client, user_oid=user["oid"], interactive=consented)
        if consented and grant.resource == GRAPH_RESOURCE:
            self.user_consents.setdefault((user["oid"], client["client_id"]), set()).update(grant.scopes)
        now = int(time.time())
        lifetime = self.access_token_lifetime
        client_id = client["client_id"]
        tenant_id = user["tenant_id"]
        issuer = self.issuer_for(tenant_id)
        scp = grant.scopes or tuple(s for s in grant.oidc if s != "offline_access")
        access = {
            "aud": grant.resource, "iss": issuer, "iat": now, "nbf": now, "exp": now + lifetime,
            "tid": tenant_id, "oid": user["oid"], "sub": user["oid"], "upn": user["upn"],
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
                                                   time.time() + REFRESH_TOKEN_LIFETIME, public, tenant_id)
            body["refresh_token"] = rt
        if "openid" in grant.oidc:
            id_claims = {
                "aud": client_id, "iss": issuer, "iat": now, "nbf": now, "exp": now + lifetime,
                "tid": tenant_id, "oid": user["oid"], "sub": user["oid"],
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
        self.stats.by_tenant[tenant_id] += 1
        return body

    def client_info(self, user: Mapping[str, Any]) -> str:
        """Entra's client_info: base64url JSON of the user's object id and tenant id."""
        info = json.dumps({"uid": user["oid"], "utid": user["tenant_id"]}).encode()
        return base64.urlsafe_b64encode(info).rstrip(b"=").decode()

    def issue_app_token(self, client: Mapping[str, Any], tenant_id: str | None = None) -> dict[str, Any]:
        """Build an app-only (client credentials) token response for Graph, in the given tenant."""
        now = int(time.time())
        sp = self.service_principal_id(client)
        tenant_id = tenant_id or self.tenant_id
        claims = {
            "aud": GRAPH_RESOURCE, "iss": self.issuer_for(tenant_id), "iat": now, "nbf": now,
            "exp": now + self.access_token_lifetime, "tid": tenant_id, "oid": sp, "sub": sp,
            "roles": list(client.get("application_roles", [])), "idtyp": "app",
            "appid": client["client_id"], "azp": client["client_id"], "ver": "2.0",
            "uti": secrets.token_urlsafe(16),
        }
        return {"token_type": "Bearer", "expires_in": self.access_token_lifetime,
                "ext_expires_in": self.access_token_lifetime, "access_token": self.sign(claims)}

    def issue_managed_identity_token(self, identity: Mapping[str, Any], resource: str) -> dict[str, Any]:
        """A managed identity's token for a resource, in the App Service endpoint's answer form.

        For `api://AzureADTokenExchange` it is the assertion an app's federated identity credential trusts:
        issuer the home tenant's, subject the identity's principal (object) id.
        """
        now = int(time.time())
        tenant_id = identity.get("tenant_id", self.tenant_id)
        claims = {
            "aud": resource, "iss": self.issuer_for(tenant_id), "iat": now, "nbf": now,
            "exp": now + self.access_token_lifetime, "tid": tenant_id, "oid": identity["principal_id"],
            "sub": identity["principal_id"], "azp": identity["client_id"], "appid": identity["client_id"],
            "idtyp": "app", "ver": "2.0", "uti": secrets.token_urlsafe(16),
            **({"xms_mirid": identity["resource_id"]} if identity.get("resource_id") else {}),
        }
        self.stats.managed_identity_requests += 1
        return {"access_token": self.sign(claims), "expires_on": str(now + self.access_token_lifetime),
                "resource": resource, "token_type": "Bearer", "client_id": identity["client_id"]}

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

    def verify_user_assertion(self, assertion: str, client: Mapping[str, Any], path_tenant: str) -> dict[str, Any]:
        """Claims of a user token the tenant in the path signed for the client's own API, else invalid_grant."""
        audiences = [client["client_id"], *([client["app_id_uri"]] if client.get("app_id_uri") else [])]
        try:
            kid = jwt.get_unverified_header(assertion).get("kid")
            if kid != self.kid:
                raise invalid_grant(50013, "Assertion failed signature validation. "
                                           "[Reason - The key was not found.]")
            tenant = str(jwt.decode(assertion, options={"verify_signature": False}).get("tid", ""))
            if path_tenant.lower() not in TENANT_ALIASES and tenant != path_tenant:
                raise invalid_grant(50013, "Assertion failed signature validation. [Reason - The issuer of the "
                                           "assertion is not this tenant.]")
            claims = jwt.decode(assertion, self._key.public_key(), algorithms=["RS256"], audience=audiences,
                                issuer=self.issuer_for(tenant), options={"require": ["exp", "aud", "iss", "oid"]})
        except jwt.ExpiredSignatureError:
            raise invalid_grant(500133, "Assertion is not within its valid time range. Ensure that the access "
                                        "token is not expired before using it for user assertion, or request "
                                        "a new token.") from None
        except jwt.InvalidAudienceError:
            raise invalid_grant(50013, f"Assertion audience does not match the Client app presenting the "
                                       f"assertion. The expected audience is '{audiences[-1]}' or one of the "
                                       f"Application Uris of this application with App ID "
                                       f"'{client['client_id']}'.") from None
        except jwt.InvalidSignatureError:
            raise invalid_grant(50013, "Assertion failed signature validation. [Reason - The provided "
                                       "signature value did not match the expected signature value.]") from None
        except jwt.PyJWTError as exc:
            raise invalid_grant(50013, f"Assertion failed validation: {type(exc).__name__}.") from None
        if claims.get("idtyp") == "app" or not claims.get("scp"):
            raise invalid_grant(50013, "Assertion is not a delegated user token.")
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

    def start_device_flow(self, client: Mapping[str, Any], scope: str,
                          path_tenant: str) -> tuple[str, DeviceAuthorization]:
        """Create a device flow; returns (device_code, state)."""
        self._purge()
        user_code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(9))
        device_code = secrets.token_urlsafe(48)
        auth = DeviceAuthorization(client["client_id"], scope, user_code, time.time() + self.device_code_lifetime,
                                   tenant=path_tenant)
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

    def approve_device_flow(self, auth: DeviceAuthorization, user: Mapping[str, Any]) -> None:
        """A user approves a device flow: they must belong to its tenant and may consent where allowed."""
        client = self.find_client(auth.client_id)
        self.directory.user_in(user, auth.tenant, client)
        self.directory.consent_at_sign_in(user, client)
        auth.user_oid = user["oid"]

    def authenticate_client(self, request: web.Request, form: Mapping[str, str],
                            path_tenant: str) -> tuple[dict[str, Any], bool]:
        """Resolve and authenticate the client (secret in the body or HTTP Basic, or a client assertion);
        returns (client, confidential)."""
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
        self.directory.client_usable_in(client, path_tenant)
        assertion = form.get("client_assertion")
        if assertion:
            if form.get("client_assertion_type") != JWT_BEARER_ASSERTION:
                raise EntraError(400, "invalid_request", 90014,
                                 "The request body must contain the following parameter: 'client_assertion_type'.")
            if not client.get("certificates") and not client.get("federated_identity_credentials") \
                    and client.get("client_secret") is None:
                raise public_client_with_secret()
            kind = verify_client_assertion(self, client, assertion, f"{self.base}/{path_tenant}/oauth2/v2.0/token")
            self.stats.by_credential[kind] += 1
            return client, True
        expected = client.get("client_secret")
        if secret:
            if expected is None:
                raise public_client_with_secret()
            if not secrets.compare_digest(secret.encode(), expected.encode()):
                raise EntraError(401, "invalid_client", 7000215,
                                 "Invalid client secret provided. Ensure the secret being sent in the request "
                                 "is the client secret value, not the client secret ID, for a secret added to "
                                 f"app '{client_id}'.")
            self.stats.by_credential["secret"] += 1
            return client, True
        if self._confidential_only(client):
            raise secret_required()
        return client, False

    @staticmethod
    def _confidential_only(client: Mapping[str, Any]) -> bool:
        """A client with a credential of any kind that does not also allow public client flows."""
        has_credential = client.get("client_secret") is not None or bool(client.get("certificates")) \
            or bool(client.get("federated_identity_credentials"))
        return has_credential and not client.get("allow_public_client")

    def find_client(self, client_id: str) -> dict[str, Any]:
        """The registered client, else invalid_client AADSTS700016."""
        client = self.clients.get(client_id)
        if client is None:
            raise EntraError(401, "invalid_client", 700016,
                             f"Application with identifier '{client_id}' was not found in the directory "
                             f"'{self.directory.tenant(self.tenant_id).display_name}'.")
        return client


ENTRA_KEY = web.AppKey("entra", EntraEmulator)
