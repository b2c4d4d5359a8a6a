"""The Entra emulator's aiohttp application, with every endpoint in one table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from devstack.entra.admin import (
    DEFAULT_LIFETIME_KEY,
    admin_config,
    admin_consent,
    admin_device_approve,
    admin_interaction_required,
    admin_reset,
    admin_revoke,
    admin_stats,
    loopback_admin,
)
from devstack.entra.authorize import authorize, authorize_submit
from devstack.entra.consent import admin_consent as admin_consent_page
from devstack.entra.consent import admin_consent_submit
from devstack.entra.device import device_authorization, device_login, device_login_submit
from devstack.entra.discovery import jwks, openid_configuration, user_realm
from devstack.entra.emulator import ENTRA_KEY, EntraEmulator
from devstack.entra.hold import HOLD_KEY, RefreshHold, admin_hold, refresh_hold
from devstack.entra.identity import IDENTITY_PATH, managed_identity_token
from devstack.entra.tokens import token

# web.get also answers HEAD, as router.add_get does.
ROUTES = (
    web.get("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration),
    web.get("/{tenant}/discovery/v2.0/keys", jwks),
    web.get("/{tenant}/oauth2/v2.0/authorize", authorize),
    web.post("/{tenant}/oauth2/v2.0/authorize", authorize_submit),
    web.post("/{tenant}/oauth2/v2.0/devicecode", device_authorization),
    web.get("/{tenant}/oauth2/deviceauth", device_login),
    web.post("/{tenant}/oauth2/deviceauth", device_login_submit),
    web.post("/{tenant}/oauth2/v2.0/token", token),
    web.get("/{tenant}/v2.0/adminconsent", admin_consent_page),
    web.post("/{tenant}/v2.0/adminconsent", admin_consent_submit),
    web.get("/{tenant}/adminconsent", admin_consent_page),
    web.post("/{tenant}/adminconsent", admin_consent_submit),
    web.get(IDENTITY_PATH, managed_identity_token),
    web.get("/common/userrealm/{username}", user_realm),
    web.get("/_admin/stats", admin_stats),
    web.post("/_admin/reset", admin_reset),
    web.put("/_admin/config", admin_config),
    web.post("/_admin/revoke", admin_revoke),
    web.post("/_admin/interaction_required", admin_interaction_required),
    web.delete("/_admin/interaction_required", admin_interaction_required),
    web.post("/_admin/device/approve", admin_device_approve),
    web.get("/_admin/consent", admin_consent),
    web.post("/_admin/consent", admin_consent),
    web.put("/_admin/consent", admin_consent),
    web.delete("/_admin/consent", admin_consent),
    web.get("/_admin/hold", admin_hold),
    web.put("/_admin/hold", admin_hold),
    web.delete("/_admin/hold", admin_hold),
)


def create_entra_app(directory: Mapping[str, Any], issuer_base: str,
                     access_token_lifetime: int = 3600) -> web.Application:
    """Build the Entra emulator aiohttp app; the EntraEmulator state is at app[ENTRA_KEY]."""
    app = web.Application(middlewares=[loopback_admin, refresh_hold])
    app[ENTRA_KEY] = EntraEmulator(directory, issuer_base, access_token_lifetime)
    app[HOLD_KEY] = RefreshHold()
    app[DEFAULT_LIFETIME_KEY] = access_token_lifetime
    app.add_routes(ROUTES)
    return app
