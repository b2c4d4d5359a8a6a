"""An organizer's one-time consent, as identity logic: start the sign-in, redeem its code (no HTTP here)."""

from __future__ import annotations

from typing import Any

from shared.identity.msal import ClientType, MsalClients
from shared.identity.vault import TokenVault, flow_key
from shared.identity.vault_acquirer import connect_scopes
from shared.settings import Settings


def start_connect_flow(settings: Settings, vault: TokenVault, clients: MsalClients, hint: str | None,
                       organizer: str | None) -> dict[str, Any]:
    """Begin an authorization-code + PKCE sign-in; the flow is kept one-time in the vault under its state."""
    def initiate(app: Any) -> dict[str, Any]:
        flow: dict[str, Any] = app.initiate_auth_code_flow(
            connect_scopes(settings), redirect_uri=settings.auth_redirect_uri, login_hint=hint,
            # Without a hint, make the person choose: an admin's own session must not connect by accident.
            prompt=None if hint else "select_account")
        return flow

    flow, _ = clients.run(ClientType.CONFIDENTIAL, None, initiate)
    vault.put_flow(flow_key(flow["state"]), {"flow": flow, "organizer": organizer})
    return flow


def redeem_connect_flow(clients: MsalClients, flow: dict[str, Any],
                        params: dict[str, str]) -> tuple[dict[str, Any], str | None]:
    """Redeem the callback's code for the flow; (MSAL result, the new token cache or None)."""
    def call(app: Any) -> dict[str, Any]:
        try:
            # MSAL checks state, the id token's nonce and sends the PKCE verifier.
            result: dict[str, Any] = app.acquire_token_by_auth_code_flow(flow, params)
        except ValueError as exc:
            return {"error": "invalid_request", "error_description": f"the sign-in response was refused: {exc}"}
        return result

    return clients.run(ClientType.CONFIDENTIAL, None, call)
