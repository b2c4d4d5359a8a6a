"""Authorization code flow, interactive half: the authorize request, the sign-in page and its form."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from devstack.entra.emulator import ENTRA_KEY, EntraEmulator
from devstack.entra.errors import EntraError, require
from devstack.entra.http import check_tenant, read_form
from devstack.entra.model import RESPONSE_MODES, SIGN_IN_LIFETIME, SignIn
from devstack.entra.pages import error_page, redirect_to_client, sign_in_page

# One logger for the whole emulator, named for the package.
log = logging.getLogger("devstack.entra")

# Authorize-time names for errors the token endpoint names differently.
AUTHORIZE_ERROR_NAMES = {65001: "consent_required"}


def _without_loopback_port(uri: str) -> str:
    # Entra ignores the port of http loopback redirect URIs (http://localhost:<any>/path matches
    # http://localhost/path), so native and local apps can listen on whatever port is free.
    parts = urlsplit(uri)
    if parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1"):
        return urlunsplit(parts._replace(netloc=parts.hostname))
    return uri


def registered_redirect_uri(client: Mapping[str, Any], requested: str | None) -> str:
    """The requested redirect URI if the app registered it (a loopback port aside), else AADSTS50011."""
    registered = [str(uri) for uri in client.get("redirect_uris", [])]
    if requested is None and len(registered) == 1:
        return registered[0]
    if requested is None or _without_loopback_port(requested) not in {_without_loopback_port(u) for u in registered}:
        raise EntraError(400, "invalid_request", 50011,
                         f"The redirect URI '{requested}' specified in the request does not match the redirect "
                         f"URIs configured for the application '{client['client_id']}'. Make sure the redirect "
                         f"URI sent in the request matches one added to your application in the Azure portal.")
    return requested


def _check_authorize_request(emu: EntraEmulator, client: Mapping[str, Any], query: Mapping[str, str],
                             sign_in: SignIn) -> None:
    """Checks made after the redirect URI is trusted: failures go back to the client as errors."""
    response_type = query.get("response_type", "")
    if response_type != "code":
        raise EntraError(400, "unsupported_response_type", 700054,
                         f"response_type '{response_type}' is not enabled for the application.")
    response_mode = query.get("response_mode", "query")
    if response_mode not in RESPONSE_MODES:
        raise EntraError(400, "invalid_request", 900144, f"Invalid response_mode '{response_mode}'.")
    if sign_in.code_challenge is not None and sign_in.code_challenge_method not in ("S256", "plain"):
        raise EntraError(400, "invalid_request", 501491,
                         f"Invalid code_challenge_method '{sign_in.code_challenge_method}'.")
    emu.resolve_scopes(require(query, "scope"), client, interactive=True)
    if query.get("prompt") == "none":
        raise EntraError(400, "login_required", 50058,
                         "A silent sign-in request was sent but no user is signed in.")


def trusted_request(request: web.Request, emu: EntraEmulator) -> tuple[str, dict[str, Any], str]:
    """(tenant, client, redirect URI) of a browser request to an interactive endpoint; EntraError before the
    redirect URI is trusted (an error page then, never a redirect)."""
    tenant = check_tenant(request, emu)
    client = emu.find_client(require(request.query, "client_id"))
    emu.directory.client_usable_in(client, tenant)
    return tenant, client, registered_redirect_uri(client, request.query.get("redirect_uri"))


async def authorize(request: web.Request) -> web.Response:
    """GET authorize: validate the request, then show the sign-in and consent page."""
    emu = request.app[ENTRA_KEY]
    query = request.query
    try:
        tenant, client, redirect_uri = trusted_request(request, emu)
    except EntraError as err:
        return error_page(err)
    response_mode = query.get("response_mode", "query")
    sign_in = SignIn(
        tenant=tenant, client_id=client["client_id"], redirect_uri=redirect_uri, scope=query.get("scope", ""),
        state=query.get("state"), nonce=query.get("nonce"), code_challenge=query.get("code_challenge"),
        code_challenge_method=query.get("code_challenge_method", "plain"),
        response_mode=response_mode if response_mode in RESPONSE_MODES else "query",
        login_hint=query.get("login_hint", ""), client_info=query.get("client_info") == "1",
        expires_at=time.time() + SIGN_IN_LIFETIME)
    try:
        _check_authorize_request(emu, client, query, sign_in)
    except EntraError as err:
        return redirect_to_client(sign_in, {"error": AUTHORIZE_ERROR_NAMES.get(err.code, err.error),
                                            "error_description": err.message})
    ctx = emu.begin_sign_in(sign_in)
    return sign_in_page(emu, request, ctx, sign_in, username=sign_in.login_hint)


async def authorize_submit(request: web.Request) -> web.Response:
    """POST of the sign-in form: cancel, wrong credentials (page again) or a code for the client."""
    emu = request.app[ENTRA_KEY]
    form = await read_form(request)
    ctx = form.get("ctx", "")
    sign_in = emu.sign_ins.get(ctx)
    if sign_in is None or sign_in.expires_at < time.time():
        return error_page(EntraError(400, "invalid_request", 50089,
                                     "Flow token expired. Start the sign-in again from the application."))
    if form.get("action") == "cancel":
        del emu.sign_ins[ctx]
        return redirect_to_client(sign_in, {"error": "access_denied", "error_description":
                                            "AADSTS65004: User declined to consent to access the app."})
    user = emu.check_password(form.get("username", ""), form.get("password", ""))
    if user is None:
        log.info("sign-in failed for client %s: invalid credentials", sign_in.client_id)
        return sign_in_page(emu, request, ctx, sign_in, username=form.get("username", ""),
                            error="Your account or password is incorrect. (AADSTS50126)")
    client = emu.find_client(sign_in.client_id)
    try:
        emu.directory.user_in(user, sign_in.tenant, client)
    except EntraError as err:
        return sign_in_page(emu, request, ctx, sign_in, username=form.get("username", ""), error=err.message)
    try:
        # Accepting the page is the user's consent, where their tenant lets users consent.
        emu.directory.consent_at_sign_in(user, client)
    except EntraError as err:
        del emu.sign_ins[ctx]
        return error_page(err)
    del emu.sign_ins[ctx]
    params = {"code": emu.issue_code(sign_in, user)}
    if sign_in.client_info:
        params["client_info"] = emu.client_info(user)
    return redirect_to_client(sign_in, params)
