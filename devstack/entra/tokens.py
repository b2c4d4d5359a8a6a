"""The token endpoint: client authentication, then the grant handler for grant_type."""

from __future__ import annotations

import logging

from aiohttp import web

from devstack.entra.emulator import ENTRA_KEY
from devstack.entra.errors import EntraError, secret_required
from devstack.entra.http import check_tenant, error_response, read_form, request_correlation_id
from devstack.entra.model import PUBLIC_CLIENT_GRANTS, TokenRequest

# One logger for the whole emulator, named for the package.
log = logging.getLogger("devstack.entra")


async def token(request: web.Request) -> web.Response:
    """The token endpoint: client authentication then dispatch on grant_type."""
    emu = request.app[ENTRA_KEY]
    correlation_id = request_correlation_id(request)
    emu.stats.token_requests += 1
    fields = await read_form(request)
    grant_type = fields.get("grant_type", "")
    emu.stats.by_grant[grant_type] += 1
    try:
        tenant = check_tenant(request, emu)
        if not grant_type:
            raise EntraError(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'grant_type'.")
        handler = emu.grants.get(grant_type)
        if handler is None:
            raise EntraError(400, "unsupported_grant_type", 70003,
                             f"The app requested an unsupported grant type '{grant_type}'.")
        client, confidential = emu.authenticate_client(request, fields, tenant)
        emu.stats.by_authority[tenant] += 1
        if not confidential and grant_type not in PUBLIC_CLIENT_GRANTS:
            raise secret_required()
        body = await handler(emu, TokenRequest(tenant, fields, client, correlation_id, confidential))
    except EntraError as err:
        log.info("token request failed: grant=%s error=%s AADSTS%d", grant_type, err.error, err.code)
        return error_response(err, correlation_id)
    return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache",
                                            "client-request-id": correlation_id})
