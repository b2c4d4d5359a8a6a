"""The HTTP twin: ad-hoc join-URL lookups with the same resolver and error classes as the queue path."""

from __future__ import annotations

import asyncio
import json
import logging

import azure.functions as func

from shared.common.clock import utc_now
from shared.common.fields import check_https_url, check_organizer, check_path_segment, optional_guid
from shared.common.vocabulary import OutcomeKind
from shared.exceptions import BearerError, ForbiddenError, InvalidEventError, JoinLinkError
from shared.identity.app_credential import AppCredential
from shared.identity.bearer import BearerValidator, Caller
from shared.identity.obo import OboTokenSource
from shared.pipeline.join_url_resolver import JoinUrlResolver
from shared.problems import bearer_problem, bearer_token, problem, problem_for
from shared.redaction import hash_tenant, hash_user

log = logging.getLogger(__name__)
_MAX_PARAM = 2048


def _lookup_params(req: func.HttpRequest,
                   caller: Caller | None = None) -> tuple[str, str | None, str | None, str | None]:
    def param(name: str) -> str | None:
        value = (req.params.get(name) or "").strip()
        if len(value) > _MAX_PARAM or any(ch in value for ch in "\r\n\x00"):
            raise InvalidEventError(f"query parameter {name!r} is too long or has control characters")
        return value or None

    organizer = param("organizer")
    meeting_id, join_web_url = param("meetingId"), param("joinWebUrl")
    tenant = optional_guid({"tenantId": param("tenantId")}, "tenantId")
    if caller is not None:
        # A bearer caller acts as themselves, in their own tenant: Graph would refuse anything else anyway.
        if organizer is not None and not caller.is_(organizer):
            raise ForbiddenError("with a bearer token, 'organizer' must be the signed-in user (or left out)",
                                 reason="organizer_mismatch")
        if tenant is not None and tenant != caller.tenant_id:
            raise ForbiddenError("with a bearer token, 'tenantId' must be the token's tenant (or left out)",
                                 reason="organizer_mismatch")
        organizer, tenant = organizer or caller.oid, caller.tenant_id
    if organizer is None:
        raise InvalidEventError("query parameter 'organizer' (object id or UPN) is required")
    check_organizer(organizer)
    if meeting_id is not None:
        check_path_segment("meetingId", meeting_id)
    if (meeting_id is None) == (join_web_url is None):
        raise InvalidEventError("give exactly one of the query parameters 'meetingId' or 'joinWebUrl'")
    if join_web_url is not None:
        check_https_url("joinWebUrl", join_web_url)
    return organizer, meeting_id, join_web_url, tenant


async def get_join_url(req: func.HttpRequest, resolver: JoinUrlResolver, bearer: BearerValidator | None = None,
                       *, require_bearer: bool = False, credential: AppCredential | None = None) -> func.HttpResponse:
    """GET ?organizer=…&meetingId=… or ?organizer=…&joinWebUrl=… [&tenantId=…] → the meeting's join URL as JSON.

    With `bearer` and an `Authorization: Bearer` header, Graph is called On-Behalf-Of the caller (with the
    app's `credential`); otherwise with the organizer's vault credential (the function-key path).
    """
    tokens: OboTokenSource | None = None
    caller: Caller | None = None
    try:
        assertion = bearer_token(req) if bearer is not None else None
        if assertion is None and require_bearer:
            raise BearerError(401, "missing_token", "this endpoint needs an Entra bearer token "
                              "(Authorization: Bearer …) for this API")
        if assertion is not None and bearer is not None:
            caller, tokens = await _bearer_path(bearer, assertion, credential)
        organizer, meeting_id, join_web_url, tenant = _lookup_params(req, caller)
        tenant = (await resolver.identify(organizer, tenant, tokens)).tenant_id
        organizer_join_url = join_web_url
        # No sleeping on a caller's connection: a 429 goes straight back with its Retry-After.
        meeting_id, join_url = await resolver.resolve(organizer, meeting_id, join_web_url,
                                                      inline_throttle_budget=0.0, tokens=tokens, tenant=tenant)
    except BearerError as exc:
        log.info("join-url lookup refused: %s", exc.error, extra={"reason": exc.error, "outcome": "unauthorized"})
        return bearer_problem(exc)
    except JoinLinkError as exc:
        log.info("join-url lookup failed: %s", exc.reason,
                 extra={"reason": exc.reason, "outcome": OutcomeKind.REJECTED})
        return problem_for(exc)
    except Exception:
        log.exception("join-url lookup crashed")
        return problem(500, "internal_error", "the lookup failed unexpectedly; it has been logged")
    log.info("join-url lookup ok", extra={"organizer_hash": hash_user(organizer), "tenant_hash": hash_tenant(tenant),
                                          "outcome": OutcomeKind.READY,
                                          "auth": "bearer" if caller is not None else "key"})
    # The staff link is known when the caller gave it; looking it up would need another Graph call and scope.
    body = {"organizer": organizer, "onlineMeetingId": meeting_id, "joinUrl": join_url,
            "organizerJoinUrl": organizer_join_url, "tenantId": tenant, "resolvedAt": utc_now()}
    return func.HttpResponse(json.dumps(body), status_code=200, mimetype="application/json",
                             headers={"Cache-Control": "no-store"})


async def _bearer_path(bearer: BearerValidator, assertion: str,
                       credential: AppCredential | None) -> tuple[Caller, OboTokenSource]:
    """Validate the caller's token, and a token source that exchanges it On-Behalf-Of (for this request only)."""
    caller = await asyncio.to_thread(bearer.validate, assertion)
    return caller, OboTokenSource(bearer.settings, assertion, caller, app_credential=credential)
