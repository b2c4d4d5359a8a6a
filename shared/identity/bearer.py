"""Bearer tokens of the HTTP twin's callers: signature, issuer, audience, lifetime and scope, checked once."""

from __future__ import annotations

import json
import threading
import urllib.request
from dataclasses import dataclass
from typing import Any

from shared.common.tls import ssl_context
from shared.exceptions import BearerError, TokenServiceUnavailableError
from shared.settings import Settings

ALGORITHMS = ["RS256"]  # Entra signs with RS256; anything else (none, HS256 with the public key) is forged
LEEWAY_SECONDS = 60
_MAX_TOKEN_LENGTH = 16 * 1024


@dataclass(frozen=True)
class Caller:
    """The signed-in user behind a validated bearer token."""

    oid: str
    upn: str | None
    claims: dict[str, Any]
    # The tenant that issued the token (`tid`): the caller's tenant.
    tenant_id: str = ""

    def is_(self, organizer: str) -> bool:
        """True if `organizer` (object id or UPN) names this caller."""
        value = organizer.strip().lower()
        return value == self.oid.lower() or (self.upn is not None and value == self.upn.lower())


class BearerValidator:
    """Checks tenant (ENTRA_ALLOWED_TENANTS), signature (keys from the tenant's JWKS), the tenant's own issuer,
    audience, lifetime and scope of a token."""

    def __init__(self, settings: Settings, *, jwks_client: Any = None) -> None:
        self.settings = settings
        # v2.0 access tokens carry the API's client id as audience; v1.0 ones its Application ID URI.
        self.audiences = [a for a in dict.fromkeys((settings.api_audience, settings.client_id)) if a]
        self.required_scope = settings.api_required_scope
        self._fixed_keys = jwks_client
        self._jwks_clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def issuer(self, tenant: str) -> str:
        """The issuer of a tenant's v2.0 tokens."""
        return f"{self.settings.authority_for(tenant)}/v2.0"

    def _keys(self, tenant: str) -> Any:
        if self._fixed_keys is not None:
            return self._fixed_keys
        with self._lock:
            if tenant not in self._jwks_clients:
                from jwt import PyJWKClient

                context = ssl_context(self.settings.tls_ca_bundle)
                discovery = f"{self.issuer(tenant)}/.well-known/openid-configuration"
                try:
                    with urllib.request.urlopen(discovery, timeout=10, context=context) as answer:  # noqa: S310
                        jwks_uri = json.load(answer)["jwks_uri"]
                except (OSError, ValueError, KeyError) as exc:
                    raise TokenServiceUnavailableError(
                        f"OIDC discovery failed ({type(exc).__name__}); cannot check bearer tokens") from exc
                self._jwks_clients[tenant] = PyJWKClient(jwks_uri, cache_keys=True, lifespan=3600,
                                                         ssl_context=context, timeout=10)
            return self._jwks_clients[tenant]

    def validate(self, token: str) -> Caller:
        """The caller, or BearerError; blocking on the first call (discovery, JWKS)."""
        import jwt

        if not token or len(token) > _MAX_TOKEN_LENGTH:
            raise BearerError(401, "invalid_token", "the bearer token is empty or too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise BearerError(401, "invalid_token", "the bearer token is not a JWT") from None
        if header.get("alg") not in ALGORITHMS or not isinstance(header.get("kid"), str):
            raise BearerError(401, "invalid_token", "the bearer token must be RS256-signed with a key id")
        try:
            # Read before the signature is checked only to choose the tenant's keys and issuer; refused unless
            # that tenant is allowed, and then everything is checked against that tenant.
            tenant = str(jwt.decode(token, options={"verify_signature": False}).get("tid") or "").lower()
        except jwt.PyJWTError:
            raise BearerError(401, "invalid_token", "the bearer token is not a JWT") from None
        if not self.settings.tenant_allowed(tenant):
            raise BearerError(401, "invalid_token", "the bearer token is from a tenant this app does not serve")
        try:
            key = self._keys(tenant).get_signing_key(header["kid"])
        except jwt.PyJWKClientConnectionError as exc:
            raise TokenServiceUnavailableError("the authority's signing keys could not be fetched") from exc
        except jwt.PyJWKClientError:
            raise BearerError(401, "invalid_token", "the bearer token was not signed by the authority") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=ALGORITHMS, audience=self.audiences, issuer=self.issuer(tenant),
                leeway=LEEWAY_SECONDS, options={"require": ["exp", "iss", "aud", "tid"]})
        except jwt.ExpiredSignatureError:
            raise BearerError(401, "invalid_token", "the bearer token has expired") from None
        except jwt.ImmatureSignatureError:
            raise BearerError(401, "invalid_token", "the bearer token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise BearerError(401, "invalid_token", "the bearer token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise BearerError(401, "invalid_token", "the bearer token is from another issuer") from None
        except jwt.PyJWTError as exc:
            raise BearerError(401, "invalid_token", f"the bearer token is invalid ({type(exc).__name__})") from None
        return self._authorize(claims)

    def _authorize(self, claims: dict[str, Any]) -> Caller:
        scopes = str(claims.get("scp") or "").split()
        if not scopes:
            # An app-only token has roles, no scp: On-Behalf-Of needs a user to act for.
            raise BearerError(403, "insufficient_scope", "an app-only token cannot act for a user; send a "
                              "delegated (user) token", scope=self.required_scope)
        if self.required_scope not in scopes:
            raise BearerError(403, "insufficient_scope", f"the bearer token lacks the scope {self.required_scope!r}",
                              scope=self.required_scope)
        oid = claims.get("oid")
        if not isinstance(oid, str) or not oid:
            raise BearerError(401, "invalid_token", "the bearer token names no user (oid)")
        upn = claims.get("preferred_username") or claims.get("upn")
        return Caller(oid=oid, upn=str(upn) if upn else None, claims=claims, tenant_id=str(claims["tid"]).lower())
