"""Outbound events for the scheduling system: the webhook types, their ids, and what goes on `webhook-outbox`."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.common.clock import utc_now

EVENT_READY = "appointment.joinurl.ready"
EVENT_UPDATED = "appointment.joinurl.updated"
EVENT_CANCELLED = "appointment.joinurl.cancelled"
EVENT_FAILED = "appointment.joinurl.failed"
EVENT_SMS_FAILED = "appointment.joinurl.sms_failed"
EVENT_ATTENDANCE = "appointment.attendance"
# Kind (the webhook-id suffix) -> event type; either names an event.
_SUFFIX = {EVENT_READY: "ready", EVENT_UPDATED: "updated", EVENT_CANCELLED: "cancelled", EVENT_FAILED: "failed",
           EVENT_SMS_FAILED: "sms_failed", EVENT_ATTENDANCE: "attendance"}
_KINDS = {**{suffix: event_type for event_type, suffix in _SUFFIX.items()}, **{t: t for t in _SUFFIX}}
# Event ids that can stand in a webhook-id as they are; anything else (dots above all: the id is part
# of the signed content) is hashed, which keeps the id stable across retries and replays.
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


@dataclass(frozen=True)
class WebhookEvent:
    """One outbox message: the exact body to POST, its stable webhook-id and its destination override."""

    webhook_id: str
    type: str
    body: str
    callback_url: str | None = None
    created_at: str = field(default_factory=utc_now)

    def to_message(self) -> str:
        """The `webhook-outbox` queue message text."""
        return json.dumps({"webhookId": self.webhook_id, "type": self.type, "body": self.body,
                           "callbackUrl": self.callback_url, "createdAt": self.created_at})

    @classmethod
    def from_message(cls, text: str) -> WebhookEvent:
        """Parse an outbox message; raise ValueError naming what is wrong."""
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("outbox message must be a JSON object")
        for name in ("webhookId", "type", "body"):
            if not isinstance(doc.get(name), str) or not doc[name]:
                raise ValueError(f"outbox message needs a non-empty string {name!r}")
        callback = doc.get("callbackUrl")
        if callback is not None and not isinstance(callback, str):
            raise ValueError("outbox message 'callbackUrl' must be a string")
        created = doc.get("createdAt")
        return cls(doc["webhookId"], doc["type"], doc["body"], callback or None,
                   created if isinstance(created, str) else "")


def webhook_id_for(event_id: str, kind: str) -> str:
    """The webhook-id for an appointment event's outcome: stable across retries and replays."""
    suffix = _SUFFIX[_KINDS[kind]]
    if _SAFE_ID.match(event_id):
        return f"{event_id}_{suffix}"
    return f"evt_{hashlib.sha256(event_id.encode()).hexdigest()[:40]}_{suffix}"


def webhook_event(kind: str, data: Mapping[str, Any], event_id: str, *, callback_url: str | None = None,
                  timestamp: str | None = None) -> WebhookEvent:
    """Build an outbox event (a kind such as `ready` or the full type) with its body serialized once, for good."""
    event_type = _KINDS.get(kind)
    if event_type is None:
        raise ValueError(f"unknown webhook kind {kind!r}")
    # Serialized here, once: every retry must send these exact bytes, or signatures and dedup break.
    body = json.dumps({"type": event_type, "timestamp": timestamp or utc_now(), "data": dict(data)},
                      separators=(",", ":"), ensure_ascii=False)
    return WebhookEvent(webhook_id_for(event_id, event_type), event_type, body, callback_url)
