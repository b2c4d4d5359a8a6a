"""The published schemas and the code cannot drift: each model's wire form is checked against its schema, and
the schemas against the contract in docs/contracts.md (lifecycle fields included) and the code's own parser."""

from __future__ import annotations

import json
from typing import Any

import pytest
from azure.eventgrid import EventGridEvent
from cloudevents.v1.conversion import to_structured
from cloudevents.v1.http import CloudEvent
from jsonschema import Draft202012Validator

from shared.contracts import load_schema, openapi_components, schema_names
from shared.exceptions import InvalidEventError
from shared.http_twin.openapi import openapi_document
from shared.pipeline.inbound import parse_event
from shared.pipeline.notifications import failed_event, ready_event
from shared.pipeline.records import JoinUrlResult, Rejection
from shared.storage.overflow import KeptMessage
from shared.webhooks.outbound import webhook_event
from shared.webhooks.sender import DeadLetter
from tests.schemas import assert_message_valid, assert_valid, errors

pytestmark = pytest.mark.contract
ORGANIZER = "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a"
TENANT = "7d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10"
MEETING = "MSo0YzdlMWQyYS05YjNmLTRlNWQtOGE2Yy0xZjJlM2Q0YzViNmEqMCoqMTk6bWVldGluZ19jYXJkaW9sb2d5QHRocmVhZC52Mg=="
JOIN = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_cardiology%40thread.v2/0"
V1 = {"id": "evt-1", "type": "appointment.created", "appointmentId": "apt-1", "organizer": ORGANIZER,
      "onlineMeetingId": MEETING}
# Every field of docs/contracts.md, as the lifecycle and multi-tenant releases will send them.
LIFECYCLE = {
    "id": "evt-2", "type": "appointment.rescheduled", "appointmentId": "apt-1", "organizer": "scheduler@contoso.com",
    "tenantId": TENANT, "joinWebUrl": JOIN, "callbackUrl": "https://scheduler.contoso.com/hooks",
    "occurredAt": "2026-11-21T09:00:00Z", "sequence": 3, "startDateTime": "2026-11-22T10:00:00+01:00",
    "endDateTime": "2026-11-22T10:30:00+01:00", "subject": "Follow-up",
    "participants": [{"user": "dr.adams@contoso.com", "role": "presenter"}, {"user": ORGANIZER}],
    "clients": [{"displayName": "Jane Doe", "email": "jane@example.com", "phone": "+14155550100",
                 "timeZone": "Europe/Berlin"}],
}


@pytest.mark.parametrize("name", schema_names())
def test_each_schema_is_valid_2020_12_and_names_itself(name):
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("/v1/" + name)
    for example in schema.get("examples", []):
        assert_valid(name, example)


@pytest.mark.parametrize("event", [V1, LIFECYCLE, {**V1, "type": "appointment.cancelled"},
                                   {k: v for k, v in V1.items() if k != "type"},
                                   {**V1, "onlineMeetingId": None} | {"joinWebUrl": JOIN},
                                   {"id": "evt-3", "type": "appointment.created", "appointmentId": "apt-3",
                                    "organizer": ORGANIZER}])
def test_contract_events_are_valid(event):
    event = {k: v for k, v in event.items() if v is not None}
    assert_valid("appointment-event.json", event)
    assert_valid("appointments-message.json", event)


@pytest.mark.parametrize(("event", "why"), [
    ({k: v for k, v in V1.items() if k != "id"}, "id"),
    ({**V1, "type": "appointment.updated"}, "type"),
    ({**V1, "organizer": "not an organizer"}, "organizer"),
    ({**V1, "tenantId": "contoso"}, "tenantId"),
    ({**LIFECYCLE, "startDateTime": None}, "rescheduled without start"),
    ({**V1, "endDateTime": "2026-11-22T10:30:00Z"}, "end without start"),
    ({**V1, "startDateTime": "2026-11-22T10:00:00", "endDateTime": "2026-11-22T10:30:00Z"}, "no offset"),
    ({**V1, "sequence": -1}, "sequence"),
    ({**V1, "subject": "x" * 256}, "subject"),
    ({**V1, "clients": [{"email": "a@b.c"}]}, "client without name"),
    ({**V1, "clients": [{"displayName": "A", "phone": "0800 123"}]}, "phone not E.164"),
    ({**V1, "participants": [{"user": ORGANIZER, "role": "owner"}]}, "role"),
    ({**V1, "joinWebUrl": "http://teams.microsoft.com/l/meetup-join/x"}, "joinWebUrl not https"),
])
def test_contract_violations_are_invalid(event, why):
    event = {k: v for k, v in event.items() if v is not None}
    assert errors("appointment-event.json", event), why


def test_the_three_envelopes_made_by_the_producer_libraries_are_valid():
    _, cloud = to_structured(CloudEvent({"type": "appointment.created", "source": "/scheduler", "id": "ce-1"},
                                        {k: v for k, v in V1.items() if k not in ("id", "type")}))
    grid = EventGridEvent(subject="appointments/apt-1", event_type="appointment.cancelled", data_version="1.0",
                          data={"appointmentId": "apt-1", "organizer": ORGANIZER})
    assert_valid("cloudevent.json", json.loads(cloud))
    assert_valid("appointments-message.json", json.loads(cloud))
    assert_valid("eventgrid-event.json", grid.serialize())
    assert_valid("appointments-message.json", grid.serialize())
    assert_valid("appointments-message.json", [grid.serialize()])


