"""Appointment events: parse plain JSON, CloudEvents 1.0 and Event Grid envelopes into one typed model.

Beside the parser, its best-effort twin (`best_effort_ids`, `appointment_fields`): for a message the parser
refused, which event, appointment, organizer and tenant it names, read through the same envelopes, so a
rejection record and `replay --tenant` can say what the message was about.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.common import strict_json
from shared.common.fields import (
    MAX_URL,
    check_https_url,
    check_organizer,
    check_path_segment,
    optional_guid,
    optional_text,
    optional_timestamp,
    required_text,
)
from shared.exceptions import InvalidEventError, UnsupportedEventTypeError
from shared.pipeline.appointment_fields import Schedule, parse_schedule

CREATED = "appointment.created"
RESCHEDULED = "appointment.rescheduled"
CANCELLED = "appointment.cancelled"
EVENT_TYPES = (CREATED, RESCHEDULED, CANCELLED)
# Plain JSON without `type` is a created event: what a contract v1 producer sends.
EVENT_TYPE = CREATED
# A second copy of one of these in one object would leave which event this is to the parser's choice.
IDENTIFYING_FIELDS = frozenset({"id", "type", "eventType", "specversion", "data", "data_base64", "appointmentId",
                                "organizer", "tenantId", "onlineMeetingId", "joinWebUrl", "sequence",
                                "startDateTime", "endDateTime"})


@dataclass(frozen=True)
class AppointmentEvent:
    """An appointment event (created, rescheduled or cancelled), whatever envelope it came in."""

    event_id: str
    appointment_id: str
    organizer: str
    online_meeting_id: str | None
    join_web_url: str | None
    callback_url: str | None
    occurred_at: datetime | None
    schema: str
    event_type: str = CREATED
    schedule: Schedule = field(default_factory=Schedule)
    tenant_id: str | None = None

    @property
    def has_meeting(self) -> bool:
        """Whether the scheduler named the meeting (an id or a joinWebUrl)."""
        return self.online_meeting_id is not None or self.join_web_url is not None


def parse_event(text: str) -> AppointmentEvent:
    """Parse and validate a message; raise InvalidEventError with a reason a person can act on."""
    doc = _json(text, "message")
    if isinstance(doc, list):
        # Event Grid may batch; a queue message must carry exactly one event or some would be lost.
        if len(doc) != 1:
            raise InvalidEventError(f"message holds {len(doc)} events; send exactly one per message")
        doc = doc[0]
    if not isinstance(doc, dict):
        raise InvalidEventError("message must be a JSON object")
    envelope = _envelope(doc)
    if envelope == _CLOUDEVENT:
        return _from_cloudevent(doc)
    if envelope == _EVENTGRID:
        return _from_eventgrid(doc)
    return _from_plain(doc)


@dataclass(frozen=True)
class EventIds:
    """What a message says it is about, read without validating; None where it does not say."""

    event_id: str | None = None
    appointment_id: str | None = None
    organizer: str | None = None
    tenant_id: str | None = None


def best_effort_ids(text: str | bytes) -> EventIds:
    """The ids a message names (any envelope parse_event reads, `data_base64` too); never raises.

    For messages parse_event refused: texts are cut to 256 characters, the tenant is lower-cased, and a
    repeated field does not hide the ids (the first reading wins, as json does).
    """
    try:
        doc = strict_json.loads(text if isinstance(text, str) else strict_json.decode_utf8(text))
    except ValueError:
        return EventIds()
    if isinstance(doc, list) and len(doc) == 1:
        doc = doc[0]
    if not isinstance(doc, dict):
        return EventIds()
    data = appointment_fields(doc, unique=()) or {}
    tenant = _text_or_none(data.get("tenantId"))
    return EventIds(event_id=_text_or_none(doc.get("id")) or _text_or_none(data.get("id")),
                    appointment_id=_text_or_none(data.get("appointmentId")),
                    organizer=_text_or_none(data.get("organizer")),
                    tenant_id=tenant.lower() if tenant else None)


def appointment_fields(doc: dict[str, Any], *, unique: Collection[str] = IDENTIFYING_FIELDS) -> dict[str, Any] | None:
    """Where a document keeps its appointment fields, or None if that cannot be read; never raises.

    A CloudEvent or Event Grid event keeps them in `data` (an object, JSON text, or CloudEvents
    `data_base64`), as parse_event reads it. So does a plain document that has a `data` and no
    `appointmentId` of its own (the Standard Webhooks payload shape); any other plain document is the fields.
    """
    kind = _envelope(doc)
    if kind is None and "appointmentId" not in doc and ("data" in doc or "data_base64" in doc):
        kind = "payload"
    if kind is None:
        return doc
    try:
        return _data_object(doc, kind, unique=unique)
    except InvalidEventError:
        return None


_CLOUDEVENT = "CloudEvent"
_EVENTGRID = "Event Grid event"


def _envelope(doc: dict[str, Any]) -> str | None:
    if "specversion" in doc:
        return _CLOUDEVENT
    if "eventType" in doc and "dataVersion" in doc:
        return _EVENTGRID
    return None


def _text_or_none(value: object) -> str | None:
    return value[:256] if isinstance(value, str) and value else None


def _from_plain(doc: dict[str, Any]) -> AppointmentEvent:
    event_type = doc.get("type", EVENT_TYPE)
    _check_type(event_type)
    return _build(doc, event_id=doc.get("id"), occurred_at=doc.get("occurredAt"), schema="plain",
                  event_type=event_type)


def _from_cloudevent(doc: dict[str, Any]) -> AppointmentEvent:
    if doc.get("specversion") != "1.0":
        raise InvalidEventError(f"CloudEvents specversion {doc.get('specversion')!r} is not supported; use 1.0")
    for attribute in ("id", "source", "type"):
        if not isinstance(doc.get(attribute), str) or not doc[attribute]:
            raise InvalidEventError(f"CloudEvent attribute {attribute!r} is required")
    _check_type(doc["type"])
    data = _data_object(doc, _CLOUDEVENT)
    return _build(data, event_id=doc["id"], occurred_at=data.get("occurredAt") or doc.get("time"),
                  schema="cloudevents", event_type=doc["type"])


def _from_eventgrid(doc: dict[str, Any]) -> AppointmentEvent:
    _check_type(doc.get("eventType"))
    data = _data_object(doc, _EVENTGRID)
    return _build(data, event_id=doc.get("id"), occurred_at=data.get("occurredAt") or doc.get("eventTime"),
                  schema="eventgrid", event_type=doc["eventType"])


def _json(text: str, what: str, unique: Collection[str] = IDENTIFYING_FIELDS) -> Any:
    try:
        return strict_json.loads(text, unique=unique)
    except strict_json.StrictJsonError as exc:
        raise InvalidEventError(f"{what} is not acceptable JSON: {exc}", reason="invalid_json") from None


def _data_object(doc: dict[str, Any], kind: str, *,
                 unique: Collection[str] = IDENTIFYING_FIELDS) -> dict[str, Any]:
    data = doc.get("data")
    if data is None and "data_base64" in doc:
        data = _base64_data(doc, unique)
    elif isinstance(data, str):
        # Some producers put JSON text in data; accept it rather than reject a usable event.
        try:
            data = strict_json.loads(data, unique=unique)
        except strict_json.StrictJsonError:
            pass
    if not isinstance(data, dict):
        raise InvalidEventError(f"{kind} 'data' must be a JSON object with the appointment fields")
    return data


def _base64_data(doc: dict[str, Any], unique: Collection[str]) -> Any:
    """A CloudEvent's binary data (`data_base64`), which must hold the appointment fields as JSON."""
    content_type = str(doc.get("datacontenttype") or "application/json").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise InvalidEventError(f"CloudEvent 'data_base64' must carry JSON, not {content_type!r}")
    try:
        raw = base64.b64decode(str(doc["data_base64"]), validate=True)
        text = strict_json.decode_utf8(raw)
    except (binascii.Error, ValueError):
        raise InvalidEventError("CloudEvent 'data_base64' is not base64 of UTF-8 text") from None
    return _json(text, "CloudEvent 'data_base64'", unique)


