"""On-Behalf-Of: Graph tokens for the HTTP twin's bearer caller, exchanged from the caller's own token."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from shared.exceptions import ForbiddenError, TokenServiceUnavailableError
from shared.identity.app_credential import AppCredential
from shared.identity.bearer import Caller
from shared.identity.tokens import SCOPE_JOIN_URL, OrganizerIdentity, ensure_delegated
from shared.settings import Settings


def obo_credential(settings: Settings, assertion: str, tenant: str, credential: AppCredential) -> Any:
    """azure-identity's OnBehalfOfCredential for one caller's token, at the caller's own tenant (sync: it runs on
    a worker thread)."""
    from azure.identity import OnBehalfOfCredential

    return OnBehalfOfCredential(
        tenant, settings.client_id, user_assertion=assertion, **credential.for_azure_identity(),
        authority=settings.entra_authority, disable_instance_discovery=True,
        connection_verify=str(settings.tls_ca_bundle) if settings.tls_ca_bundle else True)


class OboTokenSource:
    """A TokenSource acting as the bearer caller: Graph tokens by On-Behalf-Of, cached for this request only."""

    def __init__(self, settings: Settings, assertion: str, caller: Caller,
                 credential_factory: Callable[[Settings, str], Any] | None = None,
                 app_credential: AppCredential | None = None) -> None:
        self._settings = settings
        self._assertion = assertion
        self._caller = caller
        tenant = caller.tenant_id or settings.tenant_id
        self._factory = credential_factory or (
            lambda s, a: obo_credential(s, a, tenant, app_credential or AppCredential(s)))
        self._credential: Any = None
        self._tokens: dict[tuple[str, ...], str] = {}
        self.requests = 0

    def _check(self, organizer: str, tenant: str | None) -> None:
        if not self._caller.is_(organizer):
            raise ForbiddenError("a bearer caller can act only as themselves: organizer must be the signed-in user",
                                 reason="organizer_mismatch")
        if tenant is not None and tenant.lower() != self._caller.tenant_id.lower():
            raise ForbiddenError("a bearer caller can act only in their own tenant: tenantId must be the token's",
                                 reason="organizer_mismatch")

    async def identify(self, organizer: str, tenant: str | None = None) -> OrganizerIdentity:
        """The caller, who must be the organizer."""
        self._check(organizer, tenant)
        return OrganizerIdentity(self._caller.tenant_id, self._caller.oid.lower())

    async def token_for(self, organizer: str, scopes: Sequence[str] = SCOPE_JOIN_URL,
                        tenant: str | None = None) -> str:
        """A Graph token for the caller, who must be the organizer."""
        self._check(organizer, tenant)
        key = tuple(sorted(scopes))
        token = self._tokens.get(key)
        if token is None:
            self.requests += 1
            token = await asyncio.to_thread(self._exchange, list(scopes))
            ensure_delegated(token)
            self._tokens[key] = token
        return token

    def invalidate(self, organizer: str, tenant: str | None = None) -> None:
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
