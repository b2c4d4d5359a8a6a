"""The connect page and its callback: an organizer grants delegated access once (authorization code + PKCE);
and the admin-consent link: a tenant's administrator grants the app's delegated scopes for everyone in it.

Both come back to one redirect URI (/api/auth/callback), each bound to the browser that started it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from http.cookies import CookieError, SimpleCookie
from typing import Any

import azure.functions as func

from shared.common.fields import check_organizer, optional_guid
from shared.exceptions import InvalidEventError, JoinLinkError
from shared.identity.connect_flow import (
    ADMIN_CONSENT,
    granted_scopes,
    redeem_connect_flow,
    signed_in_tenant,
    start_admin_consent,
    start_connect_flow,
)
from shared.identity.msal import ClientType, MsalClients, MsalFailure
from shared.identity.vault import FLOW_MAX_SECONDS, TokenVault, VaultEntry, flow_key
from shared.identity.vault_acquirer import organizer_label
from shared.pages.look import PAGE_HEADERS, message_page
from shared.redaction import hash_tenant, hash_user
from shared.settings import Settings

log = logging.getLogger(__name__)
CONNECT_ROUTE = "auth/connect"
CALLBACK_ROUTE = "auth/callback"
ADMIN_CONSENT_ROUTE = "auth/admin-consent"
_SECURE_COOKIE = "__Host-va-connect"  # __Host-: Secure, Path=/, no Domain, so no sibling host can plant it
_DEV_COOKIE = "va-connect"  # plain-http development only, where browsers refuse __Host- cookies
# The organizer waits on the page meanwhile; Graph's validation of a new subscription may take up to 10 s.
AFTER_CONNECT_SECONDS = 12.0
OnConnected = Callable[[VaultEntry], Awaitable[str]]


def _secure(settings: Settings) -> bool:
    return (settings.auth_redirect_uri or "").startswith("https://")


def _cookie_name(settings: Settings) -> str:
    return _SECURE_COOKIE if _secure(settings) else _DEV_COOKIE


def _cookie(settings: Settings, value: str, max_age: int) -> str:
    secure = "; Secure" if _secure(settings) else ""
    return f"{_cookie_name(settings)}={value}; Path=/; Max-Age={max_age}; HttpOnly{secure}; SameSite=Lax"


def page(status: int, title: str, message: str, *, headers: dict[str, str] | None = None,
         notes: tuple[str, ...] = ()) -> func.HttpResponse:
    """A connect or consent result page in the app's look; every piece of text is escaped."""
    return message_page(status, title, message, headers=headers, notes=notes)


def _redirect(settings: Settings, location: str, state: str) -> func.HttpResponse:
    """To Entra, with the flow bound to this browser by a cookie holding the hash of its state."""
    return func.HttpResponse(status_code=302, headers={
        **PAGE_HEADERS, "Location": location, "Set-Cookie": _cookie(settings, flow_key(state), FLOW_MAX_SECONDS)})


def _tenant_param(req: func.HttpRequest, settings: Settings) -> str | None:
    """The optional `tenant` of a link: an allowed tenant id, or InvalidEventError saying why not."""
    tenant = optional_guid({"tenant": req.params.get("tenant")}, "tenant")
    if tenant is not None and not settings.tenant_allowed(tenant):
        raise InvalidEventError(f"tenant {tenant} is not on this app's list of allowed tenants")
    return tenant


async def connect(req: func.HttpRequest, settings: Settings, vault: TokenVault,
                  clients: MsalClients) -> func.HttpResponse:
    """GET ?organizer=<upn>[&tenant=<id>] → redirect to Entra sign-in; the flow is kept server-side and bound to
    this browser. With a tenant, the sign-in happens at that tenant; without, where organizers sign in."""
    if settings.auth_redirect_uri is None:
        return page(500, "Connect is not configured", "AUTH_REDIRECT_URI is not set; the operator must set it.")
    organizer = (req.params.get("organizer") or "").strip() or None
    try:
        if organizer is not None:
            check_organizer(organizer)
        tenant = _tenant_param(req, settings)
    except InvalidEventError as exc:
        return page(400, "Invalid link", exc.detail)
    # A login_hint must be a UPN; an object id can only be checked after sign-in.
    hint = organizer if organizer and "@" in organizer else None
    try:
        flow = await asyncio.to_thread(start_connect_flow, settings, vault, clients, hint, organizer, tenant)
    except JoinLinkError as exc:
        log.warning("connect could not start: %s", exc.reason, extra={"reason": exc.reason, "outcome": "failed"})
        return page(503, "Sign-in is unavailable", "The sign-in service or the token vault is unavailable. "
                    "Try the link again in a few minutes.")
    log.info("connect started", extra={"organizer_hash": hash_user(organizer), "tenant_hash": hash_tenant(tenant),
                                       "outcome": "redirected"})
    return _redirect(settings, flow["auth_uri"], flow["state"])


