"""Entra ID (Azure AD v2.0 endpoint) emulator that unmodified MSAL and azure-identity can talk to.

Several tenants, each with its own users (the home tenant holds the app registrations; customer tenants
consent to them). Endpoints (under /{tenant}, where tenant is a tenant id, `organizations` or `common`):
  GET  /v2.0/.well-known/openid-configuration   OIDC discovery (the tenant's issuer)
  GET  /discovery/v2.0/keys                      JWKS (one key for every tenant, as in Entra)
  GET|POST /oauth2/v2.0/authorize                sign-in and consent page (authorization code + PKCE)
  POST /oauth2/v2.0/devicecode                   device authorization (RFC 8628)
  GET|POST /oauth2/deviceauth                    where the user enters a device code
  POST /oauth2/v2.0/token                        grants: see DEFAULT_GRANTS; clients prove themselves with a
                                                 secret, a certificate or a federated credential (assertions)
  GET|POST /v2.0/adminconsent (and /adminconsent) an administrator consents for the organization
Not under a tenant: GET /msi/token, the App Service managed-identity endpoint (IDENTITY_ENDPOINT).
Admin (loopback only): /_admin/stats|reset|config|revoke|interaction_required|device/approve|consent.

Modules: `app` (create_entra_app and the table of every route), `directory` (tenants, users, apps,
consent, managed identities), `emulator` (state and token issuing), `assertions` (client assertions),
`grants` (token endpoint grants), `tokens` (the token endpoint), `discovery`, `authorize`, `device`,
`consent` and `identity` (the other endpoints), `pages` (HTML), `admin`, and the shared `model`, `errors`
and `http`.
A new endpoint is a handler in its own module plus a row in app.ROUTES; a new grant is an entry in
grants.DEFAULT_GRANTS.
"""

from devstack.entra.app import create_entra_app
from devstack.entra.emulator import ENTRA_KEY, EntraEmulator

__all__ = ["ENTRA_KEY", "EntraEmulator", "create_entra_app"]
