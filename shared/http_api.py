"""The HTTP twin: ad-hoc join-URL lookups with the same resolver and error classes as the queue path."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.events import check_https_url, check_organizer
from shared.exceptions import InvalidEventError, JoinLinkError
from shared.problems import problem, problem_for
from shared.records import utc_now
from shared.redaction import hash_user
from shared.resolver import JoinUrlResolver

log = logging.getLogger(__name__)
_MAX_PARAM = 2048


def _lookup_params(req: func.HttpRequest) -> tuple[str, str | None, str | None]:
    def param(name: str) -> str | None:
        value = (req.params.get(name) or "").strip()
        if len(value) > _MAX_PARAM or any(ch in value for ch in "\r\n\x00"):
            raise InvalidEventError(f"query parameter {name!r} is too long or has control characters")
        return value or None

    organizer = param("organizer")
    meeting_id, join_web_url = param("meetingId"), param("joinWebUrl")
    if organizer is None:
        raise InvalidEventError("query parameter 'organizer' (object id or UPN) is required")
    check_organizer(organizer)
    if (meeting_id is None) == (join_web_url is None):
        raise InvalidEventError("give exactly one of the query parameters 'meetingId' or 'joinWebUrl'")
    if join_web_url is not None:
        check_https_url("joinWebUrl", join_web_url)
    return organizer, meeting_id, join_web_url


async def get_join_url(req: func.HttpRequest, resolver: JoinUrlResolver) -> func.HttpResponse:
    """GET ?organizer=…&meetingId=… or ?organizer=…&joinWebUrl=… → the meeting's join URL as JSON."""
    try:
        organizer, meeting_id, join_web_url = _lookup_params(req)
        # No sleeping on a caller's connection: a 429 goes straight back with its Retry-After.
        meeting_id, join_url = await resolver.resolve(organizer, meeting_id, join_web_url,
                                                      inline_throttle_budget=0.0)
    except JoinLinkError as exc:
        log.info("join-url lookup failed: %s", getattr(exc, "reason", type(exc).__name__),
                 extra={"reason": getattr(exc, "reason", None), "outcome": "rejected"})
        return problem_for(exc)
    except Exception:
        log.exception("join-url lookup crashed")
        return problem(500, "internal_error", "the lookup failed unexpectedly; it has been logged")
    log.info("join-url lookup ok", extra={"organizer_hash": hash_user(organizer), "outcome": "ready"})
    body = {"organizer": organizer, "onlineMeetingId": meeting_id, "joinUrl": join_url, "resolvedAt": utc_now()}
    return func.HttpResponse(json.dumps(body), status_code=200, mimetype="application/json",
                             headers={"Cache-Control": "no-store"})
