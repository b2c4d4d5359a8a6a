"""Delegated credentials: "a delegated access token for organizer X", behind one interface."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from shared.exceptions import (
    AppOnlyTokenError,
    OrganizerNotConnectedError,
    PermanentError,
    SettingsError,
    TokenServiceUnavailableError,
)
from shared.redaction import hash_user
from shared.settings import Settings

log = logging.getLogger(__name__)

GRAPH_RESOURCE = "https://graph.microsoft.com/"
# Least privilege: the join URL needs only VirtualAppointment.Read; OnlineMeetings.Read is asked for
# only when an event carries a joinWebUrl and the meeting id must be looked up.
SCOPE_JOIN_URL = (GRAPH_RESOURCE + "VirtualAppointment.Read",)
SCOPE_MEETING_LOOKUP = (GRAPH_RESOURCE + "OnlineMeetings.Read",)
# Refresh this long before expiry, so a token never expires between cache read and Graph's check.
_EXPIRY_MARGIN_SECONDS = 300.0


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and when it expires (epoch seconds)."""

    token: str
    expires_on: float


class DelegatedTokenAcquirer(ABC):
    """Where tokens come from (the identity platform); called only on a cache miss."""

    @abstractmethod
    def acquire(self, organizer: str, scopes: Sequence[str]) -> AccessToken:
        """Get a delegated token for the organizer; blocking, run off the event loop."""


class TokenSource(Protocol):
    """Anything that can hand out a delegated Graph token for an organizer (vault cache, On-Behalf-Of)."""

    async def token_for(self, organizer: str, scopes: Sequence[str] = SCOPE_JOIN_URL) -> str:
        """A valid delegated access token."""

    def invalidate(self, organizer: str) -> None:
        """Forget cached tokens after Graph refused one."""


class DelegatedCredentials:
    """Delegated tokens per organizer and scope set, cached in memory until shortly before expiry.

    Concurrent callers for the same organizer share one token request, so a burst of events for one
    organizer costs one round trip to the identity platform per token lifetime.
    """

    def __init__(self, acquirer: DelegatedTokenAcquirer, clock: Any = time.time) -> None:
        self._acquirer = acquirer
        self._clock = clock
        self._tokens: dict[tuple[str, tuple[str, ...]], AccessToken] = {}
        self._inflight: dict[tuple[str, tuple[str, ...]], asyncio.Future[AccessToken]] = {}
        self.requests = 0

    async def token_for(self, organizer: str, scopes: Sequence[str] = SCOPE_JOIN_URL) -> str:
        """A valid delegated access token for the organizer."""
        key = (organizer.strip().lower(), tuple(sorted(scopes)))
        cached = self._tokens.get(key)
        if cached is not None and cached.expires_on - _EXPIRY_MARGIN_SECONDS > self._clock():
            return cached.token
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._inflight[key] = pending
            try:
                self.requests += 1
                token = await asyncio.to_thread(self._acquirer.acquire, organizer, list(scopes))
                ensure_delegated(token.token)
                self._tokens[key] = token
                pending.set_result(token)
            except BaseException as exc:
                pending.set_exception(exc)
                # Mark retrieved so an unawaited failure is not reported as "never retrieved".
                pending.exception()
                raise
            finally:
                del self._inflight[key]
            return token.token
        return (await asyncio.shield(pending)).token

    def invalidate(self, organizer: str) -> None:
        """Forget cached tokens for the organizer (after Graph refused one)."""
        prefix = organizer.strip().lower()
        for key in [k for k in self._tokens if k[0] == prefix]:
            del self._tokens[key]


def token_claims(token: str) -> dict[str, Any]:
    """Decode a JWT's claims without verifying it (for classification only, never for trust)."""
    try:
        payload = token.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    except (IndexError, ValueError):
        return {}


def ensure_delegated(token: str) -> None:
    """Raise AppOnlyTokenError for an app-only token, before Graph answers 403 to it."""
    claims = token_claims(token)
    if claims.get("idtyp") == "app" or ("roles" in claims and "scp" not in claims):
        raise AppOnlyTokenError(
            "the credential produced an app-only token, but getVirtualAppointmentJoinWebUrl supports "
            "delegated permissions only (least privileged: VirtualAppointment.Read); the organizer "
            "must connect with a delegated sign-in")


