"""What clients read before they sign in: OIDC discovery, signing keys, and the user realm."""

from __future__ import annotations

from aiohttp import web

from devstack.entra.emulator import ENTRA_KEY
from devstack.entra.errors import EntraError
from devstack.entra.http import check_tenant, error_response, request_correlation_id
from devstack.entra.model import RESPONSE_MODES, TENANT_ALIASES


async def openid_configuration(request: web.Request) -> web.Response:
    """OIDC discovery document (the fields MSAL and azure-identity read, plus the usual extras)."""
    emu = request.app[ENTRA_KEY]
    try:
        tenant = check_tenant(request, emu)
    except EntraError as err:
        return error_response(err, request_correlation_id(request))
    root = f"{emu.base}/{tenant}"
    # As Entra: a tenant's own issuer; for organizations and common, the template with {tenantid}.
    issuer = emu.issuer_for("{tenantid}" if tenant.lower() in TENANT_ALIASES else tenant)
    return web.json_response({
        "issuer": issuer,
        "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
        "token_endpoint": f"{root}/oauth2/v2.0/token",
        "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
        "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
        "jwks_uri": f"{root}/discovery/v2.0/keys",
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "kerberos_endpoint": f"{root}/kerberos",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                  "client_secret_basic"],
        "response_modes_supported": sorted(RESPONSE_MODES),
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                             "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time",
                             "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash",
                             "c_hash", "email"],
        "grant_types_supported": sorted(emu.grants),
        "request_uri_parameter_supported": False,
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    })


async def jwks(request: web.Request) -> web.Response:
    """Signing keys."""
    emu = request.app[ENTRA_KEY]
    try:
        tenant = check_tenant(request, emu)
    except EntraError as err:
        return error_response(err, request_correlation_id(request))
    return web.json_response(emu.jwks(tenant))


async def user_realm(request: web.Request) -> web.Response:
    """MSAL asks this before ROPC to learn whether the user is federated; everyone here is managed."""
    emu = request.app[ENTRA_KEY]
    user = emu.find_user(request.match_info["username"])
    return web.json_response({
        "ver": "1.0", "account_type": "Managed" if user else "Unknown",
        "domain_name": request.match_info["username"].rpartition("@")[2],
        "cloud_instance_name": "microsoftonline.com", "cloud_audience_urn": "urn:federation:MicrosoftOnline",
    })
