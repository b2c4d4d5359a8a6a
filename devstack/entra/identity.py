"""The managed-identity endpoint of App Service and Azure Functions, as the platform serves it to a process.

`GET <IDENTITY_ENDPOINT>?api-version=2019-08-01&resource=<uri>[&client_id=|&object_id=|&principal_id=|&mi_res_id=]`
with the header `X-IDENTITY-HEADER: <IDENTITY_HEADER>`, answered with `access_token`, `expires_on` (epoch
seconds, as text), `resource`, `token_type` and `client_id`. azure-identity's ManagedIdentityCredential (through
MSAL's ManagedIdentityClient) finds it through the two environment variables, unmodified.
"""

from __future__ import annotations

import secrets

from aiohttp import web

from devstack.entra.emulator import ENTRA_KEY

API_VERSION = "2019-08-01"
IDENTITY_PATH = "/msi/token"


def _error(status: int, message: str) -> web.Response:
    # App Service's own error shape; MSAL reports it as "statusCode, message".
    return web.json_response({"statusCode": status, "message": message}, status=status)


async def managed_identity_token(request: web.Request) -> web.Response:
    """A token for the process's managed identity (system-assigned, or the user-assigned one it names)."""
    emu = request.app[ENTRA_KEY]
    expected = emu.directory.identity_header
    given = request.headers.get("X-IDENTITY-HEADER", "")
    if not expected or not secrets.compare_digest(given.encode(), expected.encode()):
        return _error(401, "The X-IDENTITY-HEADER header is missing or does not match the IDENTITY_HEADER of "
                           "this instance.")
    query = request.query
    if query.get("api-version") != API_VERSION:
        return _error(400, f"Unsupported api-version {query.get('api-version')!r}; use {API_VERSION}.")
    resource = query.get("resource", "").strip()
    if not resource:
        return _error(400, "The 'resource' parameter is required.")
    identity = emu.directory.managed_identity(
        client_id=query.get("client_id"), object_id=query.get("object_id") or query.get("principal_id"),
        resource_id=query.get("mi_res_id"))
    if identity is None:
        return _error(400, "No managed identity with the given id is assigned to this resource, or no "
                           "system-assigned identity is enabled.")
    return web.json_response(emu.issue_managed_identity_token(identity, resource),
                             headers={"Cache-Control": "no-store"})
