"""Local stack only: delegated tokens by signing in configured test users (CREDENTIAL_MODE=dev_password)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.exceptions import (
    MissingScopeError,
    OrganizerNotConnectedError,
    SettingsError,
    TokenServiceUnavailableError,
)
from shared.identity.msal import MsalFailure, access_token, local_authority_session, unreachable
from shared.identity.tokens import AccessToken, DelegatedTokenAcquirer
from shared.redaction import hash_user
from shared.settings import Settings


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
            raise unreachable(exc) from exc
        return token_from_result(result, organizer, scopes)


def token_from_result(result: dict[str, Any], organizer: str, scopes: Sequence[str] = ()) -> AccessToken:
    """The token of an MSAL answer, or the app's error for its failure."""
    if "access_token" in result:
        return access_token(result)
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


def _load_users(path: Path) -> dict[str, dict[str, str]]:
    doc = json.loads(path.read_text())
    users: dict[str, dict[str, str]] = {}
    for user in doc.get("users", []):
        for key in (user.get("oid"), user.get("upn")):
            if key:
                users[key.lower()] = user
    return users
