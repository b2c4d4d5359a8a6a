"""Entra ID (Azure AD v2.0 endpoint) emulator that unmodified MSAL and azure-identity can talk to.

Endpoints (under /{tenant}, where tenant is the tenant id, `organizations` or `common`):
  GET  /v2.0/.well-known/openid-configuration   OIDC discovery
  GET  /discovery/v2.0/keys                      JWKS
  GET|POST /oauth2/v2.0/authorize                sign-in and consent page (authorization code + PKCE)
  POST /oauth2/v2.0/devicecode                   device authorization (RFC 8628)
  GET|POST /oauth2/deviceauth                    where the user enters a device code
  POST /oauth2/v2.0/token                        grants: see DEFAULT_GRANTS
Admin (loopback only): /_admin/stats|reset|config|revoke|interaction_required|device/approve.

Modules: `app` (create_entra_app and the table of every route), `emulator` (tenant state and token
issuing), `grants` (token endpoint grants), `tokens` (the token endpoint), `discovery`, `authorize` and
`device` (the other endpoints), `pages` (HTML), `admin`, and the shared `model`, `errors` and `http`.
A new endpoint is a handler in its own module plus a row in app.ROUTES; a new grant is an entry in
grants.DEFAULT_GRANTS.
"""

from devstack.entra.app import create_entra_app
from devstack.entra.emulator import ENTRA_KEY, EntraEmulator

__all__ = ["ENTRA_KEY", "EntraEmulator", "create_entra_app"]
