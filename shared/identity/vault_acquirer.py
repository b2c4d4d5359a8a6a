"""CREDENTIAL_MODE=vault: organizer tokens refreshed silently from the MSAL cache kept in the token vault."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from shared.common.clock import utc_now
from shared.common.vocabulary import MeetingKind
from shared.exceptions import (
    MissingScopeError,
    OrganizerNotConnectedError,
    TokenServiceUnavailableError,
    VaultConflictError,
    VaultUnavailableError,
)
from shared.identity.msal import MsalClients, MsalFailure, access_token
from shared.identity.tokens import (
    SCOPE_ATTENDANCE,
    SCOPE_CALENDAR,
    SCOPE_JOIN_URL,
    SCOPE_MEETING_LOOKUP,
    SCOPE_MEETING_WRITE,
    SCOPE_SMS,
    AccessToken,
    DelegatedTokenAcquirer,
    OrganizerIdentity,
)
from shared.identity.vault import ConnectionStatus, TokenVault, VaultEntry
from shared.redaction import hash_tenant, hash_user
from shared.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
_MAX_ROUNDS = 4
# How long a rotated refresh token's store is retried (well inside the refresh lease) before it is kept in memory.
SAVE_RETRY_SECONDS = 10.0


def connect_scopes(settings: Settings) -> list[str]:
    """What a connection asks for: the join URL scope, plus each scope a setting turns on."""
    calendar = settings.meeting_management and settings.meeting_kind == MeetingKind.CALENDAR
    lookup = settings.auth_connect_lookup_scope or calendar
    return [*SCOPE_JOIN_URL, *(SCOPE_MEETING_LOOKUP if lookup else ()),
            *(SCOPE_CALENDAR if calendar else SCOPE_MEETING_WRITE if settings.meeting_management else ()),
            *(SCOPE_SMS if settings.client_sms else ()), *(SCOPE_ATTENDANCE if settings.attendance_reports else ())]


def missing_scope(settings: Settings, organizer: str, scopes: Sequence[str], summary: str,
                  tenant: str | None = None) -> MissingScopeError:
    """The error for a connected organizer who never consented to `scopes`, saying how to grant them."""
    names = " ".join(scope.rsplit("/", 1)[-1] for scope in scopes)
    return MissingScopeError(
        f"organizer {hash_user(organizer)} is connected but has not consented to {names} ({summary}). Grant it: "
        f"an admin grants consent for {names} in the organizer's tenant (the app's admin-consent link), or the "
        f"organizer reconnects now that the setting needing it is on ({reconnect_hint(settings, organizer, tenant)})")


def reconnect_hint(settings: Settings, organizer: str, tenant: str | None = None) -> str:
    """How a person reconnects an organizer (no secrets: the function key is the admin's to add)."""
    where = settings.auth_redirect_uri.rsplit("/", 1)[0] + "/connect" if settings.auth_redirect_uri else None
    page = f"an admin opens {where}?organizer=<upn> with the function key, or " if where else "an admin "
    # The tenant id itself stays out: this text reaches logs, where tenants appear only hashed.
    in_tenant = " --tenant <tenant id>" if tenant and settings.is_multi_tenant else ""
    return f"{page}runs `python -m shared.organizers connect-device {organizer_label(organizer)}{in_tenant}`"


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

    # Every refresh goes to the organizer's own tenant, never to `organizations`.
    return clients.run(entry.client_type, entry.cache, call, tenant=entry.tenant_id)


def record_success(entry: VaultEntry, cache: str) -> VaultEntry:
    """The entry after a refresh that rotated its tokens."""
    now = utc_now()
    return replace(entry, cache=cache, status=ConnectionStatus.CONNECTED, last_refreshed_at=now, last_success_at=now,
                   consecutive_failures=0, last_error=None)


def record_failure(entry: VaultEntry, failure_text: str, status: str | None = None) -> VaultEntry:
    """The entry after a failed refresh (status unchanged for a transient failure)."""
    return replace(entry, status=status or entry.status, consecutive_failures=entry.consecutive_failures + 1,
                   last_error=f"{utc_now()} {failure_text}"[:400])


class _ConsentMissing(Exception):
    """The identity platform says a scope was never consented (the connection itself is fine)."""

    def __init__(self, failure: MsalFailure) -> None:
        super().__init__(failure.summary())
        self.failure = failure


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
        self._handed_out: dict[tuple[OrganizerIdentity, tuple[str, ...]], str] = {}
        # Rotated refresh tokens the vault could not store yet: (the ETag they were redeemed from, MSAL cache).
        self._unsaved: dict[OrganizerIdentity, tuple[str | None, str]] = {}

    def identify(self, organizer: str, tenant: str | None) -> OrganizerIdentity:
        """The organizer's tenant and object id from the vault; refused when `tenant` is not theirs or not allowed."""
        if tenant is not None and not self._settings.tenant_allowed(tenant):
            raise OrganizerNotConnectedError(
                "the event's tenantId is not on ENTRA_ALLOWED_TENANTS: that tenant's organizers cannot connect, "
                "and no token of another tenant is ever used for its events")
        entry = self._vault.get(organizer, tenant)
        if entry is None:
            elsewhere = self._vault.tenants_of(organizer) if tenant is not None else []
            if elsewhere:
                raise self._not_connected(organizer, "does not belong to the event's tenantId (the organizer is "
                                                     "connected in another tenant)", tenant)
            raise self._not_connected(organizer, "has never connected (or was removed from the token vault)", tenant)
        return entry.identity

    def acquire(self, identity: OrganizerIdentity, scopes: Sequence[str]) -> AccessToken:
        """One token for everything the app asks the organizer for (their connect scopes); if one of those was
        never consented, a token for the scopes asked for now. OrganizerNotConnectedError when a person must act."""
        wanted = list(dict.fromkeys([*connect_scopes(self._settings), *scopes]))
        try:
            return self._acquire(identity, wanted, force_refresh=False)
        except _ConsentMissing as first:
            if set(wanted) == set(scopes):
                raise self._consent_missing(identity, scopes, first.failure) from None
        try:
            return self._acquire(identity, scopes, force_refresh=False)
        except _ConsentMissing as missing:
            raise self._consent_missing(identity, scopes, missing.failure) from None

    def refresh(self, identity: OrganizerIdentity) -> AccessToken:
        """Redeem the refresh token now (keep-alive), storing the rotated one."""
        try:
            return self._acquire(identity, SCOPE_JOIN_URL, force_refresh=True)
        except _ConsentMissing as missing:
            raise self._consent_missing(identity, SCOPE_JOIN_URL, missing.failure) from None

    def _acquire(self, identity: OrganizerIdentity, scopes: Sequence[str], *, force_refresh: bool) -> AccessToken:
        # One refresh per organizer at a time across every instance: a second one waits, then finds the
        # token the first stored instead of redeeming the refresh token again.
        with self._vault.refresh_lock(identity, sleep=self._sleep):
            self._store_unsaved(identity)
            return self._acquire_locked(identity, scopes, force_refresh=force_refresh)

    def _acquire_locked(self, identity: OrganizerIdentity, scopes: Sequence[str], *,
                        force_refresh: bool) -> AccessToken:
        tags = {"organizer_hash": hash_user(identity.oid), "tenant_hash": hash_tenant(identity.tenant_id)}
        key = (identity, tuple(sorted(scopes)))
        for _ in range(_MAX_ROUNDS):
            entry = self._vault.get_identity(identity)
            if entry is None:
                raise self._not_connected(identity.oid, "has never connected (or was removed from the token vault)",
                                          identity.tenant_id)
            if entry.status != ConnectionStatus.CONNECTED:
                # Do not hammer Entra with a refresh token it already refused; reconnecting resets the status.
                raise self._not_connected(identity.oid, f"is {entry.status}: {entry.last_error or 'no detail'}",
                                          identity.tenant_id)
            result, new_cache = silent_refresh(self._clients, entry, scopes, force_refresh=force_refresh)
            if result is not None and "access_token" in result and new_cache is None and not force_refresh:
                if self._handed_out.get(key) == _fingerprint(result):
                    force_refresh = True
                    continue
                self._handed_out[key] = _fingerprint(result)
                return access_token(result, scopes)  # served from the stored cache: nothing rotated, nothing to write
            if result is not None and "access_token" in result:
                self._handed_out[key] = _fingerprint(result)
                if new_cache is None:
                    return access_token(result, scopes)
                try:
                    self._save_refreshed(entry, new_cache)
                except VaultConflictError:
                    self._store_after_conflict(identity, new_cache)
                    return access_token(result, scopes)
                except VaultUnavailableError as exc:
                    # The redeem worked; the store did not. Keep the new refresh token and store it before the
                    # next refresh (see _store_unsaved): losing it would cost the organizer their connection
                    # on a platform whose refresh tokens are single-use.
                    self._unsaved[identity] = (entry.etag, new_cache)
                    log.warning("organizer token refreshed but not stored (%s); kept to store later", exc.reason,
                                extra={**tags, "outcome": "refreshed_unsaved"})
                    return access_token(result, scopes)
                log.info("organizer token refreshed", extra={**tags, "outcome": "refreshed"})
                return access_token(result, scopes)
            failure = MsalFailure.from_result(result)
            if failure.is_app_error:
                raise failure.app_error()
            if failure.is_consent and set(scopes) != set(SCOPE_JOIN_URL):
                # The connection is fine for join URLs; an optional scope was never granted.
                raise _ConsentMissing(failure)
            if not failure.needs_reconnect:
                raise TokenServiceUnavailableError(f"token refresh failed ({failure.summary()})")
            # A refresh token another worker is rotating right now may be refused too (on a platform with
            # single-use refresh tokens): give that worker time to store its new one, and decide only on the
            # latest entry.
            if self._newer_entry(identity, entry) is not None:
                force_refresh = False  # the other worker has just refreshed it
                continue
            status = ConnectionStatus.REVOKED if failure.revoked else ConnectionStatus.NEEDS_RECONNECT
            try:
                self._vault.save(record_failure(entry, failure.summary(), status))
            except VaultConflictError:
                continue
            log.warning("organizer must reconnect: %s", failure.error,
                        extra={**tags, "status": status, "outcome": "needs_reconnect"})
            raise self._not_connected(identity.oid, f"was refused by the identity platform: {failure.summary()}",
                                      identity.tenant_id)
        raise TokenServiceUnavailableError("the organizer's vault entry kept changing during the token refresh")

    def _save_refreshed(self, entry: VaultEntry, new_cache: str) -> None:
        """Store a rotated refresh token, riding out a short storage pause (the refresh lease is held meanwhile)."""
        deadline = time.monotonic() + SAVE_RETRY_SECONDS
        pause = 0.25
        while True:
            try:
                self._vault.save(record_success(entry, new_cache))
                return
            except VaultUnavailableError:
                if time.monotonic() + pause > deadline:
                    raise
                self._sleep(pause)
                pause = min(pause * 2, 2.0)

    def _store_unsaved(self, identity: OrganizerIdentity) -> None:
        """Store a refresh token whose save failed earlier, unless the entry has been written since."""
        kept = self._unsaved.get(identity)
        if kept is None:
            return
        base_etag, cache = kept
        try:
            latest = self._vault.get_identity(identity)
            if latest is not None and latest.etag == base_etag:
                self._vault.save(record_success(latest, cache))
        except VaultConflictError:
            pass  # written meanwhile: that entry is at least as new as ours
        except VaultUnavailableError:
            return  # still down: keep it for the next try
        del self._unsaved[identity]

    def _newer_entry(self, identity: OrganizerIdentity, entry: VaultEntry) -> VaultEntry | None:
        """The entry once another worker has rewritten it, waiting up to the grace period; else None."""
        deadline = time.monotonic() + self._grace
        while True:
            latest = self._vault.get_identity(identity)
            if latest is None or latest.etag != entry.etag:
                return latest or entry
            if time.monotonic() >= deadline:
                return None
            self._sleep(min(0.25, self._grace))

    def _store_after_conflict(self, identity: OrganizerIdentity, new_cache: str) -> None:
        """Our refresh succeeded but the entry changed meanwhile: keep the newer connected one, else ours."""
        for _ in range(_MAX_ROUNDS):
            latest = self._vault.get_identity(identity)
            if latest is None or latest.status == ConnectionStatus.REVOKED:
                raise self._not_connected(identity.oid, "was removed from the token vault during the refresh",
                                          identity.tenant_id)
            if latest.status == ConnectionStatus.CONNECTED:
                # Another worker stored a refresh token at least as new as ours: dropping ours loses nothing.
                return
            try:
                # Marked for reconnect by a worker whose refresh raced ours: our rotated token still works.
                self._vault.save(record_success(latest, new_cache))
                return
            except VaultConflictError:
                continue

    def _consent_missing(self, identity: OrganizerIdentity, scopes: Sequence[str],
                         failure: MsalFailure | None = None) -> MissingScopeError:
        return missing_scope(self._settings, identity.oid, scopes, failure.summary() if failure else "consent_required",
                             identity.tenant_id)

    def _not_connected(self, organizer: str, why: str, tenant: str | None = None) -> OrganizerNotConnectedError:
        return OrganizerNotConnectedError(
            f"organizer {hash_user(organizer)} {why}. To reconnect, "
            f"{reconnect_hint(self._settings, organizer, tenant)}")


def _fingerprint(result: dict[str, Any]) -> str:
    return hashlib.sha256(str(result["access_token"]).encode()).hexdigest()

