"""The token endpoint's grants by grant_type (DEFAULT_GRANTS; EntraEmulator.grants is the extension point)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from devstack.entra.errors import (
    EXPIRED_GRANT,
    EntraError,
    invalid_grant,
    public_client_with_secret,
    require,
    secret_required,
)
from devstack.entra.model import (
    GRANT_AUTHORIZATION_CODE,
    GRANT_DEVICE_CODE,
    GRANT_JWT_BEARER,
    ROTATION_STRICT,
    TokenRequest,
    graph_scope_name,
)

if TYPE_CHECKING:
    from devstack.entra.emulator import EntraEmulator


GrantHandler = Callable[["EntraEmulator", TokenRequest], Awaitable[dict[str, Any]]]


def _pkce_matches(verifier: str, challenge: str, method: str) -> bool:
    if method == "plain":
        return secrets.compare_digest(verifier, challenge)
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return secrets.compare_digest(base64.urlsafe_b64encode(digest).rstrip(b"=").decode(), challenge)


def _user_of(emu: EntraEmulator, oid: str) -> dict[str, Any]:
    user = emu.users.get(oid)
    if user is None:
        raise invalid_grant(50034, "The user account does not exist in the directory.")
    return user


async def grant_password(emu: EntraEmulator, req: TokenRequest) -> dict[str, Any]:
    """Resource owner password credentials (ROPC): local dev credential only."""
    user = emu.check_password(require(req.form, "username"), require(req.form, "password"))
    if user is None:
        raise invalid_grant(50126, "Error validating credentials due to invalid username or password.")
    emu.directory.user_in(user, req.tenant, req.client)
    # No page to consent on: the user or an admin of their tenant must have consented before.
    emu.directory.require_consent(user, req.client)
    return emu.issue_user_tokens(user, req.client, require(req.form, "scope"),
                                 client_info=req.wants_client_info, public=not req.confidential)


async def grant_refresh_token(emu: EntraEmulator, req: TokenRequest) -> dict[str, Any]:
    """Refresh token grant. Each answer carries a new refresh token; the one redeemed stays valid until it
    expires or is revoked (Entra's behaviour), or, with strict rotation, works exactly once."""
    rt = require(req.form, "refresh_token")
    grant = emu.refresh_tokens.get(rt)
    if grant is None or grant.expires_at < time.time():
        raise invalid_grant(70008, EXPIRED_GRANT)
    if grant.client_id != req.client["client_id"]:
        raise invalid_grant(70000, "Provided grant is invalid or malformed: it was issued to a different client.")
    if grant.public and req.confidential:
        raise public_client_with_secret()
    if not grant.public and not req.confidential:
        raise secret_required()
    user = _user_of(emu, grant.user_oid)
    # A refresh token belongs to the user's tenant: redeemed at another tenant's endpoint, it is refused.
    emu.directory.user_in(user, req.tenant, req.client)
    if user["oid"] in emu.interaction_required:
        # The refresh token stays valid: after an interactive sign-in the user is fine again.
        raise EntraError(400, "interaction_required", 50076,
                         "Due to a configuration change made by your administrator, or because you moved to "
                         "a new location, you must use multi-factor authentication to access the resource.",
                         extra={"suberror": "basic_action",
                                "claims": '{"access_token":{"capolids":{"essential":true,'
                                          '"values":["00000000-0000-0000-0000-00000000c0de"]}}}'})
    if emu.refresh_token_rotation == ROTATION_STRICT:
        del emu.refresh_tokens[rt]
    scope = req.form.get("scope") or grant.scope
    if "offline_access" not in scope.split():
        # Entra keeps handing out refresh tokens on a refresh even if offline_access is not repeated.
        scope += " offline_access"
    return emu.issue_user_tokens(user, req.client, scope, client_info=req.wants_client_info, public=grant.public)


async def grant_client_credentials(emu: EntraEmulator, req: TokenRequest) -> dict[str, Any]:
    """Client credentials grant: app-only token for Graph."""
    scope = require(req.form, "scope").strip()
    if graph_scope_name(scope) != ".default":
        raise EntraError(400, "invalid_scope", 1002012,
                         f"The provided value for scope {scope} is not valid. Client credential flows must "
                         f"have a scope value with /.default suffixed to the resource identifier "
                         f"(application ID URI).")
    return emu.issue_app_token(req.client, emu.token_tenant(req.tenant))


async def grant_authorization_code(emu: EntraEmulator, req: TokenRequest) -> dict[str, Any]:
    """Authorization code grant: one use, same client and redirect URI, PKCE verifier if a challenge was sent."""
    code = emu.auth_codes.get(require(req.form, "code"))
    if code is None:
        raise invalid_grant(9002313, "Invalid request. Request is malformed or invalid: unknown code.")
    if code.redeemed:
        raise invalid_grant(54005, "OAuth2 Authorization code was already redeemed, please retry with a new "
                                   "valid code or use an existing refresh token.")
    if code.expires_at < time.time():
        raise invalid_grant(70008, EXPIRED_GRANT)
    sign_in = code.sign_in
    if sign_in.client_id != req.client["client_id"]:
        raise invalid_grant(70000, "Provided grant is invalid or malformed: it was issued to a different client.")
    redirect_uri = require(req.form, "redirect_uri")
    if redirect_uri != sign_in.redirect_uri:
        raise invalid_grant(500112, f"The reply address '{redirect_uri}' does not match the reply address "
                                    f"'{sign_in.redirect_uri}' provided when requesting Authorization code.")
    if sign_in.code_challenge is not None:
        verifier = require(req.form, "code_verifier")
        if not _pkce_matches(verifier, sign_in.code_challenge, sign_in.code_challenge_method):
            raise invalid_grant(501481, "The Code_Verifier does not match the code_challenge supplied in the "
                                        "authorization request.")
    user = _user_of(emu, code.user_oid)
    code.redeemed = True
    return emu.issue_user_tokens(user, req.client, sign_in.scope, nonce=sign_in.nonce,
                                 client_info=req.wants_client_info, public=not req.confidential, consented=True)


async def grant_device_code(emu: EntraEmulator, req: TokenRequest) -> dict[str, Any]:
    """Device code grant: authorization_pending until the user approves, then tokens once."""
    device_code = require(req.form, "device_code")
    auth = emu.device_auths.get(device_code)
    if auth is None or auth.client_id != req.client["client_id"]:
        raise EntraError(400, "bad_verification_code", 70000,
                         "The device code was not recognized.")
    if auth.expires_at < time.time():
        del emu.device_auths[device_code]
        raise EntraError(400, "expired_token", 70019, "Verification code expired.")
    if auth.declined:
        del emu.device_auths[device_code]
        raise EntraError(400, "authorization_declined", 70000, "The end user denied the authorization request.")
    if auth.user_oid is None:
        raise EntraError(400, "authorization_pending", 70016,
                         "OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
    del emu.device_auths[device_code]
    return emu.issue_user_tokens(_user_of(emu, auth.user_oid), req.client, auth.scope,
                                 client_info=req.wants_client_info, public=not req.confidential, consented=True)


async def grant_on_behalf_of(emu: EntraEmulator, req: TokenRequest) -> dict[str, Any]:
    """On-Behalf-Of: a user token for this client's API becomes a token for another resource, same user."""
    if req.form.get("requested_token_use") != "on_behalf_of":
        raise EntraError(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'requested_token_use' "
                         "with the value 'on_behalf_of'.")
    claims = emu.verify_user_assertion(require(req.form, "assertion"), req.client, req.tenant)
    user = _user_of(emu, claims["oid"])
    # On-Behalf-Of cannot show a consent page: the app must have been consented to in the user's tenant.
    emu.directory.require_consent(user, req.client)
    return emu.issue_user_tokens(user, req.client, require(req.form, "scope"),
                                 client_info=req.wants_client_info)


DEFAULT_GRANTS: dict[str, GrantHandler] = {
    "password": grant_password,
    "refresh_token": grant_refresh_token,
    "client_credentials": grant_client_credentials,
    GRANT_AUTHORIZATION_CODE: grant_authorization_code,
    GRANT_DEVICE_CODE: grant_device_code,
    GRANT_JWT_BEARER: grant_on_behalf_of,
}
