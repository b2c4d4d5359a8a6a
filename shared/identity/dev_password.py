"""Local stack only: delegated tokens by signing in configured test users (CREDENTIAL_MODE=dev_password)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.exceptions import (
    MissingScopeError,
    OrganizerNotConnectedError,
    SettingsError,
    TokenServiceUnavailableError,
)
from shared.identity.app_credential import AppCredential
from shared.identity.msal import MsalFailure, access_token, local_authority_session, unreachable
from shared.identity.tokens import AccessToken, DelegatedTokenAcquirer, OrganizerIdentity
from shared.redaction import hash_user
from shared.settings import Settings


class DevPasswordAcquirer(DelegatedTokenAcquirer):
    """Local stack only: signs in configured test users through MSAL against the Entra emulator."""

    def __init__(self, settings: Settings, credential: AppCredential | None = None) -> None:
        if settings.dev_users_file is None:
            raise SettingsError(["DEV_USERS_FILE is missing: CREDENTIAL_MODE=dev_password reads test users"])
        self._settings = settings
        self._credential = credential or AppCredential(settings)
        self._users = _load_users(settings.dev_users_file, settings.tenant_id)
        # One MSAL application per tenant: each user signs in (and refreshes) at their own tenant.
        self._apps: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _client(self, tenant: str) -> Any:
        with self._lock:
            if tenant not in self._apps:
                import msal  # deferred: only the first token request pays for it

                self._apps[tenant] = msal.ConfidentialClientApplication(
                    self._settings.client_id,
                    client_credential=self._credential.for_msal(),
                    authority=self._settings.authority_for(tenant),
                    instance_discovery=False,
                    http_client=local_authority_session(self._settings),
                )
            return self._apps[tenant]

    def identify(self, organizer: str, tenant: str | None) -> OrganizerIdentity:
        """The test user's tenant and object id."""
        user = self._users.get(organizer.strip().lower())
        if user is None:
            raise OrganizerNotConnectedError(
                f"organizer {hash_user(organizer)} has no delegated credential: add them to DEV_USERS_FILE "
                "(local stack) or connect them")
        if tenant is not None and (tenant.lower() != user["tenant_id"] or not self._settings.tenant_allowed(tenant)):
            raise OrganizerNotConnectedError(f"organizer {hash_user(organizer)} does not belong to the event's "
                                             "tenantId, or that tenant is not allowed")
        return OrganizerIdentity(user["tenant_id"], user["oid"].lower())

    def acquire(self, identity: OrganizerIdentity, scopes: Sequence[str]) -> AccessToken:
        """Silent from MSAL's cache (refresh token) when possible, else a password sign-in."""
        user = self._users[identity.oid]
        try:
            app = self._client(identity.tenant_id)
            accounts = app.get_accounts(username=user["upn"])
            result = app.acquire_token_silent(list(scopes), account=accounts[0]) if accounts else None
            if not result:
                result = app.acquire_token_by_username_password(user["upn"], user["password"], list(scopes))
        except (OSError, ValueError) as exc:
            raise unreachable(exc) from exc
        return token_from_result(result, identity.oid, scopes)


def token_from_result(result: dict[str, Any], organizer: str, scopes: Sequence[str] = ()) -> AccessToken:
    """The token of an MSAL answer, or the app's error for its failure."""
    if "access_token" in result:
        return access_token(result, scopes)
    failure = MsalFailure.from_result(result)
    if failure.is_consent:
        names = " ".join(scope.rsplit("/", 1)[-1] for scope in scopes) or "a scope this event needs"
        raise MissingScopeError(f"organizer {hash_user(organizer)} has not consented to {names} "
                                f"({failure.summary()}); grant consent for it on the app registration")
    if failure.needs_reconnect:
        raise OrganizerNotConnectedError(
            f"organizer {hash_user(organizer)} must reconnect: the identity platform answered {failure.summary()}")
    if failure.is_app_error:
        raise failure.app_error()
    raise TokenServiceUnavailableError(f"token request failed ({failure.summary()})")


def _load_users(path: Path, home_tenant: str) -> dict[str, dict[str, str]]:
    """Users by lower-cased oid and UPN, each with its tenant: the home tenant's at the top of the file,
    others' under `customer_tenants` (devstack/seed/directory.json's layout)."""
    doc = json.loads(path.read_text())
    users: dict[str, dict[str, str]] = {}
    for tenant in (doc, *doc.get("customer_tenants", [])):
        tenant_id = str(tenant.get("tenant_id") or home_tenant).lower()
        for user in tenant.get("users", []):
            record = {**user, "tenant_id": tenant_id}
            for key in (user.get("oid"), user.get("upn")):
                if key:
                    users[key.lower()] = record
    return users
