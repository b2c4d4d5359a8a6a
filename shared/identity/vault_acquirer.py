"""CREDENTIAL_MODE=vault: organizer tokens refreshed silently from the MSAL cache kept in the token vault."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from shared.common.clock import utc_now
from shared.exceptions import (
    MissingScopeError,
    OrganizerNotConnectedError,
    TokenServiceUnavailableError,
    VaultConflictError,
)
from shared.identity.msal import MsalClients, MsalFailure, access_token
from shared.identity.tokens import (
    SCOPE_JOIN_URL,
    SCOPE_MEETING_LOOKUP,
    SCOPE_MEETING_WRITE,
    SCOPE_SMS,
    AccessToken,
    DelegatedTokenAcquirer,
)
from shared.identity.vault import ConnectionStatus, TokenVault, VaultEntry
from shared.redaction import hash_user
from shared.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
_MAX_ROUNDS = 4


def connect_scopes(settings: Settings) -> list[str]:
    """What a connection asks for: the join URL scope, plus each scope a setting turns on."""
    return [*SCOPE_JOIN_URL, *(SCOPE_MEETING_LOOKUP if settings.auth_connect_lookup_scope else ()),
            *(SCOPE_MEETING_WRITE if settings.meeting_management else ()), *(SCOPE_SMS if settings.client_sms else ())]


def missing_scope(settings: Settings, organizer: str, scopes: Sequence[str], summary: str) -> MissingScopeError:
    """The error for a connected organizer who never consented to `scopes`, saying how to grant them."""
    names = " ".join(scope.rsplit("/", 1)[-1] for scope in scopes)
    return MissingScopeError(
        f"organizer {hash_user(organizer)} is connected but has not consented to {names} ({summary}). Grant it: "
        f"an admin grants tenant-wide consent for {names} on the app registration, or the organizer reconnects "
        f"now that the setting needing it is on ({reconnect_hint(settings, organizer)})")


def reconnect_hint(settings: Settings, organizer: str) -> str:
    """How a person reconnects an organizer (no secrets: the function key is the admin's to add)."""
    where = settings.auth_redirect_uri.rsplit("/", 1)[0] + "/connect" if settings.auth_redirect_uri else None
    page = f"an admin opens {where}?organizer=<upn> with the function key, or " if where else "an admin "
    return f"{page}runs `python -m shared.organizers connect-device {organizer_label(organizer)}`"


def organizer_label(organizer: str) -> str:
    """A UPN is shown only as its hash in errors that reach logs and webhooks."""
    return "<organizer>" if "@" in organizer else organizer


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
    return replace(entry, cache=cache, status=ConnectionStatus.CONNECTED, last_refreshed_at=now, last_success_at=now,
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
            if entry.status != ConnectionStatus.CONNECTED:
                # Do not hammer Entra with a refresh token it already refused; reconnecting resets the status.
                raise self._not_connected(organizer, f"is {entry.status}: {entry.last_error or 'no detail'}")
            result, new_cache = silent_refresh(self._clients, entry, scopes, force_refresh=force_refresh)
            if result is not None and "access_token" in result and new_cache is None and not force_refresh:
                if self._handed_out.get(key) == _fingerprint(result):
                    force_refresh = True
                    continue
                self._handed_out[key] = _fingerprint(result)
                return access_token(result)  # served from the stored cache: nothing rotated, nothing to write
            if result is not None and "access_token" in result:
                self._handed_out[key] = _fingerprint(result)
                if new_cache is None:
                    return access_token(result)
                try:
                    self._vault.save(record_success(entry, new_cache))
                except VaultConflictError:
                    self._store_after_conflict(organizer, new_cache)
                    return access_token(result)
                log.info("organizer token refreshed", extra={"organizer_hash": tag, "outcome": "refreshed"})
                return access_token(result)
            failure = MsalFailure.from_result(result)
            if failure.is_app_error:
                raise failure.app_error()
            if failure.is_consent and list(scopes) != list(SCOPE_JOIN_URL):
                # The connection is fine for join URLs; this optional scope was never granted. Retrying or
                # reconnecting with the same scopes cannot help: the event needs consent first.
                raise missing_scope(self._settings, organizer, scopes, failure.summary())
            if not failure.needs_reconnect:
                raise TokenServiceUnavailableError(f"token refresh failed ({failure.summary()})")
            # A refresh token another worker is rotating right now is refused too (strict rotation): give
            # that worker time to store its new one, and decide only on the latest entry.
            if self._newer_entry(organizer, entry) is not None:
                force_refresh = False  # the other worker has just refreshed it
                continue
            status = ConnectionStatus.REVOKED if failure.revoked else ConnectionStatus.NEEDS_RECONNECT
            try:
                self._vault.save(record_failure(entry, failure.summary(), status))
            except VaultConflictError:
                continue
            log.warning("organizer must reconnect: %s", failure.error,
                        extra={"organizer_hash": tag, "status": status, "outcome": "needs_reconnect"})
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
            if latest is None or latest.status == ConnectionStatus.REVOKED:
                raise self._not_connected(organizer, "was removed from the token vault during the refresh")
            if latest.status == ConnectionStatus.CONNECTED:
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

