"""The intake HTTP functions' logic: verify the sender's signature, translate, hand the event to the binding.

The function sets the `appointments` queue output and answers 202; the host writes the output when the
function returns, before the response leaves, and answers 500 if that write fails, so a 2xx means the event
is on the queue. Nothing is set on any other answer: 401 (bad or stale signature), 400 (a payload that
cannot be mapped), 422 (an unmapped organizer), 404 (that intake has no secret configured).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from shared.common import standard_webhooks, strict_json
from shared.exceptions import InvalidEventError, PermanentError, TransientError, WebhookSignatureError
from shared.intake import calcom, calendly, signatures, standard
from shared.intake.chains import through_chain
from shared.intake.config import IntakeSettings
from shared.intake.events import Ignored, IntakeEvent
from shared.problems import problem, problem_for
from shared.redaction import hash_user
from shared.storage.aliases import AliasStore

log = logging.getLogger(__name__)
CALCOM_ROUTE = "intake/calcom"
CALENDLY_ROUTE = "intake/calendly"
STANDARD_ROUTE = "intake/standard-webhooks"
MAX_BODY_BYTES = 256 * 1024


Translate = Callable[[Any], "IntakeEvent | Ignored"]


async def receive_calcom(req: func.HttpRequest, settings: IntakeSettings,
                         out: func.Out[str]) -> func.HttpResponse:
    """POST from Cal.com (`X-Cal-Signature-256`)."""
    secret = settings.calcom_secret
    if secret is None:
        return _not_configured("calcom", "CALCOM_WEBHOOK_SECRET")
    body = req.get_body()
    return await _receive("calcom", req, out,
                    lambda: signatures.verify_calcom(secret, req.headers.get("x-cal-signature-256"), body),
                    lambda doc: calcom.translate(doc, settings.organizers))


async def receive_calendly(req: func.HttpRequest, settings: IntakeSettings, aliases: AliasStore,
                           out: func.Out[Any]) -> func.HttpResponse:
    """POST from Calendly (`Calendly-Webhook-Signature: t=…,v1=…`); rebooked invitees are linked in `aliases`."""
    key = settings.calendly_signing_key
    if key is None:
        return _not_configured("calendly", "CALENDLY_WEBHOOK_SIGNING_KEY")
    body = req.get_body()
    return await _receive("calendly", req, out,
                    lambda: signatures.verify_calendly(key, req.headers.get("calendly-webhook-signature"), body),
                    lambda doc: calendly.translate(doc, settings.organizers), aliases)


async def receive_standard(req: func.HttpRequest, settings: IntakeSettings,
                         out: func.Out[str]) -> func.HttpResponse:
    """POST from any Standard Webhooks sender carrying contract-v1 events."""
    if not settings.standard_secrets:
        return _not_configured("standard", "INTAKE_WEBHOOK_SECRET")
    verified: list[str] = []

    def verify() -> None:
        verified.append(standard_webhooks.verify(settings.standard_secrets, dict(req.headers), req.get_body()))

    return await _receive("standard", req, out, verify,
                    lambda doc: standard.translate(doc, verified[0], settings.organizers))


async def _receive(source: str, req: func.HttpRequest, out: func.Out[Any], verify: Callable[[], None],
                   translate: Translate, aliases: AliasStore | None = None) -> func.HttpResponse:
    body = req.get_body()
    if len(body) > MAX_BODY_BYTES:
        return problem(413, "payload_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
    try:
        verify()
    except WebhookSignatureError as exc:
        log.warning("intake %s: signature refused: %s", source, exc, extra={"source": source,
                                                                            "outcome": "unauthorized"})
        return problem(401, exc.reason, str(exc))
    try:
        doc = strict_json.loads(strict_json.decode_utf8(body))
    except ValueError:  # UnicodeDecodeError included
        log.warning("intake %s: body is not JSON", source, extra={"source": source, "reason": "invalid_json"})
        return problem(400, "invalid_json", "the body is not UTF-8 JSON")
    try:
        # Off the event loop: mapping the organizer may read the token vault.
        translated = await asyncio.to_thread(translate, doc)
        # Calendly: keyed by the first booking of the chain, links recorded before the 2xx (intake/chains).
        chained = await through_chain(translated, aliases) if aliases is not None else translated
        events = [chained] if isinstance(chained, IntakeEvent) else [] if isinstance(chained, Ignored) else chained
    except TransientError as exc:
        log.warning("intake %s: %s", source, exc.reason, extra={"source": source, "reason": exc.reason})
        return problem_for(exc)
    except PermanentError as exc:
        # The reason and the field-level detail only: the payload itself carries personal data.
        log.warning("intake %s: %s: %s", source, exc.reason, exc.detail if isinstance(exc, InvalidEventError)
                    else "organizer not mapped", extra={"source": source, "reason": exc.reason})
        return problem(exc.http_status, exc.reason, exc.detail)
    if not events:
        ignored = chained if isinstance(chained, Ignored) else Ignored("nothing to enqueue")
        log.info("intake %s: nothing to enqueue: %s", source, ignored.reason,
                 extra={"source": source, "outcome": "ignored", "event_id": ignored.event_id})
        return _json(200, {"eventId": ignored.event_id, "appointmentId": ignored.appointment_id,
                           "ignored": ignored.reason})
    # One event is one message; a folded chain (several) is a list, which the host writes one message each.
    out.set(events[0].to_message() if len(events) == 1 else [event.to_message() for event in events])
    for event in events:
        log.info("intake %s: %s enqueued", source, event.type,
                 extra={"source": source, "outcome": "enqueued", "event_id": event.event_id,
                        "appointment_id": event.appointment_id, "organizer_hash": hash_user(event.event["organizer"])})
    first = events[0]
    return _json(202, {"eventId": first.event_id, "type": first.type, "appointmentId": first.appointment_id})


def _json(status: int, body: dict[str, Any]) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({k: v for k, v in body.items() if v is not None}), status_code=status,
                             mimetype="application/json", headers={"Cache-Control": "no-store"})


def _not_configured(source: str, setting: str) -> func.HttpResponse:
    return problem(404, "intake_not_configured", f"the {source} intake is off: set {setting} to turn it on")
