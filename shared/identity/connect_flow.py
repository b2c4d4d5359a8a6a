"""An organizer's one-time consent, and a tenant administrator's consent for everyone in their tenant, as
identity logic: start the sign-in, redeem its code, check the tenant (no HTTP here)."""

from __future__ import annotations

import secrets
import warnings
from typing import Any
from urllib.parse import urlencode

from shared.identity.msal import ClientType, MsalClients
from shared.identity.vault import TokenVault, flow_key
from shared.identity.vault_acquirer import connect_scopes
from shared.settings import Settings

CONNECT = "connect"
ADMIN_CONSENT = "admin_consent"
# What an administrator grants for the organization: the Graph scopes a connection asks for, and refresh tokens.
_CONSENT_EXTRA_SCOPES = ("offline_access", "openid", "profile")


def start_connect_flow(settings: Settings, vault: TokenVault, clients: MsalClients, hint: str | None,
                       organizer: str | None, tenant: str | None = None) -> dict[str, Any]:
    """Begin an authorization-code + PKCE sign-in (at `tenant`, else where organizers sign in: `organizations` in
    multi-tenant mode); the flow is kept one-time in the vault under its state."""
    def initiate(app: Any) -> dict[str, Any]:
        with warnings.catch_warnings():
            # MSAL recommends response_mode=form_post; the query mode is deliberate here: the SameSite=Lax cookie
            # that binds the flow to the browser is not sent with Entra's cross-site form POST.
            warnings.filterwarnings("ignore", message="response_mode='form_post' is recommended")
            flow: dict[str, Any] = app.initiate_auth_code_flow(
                connect_scopes(settings), redirect_uri=settings.auth_redirect_uri, login_hint=hint,
                # Without a hint, make the person choose: an admin's own session must not connect by accident.
                prompt=None if hint else "select_account")
        return flow

    flow, _ = clients.run(ClientType.CONFIDENTIAL, None, initiate, tenant=tenant)
    vault.put_flow(flow_key(flow["state"]), {"kind": CONNECT, "flow": flow, "organizer": organizer, "tenant": tenant})
    return flow


def redeem_connect_flow(clients: MsalClients, flow: dict[str, Any], params: dict[str, str],
                        tenant: str | None = None) -> tuple[dict[str, Any], str | None]:
    """Redeem the callback's code for the flow, at the authority that started it; (MSAL result, new cache)."""
    def call(app: Any) -> dict[str, Any]:
        try:
            # MSAL checks state, the id token's nonce and sends the PKCE verifier.
            result: dict[str, Any] = app.acquire_token_by_auth_code_flow(flow, params)
        except ValueError as exc:
            return {"error": "invalid_request", "error_description": f"the sign-in response was refused: {exc}"}
        return result

    return clients.run(ClientType.CONFIDENTIAL, None, call, tenant=tenant)


def start_admin_consent(settings: Settings, vault: TokenVault, tenant: str) -> tuple[str, str]:
    """The admin-consent URL for one tenant (v2.0 `/adminconsent`), its state kept one-time in the vault like a
    sign-in; (URL, state). Entra sends the administrator back to the connect page's redirect URI."""
    state = secrets.token_urlsafe(32)
    query = urlencode({"client_id": settings.client_id, "redirect_uri": settings.auth_redirect_uri or "",
                       "scope": " ".join([*connect_scopes(settings), *_CONSENT_EXTRA_SCOPES]), "state": state})
    vault.put_flow(flow_key(state), {"kind": ADMIN_CONSENT, "tenant": tenant})
    return f"{settings.authority_for(tenant)}/v2.0/adminconsent?{query}", state


def signed_in_tenant(result: dict[str, Any]) -> str:
    """The tenant of the account that signed in: the id token's tid (from the token endpoint, over TLS)."""
    return str((result.get("id_token_claims") or {}).get("tid") or "").lower()


def granted_scopes(result: dict[str, Any]) -> str:
    """The resource scopes a token answer granted, by their short names (OpenID Connect ones left out)."""
    names = (scope.rsplit("/", 1)[-1] for scope in str(result.get("scope") or "").split())
    return " ".join(name for name in names if name not in ("openid", "profile", "email", "offline_access"))
