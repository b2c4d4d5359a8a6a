"""The HTML the user sees: sign-in, device code, message and error pages, and the redirect to the client."""

from __future__ import annotations

import html
import string
import uuid
from collections.abc import Mapping
from urllib.parse import urlencode

from aiohttp import web

from devstack.entra.emulator import EntraEmulator
from devstack.entra.errors import EntraError
from devstack.entra.model import SignIn

# Every value is html.escape()d by _html_page; fragments are built from escaped values only.

_PAGE = string.Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body{font-family:system-ui,sans-serif;max-width:30rem;margin:3rem auto;padding:0 1rem}
label{display:block;margin-top:.8rem}
input{width:100%;padding:.4rem;box-sizing:border-box}
fieldset{margin-top:1rem}
button{margin:1rem .5rem 0 0;padding:.4rem 1.2rem}
.error{color:#a4262c}
</style>
</head>
<body>
<main>
$content
<p><small>Local Entra ID emulator. Test accounts only.</small></p>
</main>
</body>
</html>
""")

_SIGN_IN = string.Template("""<h1>Sign in</h1>
<p>to continue to <strong>$app</strong></p>
$error
<form method="post" action="$action">
<input type="hidden" name="ctx" value="$ctx">
<label for="username">Email or username</label>
<input id="username" name="username" type="text" autocomplete="username" value="$username" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<fieldset>
<legend>Permissions requested</legend>
<p>$app would like to:</p>
<ul id="scopes">$scopes</ul>
</fieldset>
<button id="accept" type="submit" name="action" value="accept">Accept</button>
<button id="cancel" type="submit" name="action" value="cancel" formnovalidate>Cancel</button>
</form>""")

# A form's credentials and its two buttons, as the device code and admin consent pages end.
_CREDENTIALS_AND_BUTTONS = """<label for="username">$user_label</label>
<input id="username" name="username" type="text" autocomplete="username" value="$username" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button id="accept" type="submit" name="action" value="accept">Accept</button>
<button id="cancel" type="submit" name="action" value="cancel" formnovalidate>Cancel</button>
</form>"""

_DEVICE_LOGIN = string.Template("""<h1>Enter code</h1>
<p>Enter the code displayed on your app or device, then sign in to allow access.</p>
$error
<form method="post" action="$action">
<label for="user_code">Code</label>
<input id="user_code" name="user_code" type="text" autocomplete="off" value="$user_code" required>
""" + _CREDENTIALS_AND_BUTTONS)

_ADMIN_CONSENT = string.Template("""<h1>Permissions requested</h1>
<p><strong>$app</strong> (published by the organization that registered it) asks an administrator of
<strong>$tenant</strong> to accept these permissions for everyone in the organization:</p>
<ul id="scopes">$scopes</ul>
$error
<form method="post" action="$action">
<input type="hidden" name="ctx" value="$ctx">
""" + _CREDENTIALS_AND_BUTTONS)

_MESSAGE = string.Template("""<h1>$heading</h1>
<p id="message">$message</p>""")

_ERROR = string.Template("""<h1>Sorry, but we're having trouble signing you in.</h1>
<p class="error" role="alert" id="error">$message</p>""")

_FORM_POST = string.Template("""<form method="post" action="$action" id="response">$fields
<noscript><button type="submit">Continue</button></noscript>
</form>
<script>document.getElementById("response").submit()</script>""")

_HTML_HEADERS = {
    "Cache-Control": "no-store", "Pragma": "no-cache", "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
}
SCOPE_DESCRIPTIONS = {
    "openid": "Sign you in",
    "profile": "View your basic profile",
    "email": "View your email address",
    "offline_access": "Maintain access to data you have given it access to",
}


def _html_page(title: str, template: string.Template, *, status: int = 200,
               fragments: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
               **values: str) -> web.Response:
    content = template.substitute({k: html.escape(v) for k, v in values.items()}, **(fragments or {}))
    return web.Response(text=_PAGE.substitute(title=html.escape(title), content=content), status=status,
                        content_type="text/html", headers={**_HTML_HEADERS, **(headers or {})})


def _error_fragment(message: str | None) -> str:
    return f'<p class="error" role="alert" id="error">{html.escape(message)}</p>' if message else ""


def _scope_items(scope: str) -> str:
    def describe(s: str) -> str:
        return f"{SCOPE_DESCRIPTIONS[s]} ({s})" if s in SCOPE_DESCRIPTIONS else s
    return "".join(f"<li>{html.escape(describe(s))}</li>" for s in scope.split())


def app_name(emu: EntraEmulator, client_id: str) -> str:
    """The client's display name, else its client id."""
    return str(emu.clients.get(client_id, {}).get("display_name") or client_id)


def error_page(err: EntraError) -> web.Response:
    """An error shown to the user, never a redirect (as for an unregistered redirect URI)."""
    return _html_page("Sign in error", _ERROR, status=err.status, message=err.message)


def sign_in_page(emu: EntraEmulator, request: web.Request, ctx: str, sign_in: SignIn, *,
                 username: str, error: str | None = None) -> web.Response:
    """The sign-in and consent page for a pending sign-in."""
    return _html_page("Sign in to your account", _SIGN_IN,
                      fragments={"error": _error_fragment(error), "scopes": _scope_items(sign_in.scope)},
                      app=app_name(emu, sign_in.client_id), action=request.path, ctx=ctx, username=username)


def admin_consent_page(request: web.Request, ctx: str, *, app: str, tenant: str, scopes: str, username: str = "",
                       error: str | None = None) -> web.Response:
    """The page where a tenant's administrator grants an app its permissions for the whole organization."""
    return _html_page("Permissions requested", _ADMIN_CONSENT,
                      fragments={"error": _error_fragment(error), "scopes": _scope_items(scopes)},
                      app=app, tenant=tenant, action=request.path, ctx=ctx, username=username,
                      user_label="Administrator account")


def device_page(request: web.Request, *, user_code: str = "", username: str = "",
                error: str | None = None) -> web.Response:
    """The page where the user enters a device code and signs in."""
    return _html_page("Enter code", _DEVICE_LOGIN, fragments={"error": _error_fragment(error)},
                      action=request.path, user_code=user_code, username=username, user_label="Email or username")


def message_page(heading: str, message: str) -> web.Response:
    """A page that only tells the user something."""
    return _html_page(heading, _MESSAGE, heading=heading, message=message)


def redirect_to(redirect_uri: str, params: Mapping[str, str]) -> web.Response:
    """A 302 to a client's redirect URI with the given query parameters."""
    query = urlencode(params)
    location = f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{query}"
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def redirect_to_client(sign_in: SignIn, params: Mapping[str, str]) -> web.Response:
    """Send the authorize response to the client's redirect URI in the requested response mode."""
    params = {**params, **({"state": sign_in.state} if sign_in.state is not None else {})}
    if "code" in params:
        params["session_state"] = str(uuid.uuid4())
    if sign_in.response_mode == "form_post":
        fields = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in params.items())
        return _html_page("Working...", _FORM_POST, fragments={"fields": fields}, action=sign_in.redirect_uri,
                          headers={"Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'"})
    if sign_in.response_mode == "fragment":
        return web.Response(status=302, headers={"Location": f"{sign_in.redirect_uri}#{urlencode(params)}",
                                                 "Cache-Control": "no-store"})
    return redirect_to(sign_in.redirect_uri, params)
