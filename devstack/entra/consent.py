"""Admin consent: a tenant's administrator grants an app its permissions for everyone in the organization.

`GET /{tenant}/v2.0/adminconsent?client_id=&scope=&redirect_uri=&state=` (and the older `/{tenant}/adminconsent`
without scope) shows the page; accepting it redirects to the app with `admin_consent=True&tenant=<id>&scope=…
&state=…`; cancelling with `error=access_denied`. An unknown app or an unregistered redirect URI is an error
page, never a redirect.
"""

from __future__ import annotations

import secrets
import time

from aiohttp import web

from devstack.entra.authorize import trusted_request
from devstack.entra.emulator import ENTRA_KEY, EntraEmulator
from devstack.entra.errors import EntraError
from devstack.entra.http import read_form
from devstack.entra.model import SIGN_IN_LIFETIME, TENANT_ALIASES
from devstack.entra.pages import admin_consent_page, app_name, error_page, redirect_to

GRAPH_DEFAULT = "https://graph.microsoft.com/.default"


async def admin_consent(request: web.Request) -> web.Response:
    """GET: validate the request and show the administrator's page."""
    emu = request.app[ENTRA_KEY]
    query = request.query
    try:
        tenant, client, redirect_uri = trusted_request(request, emu)
    except EntraError as err:
        return error_page(err)
    # The v2.0 endpoint names the scopes (`.default`: every permission the registration lists).
    scope = query.get("scope") or GRAPH_DEFAULT
    listed = " ".join(client.get("delegated_scopes", ())) if scope.endswith("/.default") else scope
    ctx = secrets.token_urlsafe(24)
    emu.consent_requests[ctx] = {"tenant": tenant, "client_id": client["client_id"], "redirect_uri": redirect_uri,
                                 "scope": scope, "listed": listed, "state": query.get("state"),
                                 "v2": "/v2.0/" in request.path, "expires_at": time.time() + SIGN_IN_LIFETIME}
    return admin_consent_page(request, ctx, app=app_name(emu, client["client_id"]), tenant=_tenant_name(emu, tenant),
                              scopes=listed)


async def admin_consent_submit(request: web.Request) -> web.Response:
    """POST of the page: cancel, wrong credentials or not an administrator (page again), or consent."""
    emu = request.app[ENTRA_KEY]
    form = await read_form(request)
    pending = emu.consent_requests.get(form.get("ctx", ""))
    if pending is None or pending["expires_at"] < time.time():
        return error_page(EntraError(400, "invalid_request", 50089,
                                     "Flow token expired. Start the admin consent again from the application."))
    state = {"state": pending["state"]} if pending["state"] is not None else {}
    if form.get("action") == "cancel":
        del emu.consent_requests[form["ctx"]]
        return redirect_to(pending["redirect_uri"], {
            "error": "access_denied", "error_subcode": "cancel",
            "error_description": "AADSTS65004: User declined to consent to access the app.", **state})

    def again(error: str) -> web.Response:
        return admin_consent_page(request, form["ctx"], app=app_name(emu, pending["client_id"]),
                                  tenant=_tenant_name(emu, pending["tenant"]), scopes=pending["listed"],
                                  username=form.get("username", ""), error=error)

    admin = emu.check_password(form.get("username", ""), form.get("password", ""))
    if admin is None:
        return again("Your account or password is incorrect. (AADSTS50126)")
    client = emu.find_client(pending["client_id"])
    try:
        emu.directory.user_in(admin, pending["tenant"], client)
    except EntraError as err:
        return again(err.message)
    if not admin.get("admin"):
        return again(f"{admin['upn']} is not an administrator of {_tenant_name(emu, admin['tenant_id'])}: only "
                     f"an administrator can grant consent for the organization.")
    del emu.consent_requests[form["ctx"]]
    emu.directory.tenant(admin["tenant_id"]).admin_consents.add(client["client_id"])
    answer = {"admin_consent": "True", "tenant": admin["tenant_id"], **state}
    if pending["v2"]:
        answer["scope"] = pending["scope"]
    return redirect_to(pending["redirect_uri"], answer)


def _tenant_name(emu: EntraEmulator, tenant: str) -> str:
    if tenant.lower() in TENANT_ALIASES:
        return "your organization"
    return emu.directory.tenant(tenant).display_name