class DevPasswordAcquirer(DelegatedTokenAcquirer):
    """Local stack only: signs in configured test users through MSAL against the Entra emulator."""

    def __init__(self, settings: Settings) -> None:
        if settings.dev_users_file is None:
            raise SettingsError(["DEV_USERS_FILE is missing: CREDENTIAL_MODE=dev_password reads test users"])
        self._settings = settings
        self._users = _load_users(settings.dev_users_file)
        self._app: Any = None

    def _client(self) -> Any:
        if self._app is None:
            import msal  # deferred: only the first token request pays for it

            self._app = msal.ConfidentialClientApplication(
                self._settings.client_id,
                client_credential=self._settings.client_secret,
                authority=self._settings.authority_url,
                instance_discovery=False,
                http_client=local_authority_session(self._settings),
            )
        return self._app

    def acquire(self, organizer: str, scopes: Sequence[str]) -> AccessToken:
        """Silent from MSAL's cache (refresh token) when possible, else a password sign-in."""
        user = self._users.get(organizer.strip().lower())
        if user is None:
            raise OrganizerNotConnectedError(
                f"organizer {hash_user(organizer)} has no delegated credential: add them to DEV_USERS_FILE "
                "(local stack) or connect them")
        try:
            app = self._client()
            accounts = app.get_accounts(username=user["upn"])
            result = app.acquire_token_silent(list(scopes), account=accounts[0]) if accounts else None
            if not result:
                result = app.acquire_token_by_username_password(user["upn"], user["password"], list(scopes))
        except (OSError, ValueError) as exc:
            # requests' ConnectionError is an OSError; MSAL raises ValueError for unreadable answers.
            raise TokenServiceUnavailableError(f"identity platform unreachable: {type(exc).__name__}") from exc
        return _token_from_msal(result, organizer)


def local_authority_session(settings: Settings) -> Any:
    """A requests session for MSAL against a local authority (None elsewhere: MSAL's default is right).

    Two MSAL behaviours break against an emulator on a non-443 port: user-realm discovery is built
    from the host name without its port, and REQUESTS_CA_BUNDLE silently overrides `verify=`.
    """
    if settings.tls_ca_bundle is None:
        return None
    import requests

    ca_bundle = str(settings.tls_ca_bundle)
    authority = urlsplit(settings.entra_authority)

    class _LocalAuthoritySession(requests.Session):
        def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
            parts = urlsplit(str(url))
            if parts.netloc == authority.hostname and authority.port:
                url = urlunsplit(parts._replace(netloc=authority.netloc))
            kwargs["verify"] = ca_bundle
            return super().request(method, url, *args, **kwargs)

    return _LocalAuthoritySession()


def _token_from_msal(result: dict[str, Any], organizer: str) -> AccessToken:
    if "access_token" in result:
        return AccessToken(result["access_token"], time.time() + float(result.get("expires_in", 3600)))
    error = result.get("error", "unknown_error")
    description = (str(result.get("error_description") or "").splitlines() or [""])[0][:200]
    if error in ("invalid_grant", "interaction_required", "consent_required", "login_required"):
        raise OrganizerNotConnectedError(
            f"organizer {hash_user(organizer)} must reconnect: the identity platform answered {error}: "
            f"{description}")
    if error in ("invalid_client", "unauthorized_client", "invalid_scope", "unsupported_grant_type"):
        raise PermanentError(f"the app registration was refused ({error}): {description}",
                             reason="app_misconfigured")
    raise TokenServiceUnavailableError(f"token request failed ({error}): {description}")


def _load_users(path: Path) -> dict[str, dict[str, str]]:
    doc = json.loads(path.read_text())
    users: dict[str, dict[str, str]] = {}
    for user in doc.get("users", []):
        for key in (user.get("oid"), user.get("upn")):
            if key:
                users[key.lower()] = user
    return users
