"""Device code flow, interactive half: device authorization, and the page where the user enters the code."""

from __future__ import annotations

from aiohttp import web

from devstack.entra.emulator import ENTRA_KEY
from devstack.entra.errors import EntraError, require
from devstack.entra.http import check_tenant, error_response, read_form, request_correlation_id
from devstack.entra.model import DEVICE_POLL_INTERVAL
from devstack.entra.pages import app_name, device_page, error_page, message_page


async def device_authorization(request: web.Request) -> web.Response:
    """Start a device flow: codes for the device and the user."""
    emu = request.app[ENTRA_KEY]
    correlation_id = request_correlation_id(request)
    form = await read_form(request)
    try:
        tenant = check_tenant(request, emu)
        client = emu.find_client(require(form, "client_id"))
        emu.directory.client_usable_in(client, tenant)
        scope = require(form, "scope")
        emu.resolve_scopes(scope, client, interactive=True)
    except EntraError as err:
        return error_response(err, correlation_id)
    device_code, auth = emu.start_device_flow(client, scope, tenant)
    verification_uri = f"{emu.base}/{tenant}/oauth2/deviceauth"
    return web.json_response({
        "device_code": device_code, "user_code": auth.user_code, "verification_uri": verification_uri,
        "expires_in": emu.device_code_lifetime, "interval": DEVICE_POLL_INTERVAL,
        "message": f"To sign in, use a web browser to open the page {verification_uri} and enter the code "
                   f"{auth.user_code} to authenticate.",
    }, headers={"Cache-Control": "no-store", "client-request-id": correlation_id})


async def device_login(request: web.Request) -> web.Response:
    """GET the page where a user enters a device's code."""
    try:
        check_tenant(request, request.app[ENTRA_KEY])
    except EntraError as err:
        return error_page(err)
    return device_page(request, user_code=request.query.get("user_code", ""))


async def device_login_submit(request: web.Request) -> web.Response:
    """POST of the device code page: approve (code and credentials) or decline."""
    emu = request.app[ENTRA_KEY]
    form = await read_form(request)
    user_code, username = form.get("user_code", ""), form.get("username", "")
    auth = emu.find_device_flow(user_code)
    if form.get("action") == "cancel":
        if auth is not None:
            auth.declined = True
        return message_page("Sign-in cancelled", "You declined to sign in on the device. You may now close "
                                                 "this window.")
    if auth is None:
        return device_page(request, user_code=user_code, username=username,
                           error="That code didn't work. Check the code and try again. (AADSTS70019)")
    user = emu.check_password(username, form.get("password", ""))
    if user is None:
        return device_page(request, user_code=user_code, username=username,
                           error="Your account or password is incorrect. (AADSTS50126)")
    try:
        emu.approve_device_flow(auth, user)
    except EntraError as err:
        return device_page(request, user_code=user_code, username=username, error=err.message)
    return message_page("You're signed in", f"You have signed in to {app_name(emu, auth.client_id)} on your "
                                            f"device. You may now close this window.")
