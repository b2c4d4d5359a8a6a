"""The connect page and its callback: an organizer grants delegated access once (authorization code + PKCE)."""

from __future__ import annotations

import asyncio
import hmac
import html
import logging
import re
from http.cookies import CookieError, SimpleCookie

import azure.functions as func

from shared.common.fields import check_organizer
from shared.exceptions import InvalidEventError, JoinLinkError
from shared.identity.connect_flow import redeem_connect_flow, start_connect_flow
from shared.identity.msal import ClientType, MsalClients, MsalFailure
from shared.identity.vault import FLOW_MAX_SECONDS, TokenVault, VaultEntry, flow_key
from shared.identity.vault_acquirer import organizer_label
from shared.redaction import hash_user
from shared.settings import Settings

log = logging.getLogger(__name__)
CONNECT_ROUTE = "auth/connect"
CALLBACK_ROUTE = "auth/callback"
_SECURE_COOKIE = "__Host-va-connect"  # __Host-: Secure, Path=/, no Domain, so no sibling host can plant it
_DEV_COOKIE = "va-connect"  # plain-http development only, where browsers refuse __Host- cookies
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Content-Security-Policy": "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # The callback's URL carries the authorization code: it must never travel on as a Referer.
    "Referrer-Policy": "no-referrer",
}


def _secure(settings: Settings) -> bool:
    return (settings.auth_redirect_uri or "").startswith("https://")


def _cookie_name(settings: Settings) -> str:
    return _SECURE_COOKIE if _secure(settings) else _DEV_COOKIE


def _cookie(settings: Settings, value: str, max_age: int) -> str:
    secure = "; Secure" if _secure(settings) else ""
    return f"{_cookie_name(settings)}={value}; Path=/; Max-Age={max_age}; HttpOnly{secure}; SameSite=Lax"


def page(status: int, title: str, message: str, *, headers: dict[str, str] | None = None) -> func.HttpResponse:
    """A small HTML page; every piece of text is escaped."""
    body = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"</head><body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>")
    return func.HttpResponse(body, status_code=status, mimetype="text/html", charset="utf-8",
                             headers={**_PAGE_HEADERS, **(headers or {})})


async def connect(req: func.HttpRequest, settings: Settings, vault: TokenVault,
                  clients: MsalClients) -> func.HttpResponse:
    """GET ?organizer=<upn> → redirect to Entra sign-in; the flow is kept server-side and bound to this browser."""
    if settings.auth_redirect_uri is None:
        return page(500, "Connect is not configured", "AUTH_REDIRECT_URI is not set; the operator must set it.")
    organizer = (req.params.get("organizer") or "").strip() or None
    try:
        if organizer is not None:
            check_organizer(organizer)
    except InvalidEventError as exc:
        return page(400, "Invalid link", exc.detail)
    # A login_hint must be a UPN; an object id can only be checked after sign-in.
    hint = organizer if organizer and "@" in organizer else None
    try:
        flow = await asyncio.to_thread(start_connect_flow, settings, vault, clients, hint, organizer)
    except JoinLinkError as exc:
        log.warning("connect could not start: %s", exc.reason, extra={"reason": exc.reason, "outcome": "failed"})
        return page(503, "Sign-in is unavailable", "The sign-in service or the token vault is unavailable. "
                    "Try the link again in a few minutes.")
    log.info("connect started", extra={"organizer_hash": hash_user(organizer), "outcome": "redirected"})
    return func.HttpResponse(status_code=302, headers={
        **_PAGE_HEADERS, "Location": flow["auth_uri"],
        "Set-Cookie": _cookie(settings, flow_key(flow["state"]), FLOW_MAX_SECONDS)})


async def callback(req: func.HttpRequest, settings: Settings, vault: TokenVault,
                   clients: MsalClients) -> func.HttpResponse:
    """Entra redirects here: check the browser binding, take the one-time flow, redeem the code, store the cache."""
    clear = {"Set-Cookie": _cookie(settings, "", 0)}
    params = {k: v for k, v in req.params.items()}
    state = params.get("state") or ""
    key = flow_key(state) if state else ""
    bound = _read_cookie(req, _cookie_name(settings))
    # Checked before the flow is touched: a forged callback (login CSRF) must not even consume it.
    if not state or not bound or not hmac.compare_digest(bound, key):
        log.warning("connect callback refused: not started in this browser", extra={"outcome": "refused_binding"})
        return page(400, "Sign-in not recognised", "This sign-in was not started from this browser, or the browser "
                    "blocked its cookie. Open the connect link you were sent again, in this browser.", headers=clear)
    try:
        stored = await asyncio.to_thread(vault.take_flow, key)
    except JoinLinkError:
        return page(503, "Sign-in is unavailable", "The token vault is unavailable. Open the connect link again "
                    "in a few minutes.", headers=clear)
    if stored is None:
        log.warning("connect callback refused: flow expired or used", extra={"outcome": "refused_replay"})
        return page(400, "Link expired or already used", "This sign-in has expired or was already completed. "
                    "Open the connect link you were sent again.", headers=clear)
    if "error" in params:
        reason = params.get("error_description") or params["error"]
        # The error code comes from the query string: only its word characters reach the log.
        code = re.sub(r"[^A-Za-z0-9_]", "", params["error"])[:64]
        log.info("connect callback: sign-in not completed (%s)", code, extra={"outcome": "signin_error",
                                                                             "reason": code})
        return page(400, "Sign-in was not completed", f"{reason[:300]} Open the connect link again to retry.",
                    headers=clear)
    try:
        result, cache = await asyncio.to_thread(redeem_connect_flow, clients, stored["flow"], params)
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
    entry = VaultEntry.connected(claims, cache, ClientType.CONFIDENTIAL)
    try:
        await asyncio.to_thread(vault.store_connection, entry)
    except JoinLinkError:
        return page(503, "Connection not saved", "Signed in, but the token vault is unavailable. Open the connect "
                    "link again in a few minutes.", headers=clear)
    log.info("organizer connected", extra={"organizer_hash": hash_user(entry.oid), "outcome": "connected"})
    message = f"{entry.display_name} ({entry.upn}) is connected. Appointments they organize can now get join links. "
    expected = stored.get("organizer")
    if expected and expected.lower() not in (entry.oid.lower(), entry.upn.lower()):
        message += (f"Note: this link was sent to connect {organizer_label(expected)}, but you signed in as "
                    f"{entry.upn}; that account is the one connected. ")
    return page(200, "Connected", message + "You can close this window.", headers=clear)


def _read_cookie(req: func.HttpRequest, name: str) -> str | None:
    header = req.headers.get("cookie") or ""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None and morsel.value else None
