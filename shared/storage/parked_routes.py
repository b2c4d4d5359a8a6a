"""What each parked queue holds and where it goes back: one route per queue of PARKED_QUEUES.

A rejection, dead letter or SMS failure record carries its original (inline, base64, or kept in a blob when
it was too big); a poison message is the original itself. Replay and the archive read them through ROUTES.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass

from shared import queues
from shared.exceptions import UnreadableRecordError
from shared.storage.overflow import KeptMessage


@dataclass(frozen=True)
class Found:
    """What replay reads from a message: the original to put back, and the reason and tenant to filter on."""

    payload: bytes | KeptMessage  # kept in a blob when it did not fit its record
    reason: str | None = None
    tenant: str | None = None


def tenant_of(payload: bytes) -> str | None:
    """The tenant an appointment event or an outbox message names (`tenantId`), lower-cased; None if none."""
    try:
        doc = json.loads(payload)
        if isinstance(doc, dict) and isinstance(doc.get("body"), str):
            doc = json.loads(doc["body"])  # an outbox message: the webhook body carries the data
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    data = doc["data"] if isinstance(doc.get("data"), dict) else doc
    if isinstance(doc.get("notification"), dict):  # a Graph notification, queued as it came
        data = doc["notification"]
    tenant = data.get("tenantId")
    return tenant.lower() if isinstance(tenant, str) and tenant else None


def _record_field(name: str) -> Callable[[bytes], Found]:
    def extract(content: bytes) -> Found:
        try:
            doc = json.loads(content)
        except (ValueError, RecursionError):
            raise UnreadableRecordError("record is not JSON") from None
        if not isinstance(doc, dict):
            raise UnreadableRecordError("record is not a JSON object")
        payload: bytes | KeptMessage | None = None
        if isinstance(doc.get(name), str) and doc[name]:
            payload = doc[name].encode("utf-8")
        elif isinstance(doc.get(name + "Base64"), str):
            # A message that was not UTF-8 text is kept as base64: put back exactly those bytes.
            try:
                payload = base64.b64decode(doc[name + "Base64"], validate=True)
            except ValueError:
                raise UnreadableRecordError(f"record's {name + 'Base64'!r} is not base64") from None
        elif doc.get(name + "Blob") is not None:
            try:
                payload = KeptMessage.from_dict(doc[name + "Blob"])
            except ValueError:
                raise UnreadableRecordError(f"record's {name + 'Blob'!r} is not a kept-message reference") from None
        if not payload:
            raise UnreadableRecordError(f"record has no {name!r}")
        reason, tenant = doc.get("reason"), doc.get("tenantId")
        if not (isinstance(tenant, str) and tenant) and isinstance(payload, bytes):
            tenant = tenant_of(payload)
        return Found(payload, reason if isinstance(reason, str) else None,
                     tenant.lower() if isinstance(tenant, str) and tenant else None)

    return extract


def _as_is(content: bytes) -> Found:
    # A poison message is the original message itself; it carries no reason.
    return Found(content, None, tenant_of(content))


@dataclass(frozen=True)
class Route:
    """Where a source queue's messages go back to, and how to get the original out of each."""

    source: str
    target: str
    extract: Callable[[bytes], Found]


ROUTES: dict[str, Route] = {
    route.source: route for route in (
        Route(queues.APPOINTMENTS_REJECTED, queues.APPOINTMENTS, _record_field("originalMessage")),
        Route(queues.APPOINTMENTS_POISON, queues.APPOINTMENTS, _as_is),
        Route(queues.WEBHOOK_DEAD_LETTER, queues.WEBHOOK_OUTBOX, _record_field("outboxMessage")),
        Route(queues.WEBHOOK_OUTBOX_POISON, queues.WEBHOOK_OUTBOX, _as_is),
        Route(queues.SMS_FAILED, queues.SMS_OUTBOX, _record_field("originalMessage")),
        Route(queues.SMS_OUTBOX_POISON, queues.SMS_OUTBOX, _as_is),
        Route(queues.ATTENDANCE_CHECKS_POISON, queues.ATTENDANCE_CHECKS, _as_is),
        Route(queues.CALENDAR_NOTIFICATIONS_POISON, queues.CALENDAR_NOTIFICATIONS, _as_is),
    )
}
ARCHIVE = "archive"
# Every parked queue has its way back: a queue added to PARKED_QUEUES without a route fails at import.
if set(ROUTES) != set(queues.PARKED_QUEUES):
    raise RuntimeError("every parked queue needs a replay route")
