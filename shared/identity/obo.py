"""The HTTP twin's bearer path: validate the caller's Entra token, then exchange it On-Behalf-Of for Graph."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from shared.common.tls import ssl_context
from shared.exceptions import ForbiddenError, TokenServiceUnavailableError
from shared.identity.tokens import SCOPE_JOIN_URL, ensure_delegated
from shared.problems import problem
from shared.settings import Settings

ALGORITHMS = ["RS256"]  # Entra signs with RS256; anything else (none, HS256 with the public key) is forged
LEEWAY_SECONDS = 60
_MAX_TOKEN_LENGTH = 16 * 1024


class BearerError(Exception):
    """The bearer token was refused: 401 (not a valid token) or 403 (valid, but not allowed)."""

    def __init__(self, status: int, error: str, detail: str, *, scope: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.scope = status, error, detail, scope

    def response(self) -> func.HttpResponse:
        """problem+json with the RFC 6750 WWW-Authenticate challenge."""
        reason = "invalid_token" if self.status == 401 else self.error
        response = problem(self.status, reason, self.detail)
        challenge = "Bearer" if self.error == "missing_token" else f'Bearer error="{self.error}"'
        if self.scope:
            challenge += f', scope="{self.scope}"'
        response.headers["WWW-Authenticate"] = challenge
        return response


@dataclass(frozen=True)
class Caller:
    """The signed-in user behind a validated bearer token."""

    oid: str
    upn: str | None
    claims: dict[str, Any]

    def is_(self, organizer: str) -> bool:
        """True if `organizer` (object id or UPN) names this caller."""
        value = organizer.strip().lower()
        return value == self.oid.lower() or (self.upn is not None and value == self.upn.lower())


def bearer_token(req: func.HttpRequest) -> str | None:
    """The token of an `Authorization: Bearer` header, else None."""
    header = req.headers.get("authorization") or ""
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


class BearerValidator:
    """Checks signature (keys from the authority's JWKS), issuer, audience, lifetime and scope of a token."""

    def __init__(self, settings: Settings, *, jwks_client: Any = None) -> None:
        self.settings = settings
        self.issuer = f"{settings.authority_url}/v2.0"
        # v2.0 access tokens carry the API's client id as audience; v1.0 ones its Application ID URI.
        self.audiences = [a for a in dict.fromkeys((settings.api_audience, settings.client_id)) if a]
        self.required_scope = settings.api_required_scope
        self._jwks_client = jwks_client
        self._lock = threading.Lock()

    def _keys(self) -> Any:
        with self._lock:
            if self._jwks_client is None:
                from jwt import PyJWKClient

                context = ssl_context(self.settings.tls_ca_bundle)
                discovery = f"{self.settings.authority_url}/v2.0/.well-known/openid-configuration"
                try:
                    with urllib.request.urlopen(discovery, timeout=10, context=context) as answer:  # noqa: S310
                        jwks_uri = json.load(answer)["jwks_uri"]
                except (OSError, ValueError, KeyError) as exc:
                    raise TokenServiceUnavailableError(
                        f"OIDC discovery failed ({type(exc).__name__}); cannot check bearer tokens") from exc
                self._jwks_client = PyJWKClient(jwks_uri, cache_keys=True, lifespan=3600, ssl_context=context,
                                                timeout=10)
            return self._jwks_client

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
            key = self._keys().get_signing_key(header["kid"])
        except jwt.PyJWKClientConnectionError as exc:
            raise TokenServiceUnavailableError("the authority's signing keys could not be fetched") from exc
        except jwt.PyJWKClientError:
            raise BearerError(401, "invalid_token", "the bearer token was not signed by the authority") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=ALGORITHMS, audience=self.audiences, issuer=self.issuer,
                leeway=LEEWAY_SECONDS, options={"require": ["exp", "iss", "aud"]})
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
        return Caller(oid=oid, upn=str(upn) if upn else None, claims=claims)


def obo_credential(settings: Settings, assertion: str) -> Any:
    """azure-identity's OnBehalfOfCredential for one caller's token (sync: it runs on a worker thread)."""
    from azure.identity import OnBehalfOfCredential

    return OnBehalfOfCredential(
        settings.tenant_id, settings.client_id, client_secret=settings.client_secret, user_assertion=assertion,
        authority=settings.entra_authority, disable_instance_discovery=True,
        connection_verify=str(settings.tls_ca_bundle) if settings.tls_ca_bundle else True)


class OboTokenSource:
    """A TokenSource acting as the bearer caller: Graph tokens by On-Behalf-Of, cached for this request only."""

    def __init__(self, settings: Settings, assertion: str, caller: Caller,
                 credential_factory: Callable[[Settings, str], Any] = obo_credential) -> None:
        self._settings = settings
        self._assertion = assertion
        self._caller = caller
        self._factory = credential_factory
        self._credential: Any = None
        self._tokens: dict[tuple[str, ...], str] = {}
        self.requests = 0

    async def token_for(self, organizer: str, scopes: Sequence[str] = SCOPE_JOIN_URL) -> str:
        """A Graph token for the caller, who must be the organizer."""
        if not self._caller.is_(organizer):
            raise ForbiddenError("a bearer caller can act only as themselves: organizer must be the signed-in user",
                                 reason="organizer_mismatch")
        key = tuple(sorted(scopes))
        token = self._tokens.get(key)
        if token is None:
            self.requests += 1
            token = await asyncio.to_thread(self._exchange, list(scopes))
            ensure_delegated(token)
            self._tokens[key] = token
        return token

    def invalidate(self, organizer: str) -> None:
        """Forget this request's tokens."""
        self._tokens.clear()

    def _exchange(self, scopes: list[str]) -> str:
        from azure.core.exceptions import ClientAuthenticationError

        if self._credential is None:
            self._credential = self._factory(self._settings, self._assertion)
        try:
            return str(self._credential.get_token(*scopes).token)
        except ClientAuthenticationError as exc:
            text = str(exc.message or exc)
            first = (text.splitlines() or [""])[0][:240]
            if "AADSTS" in text or "invalid_grant" in text or "interaction_required" in text:
                # Entra answered: consent missing, Conditional Access, or the assertion was refused.
                raise ForbiddenError(f"the On-Behalf-Of exchange was refused: {first}", reason="obo_refused") from None
            raise TokenServiceUnavailableError(f"On-Behalf-Of exchange failed: {first}") from None