@pytest.mark.parametrize("text", [json.dumps(V1), json.dumps({k: v for k, v in V1.items() if k != "type"}),
                                  json.dumps({**V1, "joinWebUrl": JOIN, "onlineMeetingId": None}),
                                  json.dumps({**V1, "callbackUrl": "https://scheduler.contoso.com/x"})])
def test_what_todays_parser_accepts_is_valid(text):
    doc = {k: v for k, v in json.loads(text).items() if v is not None}
    parse_event(json.dumps(doc))
    assert_valid("appointments-message.json", doc)


@pytest.mark.parametrize("doc", [{**V1, "organizer": "nobody"}, {**V1, "id": ""}, {**V1, "type": "x.y"},
                                 {**V1, "joinWebUrl": "ftp://x", "onlineMeetingId": None}])
def test_what_the_schema_refuses_the_parser_refuses(doc):
    doc = {k: v for k, v in doc.items() if v is not None}
    assert errors("appointments-message.json", doc)
    with pytest.raises(InvalidEventError):
        parse_event(json.dumps(doc))


def _result() -> JoinUrlResult:
    return JoinUrlResult("apt-1", ORGANIZER, MEETING, "https://visit.teams.microsoft.com/x", "evt-1",
                         "2026-11-21T09:00:01.234Z")


def test_the_codes_records_are_valid():
    result = _result()
    assert_message_valid("join-urls", result.to_json())
    rejection = Rejection("meeting_not_found", "no such meeting", json.dumps(V1), "evt-1", "apt-1", ORGANIZER,
                          dequeue_count=1)
    assert_message_valid("appointments-rejected", rejection.to_json())
    unparseable = Rejection("invalid_json", "message is not JSON", "{not json")
    assert_message_valid("appointments-rejected", unparseable.to_json())
    for event in (ready_event(result), failed_event(rejection)):
        assert event is not None
        assert_message_valid("webhook-outbox", event.to_message())
    dead = DeadLetter("http_410", "gone", ready_event(result).to_message(), "evt-1_ready",
                      "appointment.joinurl.ready", 410, "gone", "scheduler.contoso.com")
    assert_message_valid("webhook-dead-letter", dead.to_json())
    # The originals that cannot be copied: bytes that are not UTF-8, and copies too big for a queue message.
    kept = KeptMessage("message-overflow", "messages/" + "0" * 64, 70_000, "0" * 64)
    for record in (Rejection("invalid_encoding", "not UTF-8", "", original_bytes=b"\xff"),
                   Rejection("invalid_event", "x", "{}", "evt-1", "apt-1", original_blob=kept)):
        assert_message_valid("appointments-rejected", record.to_json())
    assert_message_valid("webhook-dead-letter", DeadLetter("receiver_rejected", "400", "", outbox_blob=kept).to_json())


def test_lifecycle_results_and_webhooks_are_valid():
    full = {**_result().to_dict(), "organizerJoinUrl": JOIN, "startDateTime": "2026-11-22T10:00:00Z",
            "endDateTime": "2026-11-22T10:30:00Z", "meetingCreatedByApp": True, "eventType": "appointment.created",
            "status": "scheduled", "tenantId": TENANT}
    cancelled = {**full, "joinUrl": None, "organizerJoinUrl": None, "status": "cancelled", "tenantId": None,
                 "eventType": "appointment.cancelled"}
    assert_valid("join-url-result.json", full)
    assert_valid("join-url-result.json", cancelled)
    body = {"type": "appointment.joinurl.cancelled", "timestamp": "2026-11-22T10:00:00Z", "data": cancelled}
    assert_valid("webhook-body.json", body)
    assert errors("webhook-body.json", {**body, "data": full}), "a .cancelled webhook says status cancelled"
    sms = {"appointmentId": "apt-1", "organizer": ORGANIZER, "tenantId": TENANT, "eventId": "evt-1",
           "messageType": "confirmation", "reason": "sms_not_licensed", "detail": "Teams Premium is needed"}
    assert_valid("webhook-body.json", {"type": "appointment.joinurl.sms_failed", "timestamp": "2026-11-22T10:00:00Z",
                                       "data": sms})
    assert errors("webhook-body.json", {"type": "appointment.joinurl.failed", "timestamp": "2026-11-22T10:00:00Z",
                                        "data": {"appointmentId": "apt-1"}})
    future = webhook_event("ready", full, "evt-1")
    assert_message_valid("webhook-outbox", future.to_message())


def test_rejection_needs_the_original_or_its_blob():
    record: dict[str, Any] = json.loads(Rejection("invalid_json", "x", "{").to_json())
    del record["originalMessage"]
    assert errors("rejection.json", record)
    record["originalMessageBlob"] = {"container": "rejected-messages", "name": "a", "bytes": 70000,
                                     "sha256": "0" * 64}
    assert_valid("rejection.json", record)


def test_the_openapi_document_embeds_the_contract_files_unchanged():
    served = json.loads(openapi_document())["components"]["schemas"]
    assert served == openapi_components()
    assert set(served) >= {"AppointmentEvent", "JoinUrlResult", "Rejection", "WebhookBody", "Problem"}
    text = json.dumps(served)
    assert ".json" not in text.replace("application/json", ""), "every file reference is rewritten"
