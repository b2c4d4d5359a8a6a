"""MSAL for the app: its two applications per worker, its HTTP session for a local authority, and the one
classification of what MSAL answers (reconnect, revoked, consent, app misconfigured, transient)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from shared.exceptions import PermanentError, TokenServiceUnavailableError
from shared.identity.app_credential import AppCredential
from shared.identity.tokens import AccessToken
from shared.settings import Settings

T = TypeVar("T")


class ClientType(StrEnum):
    """Which MSAL application holds an organizer's refresh token."""

    CONFIDENTIAL = "confidential"  # connected through the connect page (authorization code)
    PUBLIC = "public"  # connected with the device-code command: refreshed without the client secret


# Errors after which only a person signing in again helps.
RECONNECT_ERRORS = frozenset({"invalid_grant", "interaction_required", "consent_required", "login_required"})
APP_ERRORS = frozenset({"invalid_client", "unauthorized_client", "invalid_scope", "unsupported_grant_type"})
# Entra codes that mean the grant was revoked (password reset, sessions revoked, account disabled).
REVOKED_CODES = frozenset({50173, 50133, 50057, 50034, 135011})
CONSENT_CODES = frozenset({65001, 65004})


def unreachable(exc: BaseException) -> TokenServiceUnavailableError:
    """The identity platform could not be asked (requests' ConnectionError is an OSError; MSAL raises
    ValueError for answers it cannot read)."""
    return TokenServiceUnavailableError(f"identity platform unreachable: {type(exc).__name__}")


def access_token(result: dict[str, Any], scopes: Sequence[str] = ()) -> AccessToken:
    """The access token of a successful MSAL answer, for the scopes it was asked for."""
    return AccessToken(str(result["access_token"]), time.time() + float(result.get("expires_in", 3600)),
                       frozenset(scopes))


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


class MsalClients:
    """The worker's MSAL applications: confidential (connect page) and public (device code), one of each per
    authority: the sign-in authority (`organizations` in multi-tenant mode), and each organizer's own tenant,
    where every refresh goes.

    MSAL binds a token cache to an application at construction, and building one fetches OIDC
    metadata, so each application is built once and its single cache is refilled per call with the
    organizer's entry, under a lock. Token requests are rare (DelegatedCredentials caches access
    tokens in memory), so serializing them costs little.
    """

    def __init__(self, settings: Settings, credential: AppCredential | None = None) -> None:
        self._settings = settings
        self.credential = credential or AppCredential(settings)
        self._apps: dict[tuple[str, str], Any] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def _app(self, key: tuple[str, str]) -> Any:
        app = self._apps.get(key)
        if app is None:
            import msal  # deferred: only the first token request pays for it

            client_type, tenant = key
            common: dict[str, Any] = {
                "authority": self._settings.authority_for(tenant),
                "instance_discovery": False,
                "http_client": local_authority_session(self._settings),
                "token_cache": msal.SerializableTokenCache(),
            }
            if client_type == ClientType.PUBLIC:
                # Device-code refresh tokens belong to a public client: a secret would be refused (AADSTS700025).
                app = msal.PublicClientApplication(self._settings.client_id, **common)
            else:
                app = msal.ConfidentialClientApplication(self._settings.client_id,
                                                         client_credential=self.credential.for_msal(), **common)
            self._apps[key] = app
        return app

    def run(self, client_type: str, cache: str | None, call: Callable[[Any], T],
            tenant: str | None = None) -> tuple[T, str | None]:
        """Call MSAL with the given cache loaded, against `tenant`'s authority (default: where organizers sign
        in); returns the result and the new cache if it changed."""
        kind = ClientType.PUBLIC if client_type == ClientType.PUBLIC else ClientType.CONFIDENTIAL
        key = (str(kind), (tenant or self._settings.sign_in_tenant).lower())
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            try:
                app = self._app(key)
                app.token_cache.deserialize(cache or None)
                result = call(app)
                changed = app.token_cache.serialize() if app.token_cache.has_state_changed else None
            except (OSError, ValueError) as exc:
                raise unreachable(exc) from exc
            finally:
                # Never leave one organizer's tokens in a shared object between calls.
                if key in self._apps:
                    self._apps[key].token_cache.deserialize(None)
        return result, changed


@dataclass(frozen=True)
class MsalFailure:
    """An MSAL error answer, classified."""

    error: str
    codes: tuple[int, ...]
    description: str

    @classmethod
    def from_result(cls, result: dict[str, Any] | None) -> MsalFailure:
        """Classify an MSAL answer (None: the cache held no usable account or refresh token)."""
        if result is None:
            return cls("no_account", (), "the stored token cache holds no refresh token")
        description = (str(result.get("error_description") or "").splitlines() or [""])[0][:200]
        codes = tuple(int(c) for c in result.get("error_codes") or () if str(c).isdigit())
        return cls(str(result.get("error", "unknown_error")), codes, description)

    @property
    def needs_reconnect(self) -> bool:
        """Only a person signing in again helps."""
        return self.error in RECONNECT_ERRORS or self.error == "no_account"

    @property
    def is_consent(self) -> bool:
        """The scope was never consented: about the scope, not the connection."""
        return bool(CONSENT_CODES.intersection(self.codes))

    @property
    def revoked(self) -> bool:
        """Entra says the grant itself was revoked, not merely refused."""
        return bool(REVOKED_CODES.intersection(self.codes))

    def summary(self) -> str:
        """Short, loggable: error and AADSTS codes, never tokens."""
        codes = ",".join(f"AADSTS{c}" for c in self.codes)
        return f"{self.error}{f' ({codes})' if codes else ''}: {self.description}"[:300]

    @property
    def is_app_error(self) -> bool:
        """The app registration itself was refused: no organizer can fix it."""
        return self.error in APP_ERRORS

    def app_error(self) -> PermanentError:
        """The permanent error for an app registration refusal."""
        return PermanentError(f"the app registration was refused ({self.summary()})", reason="app_misconfigured")
