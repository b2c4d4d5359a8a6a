"""CREDENTIAL_MODE=vault: organizer tokens refreshed silently from the MSAL cache kept in the token vault."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from shared.common.clock import utc_now
from shared.exceptions import (
    OrganizerNotConnectedError,
    PermanentError,
    TokenServiceUnavailableError,
    VaultConflictError,
)
from shared.identity.tokens import (
    SCOPE_JOIN_URL,
    SCOPE_MEETING_LOOKUP,
    AccessToken,
    DelegatedTokenAcquirer,
    local_authority_session,
)
from shared.identity.vault import CONNECTED, NEEDS_RECONNECT, PUBLIC, REVOKED, TokenVault, VaultEntry
from shared.redaction import hash_user
from shared.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
# Errors after which only a person signing in again helps.
RECONNECT_ERRORS = frozenset({"invalid_grant", "interaction_required", "consent_required", "login_required"})
APP_ERRORS = frozenset({"invalid_client", "unauthorized_client", "invalid_scope", "unsupported_grant_type"})
# Entra codes that mean the grant was revoked (password reset, sessions revoked, account disabled).
REVOKED_CODES = frozenset({50173, 50133, 50057, 50034, 135011})
CONSENT_CODES = frozenset({65001, 65004})
_MAX_ROUNDS = 4


def connect_scopes(settings: Settings) -> list[str]:
    """What a connection asks for: the join URL scope, plus the lookup scope unless turned off."""
    return [*SCOPE_JOIN_URL, *(SCOPE_MEETING_LOOKUP if settings.auth_connect_lookup_scope else ())]


def reconnect_hint(settings: Settings, organizer: str) -> str:
    """How a person reconnects an organizer (no secrets: the function key is the admin's to add)."""
    where = settings.auth_redirect_uri.rsplit("/", 1)[0] + "/connect" if settings.auth_redirect_uri else None
    page = f"an admin opens {where}?organizer=<upn> with the function key, or " if where else "an admin "
    return f"{page}runs `python -m shared.organizers connect-device {organizer_label(organizer)}`"


def organizer_label(organizer: str) -> str:
    """A UPN is shown only as its hash in errors that reach logs and webhooks."""
    return "<organizer>" if "@" in organizer else organizer


class MsalClients:
    """The worker's MSAL applications: one confidential (connect page) and one public (device code).

    MSAL binds a token cache to an application at construction, and building one fetches OIDC
    metadata, so each application is built once and its single cache is refilled per call with the
    organizer's entry, under a lock. Token requests are rare (DelegatedCredentials caches access
    tokens in memory), so serializing them costs little.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._apps: dict[str, Any] = {}
        self._locks = {"confidential": threading.Lock(), "public": threading.Lock()}

    def _app(self, client_type: str) -> Any:
        app = self._apps.get(client_type)
        if app is None:
            import msal  # deferred: only the first token request pays for it

            common: dict[str, Any] = {
                "authority": self._settings.authority_url,
                "instance_discovery": False,
                "http_client": local_authority_session(self._settings),
                "token_cache": msal.SerializableTokenCache(),
            }
            if client_type == PUBLIC:
                # Device-code refresh tokens belong to a public client: a secret would be refused (AADSTS700025).
                app = msal.PublicClientApplication(self._settings.client_id, **common)
            else:
                app = msal.ConfidentialClientApplication(self._settings.client_id,
                                                         client_credential=self._settings.client_secret, **common)
            self._apps[client_type] = app
        return app

    def run(self, client_type: str, cache: str | None, call: Callable[[Any], T]) -> tuple[T, str | None]:
        """Call MSAL with the given cache loaded; returns the result and the new cache if it changed."""
        kind = PUBLIC if client_type == PUBLIC else "confidential"
        with self._locks[kind]:
            try:
                app = self._app(kind)
                app.token_cache.deserialize(cache or None)
                result = call(app)
                changed = app.token_cache.serialize() if app.token_cache.has_state_changed else None
            except (OSError, ValueError) as exc:
                # requests' ConnectionError is an OSError; MSAL raises ValueError for unreadable answers.
                raise TokenServiceUnavailableError(f"identity platform unreachable: {type(exc).__name__}") from exc
            finally:
                # Never leave one organizer's tokens in a shared object between calls.
                if kind in self._apps:
                    self._apps[kind].token_cache.deserialize(None)
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
    def status(self) -> str:
        """The entry status this failure leads to."""
        return REVOKED if REVOKED_CODES.intersection(self.codes) else NEEDS_RECONNECT

    def summary(self) -> str:
        """Short, loggable: error and AADSTS codes, never tokens."""
        codes = ",".join(f"AADSTS{c}" for c in self.codes)
        return f"{self.error}{f' ({codes})' if codes else ''}: {self.description}"[:300]


def silent_refresh(clients: MsalClients, entry: VaultEntry, scopes: Sequence[str],
                   *, force_refresh: bool = False) -> tuple[dict[str, Any] | None, str | None]:
    """acquire_token_silent for the entry's account; (MSAL result, new cache state or None)."""
    def call(app: Any) -> dict[str, Any] | None:
        accounts = app.get_accounts()
        account = next((a for a in accounts if str(a.get("home_account_id", "")).startswith(entry.oid.lower())),
                       accounts[0] if accounts else None)
        if account is None:
            return None
        result: dict[str, Any] | None = app.acquire_token_silent_with_error(
            list(scopes), account=account, force_refresh=force_refresh)
        return result

    return clients.run(entry.client_type, entry.cache, call)


def record_success(entry: VaultEntry, cache: str) -> VaultEntry:
    """The entry after a refresh that rotated its tokens."""
    now = utc_now()
    return replace(entry, cache=cache, status=CONNECTED, last_refreshed_at=now, last_success_at=now,
                   consecutive_failures=0, last_error=None)


def record_failure(entry: VaultEntry, failure_text: str, status: str | None = None) -> VaultEntry:
    """The entry after a failed refresh (status unchanged for a transient failure)."""
    return replace(entry, status=status or entry.status, consecutive_failures=entry.consecutive_failures + 1,
                   last_error=f"{utc_now()} {failure_text}"[:400])


class VaultTokenAcquirer(DelegatedTokenAcquirer):
    """Delegated tokens from the organizer's vault entry; rotated refresh tokens are written back with ETags."""

    def __init__(self, settings: Settings, vault: TokenVault, clients: MsalClients | None = None,
                 *, rotation_grace_seconds: float = 3.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self._settings = settings
        self._vault = vault
        self._clients = clients or MsalClients(settings)
        self._grace = rotation_grace_seconds
        self._sleep = sleep
        # The last access token handed out per organizer and scopes (as a hash): asked again before it
        # is due for renewal means Graph refused it (DelegatedCredentials.invalidate), so refresh it.
        self._handed_out: dict[tuple[str, tuple[str, ...]], str] = {}

    def acquire(self, organizer: str, scopes: Sequence[str]) -> AccessToken:
        """Silent token from the vault's cache; raise OrganizerNotConnectedError when a person must act."""
        return self._acquire(organizer, scopes, force_refresh=False)

    def refresh(self, organizer: str) -> AccessToken:
        """Redeem the refresh token now (keep-alive), storing the rotated one."""
        return self._acquire(organizer, SCOPE_JOIN_URL, force_refresh=True)

    def _acquire(self, organizer: str, scopes: Sequence[str], *, force_refresh: bool) -> AccessToken:
        tag = hash_user(organizer)
        key = (organizer.strip().lower(), tuple(sorted(scopes)))
        for _ in range(_MAX_ROUNDS):
            entry = self._vault.get(organizer)
            if entry is None:
                raise self._not_connected(organizer, "has never connected (or was removed from the token vault)")
            if entry.status != CONNECTED:
                # Do not hammer Entra with a refresh token it already refused; reconnecting resets the status.
                raise self._not_connected(organizer, f"is {entry.status}: {entry.last_error or 'no detail'}")
            result, new_cache = silent_refresh(self._clients, entry, scopes, force_refresh=force_refresh)
            if result is not None and "access_token" in result and new_cache is None and not force_refresh:
                if self._handed_out.get(key) == _fingerprint(result):
                    force_refresh = True
                    continue
                self._handed_out[key] = _fingerprint(result)
                return _token(result)  # served from the stored cache: nothing rotated, nothing to write
            if result is not None and "access_token" in result:
                self._handed_out[key] = _fingerprint(result)
                if new_cache is None:
                    return _token(result)
                try:
                    self._vault.save(record_success(entry, new_cache))
                except VaultConflictError:
                    self._store_after_conflict(organizer, new_cache)
                    return _token(result)
                log.info("organizer token refreshed", extra={"organizer_hash": tag, "outcome": "refreshed"})
                return _token(result)
            failure = MsalFailure.from_result(result)
            if failure.error in APP_ERRORS:
                raise PermanentError(f"the app registration was refused ({failure.summary()})",
                                     reason="app_misconfigured")
            if failure.is_consent and list(scopes) != list(SCOPE_JOIN_URL):
                # The connection is fine for join URLs; this optional scope was never granted.
                raise OrganizerNotConnectedError(
                    f"organizer {tag} has not consented to {' '.join(scopes)} ({failure.summary()}); grant admin "
                    f"consent for it, or reconnect with AUTH_CONNECT_LOOKUP_SCOPE=true: "
                    f"{reconnect_hint(self._settings, organizer)}")
            if not failure.needs_reconnect:
                raise TokenServiceUnavailableError(f"token refresh failed ({failure.summary()})")
            # A refresh token another worker is rotating right now is refused too (strict rotation): give
            # that worker time to store its new one, and decide only on the latest entry.
            if self._newer_entry(organizer, entry) is not None:
                force_refresh = False  # the other worker has just refreshed it
                continue
            try:
                self._vault.save(record_failure(entry, failure.summary(), failure.status))
            except VaultConflictError:
                continue
            log.warning("organizer must reconnect: %s", failure.error,
                        extra={"organizer_hash": tag, "status": failure.status, "outcome": "needs_reconnect"})
            raise self._not_connected(organizer, f"was refused by the identity platform: {failure.summary()}")
        raise TokenServiceUnavailableError("the organizer's vault entry kept changing during the token refresh")

    def _newer_entry(self, organizer: str, entry: VaultEntry) -> VaultEntry | None:
        """The entry once another worker has rewritten it, waiting up to the grace period; else None."""
        deadline = time.monotonic() + self._grace
        while True:
            latest = self._vault.get(organizer)
            if latest is None or latest.etag != entry.etag:
                return latest or entry
            if time.monotonic() >= deadline:
                return None
            self._sleep(min(0.25, self._grace))

    def _store_after_conflict(self, organizer: str, new_cache: str) -> None:
        """Our refresh succeeded but the entry changed meanwhile: keep the newer connected one, else ours."""
        for _ in range(_MAX_ROUNDS):
            latest = self._vault.get(organizer)
            if latest is None or latest.status == REVOKED:
                raise self._not_connected(organizer, "was removed from the token vault during the refresh")
            if latest.status == CONNECTED:
                # Another worker stored a refresh token at least as new as ours: dropping ours loses nothing.
                return
            try:
                # Marked for reconnect by a worker whose refresh raced ours: our rotated token still works.
                self._vault.save(record_success(latest, new_cache))
                return
            except VaultConflictError:
                continue

    def _not_connected(self, organizer: str, why: str) -> OrganizerNotConnectedError:
        return OrganizerNotConnectedError(
            f"organizer {hash_user(organizer)} {why}. To reconnect, {reconnect_hint(self._settings, organizer)}")


def _fingerprint(result: dict[str, Any]) -> str:
    return hashlib.sha256(str(result["access_token"]).encode()).hexdigest()


def _token(result: dict[str, Any]) -> AccessToken:
    return AccessToken(str(result["access_token"]), time.time() + float(result.get("expires_in", 3600)))
