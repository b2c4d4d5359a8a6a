"""What every Entra endpoint shares: tenant check, correlation id, form body, and Entra's JSON error."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aiohttp import web

from devstack.entra.emulator import EntraEmulator
from devstack.entra.errors import EntraError


def error_response(err: EntraError, correlation_id: str) -> web.Response:
    """Entra's JSON error response, with its trace and correlation ids."""
    trace_id = str(uuid.uuid4())
    ts = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return web.json_response({
        "error": err.error,
        "error_description": f"{err.message} Trace ID: {trace_id} Correlation ID: {correlation_id} "
                             f"Timestamp: {ts}",
        "error_codes": [err.code], "timestamp": ts, "trace_id": trace_id,
        "correlation_id": correlation_id, "error_uri": f"https://login.microsoftonline.com/error?code={err.code}",
        **err.extra,
    }, status=err.status, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def check_tenant(request: web.Request, emu: EntraEmulator) -> str:
    """The tenant in the path, if it is a known tenant or an alias; else invalid_tenant AADSTS90002."""
    return emu.directory.known_path_tenant(request.match_info["tenant"])


def request_correlation_id(request: web.Request) -> str:
    """The client's client-request-id, else a new one."""
    return request.headers.get("client-request-id") or str(uuid.uuid4())


async def read_form(request: web.Request) -> dict[str, str]:
    """The request's form fields (file uploads dropped)."""
    return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
