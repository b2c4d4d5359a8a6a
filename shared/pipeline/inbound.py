"""Appointment events: parse plain JSON, CloudEvents 1.0 and Event Grid envelopes into one typed model."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from shared.exceptions import InvalidEventError, UnsupportedEventTypeError

EVENT_TYPE = "appointment.created"
# Re-enqueued copies (after a long Graph Retry-After) wrap the untouched original under this key.
REQUEUE_KEY = "$requeue"
_MAX_ID = 256
_MAX_URL = 2048
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_UPN = re.compile(r"^[^\s@/\\]+@[^\s@/\\]+\.[^\s@/\\]+$")


@dataclass(frozen=True)
class AppointmentEvent:
    """An "appointment created" event, whatever envelope it came in."""

    event_id: str
    appointment_id: str
    organizer: str
    online_meeting_id: str | None
    join_web_url: str | None
    callback_url: str | None
    occurred_at: datetime | None
    schema: str


@dataclass(frozen=True)
class Delivery:
    """One queue message as the processor sees it: the original text and how often it was tried."""

    text: str
    dequeue_count: int = 1
    requeue_attempt: int = 0


def unwrap_requeued(text: str) -> Delivery:
    """Split a re-enqueued copy into the original message text and its requeue attempt."""
    if REQUEUE_KEY not in text:
        return Delivery(text=text)
    try:
        doc = json.loads(text)
    except ValueError:
        return Delivery(text=text)
    meta = doc.get(REQUEUE_KEY) if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or not isinstance(doc.get("message"), str):
        return Delivery(text=text)
    attempt = meta.get("attempt")
    return Delivery(text=doc["message"], requeue_attempt=attempt if isinstance(attempt, int) else 0)


def wrap_requeued(original_text: str, attempt: int, reason: str) -> str:
    """Wrap the original message for re-enqueueing, keeping it byte-for-byte."""
    return json.dumps({REQUEUE_KEY: {"attempt": attempt, "reason": reason}, "message": original_text})


def parse_event(text: str) -> AppointmentEvent:
    """Parse and validate a message; raise InvalidEventError with a reason a person can act on."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InvalidEventError(f"message is not JSON: {exc}", reason="invalid_json") from None
    if isinstance(doc, list):
        # Event Grid may batch; a queue message must carry exactly one event or some would be lost.
        if len(doc) != 1:
            raise InvalidEventError(f"message holds {len(doc)} events; send exactly one per message")
        doc = doc[0]
    if not isinstance(doc, dict):
        raise InvalidEventError("message must be a JSON object")
    if "specversion" in doc:
        return _from_cloudevent(doc)
    if "eventType" in doc and "dataVersion" in doc:
        return _from_eventgrid(doc)
    return _from_plain(doc)


def _from_plain(doc: dict[str, Any]) -> AppointmentEvent:
    event_type = doc.get("type", EVENT_TYPE)
    _check_type(event_type)
    return _build(doc, event_id=doc.get("id"), occurred_at=doc.get("occurredAt"), schema="plain")


def _from_cloudevent(doc: dict[str, Any]) -> AppointmentEvent:
    if doc.get("specversion") != "1.0":
        raise InvalidEventError(f"CloudEvents specversion {doc.get('specversion')!r} is not supported; use 1.0")
    for attribute in ("id", "source", "type"):
        if not isinstance(doc.get(attribute), str) or not doc[attribute]:
            raise InvalidEventError(f"CloudEvent attribute {attribute!r} is required")
    _check_type(doc["type"])
    data = _data_object(doc, "CloudEvent")
    return _build(data, event_id=doc["id"], occurred_at=data.get("occurredAt") or doc.get("time"),
                  schema="cloudevents")


def _from_eventgrid(doc: dict[str, Any]) -> AppointmentEvent:
    _check_type(doc.get("eventType"))
    data = _data_object(doc, "Event Grid event")
    return _build(data, event_id=doc.get("id"), occurred_at=data.get("occurredAt") or doc.get("eventTime"),
                  schema="eventgrid")


def _data_object(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    data = doc.get("data")
    if isinstance(data, str):
        # Some producers put JSON text in data; accept it rather than reject a usable event.
        try:
            data = json.loads(data)
        except ValueError:
            pass
    if not isinstance(data, dict):
        raise InvalidEventError(f"{kind} 'data' must be a JSON object with the appointment fields")
    return data


def _check_type(event_type: Any) -> None:
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEventError("event type is required")
    if event_type != EVENT_TYPE:
        raise UnsupportedEventTypeError(f"event type {event_type!r} is not handled; expected {EVENT_TYPE!r}")


def _build(data: dict[str, Any], *, event_id: Any, occurred_at: Any, schema: str) -> AppointmentEvent:
    meeting_id = optional_text(data, "onlineMeetingId")
    join_web_url = optional_text(data, "joinWebUrl", limit=_MAX_URL)
    if meeting_id is None and join_web_url is None:
        raise InvalidEventError("one of 'onlineMeetingId' or 'joinWebUrl' is required")
    if join_web_url is not None:
        check_https_url("joinWebUrl", join_web_url)
    callback_url = optional_text(data, "callbackUrl", limit=_MAX_URL)
    if callback_url is not None:
        check_https_url("callbackUrl", callback_url, allow_http=True)
    return AppointmentEvent(
        event_id=required_text({"id": event_id}, "id"),
        appointment_id=required_text(data, "appointmentId"),
        organizer=check_organizer(required_text(data, "organizer")),
        online_meeting_id=meeting_id,
        join_web_url=join_web_url,
        callback_url=callback_url,
        occurred_at=_timestamp(occurred_at),
        schema=schema,
    )


def required_text(data: dict[str, Any], field: str, limit: int = _MAX_ID) -> str:
    """Return a required non-empty string field, or raise InvalidEventError naming it."""
    value = optional_text(data, field, limit)
    if value is None:
        raise InvalidEventError(f"{field!r} is required")
    return value


def optional_text(data: dict[str, Any], field: str, limit: int = _MAX_ID) -> str | None:
    """Return an optional string field stripped, None when absent or empty."""
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEventError(f"{field!r} must be a string")
    value = value.strip()
    if len(value) > limit:
        raise InvalidEventError(f"{field!r} is longer than {limit} characters")
    if any(ch in value for ch in "\r\n\t\x00"):
        raise InvalidEventError(f"{field!r} contains control characters")
    return value or None


def check_organizer(value: str) -> str:
    """Accept an Entra object id (GUID) or a UPN; raise InvalidEventError otherwise."""
    if _GUID.match(value) or _UPN.match(value):
        return value
    raise InvalidEventError("'organizer' must be an Entra object id (GUID) or a user principal name")


def check_https_url(field: str, value: str, *, allow_http: bool = False) -> str:
    """Accept an absolute https URL (or http where allowed); raise InvalidEventError otherwise."""
    try:
        parts = urlsplit(value)
    except ValueError:
        raise InvalidEventError(f"{field!r} is not a URL") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        raise InvalidEventError(f"{field!r} must be an absolute {' or '.join(schemes)} URL")
    return value


def _timestamp(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise InvalidEventError("'occurredAt' must be an ISO 8601 timestamp")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEventError(f"'occurredAt' {value!r} is not an ISO 8601 timestamp") from None
