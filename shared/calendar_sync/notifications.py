"""Graph's notification POSTs as the app queues them (pure, no I/O: the HTTP function must answer within 3 s).

Graph posts a collection `{"value": [...]}`: change notifications (`subscriptionId`, `clientState`,
`changeType`, `resource`, `resourceData` with the event's `id` and `@odata.etag`) or lifecycle notifications
(`lifecycleEvent`: reauthorizationRequired, subscriptionRemoved, missed). Each item becomes one message on
`calendar-notifications`, so one bad or slow item never holds the others back. Nothing is checked against
storage here: the queue function checks each item's clientState before anything else.
"""

from __future__ import annotations

import json
from typing import Any

CHANGE = "change"
LIFECYCLE = "lifecycle"
# One POST carries at most this many items (Graph batches; a stranger's flood does not get further).
MAX_ITEMS = 1000
MAX_BODY_BYTES = 1024 * 1024
_MAX_TEXT = 4096


def queue_messages(body: bytes, kind: str) -> list[str]:
    """One queue message per notification item; ValueError naming what is wrong with the POST."""
    if len(body) > MAX_BODY_BYTES:
        raise ValueError("the notification body is too large")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the notification body is not JSON") from None
    items = doc.get("value") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items or len(items) > MAX_ITEMS:
        raise ValueError("a notification body is an object whose 'value' is a list of 1 to 1000 notifications")
    messages = []
    for item in items:
        # Only the shape is refused here (Graph retries a refused POST, so a whole batch must not fail for one
        # item): an item without its clientState or lifecycleEvent is queued, and dropped with its reason there.
        if not isinstance(item, dict) or not _text(item.get("subscriptionId")):
            raise ValueError("each notification names its subscriptionId")
        messages.append(json.dumps({"kind": kind, "notification": item, "attempt": 0}, separators=(",", ":")))
    return messages


def event_id_of(notification: dict[str, Any]) -> str | None:
    """The event's (immutable) id: resourceData.id, else the last segment of `resource`."""
    data = notification.get("resourceData")
    if isinstance(data, dict) and _text(data.get("id")):
        return str(data["id"])
    resource = notification.get("resource")
    if _text(resource):
        segment = str(resource).rstrip("/").rsplit("/", 1)[-1]
        # Some resources read Users('..')/Events('<id>').
        return segment.removeprefix("Events('").removeprefix("events('").rstrip("')") or None
    return None


def etag_of(notification: dict[str, Any]) -> str:
    """The event version the notification is about (resourceData's @odata.etag), or ''."""
    data = notification.get("resourceData")
    value = data.get("@odata.etag") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def _text(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_TEXT