async def admin_consent(req: func.HttpRequest, settings: Settings, vault: TokenVault) -> func.HttpResponse:
    """GET ?tenant=<id> → redirect a tenant's administrator to Entra's admin consent for this app."""
    if settings.auth_redirect_uri is None:
        return page(500, "Admin consent is not configured", "AUTH_REDIRECT_URI is not set; the operator must set it.")
    try:
        tenant = _tenant_param(req, settings)
    except InvalidEventError as exc:
        return page(400, "Invalid link", exc.detail)
    if tenant is None:
        return page(400, "Invalid link", "The link names no tenant: add tenant=<tenant id>.")
    try:
        url, state = await asyncio.to_thread(start_admin_consent, settings, vault, tenant)
    except JoinLinkError as exc:
        log.warning("admin consent could not start: %s", exc.reason, extra={"reason": exc.reason,
                                                                            "outcome": "failed"})
        return page(503, "Admin consent is unavailable", "The token vault is unavailable. Try the link again in a "
                    "few minutes.")
    log.info("admin consent started", extra={"tenant_hash": hash_tenant(tenant), "outcome": "redirected"})
    return _redirect(settings, url, state)


async def callback(req: func.HttpRequest, settings: Settings, vault: TokenVault,
                   clients: MsalClients, on_connected: OnConnected | None = None) -> func.HttpResponse:
    """Entra redirects here: check the browser binding, take the one-time flow, then finish a sign-in (redeem
    the code, check the tenant, store the cache) or report an admin consent. `on_connected` runs once the
    connection is stored (MEETING_KIND=calendar: the organizer's calendar subscription) and says how it went."""
    clear = {"Set-Cookie": _cookie(settings, "", 0)}
    params = {k: v for k, v in req.params.items()}
    state = params.get("state") or ""
    key = flow_key(state) if state else ""
    bound = _read_cookie(req, _cookie_name(settings))
    # Checked before the flow is touched: a forged callback (login CSRF) must not even consume it.
    if not state or not bound or not hmac.compare_digest(bound, key):
        log.warning("connect callback refused: not started in this browser", extra={"outcome": "refused_binding"})
        return page(400, "Sign-in not recognised", "This sign-in was not started from this browser, or the browser "
                    "blocked its cookie. Open the link you were sent again, in this browser.", headers=clear)
    try:
        stored = await asyncio.to_thread(vault.take_flow, key)
    except JoinLinkError:
        return page(503, "Sign-in is unavailable", "The token vault is unavailable. Open the link again "
                    "in a few minutes.", headers=clear)
    if stored is None:
        log.warning("connect callback refused: flow expired or used", extra={"outcome": "refused_replay"})
        return page(400, "Link expired or already used", "This sign-in has expired or was already completed. "
                    "Open the link you were sent again.", headers=clear)
    if stored.get("kind") == ADMIN_CONSENT:
        return _consent_result(params, stored, clear)
    if "error" in params:
        reason = params.get("error_description") or params["error"]
        # The error code comes from the query string: only its word characters reach the log.
        code = re.sub(r"[^A-Za-z0-9_]", "", params["error"])[:64]
        log.info("connect callback: sign-in not completed (%s)", code, extra={"outcome": "signin_error",
                                                                             "reason": code})
        return page(400, "Sign-in was not completed", f"{reason[:300]} Open the connect link again to retry.",
                    headers=clear)
    return await _finish_sign_in(settings, vault, clients, stored, params, clear, on_connected)


