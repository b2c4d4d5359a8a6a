"""The HTTP functions Microsoft Graph posts to: the validation echo, then notifications onto a queue.

Routes are anonymous, on purpose: Graph calls them with no credential of its own, and a function key would
have to be in the notification URL, known to the app (in Azure, a key made by the deployment and read back)
and rotated together with every subscription's notificationUrl. Graph's own check is the clientState: a
random secret per subscription that every notification carries, compared with the stored one before anything
else is done (the queue function; a mismatch is dropped and counted). This function does no storage call:
the validation request (`?validationToken=`) is echoed as `text/plain` at once (Graph allows 10 s), and a
notification POST is only checked for shape and put on `calendar-notifications` through the output binding,
which the host writes before the response leaves, so the 202 (Graph wants one within 3 s) means it is queued.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.calendar_sync.keeper import LIFECYCLE_ROUTE, NOTIFICATIONS_ROUTE
from shared.calendar_sync.notifications import CHANGE, LIFECYCLE, queue_messages
from shared.common.vocabulary import MeetingKind
from shared.problems import problem
from shared.settings import Settings

log = logging.getLogger(__name__)
__all__ = ["LIFECYCLE_ROUTE", "NOTIFICATIONS_ROUTE", "receive_changes", "receive_lifecycle"]


def receive_changes(req: func.HttpRequest, out: func.Out[list[str]], settings: Settings) -> func.HttpResponse:
    """Change notifications of the organizers' calendars (or Graph's validation request)."""
    return _receive(req, out, CHANGE, settings)


def receive_lifecycle(req: func.HttpRequest, out: func.Out[list[str]], settings: Settings) -> func.HttpResponse:
    """Lifecycle notifications (reauthorizationRequired, subscriptionRemoved, missed), or the validation request."""
    return _receive(req, out, LIFECYCLE, settings)


def _receive(req: func.HttpRequest, out: func.Out[list[str]], kind: str, settings: Settings) -> func.HttpResponse:
    if settings.meeting_kind != MeetingKind.CALENDAR:
        # No subscription is made in this mode: nothing posted here can be one of the app's.
        return problem(404, "intake_not_configured", "the Graph notification intake is off: MEETING_KIND=calendar "
                       "turns it on")
    token = req.params.get("validationToken")
    if token is not None:
        # The parameters arrive decoded; Graph wants the token back as it is, as plain text.
        return func.HttpResponse(token, status_code=200, mimetype="text/plain")
    try:
        messages = queue_messages(req.get_body(), kind)
    except ValueError as exc:
        log.warning("calendar notification refused: %s", exc, extra={"outcome": "notification_refused"})
        return problem(400, "invalid_notification", str(exc))
    out.set(messages)
    return func.HttpResponse(status_code=202)
