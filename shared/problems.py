"""RFC 9457 problem details for the HTTP functions."""

from __future__ import annotations

import json
import math

import azure.functions as func

from shared.exceptions import BearerError, JoinLinkError, PermanentError, TransientError

PROBLEM_JSON = "application/problem+json"
_TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
    413: "Content too large", 422: "Unprocessable content", 429: "Too many requests", 500: "Internal server error",
    502: "Bad gateway", 503: "Service unavailable",
}


def problem(status: int, reason: str, detail: str, *, retry_after: float | None = None,
            instance: str | None = None) -> func.HttpResponse:
    """A problem+json response; `reason` is the app's stable code, also used as the type's fragment."""
    body: dict[str, object] = {
        "type": f"urn:va-join-links:problem:{reason}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "reason": reason,
    }
    if instance:
        body["instance"] = instance
    headers = {"Cache-Control": "no-store"}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype=PROBLEM_JSON, headers=headers)


def problem_for(error: JoinLinkError, *, instance: str | None = None) -> func.HttpResponse:
    """The problem response for one of the app's classified errors."""
    if isinstance(error, (PermanentError, TransientError)):
        retry_after = error.retry_after if isinstance(error, TransientError) else None
        if isinstance(error, TransientError) and error.http_status in (429, 503) and retry_after is None:
            retry_after = 1.0
        return problem(error.http_status, error.reason, error.detail, retry_after=retry_after, instance=instance)
    return problem(500, "internal_error", "unexpected error", instance=instance)


def bearer_problem(error: BearerError) -> func.HttpResponse:
    """problem+json for a refused bearer token, with the RFC 6750 WWW-Authenticate challenge."""
    response = problem(error.status, error.reason, error.detail)
    challenge = "Bearer" if error.error == "missing_token" else f'Bearer error="{error.error}"'
    if error.scope:
        challenge += f', scope="{error.scope}"'
    response.headers["WWW-Authenticate"] = challenge
    return response


def bearer_token(req: func.HttpRequest) -> str | None:
    """The token of an `Authorization: Bearer` header, else None."""
    header = req.headers.get("authorization") or ""
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None