def _check_type(event_type: Any) -> None:
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEventError("event type is required")
    if event_type not in EVENT_TYPES:
        raise UnsupportedEventTypeError(f"event type {event_type!r} is not handled; expected one of "
                                        + ", ".join(repr(t) for t in EVENT_TYPES))


def _build(data: dict[str, Any], *, event_id: Any, occurred_at: Any, schema: str,
           event_type: str) -> AppointmentEvent:
    # Whether a created event without a meeting may have one made depends on MEETING_MANAGEMENT: the
    # pipeline decides (meeting_required), not the parser.
    meeting_id = optional_text(data, "onlineMeetingId")
    if meeting_id is not None:
        check_path_segment("onlineMeetingId", meeting_id)
    join_web_url = optional_text(data, "joinWebUrl", limit=MAX_URL)
    if join_web_url is not None:
        check_https_url("joinWebUrl", join_web_url)
    callback_url = optional_text(data, "callbackUrl", limit=MAX_URL)
    if callback_url is not None:
        check_https_url("callbackUrl", callback_url, allow_http=True)
    return AppointmentEvent(
        event_id=required_text({"id": event_id}, "id"),
        appointment_id=required_text(data, "appointmentId"),
        organizer=check_organizer(required_text(data, "organizer")),
        online_meeting_id=meeting_id,
        join_web_url=join_web_url,
        callback_url=callback_url,
        occurred_at=optional_timestamp(occurred_at, "occurredAt"),
        schema=schema,
        event_type=event_type,
        schedule=parse_schedule(data, times_required=event_type == RESCHEDULED),
        tenant_id=optional_guid(data, "tenantId"),
    )
