"""On-Behalf-Of: Graph tokens for the HTTP twin's bearer caller, exchanged from the caller's own token."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from shared.exceptions import ForbiddenError, TokenServiceUnavailableError
from shared.identity.bearer import Caller
from shared.identity.tokens import SCOPE_JOIN_URL, ensure_delegated
from shared.settings import Settings


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