async def _finish_sign_in(settings: Settings, vault: TokenVault, clients: MsalClients, stored: dict[str, Any],
                          params: dict[str, str], clear: dict[str, str],
                          on_connected: OnConnected | None = None) -> func.HttpResponse:
    try:
        result, cache = await asyncio.to_thread(redeem_connect_flow, clients, stored["flow"], params,
                                                stored.get("tenant"))
    except JoinLinkError:
        return page(503, "Sign-in is unavailable", "The sign-in service did not answer. Open the connect link "
                    "again in a few minutes.", headers=clear)
    claims = result.get("id_token_claims") or {}
    if "error" in result or not cache or not claims.get("oid"):
        failure = MsalFailure.from_result(result if "error" in result else None)
        log.warning("connect callback: code redemption failed: %s", failure.error, extra={"outcome": "failed"})
        return page(400, "Connection failed", f"The sign-in could not be completed ({failure.summary()}). Open "
                    "the connect link again; if this keeps happening, the app registration needs an admin.",
                    headers=clear)
    tenant = signed_in_tenant(result)
    if not settings.tenant_allowed(tenant):
        # The tokens are dropped unstored; the tenant id is what an operator needs to decide on it.
        log.warning("connect refused: tenant %s is not on ENTRA_ALLOWED_TENANTS", tenant or "-",
                    extra={"outcome": "refused_tenant", "tenant_hash": hash_tenant(tenant),
                           "organizer_hash": hash_user(str(claims["oid"]))})
        return page(403, "Your organization is not served by this app",
                    f"You signed in with an account of tenant {tenant or 'unknown'}, which this app does not serve: "
                    "nothing was stored. If your organization should be connected, ask the app's operator to add "
                    "this tenant id to its list of allowed tenants, then open the connect link again.", headers=clear)
    expected_tenant = stored.get("tenant")
    if expected_tenant and expected_tenant != tenant:
        return page(400, "Signed in to another organization", f"This link connects an organizer of tenant "
                    f"{expected_tenant}, but you signed in with an account of tenant {tenant}; nothing was stored. "
                    "Open the link again and sign in with your work account of that organization.", headers=clear)
    entry = VaultEntry.connected(claims, cache, ClientType.CONFIDENTIAL, granted_scopes(result))
    try:
        await asyncio.to_thread(vault.store_connection, entry)
    except JoinLinkError:
        return page(503, "Connection not saved", "Signed in, but the token vault is unavailable. Open the connect "
                    "link again in a few minutes.", headers=clear)
    log.info("organizer connected", extra={"organizer_hash": hash_user(entry.oid),
                                           "tenant_hash": hash_tenant(entry.tenant_id), "outcome": "connected"})
    message = f"{entry.display_name} ({entry.upn}) is connected. Appointments they organize can now get join links."
    notes = [f"Tenant {entry.tenant_id}. Permissions: {entry.scopes or 'as consented'}.", "You can close this window."]
    if on_connected is not None:
        notes.insert(1, await _after_connect(on_connected, entry))
    expected = stored.get("organizer")
    if expected and expected.lower() not in (entry.oid.lower(), entry.upn.lower()):
        notes.insert(0, f"Note: this link was sent to connect {organizer_label(expected)}, but you signed in as "
                        f"{entry.upn}; that account is the one connected.")
    return page(200, "Connected", message, headers=clear, notes=tuple(notes))


async def _after_connect(on_connected: OnConnected, entry: VaultEntry) -> str:
    """What the page says of the step after connecting; its failure never fails the connection (the timer retries)."""
    try:
        return await asyncio.wait_for(on_connected(entry), timeout=AFTER_CONNECT_SECONDS)
    except (JoinLinkError, TimeoutError) as exc:
        log.warning("after connecting: %s", getattr(exc, "reason", type(exc).__name__),
                    extra={"organizer_hash": hash_user(entry.oid), "outcome": "after_connect_failed"})
        return "Changes made in Outlook will be followed once the app's timer has subscribed to the calendar."


def _consent_result(params: dict[str, str], stored: dict[str, Any], clear: dict[str, str]) -> func.HttpResponse:
    """The page after an administrator's consent: Entra says which tenant consented, or why not."""
    tenant = str(stored.get("tenant") or "")
    if params.get("admin_consent", "").lower() == "true" and params.get("tenant", "").lower() == tenant:
        log.info("admin consent granted", extra={"tenant_hash": hash_tenant(tenant), "outcome": "admin_consented"})
        return page(200, "Admin consent granted", f"An administrator of tenant {tenant} granted this app its "
                    "permissions for everyone in the organization. Its organizers can now connect without being "
                    "asked to consent.", headers=clear, notes=("You can close this window.",))
    code = re.sub(r"[^A-Za-z0-9_]", "", params.get("error", "unknown"))[:64]
    log.info("admin consent not granted (%s)", code, extra={"tenant_hash": hash_tenant(tenant),
                                                             "outcome": "admin_consent_refused", "reason": code})
    reason = (params.get("error_description") or params.get("error") or
              f"Entra answered for tenant {params.get('tenant') or 'unknown'}, not {tenant}.")
    return page(400, "Admin consent was not granted", f"{reason[:300]} Open the admin-consent link again to retry.",
                headers=clear)


def _read_cookie(req: func.HttpRequest, name: str) -> str | None:
    header = req.headers.get("cookie") or ""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None and morsel.value else None
